"""Benchmarks run end to end and report sane figures; quality floors of the recommended cache setting.

Speed is reported by ``accel bench cache``, never asserted here (timings depend on the machine).
"""

from __future__ import annotations

import json

import torch

import accel
from accel.benchmarks.cache import Method, run_cache_bench, write_outputs
from accel.benchmarks.gate import run_gate_bench, write_gate_outputs


def test_cache_bench_outputs(tiny_dit_folder, tmp_path):
    methods = [Method("none"), Method("cg-taylor", {"threshold": 0.0}), Method("cg-taylor", {"threshold": 0.3}),
               Method("fbcache", {"threshold": 0.3}), Method("magcache", {"threshold": 0.2})]
    rep = run_cache_bench(str(tiny_dit_folder), steps=8, num_images=2, repeats=1, methods=methods)
    rows = {r["label"]: r for r in rep["results"]}
    assert rows["cg-taylor(threshold=0.0)"]["psnr"] == 99.0  # identical to uncached
    assert rows["cg-taylor(threshold=0.0)"]["forecast_fraction"] == 0
    assert rows["cg-taylor(threshold=0.3)"]["forecast_fraction"] > 0
    assert all("speedup" in r and r["seconds"] > 0 for r in rep["results"] if "error" not in r)
    paths = write_outputs(rep, tmp_path)
    assert json.loads(paths["json"].read_text())["results"]
    assert "| method |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_bench_pairs(tiny_dit_folder, tmp_path):
    rep = run_gate_bench(str(tiny_dit_folder), steps=16, num_images=2, threshold=0.2, seeds=(0,))
    assert rep["n"] > 2 and -1 <= rep["pearson"] <= 1
    assert all(p["last_error"] >= 0 and p["offset"] >= 1 for p in rep["pairs"])
    assert write_gate_outputs(rep, tmp_path)["png"].stat().st_size > 0


def test_recommended_threshold_keeps_quality(digits_pipe):
    """At the shipped recommended threshold: PSNR >= 30 dB vs uncached, accuracy within 2 points, real skipping."""
    from accel.metrics import psnr
    from accel.sampling import recommended_threshold
    from accel.utils import to_uint8
    from accel.zoo.digits import DigitClassifier

    digits_pipe._accel_source = str(__import__("accel.zoo", fromlist=["model_dir"]).model_dir("dit-digits"))
    tau = recommended_threshold(digits_pipe)
    assert tau is not None and tau > 0
    labels = list(range(10))

    def run():
        gens = [torch.Generator().manual_seed(100 + i) for i in range(len(labels))]
        return digits_pipe(class_labels=labels, num_inference_steps=50, generator=gens, output_type="pt").images

    ref = run()
    with accel.cached(digits_pipe, accel.CGTaylorConfig(threshold=tau)):
        out = run()
        frac = accel.stats(digits_pipe).forecast_fraction
    clf = DigitClassifier()
    assert frac > 0.5
    assert psnr(to_uint8(out), to_uint8(ref)) >= 30
    assert clf.accuracy(out, labels) >= clf.accuracy(ref, labels) - 0.02


def test_calibrate_recommends_and_saves(tiny_dit_folder, tmp_path):
    from accel.benchmarks.calibrate import calibrate
    from accel.errors import AccelError

    rec = calibrate(str(tiny_dit_folder), min_psnr=30.0, steps=8, num_images=2, repeats=1,
                    thresholds=(0.0, 0.05, 0.2, 5.0), out_dir=tmp_path / "cal", save=True)
    assert rec["psnr"] >= 30.0 and rec["threshold"] in (0.0, 0.05, 0.2, 5.0)
    saved = json.loads((tiny_dit_folder / "accel_cache.json").read_text())
    assert saved["threshold"] == rec["threshold"]
    assert (tmp_path / "cal" / "bench_cache_pareto.png").is_file()
    import pytest

    with pytest.raises(AccelError, match="exactly one"):
        calibrate(str(tiny_dit_folder), min_psnr=30.0, target_speedup=2.0)
    with pytest.raises(AccelError, match="no threshold"):
        calibrate(str(tiny_dit_folder), min_psnr=None, target_speedup=1e6, steps=4, num_images=1, repeats=1,
                  thresholds=(0.0,), out_dir=tmp_path / "cal2")
