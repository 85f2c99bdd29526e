"""``accel bench cache --model flux-shapes``: cache methods on a trained text-to-image FLUX pipeline.

Every method gets its own copy of the pipeline; all of them generate the same prompts from the same
seeds. Quality is measured on the first (untimed) pass: PSNR / SSIM against the uncached images and the
flux-shapes scorer's accuracy (GenEval-style: colour, shape, count, relation). Timing is interleaved:
each repeat runs every method once, in turn, so that a slower or busier stretch of the run hits all
methods alike; the figure is the median over repeats.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch

from ..utils import AccelError
from .cache import Method, _reset_hooks, calibrate_magcache
from .common import ExecutionCounter, first_linear


def flux_methods(peers: bool = True) -> list[Method]:
    """The sweep of the flux-shapes benchmark: CG-Taylor, diffusers' caches and cache-dit's DBCache."""
    ms = [Method("none")] + [Method("cg-taylor", {"threshold": t}) for t in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)]
    # the paper's one error for the whole batch (a batch of 16 different prompts fails "any" more often)
    ms += [Method("cg-taylor", {"threshold": t, "batch_policy": "mean"}) for t in (0.05, 0.1, 0.2, 0.3)]
    ms += [Method("cg-taylor", {"threshold": t, "batch_policy": "mean", "warmup_steps": 2}) for t in (0.1, 0.15, 0.2)]
    ms += [Method("cg-taylor", {"threshold": 0.15, "batch_policy": "mean"})]
    # the last step forecast too (its full pass changed nothing measurable on other prompts and seeds), and a
    # second-order forecast of the last block: chosen on 32 other prompts (seed 4321) and noise seeds (500)
    ms += [Method("cg-taylor", {"threshold": t, "full_last_step": False}) for t in (0.3, 0.5)]
    ms += [Method("cg-taylor", {"threshold": 0.5, "full_last_step": False, "last_order": 2, "batch_policy": "mean"})]
    if not peers:
        return ms
    ms += [Method("fbcache", {"threshold": t}) for t in (0.1, 0.15, 0.2, 0.25, 0.4)]
    ms += [Method("taylorseer", {"cache_interval": n, "max_order": o}) for n, o in ((2, 1), (4, 1), (4, 2))]
    ms += [Method("magcache", {"threshold": t}) for t in (0.06, 0.16, 0.3)]
    ms += [Method("pab", {"spatial_attention_block_skip_range": 2}), Method("fastercache", {"spatial_attention_block_skip_range": 2})]
    # SeaCache with the scheduler position and a FLUX vision adapter (it needs both to skip anything), swept
    ms += [Method("seacache", {"threshold": t}) for t in (0.1, 0.25, 0.5)]
    ms += [Method("seacache", {"threshold": t, "max_consecutive_cached": 4}) for t in (0.25, 0.5, 1.0)]
    # cache-dit's DBCache: F1B0 (its fastest recommended setting; a model of 8 blocks has no room for F8B0), swept
    ms += [Method("cache-dit", {"Fn": 1, "Bn": 0, "residual_diff_threshold": t, "taylorseer": False}) for t in (0.1, 0.2, 0.3, 0.4)]
    ms += [Method("cache-dit", {"Fn": 1, "Bn": 0, "residual_diff_threshold": t, "taylorseer": True}) for t in (0.2, 0.3, 0.4)]
    return ms


def apply_flux_method(pipe: Any, m: Method, steps: int, mag_ratios: list[float] | None) -> None:
    """Configure a fresh FLUX pipeline for one method (FLUX's own block names, timestep callbacks)."""
    from .cache import apply_method

    model = pipe.transformer
    if m.family in ("none", "cg-taylor", "fbcache", "magcache"):
        return apply_method(pipe, m, steps, mag_ratios)
    from diffusers.hooks.hooks import HookRegistry

    if m.family != "cache-dit":
        HookRegistry.check_if_exists_or_initialize(model)
    now = lambda: pipe.current_timestep  # noqa: E731  (diffusers' timestep-range callbacks)
    if m.family == "taylorseer":
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        apply_taylorseer_cache(model, TaylorSeerCacheConfig(**m.params, disable_cache_before_step=3, taylor_factors_dtype=torch.float32))
    elif m.family == "pab":
        from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

        apply_pyramid_attention_broadcast(model, PyramidAttentionBroadcastConfig(**m.params, current_timestep_callback=now))
    elif m.family == "fastercache":
        from diffusers.hooks import FasterCacheConfig, apply_faster_cache

        apply_faster_cache(model, FasterCacheConfig(**m.params, current_timestep_callback=now, is_guidance_distilled=True,
                                                    tensor_format="BCHW"))
    elif m.family == "seacache":
        from diffusers.hooks import SeaCacheConfig, apply_sea_cache

        _pass_scheduler_position(pipe)
        apply_sea_cache(model, SeaCacheConfig(**m.params, raw_vision_callback=_flux_raw_vision(pipe)))
    elif m.family == "cache-dit":
        import cache_dit
        from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

        p = m.params
        cal = TaylorSeerCalibratorConfig(taylorseer_order=1) if p["taylorseer"] else None
        cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(Fn_compute_blocks=p["Fn"], Bn_compute_blocks=p["Bn"],
                                                                 residual_diff_threshold=p["residual_diff_threshold"],
                                                                 max_warmup_steps=3, num_inference_steps=steps),
                               calibrator_config=cal)
    else:
        raise AccelError(f"unknown method {m.family!r}")


def _pass_scheduler_position(pipe: Any) -> None:
    """Give SeaCache the step index, sigma and step count it needs in each ``cache_context``.

    FluxPipeline opens ``transformer.cache_context("cond")`` with the name only, and SeaCache then runs
    fail-open (never skips); a pipeline written for it passes where the denoising loop is. This adds those
    fields from the scheduler and the pipeline's current timestep, for this pipeline object only.
    """
    model, original = pipe.transformer, pipe.transformer.cache_context

    def cache_context(name: str, **kwargs: Any) -> Any:
        sched, t = pipe.scheduler, pipe.current_timestep
        if t is not None and not kwargs:
            i = int((sched.timesteps == t).nonzero()[0])  # FLUX's timesteps are distinct
            kwargs = {"step_index": i, "sigma": float(sched.sigmas[i]), "num_inference_steps": len(sched.timesteps)}
        return original(name, **kwargs)

    model.cache_context = cache_context


def _flux_raw_vision(pipe: Any) -> Callable[..., list[torch.Tensor]]:
    """SeaCache's vision adapter for FLUX: the packed latents unpacked to one (C, 1, H, W) tensor per sample."""
    def raw_vision(module: Any, args: tuple, kwargs: dict[str, Any]) -> list[torch.Tensor]:
        x = kwargs["hidden_states"]
        side = int(round(x.shape[1] ** 0.5)) * 2  # latent side: FLUX packs 2x2 patches into tokens
        z = type(pipe)._unpack_latents(x, side * pipe.vae_scale_factor, side * pipe.vae_scale_factor, pipe.vae_scale_factor)
        return [s.unsqueeze(1) for s in z]

    return raw_vision


def _score(images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    from ..zoo import shapes

    return shapes.summarise([shapes.score(img, p) for img, p in zip(images, prompts)])


def run_text_cache_bench(
    model: str = "flux-shapes",
    steps: int = 28,
    num_prompts: int = 64,
    batch_size: int = 16,
    repeats: int = 3,
    seed: int = 0,
    methods: list[Method] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    timing_prompts: int | None = None,
) -> dict[str, Any]:
    """Measure every method on the same prompts and seeds; ``{"config", "results", "summary"}``.

    Quality comes from one pass over all ``num_prompts``; each timed repeat runs the first
    ``timing_prompts`` of them (default: all), every method in turn.
    """
    from ..metrics import psnr, ssim
    from ..sampling import load_pipeline
    from ..zoo import shapes

    if num_prompts <= 0 or batch_size <= 0 or repeats <= 0:
        raise AccelError("num_prompts, batch_size and repeats must be positive")
    methods = methods or flux_methods()
    prompts = shapes.prompt_set(num_prompts, seed=1234)

    def load() -> Any:
        p = load_pipeline(model)
        p.set_progress_bar_config(disable=True)
        return p

    def run(p: Any, which: list[str], offset: int = 0) -> np.ndarray:
        kw = getattr(p, "accel_call_defaults", {})
        out = []
        for i in range(0, len(which), batch_size):
            chunk = which[i:i + batch_size]
            gens = [torch.Generator().manual_seed(seed + offset + i + j) for j in range(len(chunk))]
            out.append(p(chunk, num_inference_steps=steps, generator=gens, output_type="np", **kw).images)
            _reset_hooks(p.transformer)
        return (np.concatenate(out) * 255).round().clip(0, 255).astype(np.uint8)

    needs_mag = any(m.family == "magcache" for m in methods)
    # MagCache's ratios come from other prompts than the benchmark's, so it is not tuned on the test set
    mag = calibrate_magcache(load, lambda p: run(p, shapes.prompt_set(4, seed=99)[:1]), steps) if needs_mag else None

    entries: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    n_total = len(methods) * (1 + repeats)
    done = 0
    for m in methods:  # build, apply, first pass (quality; also the warm-up)
        if progress:
            progress(done, n_total, m.label)
        pipe = load()
        blocks = list(pipe.transformer.single_transformer_blocks)
        counter = ExecutionCounter(first_linear(blocks[len(blocks) // 2]))
        try:
            apply_flux_method(pipe, m, steps, mag)
            imgs = run(pipe, prompts)
        except Exception as e:  # a peer that cannot run on this model is reported, not fatal
            msg = str(e).splitlines()[0] if str(e) else ""
            results.append({"method": m.family, "params": m.params, "label": m.label, "error": f"{type(e).__name__}: {msg}"})
            done += 1 + repeats
            continue
        entries.append({"method": m, "pipe": pipe, "images": imgs, "counter": counter, "calls": counter.count, "times": []})
        done += 1
    timed = prompts[:timing_prompts] if timing_prompts else prompts
    for _ in range(repeats):  # interleaved timing
        for e in entries:
            if progress:
                progress(done, n_total, e["method"].label)
            t0 = time.perf_counter()
            run(e["pipe"], timed)
            e["times"].append(time.perf_counter() - t0)
            done += 1
    base = next((e for e in entries if e["method"].family == "none"), None)
    if base is None:
        raise AccelError("the method list needs 'none' (the uncached reference)")
    base_score = _score(base["images"], prompts)
    base_time = float(np.median(base["times"]))
    for e in entries:
        m = e["method"]
        sec = float(np.median(e["times"]))
        sc = _score(e["images"], prompts)
        p = psnr(e["images"], base["images"])
        row = {"method": m.family, "params": m.params, "label": m.label, "seconds": sec, "times": e["times"],
               "speedup": base_time / sec, "forecast_fraction": round(1 - e["calls"] / max(1, base["calls"]), 4),
               "psnr": p if math.isfinite(p) else 99.0, "ssim": ssim(e["images"], base["images"]),
               "accuracy": sc["accuracy"], "accuracy_change": sc["accuracy"] - base_score["accuracy"], "scores": sc}
        results.append(row)
        e["counter"].remove()
    if progress:
        progress(n_total, n_total, "done")
    cfg = {"model": model, "steps": steps, "num_prompts": num_prompts, "batch_size": batch_size, "repeats": repeats,
           "timing_prompts": len(timed), "seed": seed, "torch_threads": torch.get_num_threads(), "mag_ratios": mag, "prompts": prompts}
    return {"config": cfg, "results": results, "summary": summarize_text(results)}


def summarize_text(results: list[dict[str, Any]], min_psnr: float = 30.0, max_drop: float = 0.02) -> dict[str, Any]:
    """Per method family: the best speedup at PSNR >= min_psnr, and at accuracy within ``max_drop`` of uncached."""
    ok = [r for r in results if "speedup" in r and r["method"] != "none"]
    out: dict[str, Any] = {f"best_at_psnr_{min_psnr:g}": {}, f"best_at_accuracy_drop_{max_drop:g}": {}}
    for r in ok:
        for key, good in ((f"best_at_psnr_{min_psnr:g}", r["psnr"] >= min_psnr),
                          (f"best_at_accuracy_drop_{max_drop:g}", r["accuracy_change"] >= -max_drop)):
            if good and r["speedup"] > out[key].get(r["method"], {}).get("speedup", 0):
                out[key][r["method"]] = {k: r[k] for k in ("label", "speedup", "psnr", "accuracy", "accuracy_change")}
    base = next((r for r in results if r["method"] == "none"), None)
    if base is not None:
        out["uncached_accuracy"] = base["accuracy"]
        out["uncached_scores"] = base["scores"]
    zero = [r for r in ok if r["method"] == "cg-taylor" and r["params"] == {"threshold": 0.0}]
    if zero:
        out["cg_taylor_threshold0_overhead"] = 1 / zero[0]["speedup"] - 1
    return out


def pareto_plot_text(rows: list[dict[str, Any]], path: Any) -> None:
    """Two panels: speedup against PSNR and against the scorer's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120)
    fams = sorted({r["method"] for r in rows if r["method"] != "none"})
    for ax, key, xlabel in ((axes[0], "psnr", "PSNR vs uncached (dB, capped at 60)"), (axes[1], "accuracy", "scorer accuracy")):
        for fam in fams:
            pts = sorted((min(r[key], 60), r["speedup"]) for r in rows if r["method"] == fam)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if fam == "cg-taylor" else "o--", label=fam, alpha=0.85,
                    lw=2 if fam == "cg-taylor" else 1)
        ax.axhline(1, color="gray", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("wall-clock speedup (x)")
    base = next((r for r in rows if r["method"] == "none"), None)
    if base is not None:
        axes[1].axvline(base["accuracy"], color="gray", lw=0.8, ls=":")
    axes[0].axvline(30, color="gray", lw=0.8, ls=":")
    axes[0].legend(fontsize=7)
    fig.suptitle("flux-shapes: cache methods, speed against fidelity and against prompt accuracy")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_text_outputs(report: dict[str, Any], out_dir: Any) -> dict[str, Any]:
    """JSON, a Markdown table and the two-panel Pareto plot."""
    from pathlib import Path

    from .common import results_markdown, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench_cache.json", "md": out / "bench_cache.md", "png": out / "bench_cache_pareto.png"}
    write_json(paths["json"], report)
    rows = [r for r in report["results"] if "error" not in r]
    cols = [("label", "method", ""), ("speedup", "speedup", ".2f"), ("forecast_fraction", "forecast", ".2f"),
            ("psnr", "PSNR dB", ".2f"), ("ssim", "SSIM", ".4f"), ("accuracy", "accuracy", ".3f"),
            ("accuracy_change", "change", "+.3f"), ("seconds", "s/timed pass", ".2f")]
    md = results_markdown(report["results"], cols)
    paths["md"].write_text(md)
    pareto_plot_text(rows, paths["png"])
    return paths
