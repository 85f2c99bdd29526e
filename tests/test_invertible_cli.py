"""CLI of accel.invertible (cli/idm.py) end to end on a tiny random prior: finetune, reconstruct, bench."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from accel.utils import AccelError

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8, sample_size=32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from accel.invertible.prior import build_pipeline, build_unet

    root = tmp_path_factory.mktemp("idm")
    torch.manual_seed(0)
    build_pipeline(build_unet(**TINY)).save_pretrained(root / "prior")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 50), (36, 33)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = 0.5 + 0.3 * np.sin(xx / (3 + i)) * np.cos(yy / 5) + 0.05 * rng.standard_normal((h, w))
        Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).save(root / "imgs" / f"im{i}.png")
    return root


def invoke(*args):
    from accel.cli.idm import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


def run_ok(*args):
    res = invoke(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def test_finetune_reconstruct_and_errors(setup):
    w = setup / "w30.safetensors"
    common = ["--prior", setup / "prior", "--images", setup / "imgs", "--crop", 32, "--batch-size", 1, "--checkpoint-every", 1]
    run_ok("finetune-idm", "--ratio", 0.3, "--steps", 2, "--iters", 2, "--out", w, *common)
    assert w.is_file() and (setup / ".w30.train" / "checkpoint.safetensors").is_file()
    out = run_ok("reconstruct", setup / "imgs" / "im0.png", "--ratio", 0.3, "--weights", w, "--out", setup / "rec.png",
                 "--save-measurements", setup / "y.safetensors")
    assert "PSNR" in out and "SSIM" in out
    assert Image.open(setup / "rec.png").size == (50, 40)
    # from the measurement file, with the original for PSNR
    out2 = run_ok("reconstruct", setup / "imgs" / "im0.png", "--measurements", setup / "y.safetensors", "--weights", w)
    assert out2.split("PSNR")[1].split("dB")[0] == out.split("PSNR")[1].split("dB")[0]
    run_ok("reconstruct", setup / "imgs" / "im1.png", "--ratio", 0.25, "--method", "tv")
    # bad input: clear errors, not tracebacks
    for args, msg in [
        (("reconstruct", setup / "imgs" / "im0.png", "--ratio", 1.5, "--method", "atb"), "(0, 1]"),
        (("reconstruct", setup / "imgs" / "im0.png", "--ratio", 0.1, "--weights", w), "fine-tuned for ratio 0.3"),
        (("reconstruct", setup / "prior" / "model_index.json", "--method", "atb"), "cannot read"),
        (("reconstruct", setup / "imgs" / "im0.png", "--ratio", 0.3, "--weights", setup / "prior" / "unet" / "diffusion_pytorch_model.safetensors"), "not an IDM"),
        (("finetune-idm", "--ratio", 0, "--out", w), "(0, 1]"),
        (("finetune-idm", "--mixed-precision", "fp16", "--out", w), "mixed_precision must be one of no, bf16"),
    ]:
        res = invoke(*args)
        assert res.exit_code != 0 and isinstance(res.exception, AccelError), (args, res.output)
        assert msg in str(res.exception)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_finetune_resumes_exactly(setup, precision, caplog):
    from accel.invertible.finetune import FinetuneConfig, finetune
    from accel.utils import load_checkpoint

    from accel.invertible.data import list_images, read_image

    imgs = [torch.from_numpy(read_image(p)) for p in list_images(setup / "imgs")]
    cfg = FinetuneConfig(ratio=0.5, T=1, iters=3, batch_size=1, crop=32, checkpoint_every=1, mixed_precision=precision)
    full = finetune(setup / f"a{precision}.safetensors", cfg, prior=str(setup / "prior"), images=imgs)

    class Stop(Exception):
        pass

    def stop_at_2(i, n, loss):
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        finetune(setup / f"b{precision}.safetensors", cfg, prior=str(setup / "prior"), images=imgs, progress=stop_at_2)
    caplog.set_level("INFO", logger="accel")
    resumed = finetune(setup / f"b{precision}.safetensors", cfg, prior=str(setup / "prior"), images=imgs)
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("accel")]
    assert notes == [f"resuming from step 1 of 3 ({setup / f'.b{precision}.train' / 'checkpoint.safetensors'})"]  # step 2 was lost
    a, meta = load_checkpoint(full)
    b, _ = load_checkpoint(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if precision == "bf16":  # recorded, and the U-Net really ran in bf16: other weights than the fp32 run's
        assert meta["finetune_config"]["mixed_precision"] == "bf16"
        fp32 = FinetuneConfig(ratio=0.5, T=1, iters=3, batch_size=1, crop=32, checkpoint_every=1)
        ref, _ = load_checkpoint(finetune(setup / "c.safetensors", fp32, prior=str(setup / "prior"), images=imgs))
        assert not all(torch.equal(a[k], ref[k]) for k in a)


def test_finetune_init_warm_starts(setup):
    """--init continues from IDM weights: iteration 0 starts at their loss, and a wrong ratio is refused."""
    w = setup / "w30.safetensors"
    if not w.is_file():
        pytest.skip("needs the weights of test_finetune_reconstruct_and_errors")
    from accel.invertible.data import list_images, read_image
    from accel.invertible.finetune import FinetuneConfig, finetune
    from accel.invertible.weights import load_idm

    imgs = [torch.from_numpy(read_image(p)) for p in list_images(setup / "imgs")]
    cfg = FinetuneConfig(ratio=0.3, T=2, iters=1, batch_size=1, crop=32, lr=1e-12)
    out = finetune(setup / "warm.safetensors", cfg, prior=str(setup / "prior"), images=imgs, init=w)
    a, b = load_idm(w)[0].state_dict(), load_idm(out)[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-8) for k in a)  # lr ~ 0: the warm start is kept
    with pytest.raises(AccelError, match="fine-tuned for ratio 0.3"):
        finetune(setup / "bad.safetensors", FinetuneConfig(ratio=0.1, T=2, iters=1, batch_size=1, crop=32), prior=str(setup / "prior"), images=imgs, init=w)


def test_bench_tiny(setup):
    w = setup / "w30.safetensors"
    if not w.is_file():
        pytest.skip("needs the weights of test_finetune_reconstruct_and_errors")
    js = setup / "bench" / "bench_idm.json"
    out = run_ok("bench-idm", "--out-dir", setup / "bench", "--T", "2", "--modes", "plain,reversible",
                 "--size", 32, "--repeats", 0, "--unet-config", json.dumps(TINY), "--ratios", "0.3", "--images", setup / "imgs",
                 "--weights", f"0.3={w}", "--prior", setup / "prior", "--ddnm-steps", 2, "--tv-iters", 3)
    data = json.loads(js.read_text())
    assert {(r["mode"], r["T"]) for r in data["memory"]} == {("plain", 2), ("reversible", 2)}
    assert all(r["peak_mb"] > 0 and r["seconds"] > 0 for r in data["memory"])
    assert {r["method"] for r in data["reconstruction"]} == {"atb", "tv", "ddnm", "idm"}
    assert all(set(r) >= {"method", "ratio", "psnr", "ssim", "seconds"} for r in data["reconstruction"])
    assert "TV-FISTA" in out and (setup / "bench" / "bench_idm.png").is_file() and "memory_reduction" not in data["targets"]
    assert "partial" not in data  # the memory records saved along the way were replaced by the full report


def test_bench_memory_reports_each_record_as_it_comes():
    """on_record sees the records so far after each configuration (the CLI saves them: a run cut short keeps them)."""
    from accel.invertible.bench import bench_memory

    seen = []
    recs = bench_memory((1,), ("plain", "reversible"), 32, 1, "cpu", 0, TINY, on_record=lambda r: seen.append([x["mode"] for x in r]))
    assert seen == [["plain"], ["plain", "reversible"]] and [r["mode"] for r in recs] == ["plain", "reversible"]


def test_bench_cache_reuses_and_invalidates(setup, tmp_path, monkeypatch, caplog):
    """--cache-dir: a second run recomputes nothing (and says it resumes); new settings (TV iterations) recompute."""
    import importlib

    from accel.invertible import bench

    rmod = importlib.import_module("accel.invertible.reconstruct")
    from accel.invertible.data import list_images

    calls = []
    real = rmod.reconstruct
    monkeypatch.setattr(rmod, "reconstruct", lambda *a, **k: calls.append(k["method"]) or real(*a, **k))
    files = list_images(setup / "imgs")
    args = dict(ratios=(0.3,), methods=("atb", "tv"), prior=str(setup / "prior"), cache_dir=tmp_path)
    cached = dict(ratios=(0.3,), methods=("atb", "tv"), weights=None, prior=str(setup / "prior"), ddnm_steps=100, device="cpu", cache_dir=tmp_path)
    assert bench.announce_cached(files, tv_iters=3, **cached) == 0
    first, recs1 = bench.bench_reconstruction(files, tv_iters=3, **args)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.safetensors"))) == 4
    caplog.set_level("INFO", logger="accel")
    assert bench.announce_cached(files, tv_iters=3, **cached) == 4 and bench.announce_cached(files, tv_iters=4, **cached) == 2
    assert [r.getMessage() for r in caplog.records if r.name.startswith("accel")] == [
        f"resuming from reconstruction 4 of 4 ({tmp_path})", f"resuming from reconstruction 2 of 4 ({tmp_path})"]
    again, recs2 = bench.bench_reconstruction(files, tv_iters=3, **args)
    assert len(calls) == 4 and again == first
    assert all(np.array_equal(a, b) for k in recs1 for a, b in zip(recs1[k], recs2[k]))
    bench.bench_reconstruction(files, tv_iters=4, **args)
    assert calls[4:] == ["tv", "tv"]


def test_finetune_two_cpu_processes(setup, tmp_path):
    """`accel finetune idm` under accelerate launch with 2 CPU processes (gloo DDP through the reversible backward)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "w2.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "accel.cli.idm", "finetune-idm", "--ratio", "0.5", "--steps", "1",
           "--iters", "2", "--crop", "32", "--batch-size", "1", "--prior", str(setup / "prior"), "--images", str(setup / "imgs"),
           "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    from accel.utils import load_checkpoint

    _, meta = load_checkpoint(out)
    assert meta["finetune_config"]["world_size"] == 2
