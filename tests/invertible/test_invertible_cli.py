"""CLI of accel.invertible (cli/idm.py) end to end on a tiny random prior: finetune, reconstruct, bench."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from accel.errors import AccelError

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8, sample_size=32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from accel.zoo.unet_natural.recipe import build_pipeline, build_unet

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


def test_bench_recon_with_memory_from_an_earlier_report(setup, tmp_path):
    """--what recon --memory-from: the earlier report's memory records (and their targets), new reconstructions."""
    memory = [{"mode": m, "T": 3, "peak_mb": mb, "seconds": sec, "size": 32, "batch": 1, "device": "cpu"}
              for m, mb, sec in (("plain", 100.0, 1.0), ("reversible", 10.0, 1.5))]
    (tmp_path / "old.json").write_text(json.dumps({"settings": {}, "memory": memory, "reconstruction": []}))
    run_ok("bench-idm", "--what", "recon", "--memory-from", tmp_path / "old.json", "--json", tmp_path / "new.json",
           "--markdown", tmp_path / "new.md", "--methods", "atb", "--ratios", "0.3", "--images", setup / "imgs")
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["memory"] == memory and new["settings"]["memory_from"] == "old.json" and new["targets"]["memory_reduction_T3_pct"] == 90.0
    assert [r["method"] for r in new["reconstruction"]] == ["atb"] and "reversible" in (tmp_path / "new.md").read_text()
    (tmp_path / "nomem.json").write_text(json.dumps(new | {"memory": []}))
    for args, msg in [(("bench-idm", "--what", "all", "--memory-from", tmp_path / "old.json"), "use it with --what recon"),
                      (("bench-idm", "--what", "recon", "--memory-from", tmp_path / "nomem.json"), "has no memory records"),
                      (("bench-idm", "--what", "recon", "--memory-from", setup / "imgs" / "im0.png"), "cannot read memory records")]:
        res = invoke(*args)
        assert res.exit_code != 0 and isinstance(res.exception, AccelError) and msg in str(res.exception), res.output


def test_bench_memory_reports_each_record_as_it_comes():
    """on_record sees the records so far after each configuration (the CLI saves them: a run cut short keeps them)."""
    from accel.benchmarks.idm import bench_memory

    seen = []
    recs = bench_memory((1,), ("plain", "reversible"), 32, 1, "cpu", 0, TINY, on_record=lambda r: seen.append([x["mode"] for x in r]))
    assert seen == [["plain"], ["plain", "reversible"]] and [r["mode"] for r in recs] == ["plain", "reversible"]


def test_bench_cache_reuses_and_invalidates(setup, tmp_path, monkeypatch, caplog):
    """--cache-dir: a second run recomputes nothing (and says it resumes); new settings (TV iterations) recompute."""
    import importlib

    from accel.benchmarks import idm as bench

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


def _psnr_of(output: str) -> str:
    return output.split("PSNR")[1].split("dB")[0].strip()


def test_reconstruct_grey_storages_alike(tmp_path):
    """L, a grey palette (P), RGB with equal channels and LA give the same grey reconstruction at full range."""
    from test_invertible_data import grey_levels, grey_storages

    from accel.invertible.reconstruct import reconstruct

    levels = grey_levels()
    files = grey_storages(tmp_path, levels)
    outs = {}
    for mode, f in files.items():
        res = invoke("reconstruct", f, "--ratio", 0.3, "--out", tmp_path / f"rec_{mode}.png")
        assert res.exit_code == 0, (res.output, res.exception)
        assert "on grey:" in res.stdout and res.stderr.count("warning:") == (1 if mode == "LA" else 0), (mode, res.stderr)
        outs[mode] = (_psnr_of(res.stdout), np.asarray(Image.open(tmp_path / f"rec_{mode}.png")))
        assert Image.open(tmp_path / f"rec_{mode}.png").mode == "L"
    ref = reconstruct(levels / np.float32(255), 0.3)
    for mode, (p, png) in outs.items():
        assert p == f"{ref.psnr:.2f}" and np.array_equal(png, np.round(ref.image.astype(np.float64) * 255)), mode


def test_reconstruct_colour_channel_by_channel(tmp_path):
    """RGB in, RGB out: each channel measured at the ratio and reconstructed as a grey image would be."""
    from accel.invertible.data import psnr, rgb_to_y
    from accel.invertible.reconstruct import load_measurements, reconstruct

    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([0.5 + 0.4 * np.sin(xx / 5), 0.5 + 0.4 * np.cos(yy / 4), (xx + yy) / 112], -1)
    rgb8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(rgb8).save(tmp_path / "c.png")
    orig = rgb8 / np.float32(255)
    out = run_ok("reconstruct", tmp_path / "c.png", "--ratio", 0.3, "--out", tmp_path / "rec.png", "--save-measurements", tmp_path / "m.safetensors")
    png = np.asarray(Image.open(tmp_path / "rec.png"))
    assert "on RGB:" in out and Image.open(tmp_path / "rec.png").mode == "RGB"
    per = [reconstruct(orig[..., c], 0.3) for c in range(3)]
    for c in range(3):
        assert per[c].space == "grey" and np.array_equal(png[..., c], np.round(per[c].image.astype(np.float64) * 255))
        assert psnr(png[..., c] / 255.0, orig[..., c]) == pytest.approx(psnr(np.round(per[c].image * 255) / 255, orig[..., c]))
    mse = np.mean([np.mean(((per[c].image - orig[..., c]) * 255.0) ** 2) for c in range(3)])
    assert _psnr_of(out) == f"{10 * np.log10(255**2 / mse):.2f}"
    # the three measurement sets are one file; reconstructing from it gives the same image and figure
    y, cs, size, space = load_measurements(tmp_path / "m.safetensors")
    assert y.shape[0] == 3 and space == "rgb" and size == (48, 64) and torch.equal(y[1:2], per[1].y)
    again = run_ok("reconstruct", tmp_path / "c.png", "--measurements", tmp_path / "m.safetensors", "--out", tmp_path / "rec2.png")
    assert _psnr_of(again) == _psnr_of(out) and np.array_equal(np.asarray(Image.open(tmp_path / "rec2.png")), png)
    # --channel y: the literature's protocol, a grey Y image scored on Y
    out_y = run_ok("reconstruct", tmp_path / "c.png", "--ratio", 0.3, "--channel", "y", "--out", tmp_path / "rec_y.png")
    ref_y = reconstruct(np.clip(rgb_to_y(orig), 0, 1).astype(np.float32), 0.3)
    assert "on Y of BT.601 YCbCr:" in out_y and _psnr_of(out_y) == f"{ref_y.psnr:.2f}" and Image.open(tmp_path / "rec_y.png").mode == "L"
    for args, msg in [
        (("reconstruct", tmp_path / "c.png", "--measurements", tmp_path / "m.safetensors", "--channel", "y"), "drop --channel y"),
        (("reconstruct", tmp_path / "c.png", "--ratio", 0.3, "--channel", "rgb"), "channel must be one of auto, y"),
    ]:
        res = invoke(*args)
        assert res.exit_code != 0 and isinstance(res.exception, AccelError) and msg in str(res.exception), (args, res.output)


def test_reconstruct_16_bit_measures_every_level(tmp_path):
    """A 16-bit grey image is measured at 16 bits (not rounded to 8) and written back as a 16-bit PNG."""
    from accel.invertible.reconstruct import load_measurements, reconstruct

    yy, xx = np.mgrid[0:40, 0:48]
    levels = np.round(32767.5 + 30000 * np.sin(xx / 4.0) * np.cos(yy / 6.0)).astype(np.uint16) | 1  # odd: no 8-bit level
    Image.fromarray(levels).save(tmp_path / "s.png")
    run_ok("reconstruct", tmp_path / "s.png", "--ratio", 0.3, "--out", tmp_path / "rec.png", "--save-measurements", tmp_path / "m.safetensors")
    y = load_measurements(tmp_path / "m.safetensors")[0]
    exact = reconstruct(levels / np.float32(65535), 0.3)
    eight = reconstruct(np.round(levels / 257.0).astype(np.float32) / 255, 0.3)
    assert torch.equal(y, exact.y) and not torch.equal(y, eight.y)
    rec = Image.open(tmp_path / "rec.png")
    assert rec.mode == "I;16" and np.array_equal(np.asarray(rec), np.round(exact.image.astype(np.float64) * 65535))


def test_measurement_files_of_format_1_still_load(tmp_path):
    from accel.invertible.operator import CSConfig
    from accel.invertible.reconstruct import load_measurements
    from accel.utils import save_checkpoint

    y = torch.randn(1, 4, 103)
    save_checkpoint(tmp_path / "old.safetensors", {"y": y}, {"format": "accel-cs-measurements/1", "cs": CSConfig(0.1).to_dict(), "height": 64, "width": 64})
    got, cs, size, space = load_measurements(tmp_path / "old.safetensors")
    assert torch.equal(got, y) and cs == CSConfig(0.1) and size == (64, 64) and space == "grey"


def test_bench_cache_key_follows_the_pixels(tmp_path):
    """The cache key hashes the image as measured: the same levels in another file format share it; a palette
    grey file is keyed by its grey levels, which the old Y reading did not measure."""
    from test_invertible_data import grey_levels, grey_storages

    from accel.benchmarks import idm as bench

    files = grey_storages(tmp_path, grey_levels())
    Image.fromarray(grey_levels()).save(tmp_path / "grey_L.tif")
    key = lambda f: bench._cache_key("tv", 0.3, f, {"kw": {}}).split("-")[-1]
    assert key(files["L"]) == key(tmp_path / "grey_L.tif") == key(files["P"]) == key(files["RGB"])
    Image.fromarray(np.clip(grey_levels().astype(int) + 1, 0, 255).astype(np.uint8)).save(tmp_path / "other.png")
    assert key(tmp_path / "other.png") != key(files["L"])
