"""``accel bench cache-overhead`` (accel/benchmarks/overhead*.py) on tiny FLUX-shaped tensors: every method the
benchmark registers for FLUX is measured, with finite times; each probe's cached step takes the method's cached path
and its full step the full one; CG-Taylor's measured ops are the kernels' reference; the op counter counts what it
says; the outputs are written."""

from __future__ import annotations

import json
import math

import pytest
import torch

from accel.benchmarks import overhead, overhead_report, overhead_sites
from accel.benchmarks.methods import METHODS
from accel.errors import AccelError
from accel.kernels import reference

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = overhead.Geometry(tokens=64, channels=32)


@pytest.fixture(scope="module")
def report():
    return overhead.run(TINY, dtypes=("float32",), repeats=2, isolate=False, command="accel bench cache-overhead --tokens 64 --channels 32")


def test_every_method_registered_for_flux_is_measured(report):
    flux = {name for name, spec in METHODS.items() if "flux" in spec.kinds and name != "none"}
    assert report["missing"] == []
    assert {r["method"] for r in report["rows"]} == flux
    assert {r["row"] for r in report["rows"]} == set(overhead.ROWS)  # the variants too (CG-Taylor residual, TaylorSeer lite)


def test_times_are_finite_and_ordered(report):
    for r in report["rows"]:
        for key in ("cached_ms", "full_ms"):
            q = r[key]
            assert all(math.isfinite(v) and v >= 0 for v in q.values()), (r["row"], q)
            assert q["q1"] <= q["median"] <= q["q3"]
        assert r["held_bytes"] > 0 and r["cached_ops"] >= 0 and r["full_ops"] >= 0, r["row"]
    assert report["block_macs"] == TINY.block_macs() > 0 and report["gemm_macs_per_s"]["float32"] > 0


def test_block_macs_of_flux1():
    """A FLUX.1 double block at 1024x1024 (4608 tokens, 3072 channels): 652.4 G multiply-accumulates."""
    g = overhead.Geometry()
    n, c = 4096 + 512, 3072
    assert g.text == 512
    assert g.block_macs() == 12 * c * c * n + 2 * n * n * c + 12 * c * c
    assert round(g.block_macs() / 1e9, 1) == 652.4


@pytest.mark.parametrize("residual", [False, True])
def test_cg_taylor_probe_runs_the_kernels_reference(residual):
    torch.manual_seed(0)
    [probe] = overhead_sites.cg_taylor(TINY, torch.float32, residual=residual)
    for _ in range(3):
        probe.full()
        probe.cached()
    s, x = probe.held, probe.inputs
    f0, fl = s.f0.clone(), s.fl.clone()
    error, fc = probe.cached()  # block 0's error one step after the full step, then the last block's forecast
    err, ref = reference.forecast_error(f0, 1.0, 3, x.h0)
    assert error == pytest.approx(float(err / ref), rel=1e-6)
    torch.testing.assert_close(fc, reference.taylor_forecast(fl, 1.0, 2) + (x.h0 if residual else 0))
    probe.full()  # both factor stacks take the reference update from the same outputs, two steps later
    assert reference.taylor_update(f0, x.h0, 2.0, 3) == s.n0 == 3
    assert reference.taylor_update(fl, x.hl - x.h0 if residual else x.hl, 2.0, 2) == s.nl == 2
    torch.testing.assert_close(s.f0, f0)
    torch.testing.assert_close(s.fl, fl)


def _cached_path(row: str, probes: list[overhead_sites.Probe]) -> list[bool]:
    """Whether each probe's last step took the method's cached path, read from the method's own state."""
    method = overhead.ROWS[row][0]
    if method in ("fbcache", "magcache"):
        return [not p.held._state_cache["cond"].should_compute for p in probes]
    if method == "seacache":
        return [p.held[0]._state_cache["cond"].consecutive_cached == 1 for p in probes]
    if method.startswith("dbcache"):
        return [bool(p.held.cached_steps) and p.held.cached_steps[-1] == p.held.get_current_step() for p in probes]
    if method in ("pab", "fastercache"):
        return [p.inputs.calls == p.inputs.before for p in probes]
    if method == "taylorseer":
        return [p.held.last_update_step < p.held.current_step for p in probes]
    if method == "cg-taylor":
        return [p.held.n0 == 3 for p in probes]  # (no decision: the probe calls the cached-step kernels)
    return [p.held.moments is not None for p in probes]  # spectrum (no decision either)


@pytest.mark.parametrize("row", [r for r, (m, _, _) in overhead.ROWS.items() if m not in ("cg-taylor", "spectrum")])
def test_cached_and_full_steps_take_their_paths(row):
    torch.manual_seed(0)
    probes = overhead.ROWS[row][1](TINY, torch.float32)
    with torch.no_grad():
        for step in range(6):
            for p in probes:
                if p.inputs is not None:
                    p.inputs.before = p.inputs.calls
                (p.cached if step % 2 else p.full)()
            assert _cached_path(row, probes) == [bool(step % 2)] * len(probes), (row, step)


def test_op_counter_counts_arithmetic_not_copies():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with overhead.OpCounter() as count:
        a @ b  # 60 multiply-accumulates
        a + 1.0  # 12
        a.abs().mean()  # 12 + 12
        a.clone().to(torch.float64).reshape(12)  # nothing
    assert count.ops == 60 + 12 + 24


def test_held_bytes_counts_each_storage_once():
    x = torch.zeros(10)
    state = {"a": [x, x[2:]], "b": (torch.zeros(4, dtype=torch.float64), None), "module": torch.nn.Linear(100, 100)}
    assert overhead.held_bytes(state) == 40 + 32


def test_bad_settings_say_what_is_allowed():
    with pytest.raises(AccelError, match="square"):
        overhead.run(overhead.Geometry(tokens=60, channels=8))
    with pytest.raises(AccelError, match="float32, bfloat16"):
        overhead.run(TINY, dtypes=("float16",))


def test_outputs_are_written(report, tmp_path):
    paths = overhead_report.write(report, tmp_path)
    assert json.loads(paths["json"].read_text())["rows"] == report["rows"]
    md = paths["md"].read_text()
    assert report["command"] in md and all(f"| {row} |" in md for row in overhead.ROWS)
    assert paths["png"].stat().st_size > 0
