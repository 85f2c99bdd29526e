"""CLI behaviour: help, sampling, reports, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from accel.cli.main import app
from accel.errors import AccelError

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("sample", "calibrate", "zoo", "bench", "finetune", "coverage"):
        assert cmd in r.output
    assert "--quick" in runner.invoke(app, ["bench", "cache", "--help"]).output
    for sub in (["sample", "--help"], ["bench", "--help"], ["zoo", "--help"], ["bench", "cache", "--help"]):
        assert runner.invoke(app, sub).exit_code == 0


def test_sample_writes_grid_and_json(tiny_dit_folder, tmp_path):
    out, rep = tmp_path / "g.png", tmp_path / "r.json"
    r = runner.invoke(app, ["sample", "--model", str(tiny_dit_folder), "--class", "3", "-n", "4", "--steps", "5",
                            "--out", str(out), "--json", str(rep), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "wrote 4 image(s)" in r.output and "5 steps" in r.output
    img = Image.open(out)
    assert img.width > 8 * 2 and img.height > 8 * 2  # a grid, upscaled for viewing
    report = json.loads(rep.read_text())
    assert report["num_images"] == 4 and report["class_labels"] == [3, 3, 3, 3] and report["seconds"] > 0


def test_sample_with_cache_reports_speed_and_fraction(tiny_dit_folder, tmp_path):
    r = runner.invoke(app, ["sample", "--model", str(tiny_dit_folder), "-n", "2", "--steps", "12", "--out", str(tmp_path / "c.png"),
                            "--cache", "cg-taylor", "--threshold", "0.2", "--json", str(tmp_path / "c.json"), "--no-progress"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "c.json").read_text())
    assert 0 < rep["forecast_fraction"] < 1 and rep["speedup"] > 0 and rep["psnr_vs_uncached"] > 10
    assert "of steps forecast" in r.output and "speedup" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "known models: dit-digits"),
        (["--class", "10"], "out of range"),
        (["--steps", "0"], "--steps must be positive"),
        (["--num-images", "-1"], "--num-images must be positive"),
        (["--out", "/no/such/folder/x.png"], "does not exist"),
        (["--cache", "magic"], "--cache must be one of"),
        (["--cache", "cg-taylor", "--threshold", "-1"], "threshold must be"),
    ],
)
def test_bad_input_raises_known_error(tiny_dit_folder, tmp_path, args, message):
    base = ["sample", "--model", str(tiny_dit_folder), "--steps", "3", "-n", "1", "--out", str(tmp_path / "x.png"), "--no-progress"]
    r = runner.invoke(app, base + args)
    assert r.exit_code != 0
    assert isinstance(r.exception, AccelError), r.output
    assert message in str(r.exception)


def test_main_prints_one_line_and_exits_nonzero(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ACCEL_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "accel.cli.main", "sample", "--model", "no-such-model", "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'no-such-model'; known models: dit-digits")
    assert "Traceback" not in r.stderr
    env["ACCEL_DEBUG"] = "1"
    r = subprocess.run([sys.executable, "-m", "accel.cli.main", "sample", "--model", "no-such-model", "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_zoo_list():
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0 and "dit-digits" in r.output


def test_sample_under_accelerate_launch_two_processes(tiny_dit_folder, tmp_path):
    """Images are split across 2 CPU processes; the main process writes the same grid as one process."""
    common = ["sample", "--model", str(tiny_dit_folder), "-n", "5", "--steps", "4", "--seed", "7", "--no-progress"]
    single = tmp_path / "single.png"
    assert runner.invoke(app, common + ["--out", str(single)]).exit_code == 0
    multi, rep = tmp_path / "multi.png", tmp_path / "multi.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "accel.cli.main", *common, "--out", str(multi), "--json", str(rep)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(rep.read_text())["processes"] == 2
    import numpy as np

    a, b = np.asarray(Image.open(multi), dtype=int), np.asarray(Image.open(single), dtype=int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1  # batch split may flip a rounding, no more


def test_sample_any_local_unconditional_pipeline(tmp_path):
    """A plain diffusers pipeline folder (DDPMPipeline with a UNet2DModel) samples, with and without caching."""
    import torch
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "ddpm")
    for extra in ([], ["--cache", "cg-taylor", "--threshold", "0"]):
        r = runner.invoke(app, ["sample", "--model", str(tmp_path / "ddpm"), "-n", "3", "--steps", "4", "--out", str(tmp_path / "u.png"), "--no-progress", *extra])
        assert r.exit_code == 0, r.output
        assert Image.open(tmp_path / "u.png").size[0] > 8
    r = runner.invoke(app, ["sample", "--model", str(tmp_path / "ddpm"), "-n", "1", "--steps", "2", "--out", str(tmp_path / "u.png"), "--class", "3", "--no-progress"])
    assert r.exit_code != 0


def test_progress_without_terminal_logs_lines(capsys, monkeypatch):
    """Under nohup or in CI logs (no terminal) progress is plain lines: the first update and the last."""
    from accel.cli import _progress

    monkeypatch.setattr(_progress, "LOG_EVERY_S", 3600.0)
    with _progress.progress_bar("training x", 3) as update:
        for i in range(1, 4):
            update(i, info=f"loss {i}")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("training x 1/3") and lines[-1].startswith("training x 3/3") and lines[-1].endswith("loss 3")


def test_closing_line_and_progress_line_measure_the_same_sampling(tiny_dit_folder, tmp_path, monkeypatch):
    """The progress clock starts as sampling starts (update 0), so the closing line's seconds, the pipeline
    call's wall time, are at least what the progress line shows; loading is reported apart."""
    import re
    import time

    from accel.cli import _progress
    from accel.sampling import sample_to_file

    stamps: list[tuple[int, float]] = []
    report = sample_to_file(str(tiny_dit_folder), tmp_path / "a.png", num_images=2, steps=4,
                            on_step=lambda i, n: stamps.append((i, time.perf_counter())))
    assert [i for i, _ in stamps] == [0, 1, 2, 3, 4]
    assert report["seconds"] + 1e-4 >= stamps[-1][1] - stamps[0][1] and report["load_seconds"] >= 0

    monkeypatch.setattr(_progress, "LOG_EVERY_S", 3600.0)  # no terminal under CliRunner: plain progress lines
    r = runner.invoke(app, ["sample", "--model", str(tiny_dit_folder), "-n", "2", "--steps", "4", "--out", str(tmp_path / "b.png")])
    assert r.exit_code == 0, r.output
    shown = float(re.search(r"sampling 4/4 \[([\d.]+) s", r.output).group(1))
    closing = float(re.search(r"in ([\d.]+) s of sampling", r.output).group(1))
    assert closing + 0.06 >= shown, r.output  # printed to 0.1 s and 0.01 s
    assert "loading the model took" in r.output
