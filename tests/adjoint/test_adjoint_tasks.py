"""accel.benchmarks.adjoint / finetune and the CLI commands, on a tiny random DiT pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_dit

from accel.errors import AccelError
from accel.utils import load_checkpoint


@pytest.fixture(scope="module")
def tiny_pipe_dir(tmp_path_factory) -> Path:
    from diffusers import DDIMScheduler

    from accel.pipelines import ClassConditionalPipeline

    path = tmp_path_factory.mktemp("tinypipe")
    ClassConditionalPipeline(tiny_dit(), DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)).save_pretrained(path)
    return path


def test_bench_records_and_outputs(tiny_pipe_dir, tmp_path):
    from accel.benchmarks.adjoint import BenchConfig, plot, run_bench, to_markdown

    cfg = BenchConfig(model=str(tiny_pipe_dir), steps=(2, 4), methods=("discrete", "continuous", "continuous-2"), isolate=False, batch=1)
    recs = run_bench(cfg)
    assert {r["method"] for r in recs} == {"autograd", "autograd-2m", "discrete", "continuous", "continuous-2"}
    for r in recs:
        assert {"method", "steps", "target", "rel_error", "cosine", "peak_mb", "seconds"} <= set(r)
    disc = [r for r in recs if r["method"] == "discrete"]
    assert len(disc) == 6 and all(r["rel_error"] < 1e-5 and r["cosine"] > 0.99999 for r in disc)
    assert any(r["rel_error"] > 1e-3 for r in recs if r["method"] == "continuous")  # a different gradient
    assert "| discrete | 4 |" in to_markdown(recs)
    assert all(p.is_file() for p in plot(recs, tmp_path))


@pytest.mark.slow
def test_bench_isolated_subprocess(tiny_pipe_dir):
    from accel.benchmarks.adjoint import BenchConfig, run_bench

    recs = run_bench(BenchConfig(model=str(tiny_pipe_dir), steps=(2,), methods=("discrete",), batch=1))
    assert {r["method"] for r in recs} == {"autograd", "discrete"} and all(r["isolated"] for r in recs)
    assert all(r["peak_mb"] is not None and r["peak_mb"] >= 0 for r in recs)


def test_bench_errors(tmp_path):
    from accel.benchmarks.adjoint import BenchConfig, run_bench

    with pytest.raises(AccelError, match="not a diffusers pipeline folder"):
        run_bench(BenchConfig(model=str(tmp_path), steps=(2,), methods=("discrete",), isolate=False))
    with pytest.raises(AccelError, match="unknown method"):
        BenchConfig(methods=("magic",))
    with pytest.raises(AccelError, match="steps"):
        BenchConfig(steps=(0,))


@pytest.mark.parametrize("task", ["effect", "style", "attack"])
def test_finetune_tasks_write_outputs(tiny_pipe_dir, tmp_path, task):
    from accel.adjoint.finetune import FinetuneConfig, run_finetune

    if task == "style":
        pytest.importorskip("peft")
    cfg = FinetuneConfig(task=task, out_dir=str(tmp_path), model=str(tiny_pipe_dir), iters=2, batch=2, steps=2, eval_count=2, checkpoint_every=1)
    summary = run_finetune(cfg)
    assert summary["finished"] and len(summary["losses"]) == 2
    for name in ("before.png", "after.png", "loss.png", "summary.json"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "summary.json").read_text())
    if task == "attack":
        assert 0 <= saved["attack_success_rate"] <= 1 and saved["classifier_heldout_accuracy"] > 0.9


def _state(path: Path) -> tuple[dict[str, torch.Tensor], list[float]]:
    tensors, meta = load_checkpoint(path / "checkpoints" / "rank0.safetensors")
    return tensors, meta["losses"]


def test_finetune_resumes_exactly(tiny_pipe_dir, tmp_path):
    from accel.adjoint.finetune import FinetuneConfig, run_finetune

    pytest.importorskip("peft")  # the style task (LoRA + Adam state) is the strictest resume check

    kw = dict(task="style", model=str(tiny_pipe_dir), iters=4, batch=2, steps=2, eval_count=2, checkpoint_every=1)
    run_finetune(FinetuneConfig(out_dir=str(tmp_path / "a"), **kw))
    first = run_finetune(FinetuneConfig(out_dir=str(tmp_path / "b"), stop_after=2, **kw))
    assert not first["finished"] and not (tmp_path / "b" / "after.png").exists()
    run_finetune(FinetuneConfig(out_dir=str(tmp_path / "b"), **kw))
    (ta, la), (tb, lb) = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert la == lb and set(ta) == set(tb) and any(k.startswith("optim.") for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    with pytest.raises(AccelError, match="other settings"):
        run_finetune(FinetuneConfig(out_dir=str(tmp_path / "b"), **(kw | {"steps": 3})))


def test_cli_bench_and_finetune(tiny_pipe_dir, tmp_path):
    from typer.testing import CliRunner

    from accel.cli.adjoint import app

    runner = CliRunner()
    js = tmp_path / "b.json"
    res = runner.invoke(app, ["bench", "--model", str(tiny_pipe_dir), "--steps", "2", "--methods", "discrete,torchdiffeq", "--no-isolate", "--batch", "1", "--json", str(js), "--no-progress"])
    assert res.exit_code == 0, res.output
    recs = json.loads(js.read_text())
    assert {r["method"] for r in recs} == {"autograd", "discrete", "torchdiffeq"}
    res = runner.invoke(app, ["finetune", "attack", "--model", str(tiny_pipe_dir), "--out", str(tmp_path / "ft"), "--iters", "1", "--batch", "2", "--steps", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "attack_success_rate" in res.output
    res = runner.invoke(app, ["bench", "--steps", "0,x"])
    assert res.exit_code != 0 and isinstance(res.exception, AccelError)


@pytest.mark.slow
def test_finetune_under_accelerate_launch_two_processes(tiny_pipe_dir, tmp_path):
    exe = Path(sys.executable).parent / "accelerate"
    # accelerate's --cpu flag runs a single process; --multi_gpu on a machine without visible GPUs starts
    # 2 CPU processes (torchrun + gloo).
    cmd = [str(exe), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "accel.cli.adjoint", "finetune", "effect", "--model", str(tiny_pipe_dir), "--out", str(tmp_path), "--iters", "2",
           "--batch", "1", "--steps", "2", "--checkpoint-every", "1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 2
    a, _ = load_checkpoint(tmp_path / "checkpoints" / "rank0.safetensors")
    b, _ = load_checkpoint(tmp_path / "checkpoints" / "rank1.safetensors")
    assert torch.equal(a["state.emb"], b["state.emb"])  # gradients were averaged: replicas stay identical
