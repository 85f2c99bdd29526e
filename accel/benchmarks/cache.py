"""``accel bench cache``: CG-Taylor against no cache and diffusers' own cache hooks, measured in one run."""

from __future__ import annotations

import ast
import contextlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..utils import AccelError
from .common import ExecutionCounter, first_linear, median_time, results_markdown, write_json

DEFAULT_THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass
class Method:
    """One point of the sweep: a method name, its settings and a label for tables and plots."""

    family: str
    params: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile (inductor) the transformer after configuring the method

    @property
    def label(self) -> str:
        args = "(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")" if self.params else ""
        return self.family + args + (" +compile" if self.compile else "")


def default_methods(thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS, peers: bool = True, compile: bool = False) -> list[Method]:
    """The sweep; ``compile`` adds torch.compile'd rows for no cache and every CG-Taylor threshold."""
    ms = [Method("none")] + [Method("cg-taylor", {"threshold": t}) for t in thresholds]
    if compile:
        ms += [Method("none", compile=True)] + [Method("cg-taylor", {"threshold": t}, compile=True) for t in thresholds]
    ms += [Method("cg-taylor", {"threshold": t, "block0_order": 1}) for t in thresholds if t > 0][1::2]
    if peers:
        ms += [Method("fbcache", {"threshold": t}) for t in (0.02, 0.05, 0.1, 0.2, 0.4)]
        ms += [Method("taylorseer", {"cache_interval": n, "max_order": o}) for n in (2, 3, 4, 6) for o in (1, 2)]
        ms += [Method("taylorseer-lite", {"cache_interval": n, "max_order": 1}) for n in (2, 3, 4)]
        ms += [Method("magcache", {"threshold": t}) for t in (0.02, 0.06, 0.12, 0.24)]
        with contextlib.suppress(ImportError):
            import cache_dit  # noqa: F401

            ms += [Method("cache-dit", {"residual_diff_threshold": t, "taylorseer": ts}) for t in (0.08, 0.16, 0.24) for ts in (False, True)]
    return ms


def calibrate_magcache(load: Callable[[], Any], call: Callable[[Any], Any], steps: int) -> list[float]:
    """Run diffusers' MagCache calibration once and return its per-step magnitude ratios."""
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    pipe = load()
    apply_mag_cache(pipe.transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        call(pipe)
    lists = [ln for ln in buf.getvalue().splitlines() if ln.strip().startswith("[")]
    if not lists:
        raise AccelError("MagCache calibration printed no ratios")
    return [float(v) for v in ast.literal_eval(lists[-1].strip())]


def apply_method(pipe: Any, m: Method, steps: int, mag_ratios: list[float] | None) -> None:
    """Configure a fresh pipeline for one method."""
    model = pipe.transformer
    if m.family == "none":
        return
    if m.family != "cache-dit":
        from diffusers.hooks.hooks import HookRegistry

        # diffusers' block-level hooks need a cache context per call; the pipeline names its calls when the
        # transformer carries a hook registry.
        HookRegistry.check_if_exists_or_initialize(model)
    if m.family == "cg-taylor":
        from .. import CGTaylorConfig, enable

        enable(pipe, CGTaylorConfig(**m.params))
    elif m.family == "fbcache":
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        apply_first_block_cache(model, FirstBlockCacheConfig(**m.params))
    elif m.family in ("taylorseer", "taylorseer-lite"):
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        # diffusers' default patterns ("^transformer_blocks.*attn") do not fullmatch DiT's "attn1"/"ff":
        # name DiT's attention and MLP modules, as TaylorSeer forecasts them (Liu et al. 2025).
        ids = None if m.family == "taylorseer-lite" else [r"^transformer_blocks\.\d+\.attn1$", r"^transformer_blocks\.\d+\.ff$"]
        cfg = TaylorSeerCacheConfig(**m.params, disable_cache_before_step=3, taylor_factors_dtype=torch.float32,
                                    use_lite_mode=m.family == "taylorseer-lite", cache_identifiers=ids)
        apply_taylorseer_cache(model, cfg)
    elif m.family == "magcache":
        from diffusers.hooks import MagCacheConfig, apply_mag_cache

        apply_mag_cache(model, MagCacheConfig(threshold=m.params["threshold"], num_inference_steps=steps, mag_ratios=mag_ratios))
    elif m.family == "cache-dit":
        _apply_cache_dit(pipe, m.params)
    else:
        raise AccelError(f"unknown method {m.family!r}")


def _apply_cache_dit(pipe: Any, params: dict[str, Any]) -> None:
    import cache_dit
    from cache_dit import BlockAdapter, DBCacheConfig, ForwardPattern, TaylorSeerCalibratorConfig

    adapter = BlockAdapter(pipe=pipe, transformer=pipe.transformer, blocks=pipe.transformer.transformer_blocks,
                           forward_pattern=ForwardPattern.Pattern_3)
    cal = TaylorSeerCalibratorConfig(taylorseer_order=1) if params["taylorseer"] else None
    cache_dit.enable_cache(adapter, cache_config=DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0,
                                                                residual_diff_threshold=params["residual_diff_threshold"]),
                           calibrator_config=cal)


def _reset_hooks(model: torch.nn.Module) -> None:
    from ..caching.blocks import unwrap

    reg = unwrap(model).__dict__.get("_diffusers_hook")
    if reg is not None:
        reg.reset_stateful_hooks()


def run_cache_bench(
    model: str = "dit-digits",
    steps: int = 50,
    num_images: int = 20,
    repeats: int = 5,
    seed: int = 0,
    methods: list[Method] | None = None,
    guidance_scale: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Measure every method on the same seeds in one run; returns ``{"config", "results", "summary"}``."""
    from ..metrics import psnr, ssim
    from ..sampling import load_pipeline
    from ..utils import to_uint8
    from ..zoo.digits import DigitClassifier

    methods = methods or default_methods()
    labels = [i % 10 for i in range(num_images)]

    def load() -> Any:
        p = load_pipeline(model)
        p.set_progress_bar_config(disable=True)
        return p

    def call(p: Any) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(seed + i) for i in range(num_images)]
        kw = {"guidance_scale": guidance_scale} if guidance_scale is not None else {}
        return p(class_labels=labels, num_inference_steps=steps, generator=gens, output_type="pt", **kw).images

    needs_mag = any(m.family == "magcache" for m in methods)
    mag = calibrate_magcache(load, call, steps) if needs_mag else None
    clf = DigitClassifier()
    results: list[dict[str, Any]] = []
    base_imgs = None
    base_time = None
    for i, m in enumerate(methods):
        if progress:
            progress(i, len(methods), m.label)
        pipe = load()
        probe = first_linear(pipe.transformer.transformer_blocks[len(pipe.transformer.transformer_blocks) // 2])

        def once(pipe: Any = pipe) -> torch.Tensor:
            out = call(pipe)
            _reset_hooks(pipe.transformer)
            return out

        try:
            apply_method(pipe, m, steps, mag)
            if m.compile:
                torch._dynamo.reset()  # a fresh model per method: start from an empty compile cache
                pipe.transformer = torch.compile(pipe.transformer)
            for _ in range(2 if m.compile else 1):
                once()  # warm-up (allocations, lazy init, compilation), untimed
        except Exception as e:  # a peer that cannot run on this model is reported, not fatal
            msg = str(e).splitlines()[0] if str(e) else ""
            results.append({"method": m.family, "params": m.params, "label": m.label, "error": f"{type(e).__name__}: {msg}"})
            continue
        counter = ExecutionCounter(probe)
        med, times, out = median_time(once, repeats)
        counter.remove()
        fraction = 1 - counter.count / (repeats * steps)
        factor_bytes = None
        if m.family == "cg-taylor":
            from .. import stats

            st = stats(pipe)
            factor_bytes = st.factor_bytes
            if m.compile:  # a forward hook inside a compiled graph does not count calls: use the cache's own record
                fraction = st.forecast_fraction
        elif m.compile:
            fraction = 0.0
        imgs = to_uint8(out)
        if m.family == "none" and not m.compile:
            base_imgs, base_time = imgs, med
        row = {"method": m.family + ("+compile" if m.compile else ""), "params": m.params, "label": m.label,
               "seconds": med, "times": times, "forecast_fraction": round(fraction, 4),
               "accuracy": clf.accuracy(out, labels)}
        if factor_bytes is not None:
            row["factor_bytes"] = factor_bytes
            row["factor_mib"] = round(sum(factor_bytes.values()) / 2**20, 3)
        if base_imgs is not None:
            row["speedup"] = base_time / med
            p = psnr(imgs, base_imgs)
            row["psnr"] = p if math.isfinite(p) else 99.0
            row["ssim"] = ssim(imgs[..., 0], base_imgs[..., 0])
        results.append(row)
    if progress:
        progress(len(methods), len(methods), "done")
    torch._dynamo.reset()
    cfg = {"model": model, "steps": steps, "num_images": num_images, "repeats": repeats, "seed": seed,
           "torch_threads": torch.get_num_threads(), "mag_ratios": mag}
    return {"config": cfg, "results": results, "summary": summarize(results)}


def summarize(results: list[dict[str, Any]], min_psnr: float = 30.0) -> dict[str, Any]:
    """Best speedup at PSNR >= min_psnr per family, and CG-Taylor's overhead at threshold 0."""
    best: dict[str, Any] = {}
    for r in results:
        if "speedup" not in r or r["method"] == "none":
            continue
        if r["psnr"] >= min_psnr and r["speedup"] > best.get(r["method"], {}).get("speedup", 0):
            best[r["method"]] = {"speedup": r["speedup"], "psnr": r["psnr"], "label": r["label"], "accuracy": r["accuracy"]}
    out: dict[str, Any] = {f"best_at_psnr_{min_psnr:g}": best}
    zero = [r for r in results if r["method"] == "cg-taylor" and r["params"].get("threshold") == 0 and len(r["params"]) == 1]
    if zero:
        out["cg_taylor_threshold0_overhead"] = 1 / zero[0]["speedup"] - 1
    base = [r for r in results if r["method"] == "none"]
    if base:
        out["uncached_accuracy"] = base[0]["accuracy"]
    comp = [r for r in results if r["method"] == "none+compile" and "speedup" in r]
    if comp and "cg-taylor" in best:
        both = best.get("cg-taylor+compile", {}).get("speedup")
        out["compile_x_cache"] = {"compile": comp[0]["speedup"], "cache": best["cg-taylor"]["speedup"], "both": both,
                                  "both_over_cache": both / best["cg-taylor"]["speedup"] if both else None}
    return out


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """JSON, Markdown table and the Pareto plot (speedup vs PSNR) as PNG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench_cache.json", "md": out_dir / "bench_cache.md", "png": out_dir / "bench_cache_pareto.png"}
    write_json(paths["json"], report)
    rows = [r for r in report["results"] if "error" not in r]
    cols = [("label", "method", ""), ("speedup", "speedup", ".2f"), ("forecast_fraction", "forecast", ".2f"),
            ("psnr", "PSNR dB", ".2f"), ("ssim", "SSIM", ".4f"), ("accuracy", "digit acc", ".3f"), ("seconds", "s/call", ".3f")]
    if any("factor_mib" in r for r in rows):
        cols.append(("factor_mib", "factors MiB", ".3f"))
    md = results_markdown(report["results"], cols)
    paths["md"].write_text(md)
    pareto_plot(rows, paths["png"])
    return paths


def pareto_plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    def family(r: dict[str, Any]) -> str:  # one curve per method and non-swept settings
        extra = {k: v for k, v in r["params"].items() if k not in ("threshold", "cache_interval", "residual_diff_threshold")}
        return r["method"] + ("".join(f", {k}={v}" for k, v in extra.items()) if extra else "")

    fams = sorted({family(r) for r in rows if r["method"] != "none"})
    for fam in fams:
        pts = sorted((min(r["psnr"], 60), r["speedup"]) for r in rows if family(r) == fam and "speedup" in r)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if fam.startswith("cg-taylor") else "o--", label=fam, alpha=0.85)
    ax.axvline(30, color="gray", lw=0.8, ls=":")
    ax.axhline(1, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("PSNR vs uncached (dB, capped at 60)")
    ax.set_ylabel("wall-clock speedup (x)")
    ax.set_title("Cache methods: speed vs fidelity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
