"""Benchmarks run end to end and report sane figures; quality floors of the recommended cache setting.

Speed is reported by ``accel bench cache``, never asserted here (timings depend on the machine).
"""

from __future__ import annotations

import json

import torch

import accel
from accel.benchmarks.gate import run_gate_bench, write_gate_outputs


def test_gate_bench_pairs(tiny_dit_folder, tmp_path):
    rep = run_gate_bench(str(tiny_dit_folder), steps=16, num_images=2, threshold=0.2, seeds=(0,))
    assert rep["n"] > 2 and -1 <= rep["pearson"] <= 1
    assert all(p["last_error"] >= 0 and p["offset"] >= 1 for p in rep["pairs"])
    assert write_gate_outputs(rep, tmp_path)["png"].stat().st_size > 0


def test_recommended_threshold_keeps_quality(digits_pipe):
    """At the shipped setting (the benchmark rule's choice at 35 dB): PSNR >= 30 dB on other seeds vs uncached, accuracy within 2 points, real skipping."""
    from accel.metrics import psnr
    from accel.sampling import recommended_settings
    from accel.utils import to_uint8
    from accel.zoo.digits import DigitClassifier

    digits_pipe._accel_source = str(__import__("accel.zoo", fromlist=["model_dir"]).model_dir("dit-digits"))
    settings = recommended_settings(digits_pipe)
    assert settings.get("threshold", 0) > 0
    labels = list(range(10))

    def run():
        gens = [torch.Generator().manual_seed(100 + i) for i in range(len(labels))]
        return digits_pipe(class_labels=labels, num_inference_steps=50, generator=gens, output_type="pt").images

    ref = run()
    with accel.cached(digits_pipe, accel.CGTaylorConfig(**settings)):
        out = run()
        frac = accel.stats(digits_pipe).forecast_fraction
    clf = DigitClassifier()
    assert frac > 0.5
    assert psnr(to_uint8(out), to_uint8(ref)) >= 30
    assert clf.accuracy(out, labels) >= clf.accuracy(ref, labels) - 0.02
