"""The kernel benchmark: eager chains agree with the ops, byte counts, the peak table, and the CLI outputs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from accel.cli.bench_kernels import app
from accel.benchmarks import kernels as bench
from accel.kernels import KernelError, reference
from accel.errors import AccelError


def test_eager_chains_compute_the_same_ops():
    g = torch.Generator().manual_seed(0)
    f, x = torch.randn(3, 2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    torch.testing.assert_close(bench.eager_forecast(f, 1.5, 3), reference.taylor_forecast(f, 1.5, 3))
    for got, want in zip(bench.eager_error(f, 1.5, 2, x), reference.forecast_error(f, 1.5, 2, x)):
        torch.testing.assert_close(got, want)
    a, b = f.clone(), f.clone()
    assert bench.eager_update(a, x, 0.5, 3) == reference.taylor_update(b, x, 0.5, 3) == 3
    torch.testing.assert_close(a, b)


def test_op_bytes_and_peak_table():
    # FLUX b1 fp16, K+1 = 3: forecast reads 3 and writes 1 tensor of 4096*3072*2 bytes
    assert bench.op_bytes("forecast", (1, 4096, 3072), 2, 3) == 4 * 4096 * 3072 * 2
    assert bench.op_bytes("update", (1, 4096, 3072), 2, 3) == (1 + 2 + 3) * 4096 * 3072 * 2
    names = dict(bench.PEAK_GBPS)
    assert names["H100"] == 3350.0 and names["H200"] == 4800.0
    match = lambda name: next(g for k, g in bench.PEAK_GBPS if k.lower() in name.lower())  # noqa: E731
    assert match("NVIDIA H100 PCIe") == 2000.0 and match("NVIDIA H100 80GB HBM3") == 3350.0
    assert bench.peak_bandwidth_gbps(torch.device("cpu"))[0] is None


def test_parse_errors():
    assert bench.parse_sizes("flux-b1,2x33x7") == {"flux-b1": (1, 4096, 3072), "2x33x7": (2, 33, 7)}
    with pytest.raises(KernelError, match="preset"):
        bench.parse_sizes("flux-b9")
    with pytest.raises(KernelError, match="fp32, fp16, bf16"):
        bench.parse_dtypes("fp8")


def test_cli_writes_json_markdown_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = {k: tmp_path / "out" / f"bench_kernels.{k}" for k in ("json", "md", "png")}
    args = ["kernels", "--sizes", "2x9x17,dit-digits", "--dtypes", "fp32,bf16", "--repeats", "2", "--device", "cpu",
            "--peak-gbps", "50", "--no-progress", "--out-dir", str(tmp_path / "out")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(out["json"].read_text())
    assert data["peak_gbps"] == 50 and data["peak_source"] == "option" and data["impls"][:2] == ["eager", "torch"]
    assert len(data["rows"]) == 2 * 2 * 3 * len(data["impls"])
    row = next(r for r in data["rows"] if r["size"] == "dit-digits" and r["impl"] == "torch" and r["op"] == "forecast")
    assert row["gbps"] == pytest.approx(row["bytes"] / row["time_ms"] / 1e6) and row["frac_peak"] == pytest.approx(row["gbps"] / 50)
    assert "| dit-digits | 2x64x64 | bf16 | error | eager |" in out["md"].read_text()
    assert out["png"].read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_bad_options():
    res = CliRunner().invoke(app, ["kernels", "--ops", "forecast,blur", "--no-progress", "--device", "cpu"])
    assert res.exit_code != 0 and isinstance(res.exception, AccelError) and "forecast, update, error" in str(res.exception)
    # the kernels' own error (kernels import nothing of accel) reaches the CLI as AccelError
    res = CliRunner().invoke(app, ["kernels", "--sizes", "flux-b9", "--no-progress", "--device", "cpu"])
    assert res.exit_code != 0 and isinstance(res.exception, AccelError) and "preset" in str(res.exception)


def test_targets_summary_checks_flux_triton_rows():
    row = {"size": "flux-b2", "shape": [2, 4096, 3072], "dtype": "bf16", "op": "forecast", "impl": "triton",
           "time_ms": 0.1, "bytes": 1, "gbps": 2900.0, "frac_peak": 2900 / 3350, "speedup_vs_eager": 3.0}
    slow = dict(row, op="error", frac_peak=0.5, speedup_vs_eager=1.5)
    small = dict(row, size="dit-xl-256", shape=[2, 256, 1152], frac_peak=0.1)
    lines = bench.targets_summary({"rows": [row, slow, small]})
    assert "- flux-b2 bf16 forecast: 87% of peak (met), 3.00x vs eager (met)" in lines
    assert "- flux-b2 bf16 error: 50% of peak (MISSED), 1.50x vs eager (MISSED)" in lines
    assert not any("dit-xl-256" in line for line in lines)
    assert bench.targets_summary({"rows": [dict(row, impl="torch")]}) == []
