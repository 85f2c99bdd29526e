"""``accel bench idm``: training memory / time per memory mode and T, and Set11 reconstruction quality.

Memory is measured in a fresh subprocess per configuration (``python -m accel.benchmarks.idm``): the
model is built, its gradients allocated and one warm-up step run on a tiny 32x32 input (so that library
code pages and kernel caches, a fixed cost, are already resident), then one forward + backward runs at the
benchmark size and the growth of the peak is recorded -- the process's peak resident size (VmHWM, reset
through /proc/self/clear_refs) on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU.  On the CPU the
worker runs with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so freed tensors go
back to the OS and the resident peak tracks the live tensors, not the allocator's retained heap; every
mode is measured the same way.  The time is the mean of ``repeats`` further steps, run after one untimed
step with glibc told to keep freed memory again (so page faults from the measuring set-up do not count).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from accel.errors import AccelError

MODES = ("plain", "checkpoint", "reversible")


def _vm(field: str) -> float:
    """A /proc/self/status field in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AccelError(f"{field} not in /proc/self/status")


def _retain_heap() -> None:
    """For timing: let glibc keep freed memory (mmap threshold 32 MiB, no trimming), as in steady state."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def measure_step(mode: str, T: int, size: int = 128, batch: int = 1, device: str = "cpu", repeats: int = 2,
                 unet_overrides: dict | None = None) -> dict[str, Any]:
    """Peak memory growth (MB) and time (s) of one IDM training step; call in a fresh process."""
    from diffusers import DDPMScheduler

    from accel.invertible.idm import IDM
    from accel.invertible.operator import BlockCS, CSConfig
    from accel.zoo.unet_natural.recipe import SCHEDULER_CONFIG, build_unet

    torch.manual_seed(0)
    idm = IDM(build_unet(**(unet_overrides or {})), DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod, steps=T, mode=mode).to(device).train()
    for p in idm.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    cuda = device.startswith("cuda")

    def data(side: int) -> tuple[torch.Tensor, Any]:
        op = BlockCS(CSConfig(0.1), side, side, device=device)
        x = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0)).to(device)
        return x, op

    def step() -> None:
        (idm(op.A(x), op) - x).abs().mean().backward()
        if cuda:
            torch.cuda.synchronize()

    x, op = data(32)
    step()  # warm-up at a tiny size: loads code and kernel caches, allocates little
    x, op = data(size)
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        base = _vm("VmRSS")
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else _vm("VmHWM") - base
    times = []
    if repeats > 0:
        _retain_heap()
        step()  # untimed: lets the allocator settle, as it does in a long training run
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "T": T, "peak_mb": round(peak, 1), "seconds": round(sum(times) / len(times) if times else first, 4),
            "first_seconds": round(first, 4), "size": size, "batch": batch, "device": device, "threads": torch.get_num_threads()}


def bench_memory(Ts: tuple[int, ...] = (1, 3, 5, 10), modes: tuple[str, ...] = MODES, size: int = 128, batch: int = 1,
                 device: str = "cpu", repeats: int = 2, unet_overrides: dict | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 on_record: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """One subprocess per (mode, T): memory records ``{mode, T, peak_mb, seconds, ...}``.

    ``on_record(records so far)`` is called after each configuration (the CLI saves them, so that a run
    stopped by a time limit keeps what it measured).
    """
    jobs = [(m, t) for t in Ts for m in modes]
    out = []
    for i, (mode, T) in enumerate(jobs):
        args = json.dumps({"mode": mode, "T": T, "size": size, "batch": batch, "device": device, "repeats": repeats, "unet_overrides": unet_overrides})
        env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
        proc = subprocess.run([sys.executable, "-m", "accel.benchmarks.idm", args], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise AccelError(f"memory benchmark for mode={mode} T={T} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if on_record is not None:
            on_record(out)
        if progress is not None:
            progress(i + 1, len(jobs), f"{mode} T={T}: {out[-1]['peak_mb']:.0f} MB, {out[-1]['seconds']:.2f} s")
    return out


@functools.lru_cache(maxsize=None)
def _content_hash(path: str) -> str:
    """sha256 of a file's bytes (stable across checkouts, unlike modification times)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_id(path: str | Path | None) -> str | None:
    """Identity of an input file (weights, prior) for the cache key: the hash of its content."""
    return None if path is None else _content_hash(str(Path(path).resolve()))


@functools.lru_cache(maxsize=None)
def _pixels_hash(path: str) -> str:
    """sha256 of a test image as the benchmark measures it (grey as is, colour on Y): a new reading of a
    file changes its cache keys, and only of the files whose pixels it changes."""
    import hashlib

    from accel.invertible.data import load_image

    pixels, space = load_image(path, "y", warn=lambda message: None)
    h = hashlib.sha256(f"{space} {pixels.shape} {pixels.dtype}".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def _prior_id(prior: str) -> str:
    """Identity of a prior (shipped name or pipeline folder): the hash of its U-Net weights when they are found."""
    from accel.zoo import MODELS

    folder = MODELS[prior].weights if prior in MODELS else Path(prior)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    return _file_id(weights) if weights.is_file() else prior


def _cache_deps(method: str, kw: dict[str, Any], device: str, prior: str, idm_weights: Path) -> dict[str, Any]:
    """What a cached reconstruction of ``method`` depends on besides the image and ratio (hashes files: cache only)."""
    deps: dict[str, Any] = {"kw": kw, "device": device}
    if method == "ddnm":
        deps["prior"] = _prior_id(prior)
    if method == "idm" and Path(idm_weights).is_file():  # missing weights: reconstruct() raises the clear error
        deps["weights"] = _file_id(idm_weights)
    return deps


def _cache_key(method: str, ratio: float, image: Path, settings: dict[str, Any]) -> str:
    """A file name for one reconstruction that changes whenever anything it depends on changes."""
    import hashlib

    blob = json.dumps({"method": method, "ratio": ratio, "pixels": _pixels_hash(str(Path(image).resolve()))} | settings, sort_keys=True, default=str)
    return f"{method}-{ratio:g}-{image.stem}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.safetensors"


def announce_cached(images: list[Path], ratios: tuple[float, ...], methods: tuple[str, ...], weights: dict[float, str | Path] | None,
                    prior: str, ddnm_steps: int, tv_iters: int, device: str, cache_dir: str | Path) -> int:
    """Count the reconstructions :func:`bench_reconstruction` will find in ``cache_dir`` and, if any, announce that the
    benchmark resumes ("resuming from reconstruction 12 of 36 (DIR)"); returns the count."""
    from accel.training import announce_resume

    from accel.invertible.weights import shipped_path

    kw = _method_settings(ddnm_steps, tv_iters)
    hits = 0
    for ratio in ratios:
        for method in methods:
            w = (weights or {}).get(ratio) if method == "idm" else None
            deps = _cache_deps(method, kw[method], device, prior, w if w is not None else shipped_path(ratio))
            hits += sum((Path(cache_dir) / _cache_key(method, ratio, path, deps)).exists() for path in images)
    if hits:
        announce_resume(cache_dir, hits, len(images) * len(ratios) * len(methods), what="reconstruction")
    return hits


def _method_settings(ddnm_steps: int, tv_iters: int) -> dict[str, dict[str, Any]]:
    return {"tv": {"iters": tv_iters}, "ddnm": {"steps": ddnm_steps}, "atb": {}, "idm": {}}


def bench_reconstruction(images: list[Path], ratios: tuple[float, ...] = (0.1, 0.3, 0.5), methods: tuple[str, ...] = ("atb", "tv", "ddnm", "idm"),
                         weights: dict[float, str | Path] | None = None, prior: str = "unet-natural", ddnm_steps: int = 100,
                         tv_iters: int = 300, device: str = "cpu", progress: Callable[[int, int, str], None] | None = None,
                         cache_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], dict[tuple[str, float], list]]:
    """Mean PSNR (0-255) / SSIM / seconds per image for each (method, ratio); also the reconstructions.

    The CS literature's protocol: greyscale images are measured and scored as they are, colour ones on the
    Y channel of BT.601 YCbCr.  ``cache_dir``: keep every reconstruction (image, PSNR, SSIM, seconds) there
    as a safetensors file keyed by everything it depends on (settings, the hash of the image's pixels as
    measured, the content hashes of the IDM weights and the prior), and reuse it on the next run: an
    interrupted or extended benchmark (a new ratio, new IDM weights) recomputes only what is missing.
    Cached seconds are those measured when it was computed.  An entry without an image (figures seeded
    from an earlier report) gives None in the returned reconstructions and its ``source`` in ``per_image``.
    """
    from accel.utils import load_checkpoint, save_checkpoint

    from accel.invertible.reconstruct import reconstruct
    from accel.invertible.weights import shipped_path

    kw = _method_settings(ddnm_steps, tv_iters)
    records, recs = [], {}
    total, done = len(images) * len(ratios) * len(methods), 0
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    for ratio in ratios:
        for method in methods:
            rows = []
            w = (weights or {}).get(ratio) if method == "idm" else None
            deps = _cache_deps(method, kw[method], device, prior, w if w is not None else shipped_path(ratio)) if cache is not None else {}
            for path in images:
                hit = cache / _cache_key(method, ratio, path, deps) if cache is not None else None
                source = None
                if hit is not None and hit.exists():
                    tensors, meta = load_checkpoint(hit)
                    image, p, q, sec = tensors["image"].numpy() if "image" in tensors else None, meta["psnr"], meta["ssim"], meta["seconds"]
                    source = meta.get("source")  # an entry copied from an earlier report names it and has no image
                else:
                    r = reconstruct(path, ratio, weights=w, method=method, prior=prior, device=device, channel="y", **kw[method])
                    image, p, q, sec = r.image, r.psnr, r.ssim, r.seconds
                    if hit is not None:
                        save_checkpoint(hit, {"image": torch.from_numpy(np.ascontiguousarray(image))}, {"psnr": p, "ssim": q, "seconds": sec})
                rows.append((path.stem, p, q, sec, source))
                recs.setdefault((method, ratio), []).append(image)
                done += 1
                if progress is not None:
                    progress(done, total, f"{method} {ratio:g} {path.stem}: {p:.2f} dB")
            n = len(rows)
            records.append({"method": method, "ratio": ratio, "psnr": round(sum(r[1] for r in rows) / n, 3),
                            "ssim": round(sum(r[2] for r in rows) / n, 4), "seconds": round(sum(r[3] for r in rows) / n, 4),
                            "per_image": {r[0]: {"psnr": round(r[1], 3), "ssim": round(r[2], 4)} | ({"source": r[4]} if r[4] else {}) for r in rows}})
    return records, recs


def targets(memory: list[dict[str, Any]], recon: list[dict[str, Any]]) -> dict[str, Any]:
    """Check IDM's targets (memory saved at T = 3 and 10, reconstruction quality) against measured records (missing data -> None)."""
    out: dict[str, Any] = {}
    mem = {(r["mode"], r["T"]): r for r in memory}
    for T, goal in ((3, 85.0), (10, 93.8)):
        p, r = mem.get(("plain", T)), mem.get(("reversible", T))
        if p and r and p["peak_mb"] > 0:
            red = 100 * (1 - r["peak_mb"] / p["peak_mb"])
            out[f"memory_reduction_T{T}_pct"] = round(red, 1)
            out[f"memory_reduction_T{T}_ok"] = red >= goal and r["seconds"] <= 2 * p["seconds"]
    rec = {(r["method"], r["ratio"]): r for r in recon}
    for ratio in sorted({r["ratio"] for r in recon}):
        idm = rec.get(("idm", ratio))
        if idm is None:
            continue
        others = [r for (m, q), r in rec.items() if q == ratio and m != "idm"]
        out[f"idm_best_at_{ratio:g}"] = all(idm["psnr"] > o["psnr"] for o in others)
        d = rec.get(("ddnm", ratio))
        if d is not None:
            out[f"idm_minus_ddnm_db_at_{ratio:g}"] = round(idm["psnr"] - d["psnr"], 2)
            out[f"idm_speedup_over_ddnm_at_{ratio:g}"] = round(d["seconds"] / max(idm["seconds"], 1e-9), 2)
    return out


if __name__ == "__main__":  # worker: one memory measurement per fresh process
    kw = json.loads(sys.argv[1])
    print(json.dumps(measure_step(**kw)))
