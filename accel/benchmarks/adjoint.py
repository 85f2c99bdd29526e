"""``accel bench adjoint``: accuracy, peak memory and time of every gradient method versus the number of steps.

For each N and method, one fresh subprocess (``isolate=True``) runs forward + backward once after a warm-up
and reports its peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before, on
CPU the resident-set high-water mark (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) above
the resident set before. Gradients for the initial noise, the class embeddings and all network weights are
compared with exact autograd through the same sampler (relative error and cosine). The ``cached`` method
differentiates through CG-Taylor (``sample_with_grad(..., options={"cache": ...})``): it is compared with autograd through
the same cached forward (``cached-autograd``), and every record also carries its cosine with the uncached
gradient (``cos_uncached``); ``accel/benchmarks/adjoint_cache.py`` adds interleaved timing and a threshold sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from accel.errors import AccelError

from .adjoint_report import TARGETS, observed_orders, plot, to_markdown  # noqa: F401  (the report's functions, importable from here)

METHOD_KWARGS: dict[str, dict[str, Any]] = {  # method=, and that method's options (accel.adjoint.METHODS)
    "autograd": dict(method="autograd"),
    "checkpoint": dict(method="checkpoint"),
    "discrete": dict(method="discrete"),
    "continuous": dict(method="continuous", order=1),
    "continuous-reconstruct": dict(method="continuous", order=1, reconstruct=True),
    "torchdiffeq": dict(method="torchdiffeq", ode_method="euler"),
    "autograd-2m": dict(method="autograd", sampler="deis2m"),
    "continuous-2": dict(method="continuous", order=2, sampler="deis2m"),
    "cached": dict(method="discrete", cache=True),
    "cached-autograd": dict(method="autograd", cache=True),
}
"""Benchmarked configurations. ``*-2m``/``-2`` run the second-order sampler and are compared with autograd through it;
``cached*`` sample with CG-Taylor (:attr:`BenchConfig.cache_threshold`)."""


@dataclass
class BenchConfig:
    """Settings of ``accel bench adjoint``.

    Attributes:
        model: shipped model name or local pipeline folder (a class-conditional DiT pipeline).
        steps: numbers of sampler steps N to sweep.
        methods: keys of :data:`METHOD_KWARGS`; references (autograd, autograd-2m) are added when needed.
        batch: images per run (each with classifier-free guidance, so the network sees 2 x batch).
        guidance_scale: classifier-free guidance weight inside the vector field.
        device: "cpu" or "cuda". dtype: "float32" or "float64".
        isolate: one subprocess per (method, N) for honest peak memory (slower); False measures in-process.
        seed: seeds the noise, labels and loss target.
        repeats: timed forward + backward runs per configuration; ``seconds`` is their median (the first
            run also gives the peak memory).
        cache_threshold: the CG-Taylor threshold of the ``cached`` methods; None takes the model's shipped
            setting (``accel_cache.json``, all its fields), a number replaces only its threshold.
        cache_preset: instead of the shipped default, a preset of ``accel_cache.json`` (quality, balanced, fast;
            the one for each N where the model has one) or its ``finetune`` entry.
    """

    model: str = "dit-digits"
    steps: tuple[int, ...] = (5, 10, 20, 50)
    methods: tuple[str, ...] = ("autograd", "checkpoint", "discrete", "continuous", "torchdiffeq", "continuous-2")
    batch: int = 2
    guidance_scale: float = 4.0
    device: str = "cpu"
    dtype: str = "float32"
    isolate: bool = True
    seed: int = 0
    repeats: int = 3
    cache_threshold: float | None = None
    cache_preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps, self.methods = tuple(int(n) for n in self.steps), tuple(self.methods)
        if not self.steps or min(self.steps) <= 0:
            raise AccelError(f"steps must be positive integers, got {self.steps}")
        unknown = [m for m in self.methods if m not in METHOD_KWARGS]
        if unknown:
            raise AccelError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_KWARGS)}")
        if self.batch <= 0 or self.repeats <= 0:
            raise AccelError(f"batch and repeats must be positive, got {self.batch} and {self.repeats}")
        if self.dtype not in ("float32", "float64") or self.device not in ("cpu", "cuda"):
            raise AccelError(f"dtype must be float32/float64 and device cpu/cuda; got {self.dtype}/{self.device}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise AccelError("device='cuda' was asked for but CUDA is not available; use --device cpu")
        if self.cache_preset not in (None, "quality", "balanced", "fast", "finetune"):
            raise AccelError(f"cache_preset must be quality, balanced, fast or finetune, got {self.cache_preset!r}")
        if self.cache_threshold is not None and not self.cache_threshold >= 0:
            raise AccelError(f"cache_threshold must be a number >= 0, got {self.cache_threshold}")

    def reference(self, method: str) -> str:
        if METHOD_KWARGS[method].get("cache"):
            return "cached-autograd"
        return "autograd-2m" if METHOD_KWARGS[method].get("sampler") == "deis2m" else "autograd"

    def runs(self) -> list[str]:
        refs = [self.reference(m) for m in self.methods]
        if any(METHOD_KWARGS[m].get("cache") for m in self.methods):
            refs.insert(0, "autograd")  # the uncached gradient, for the cached methods' fidelity
        return list(dict.fromkeys(refs + list(self.methods)))


# ------------------------------------------------------------------ one measured run
def _rss_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand memory that the allocator keeps after frees back to the OS (glibc malloc_trim), so that the
    next run's resident-set growth shows its own peak rather than reusing the warm-up's pages."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _flux_inputs(pipe: Any, cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """flux-shapes: (noise latents, T5 prompt embeddings (differentiable), target latents, (CLIP pooled,)).

    The loss pulls each sample towards the latents of a rendered scene of another prompt."""
    import numpy as np

    from accel.zoo import shapes

    rng = np.random.default_rng(cfg.seed)
    scenes = [shapes.random_scene(rng, 32, "single") for _ in range(2 * cfg.batch)]
    call = getattr(pipe, "accel_call_defaults", {})
    with torch.no_grad():
        emb, pooled, _ = pipe.encode_prompt([s.prompt for s in scenes[: cfg.batch]], prompt_2=None,
                                            max_sequence_length=call.get("max_sequence_length", 16))
        img = torch.from_numpy(np.stack([shapes.render(s, 32) for s in scenes[cfg.batch:]])).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = pipe.vae.encode(img).latent_dist.mode()
        target = (z - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(cfg.seed))
    return noise, emb, target, (pooled,)


def _unet_inputs(pipe: Any, cfg: BenchConfig) -> tuple[torch.Tensor, None, torch.Tensor, tuple[torch.Tensor, ...]]:
    """An unconditional U-Net (unet-natural): (noise, no condition, a smooth random target image, ())."""
    import torch.nn.functional as F

    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.batch, c, s, s, generator=gen)
    target = F.interpolate(torch.randn(cfg.batch, c, max(1, s // 8), max(1, s // 8), generator=gen), size=(s, s), mode="bilinear")
    return noise, None, target, ()


def _inputs(pipe: Any, cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Deterministic (noise (B,C,H,W), differentiable condition, loss target (B,C,H,W), fixed extra
    conditions): class embeddings (B,L,D) for a class-conditional DiT, T5 prompt embeddings for FLUX, none
    for an unconditional U-Net."""
    if hasattr(pipe, "text_encoder_2"):
        return _flux_inputs(pipe, cfg)
    if getattr(pipe, "unet", None) is not None:
        return _unet_inputs(pipe, cfg)
    from accel.samplers import class_embeddings
    from accel.zoo.digits import digits_dataset

    tr = pipe.transformer
    c, s = tr.config.in_channels, tr.config.sample_size
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.batch, c, s, s, generator=gen)
    labels = torch.arange(cfg.batch) % 10
    data, targets = digits_dataset(s)
    # the loss pulls each sample towards a real digit of the *next* class (a non-trivial gradient)
    idx = torch.stack([(targets == (int(l) + 1) % 10).nonzero()[0, 0] for l in labels])
    target = data[idx][:, :c]
    emb = class_embeddings(tr, labels).detach()
    return noise, emb, target, ()


def _load(cfg: BenchConfig) -> Any:
    from accel.caching.blocks import find_denoiser
    from accel.sampling import load_pipeline

    pipe = load_pipeline(cfg.model)
    dtype = getattr(torch, cfg.dtype)
    find_denoiser(pipe).to(device=cfg.device, dtype=dtype).eval().requires_grad_(True)
    return pipe


def cache_config(pipe: Any, cfg: BenchConfig, steps: int | None = None) -> Any:
    """The CG-Taylor setting of the ``cached`` methods: the model's shipped one, or its ``cache_preset`` (the one
    calibrated for ``steps`` where the model ships one), with ``cache_threshold`` if given."""
    from accel.caching import CGTaylorConfig
    from accel.caching.shipped import shipped_entry, shipped_settings

    if cfg.cache_preset == "finetune":
        settings = shipped_entry(pipe, "finetune")
    else:
        settings = shipped_settings(pipe, cfg.cache_preset, steps)
    if cfg.cache_threshold is not None:
        settings["threshold"] = float(cfg.cache_threshold)
    return CGTaylorConfig(**settings)


def gradient_fn(pipe: Any, cfg: BenchConfig, name: str) -> Callable[[int], tuple[tuple[torch.Tensor, ...], float]]:
    """``once(N)``: one forward + backward of method ``name``; returns (grads (noise, cond, weights), the
    fraction of steps forecast). An unconditional model's cond gradient is an empty tensor."""
    from accel.adjoint import sample_with_grad
    from accel.caching.blocks import find_denoiser

    dev, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    noise, emb, target, extra = _inputs(pipe, cfg)
    noise, target = noise.to(dev, dtype), target.to(dev, dtype)
    emb = emb.to(dev, dtype) if emb is not None else None
    extra = tuple(t.to(dev, dtype) for t in extra)
    params = [p for p in find_denoiser(pipe).parameters() if p.requires_grad]
    options = dict(METHOD_KWARGS[name])  # the method's options (accel.adjoint.METHODS), its name apart
    method = options.pop("method")
    cached = bool(options.get("cache"))
    settings: dict[int, Any] = {}  # per step count, read once (outside the timed calls after the first)

    def once(n: int) -> tuple[tuple[torch.Tensor, ...], float]:
        if cached:
            if n not in settings:
                settings[n] = cache_config(pipe, cfg, n)
            options["cache"] = settings[n]
        for p in params:
            p.grad = None
        x = noise.clone().requires_grad_()
        c = emb.clone().requires_grad_() if emb is not None else None
        computed: list[bool] = []
        out = sample_with_grad(pipe, x, (c, *extra) if extra else c, steps=n, guidance_scale=cfg.guidance_scale,
                               callback=lambda info: computed.append(info.get("computed", True)), method=method, options=options)
        ((out - target) ** 2).mean().backward()
        cg = c.grad if c is not None else torch.zeros(0)
        return (x.grad, cg, torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])), 1 - sum(computed) / max(1, len(computed))

    return once


def measure(pipe: Any, cfg: BenchConfig, name: str, steps: int, warmup: bool = True) -> dict[str, Any]:
    """Forward + backward once for method ``name``; returns grads (noise, cond, weights), seconds, peak MB and
    the fraction of steps forecast."""
    dev = torch.device(cfg.device)
    once = gradient_fn(pipe, cfg, name)

    if warmup:
        once(1)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _release_free_memory()
        base = _rss_kb("VmRSS")
        hwm_ok = _reset_hwm()
    times = []
    for r in range(cfg.repeats):
        t0 = time.perf_counter()
        res, forecast = once(steps)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if r == 0:
            grads = [g.detach().double().cpu() for g in res]
            if cuda:
                peak_mb: float | None = (torch.cuda.max_memory_allocated() - base) / 2**20
            else:
                hwm = _rss_kb("VmHWM") if hwm_ok else None
                peak_mb = (hwm - base) / 1024 if hwm is not None and base is not None else None
        del res
    return {"grads": grads, "seconds": sorted(times)[len(times) // 2], "peak_mb": peak_mb, "forecast_fraction": forecast}


def _worker(spec_path: str, out_path: str) -> None:
    """Subprocess entry: run one measurement and save its grads + stats (safetensors)."""
    from accel.utils import save_checkpoint

    spec = json.loads(Path(spec_path).read_text())
    cfg = BenchConfig(**{k: tuple(v) if k in ("steps", "methods") else v for k, v in spec["config"].items()})
    torch.manual_seed(cfg.seed)
    res = measure(_load(cfg), cfg, spec["name"], int(spec["steps"]))
    save_checkpoint(out_path, dict(zip(TARGETS, res["grads"])),
                    {k: res[k] for k in ("seconds", "peak_mb", "forecast_fraction")})


def _run_isolated(cfg: BenchConfig, name: str, steps: int) -> dict[str, Any]:
    from accel.utils import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.safetensors"
        spec.write_text(json.dumps({"config": asdict(cfg), "name": name, "steps": steps}))
        code = "import sys; from accel.benchmarks.adjoint import _worker; _worker(sys.argv[1], sys.argv[2])"
        proc = subprocess.run([sys.executable, "-c", code, str(spec), str(out)], capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise AccelError(f"benchmark worker for {name} at N={steps} failed: {last}")
        tensors, meta = load_checkpoint(out)
    return {"grads": [tensors[t] for t in TARGETS]} | {k: meta[k] for k in ("seconds", "peak_mb", "forecast_fraction")}


# ------------------------------------------------------------------ the sweep
def _compare(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    g, ref = g.reshape(-1), ref.reshape(-1)
    rel = float((g - ref).norm() / ref.norm().clamp_min(1e-300))
    cos = float(torch.dot(g, ref) / (g.norm() * ref.norm()).clamp_min(1e-300))
    return rel, cos


def run_bench(cfg: BenchConfig, progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Run the sweep; returns one record per (method, N, target) with method, steps, target, rel_error,
    cosine, peak_mb, seconds (and sampler/device/dtype)."""
    from accel.zoo import resolve

    resolve(cfg.model)  # a missing or unknown model fails here, with the zoo's message, not in a worker
    pipe = None if cfg.isolate else _load(cfg)
    runs = cfg.runs()
    total, done = len(runs) * len(cfg.steps), 0
    records: list[dict[str, Any]] = []
    for n in cfg.steps:
        results: dict[str, dict[str, Any]] = {}
        for name in runs:
            if progress is not None:
                progress(done, total, f"{name} N={n}")
            results[name] = _run_isolated(cfg, name, n) if cfg.isolate else measure(pipe, cfg, name, n)
            done += 1
            ref, plain = results.get(cfg.reference(name)), results.get("autograd")
            for j, target in enumerate(TARGETS):
                g = results[name]["grads"][j]
                if g.numel() == 0:  # an unconditional model has no condition to differentiate
                    continue
                rel, cos = _compare(g, ref["grads"][j])
                records.append({
                    "method": name, "steps": n, "target": target, "rel_error": rel, "cosine": cos,
                    "cos_uncached": _compare(g, plain["grads"][j])[1] if plain is not None else None,
                    "forecast_fraction": results[name]["forecast_fraction"],
                    "peak_mb": results[name]["peak_mb"], "seconds": results[name]["seconds"],
                    "sampler": METHOD_KWARGS[name].get("sampler", "euler"), "reference": cfg.reference(name),
                    "device": cfg.device, "dtype": cfg.dtype, "batch": cfg.batch, "isolated": cfg.isolate,
                    "cache_threshold": cfg.cache_threshold if METHOD_KWARGS[name].get("cache") else None,
                })
    if progress is not None:
        progress(total, total, "done")
    return records
