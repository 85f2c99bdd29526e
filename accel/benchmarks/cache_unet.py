"""``accel bench cache`` on U-Nets: CG-Taylor's shallow-path policy against the whole-U-Net forecast and DeepCache.

Two models:
- ``unet-natural`` (the shipped grayscale ``UNet2DModel``), sampled with DDIM (eta 0) through diffusers'
  ``DDIMPipeline``; quality is PSNR/SSIM of the 8-bit samples against the uncached ones with the same seeds;
- ``tiny-sd15``: a tiny random ``UNet2DConditionModel`` in Stable Diffusion 1.5's layout (the config of
  diffusers' own pipeline tests) driven by ``StableDiffusionPipeline`` with precomputed prompt embeddings and
  batched CFG: checks the mechanics (exact at threshold 0) and the speed; its PSNR (on latents) says little.

DeepCache (Ma et al. 2023) runs through its own PyPI package (``DeepCacheSDHelper``, uniform schedule) when
installed; ``deepcache-block`` is this module's re-implementation of the same uniform policy at block
granularity (conv_in, down block 0, the last up block and the head live; the input of the last up block
reused), which is the shallow path CG-Taylor's policy keeps with ``unet_split=1``.

Timing is interleaved: every method is set up on its own copy of the model, then each timing round calls
every method once (in a rotated order), so that drifting load on a shared machine hits all methods alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..utils import AccelError
from .cache import Method, pareto_plot
from .common import ExecutionCounter, results_markdown, write_json

UNET_THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
# High-fidelity points of the same policy: the deep part refreshed at least every ``cap + 1`` steps (the gate can
# add refreshes), one warm-up step, the last step not forced; its Taylor forecast replaces DeepCache's reuse.
UNET_CAPS = (2, 3, 4)
SYNTHETIC_MODELS = ("tiny-sd15",)


def default_unet_methods(thresholds: tuple[float, ...] = UNET_THRESHOLDS, peers: bool = True) -> list[Method]:
    ms = [Method("none")] + [Method("cg-taylor", {"threshold": t}) for t in thresholds]
    ms += [Method("cg-taylor", {"threshold": 0.3, "max_consecutive": c, "warmup_steps": 1, "full_last_step": False})
           for c in UNET_CAPS]
    if peers:
        ms += [Method("cg-taylor", {"threshold": 0.2, "unet_policy": "whole"})]
        if deepcache_available():
            ms += [Method("deepcache", {"cache_interval": n}) for n in range(2, 7)]
        ms += [Method("deepcache-block", {"cache_interval": n}) for n in range(2, 7)]
    return ms


def deepcache_available() -> bool:
    try:
        from DeepCache import DeepCacheSDHelper  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------- models


def tiny_sd15_pipeline(seed: int = 0) -> Any:
    """A random SD-1.5-layout pipeline: the tiny UNet2DConditionModel of diffusers' StableDiffusionPipeline
    tests (32/64 channels, cross-attention dim 32), DDIM, no VAE or text encoder (latents out)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, time_cond_proj_dim=None,
    ).eval()
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def unet_bench_setup(model: str) -> tuple[Callable[[], Any], Callable[[Any, int, int, int], np.ndarray], str]:
    """``(load, call, kind)``: a fresh pipeline per method, and ``call(pipe, n, steps, seed)`` -> float32 array."""
    if model == "tiny-sd15":
        def load() -> Any:
            p = tiny_sd15_pipeline()
            p.set_progress_bar_config(disable=True)
            return p

        def call(p: Any, n: int, steps: int, seed: int) -> np.ndarray:
            emb = torch.randn(n, 8, 32, generator=torch.Generator().manual_seed(seed + 10_000))
            neg = torch.randn(n, 8, 32, generator=torch.Generator().manual_seed(seed + 20_000))
            gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
            with torch.no_grad():
                out = p(prompt_embeds=emb, negative_prompt_embeds=neg, height=64, width=64, guidance_scale=7.5,
                        num_inference_steps=steps, generator=gens, output_type="latent").images
            return out.float().numpy()

        return load, call, "latents"

    from diffusers import DDIMPipeline, DDIMScheduler

    from ..sampling import load_pipeline

    def load_ddim() -> Any:
        src = load_pipeline(model)
        unet = getattr(src, "unet", None)
        if unet is None or type(unet).__name__ != "UNet2DModel":
            raise AccelError(f"{model!r} is not an unconditional UNet2DModel pipeline; the U-Net benchmark samples it with DDIMPipeline")
        p = DDIMPipeline(unet=unet.eval(), scheduler=DDIMScheduler.from_config(src.scheduler.config))
        p.set_progress_bar_config(disable=True)
        return p

    def call_ddim(p: Any, n: int, steps: int, seed: int) -> np.ndarray:
        gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        with torch.no_grad():
            return p(batch_size=n, generator=gens, num_inference_steps=steps, output_type="np").images

    return load_ddim, call_ddim, "images"


def is_unet_model(model: str) -> bool:
    """Whether ``accel bench cache --model`` should run the U-Net benchmark for this model."""
    if model in SYNTHETIC_MODELS:
        return True
    import json

    from ..zoo import resolve

    where = resolve(model)
    try:
        index = json.loads((where / "model_index.json").read_text())  # type: ignore[operator]
    except (TypeError, OSError, ValueError):
        return False
    return "unet" in index and "transformer" not in index


# --------------------------------------------------------------------------------------------- methods


class DeepCacheBlock:
    """DeepCache's uniform policy (Ma et al. 2023) re-implemented at block granularity as diffusers hooks:
    every ``interval``-th call runs in full, the others run only the shallow path (conv_in, down block 0, the
    last up block, the head) and reuse the deep part's output (the input of the last up block) unchanged."""

    def __init__(self, unet: torch.nn.Module, interval: int) -> None:
        from diffusers.hooks.hooks import HookRegistry, ModelHook

        from ..caching.unet import deep_split_blocks

        self.interval, self.calls, self.cached = interval, 0, None
        specs = deep_split_blocks(unet, 1)[1:]
        owner = self

        class Count(ModelHook):
            def new_forward(self, module: torch.nn.Module, *a: Any, **k: Any) -> Any:
                owner.full = owner.calls % owner.interval == 0 or owner.cached is None
                owner.calls += 1
                return self.fn_ref.original_forward(*a, **k)

        class Deep(ModelHook):
            def __init__(self, spec: Any, last: bool) -> None:
                super().__init__()
                self.spec, self.last = spec, last

            def new_forward(self, module: torch.nn.Module, *a: Any, **k: Any) -> Any:
                if owner.full:
                    out = self.fn_ref.original_forward(*a, **k)
                    if self.last:
                        owner.cached = out
                    return out
                return self.spec.passthrough(a, k, hidden=owner.cached if self.last else None)

        HookRegistry.check_if_exists_or_initialize(unet).register_hook(Count(), "deepcache_block")
        for i, s in enumerate(specs):
            HookRegistry.check_if_exists_or_initialize(s.module).register_hook(Deep(s, i == len(specs) - 1), "deepcache_block")

    def reset(self) -> None:
        self.calls, self.cached = 0, None


def apply_unet_method(pipe: Any, m: Method) -> Callable[[], None]:
    """Configure a fresh pipeline for one method; returns a function resetting its state between calls."""
    unet = pipe.unet
    if m.family == "none":
        return lambda: None
    if m.family == "cg-taylor":
        from .. import CGTaylorConfig, enable, reset

        enable(pipe, CGTaylorConfig(**m.params))
        return lambda: reset(pipe)
    if m.family == "deepcache":
        from DeepCache import DeepCacheSDHelper

        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=m.params["cache_interval"], cache_branch_id=m.params.get("cache_branch_id", 0))
        helper.enable()
        # Its state is the first timestep seen and the cached outputs (overwritten by the next full step):
        # a new call starts a new schedule once the first timestep is forgotten.
        return lambda: setattr(helper, "start_timestep", None)
    if m.family == "deepcache-block":
        return DeepCacheBlock(unet, m.params["cache_interval"]).reset
    raise AccelError(f"unknown U-Net method {m.family!r}")


# --------------------------------------------------------------------------------------------- run


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def _latent_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    peak = float(np.abs(b).max())
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


def run_unet_cache_bench(
    model: str = "unet-natural",
    steps: int = 50,
    num_images: int = 4,
    repeats: int = 3,
    seed: int = 0,
    methods: list[Method] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Every method on the same seeds; quality from one call each, time from ``repeats`` interleaved rounds."""
    import time

    from ..metrics import psnr, ssim

    methods = methods or default_unet_methods()
    if methods[0].family != "none":
        methods = [Method("none")] + [m for m in methods if m.family != "none"]
    load, call, kind = unet_bench_setup(model)
    total = len(methods) * (1 + repeats)
    done = 0
    entries: list[dict[str, Any]] = []
    for m in methods:
        if progress:
            progress(done, total, m.label)
        pipe = load()
        try:
            reset = apply_unet_method(pipe, m)
            deep = pipe.unet.mid_block if pipe.unet.mid_block is not None else pipe.unet.up_blocks[0]
            counter = ExecutionCounter(deep.resnets[0])  # a layer: runs only when the deep part really computes
            out = call(pipe, num_images, steps, seed)
            reset()
        except Exception as e:  # a peer that cannot run on this model is reported, not fatal
            msg = str(e).splitlines()[0] if str(e) else ""
            entries.append({"method": m, "error": f"{type(e).__name__}: {msg}"})
            done += 1 + repeats
            continue
        runs = counter.count
        counter.remove()
        entries.append({"method": m, "pipe": pipe, "reset": reset, "out": out, "times": [], "deep_runs": runs})
        done += 1
    live = [e for e in entries if "error" not in e]
    for r in range(repeats):
        order = live[r % len(live):] + live[: r % len(live)]
        for e in order:
            if progress:
                progress(done, total, f"timing {r + 1}/{repeats}: {e['method'].label}")
            t0 = time.perf_counter()
            call(e["pipe"], num_images, steps, seed)
            e["times"].append(time.perf_counter() - t0)
            e["reset"]()
            done += 1
    base = entries[0]
    if "error" in base:
        raise AccelError(f"the uncached run failed: {base['error']}")
    base_time = float(np.median(base["times"]))
    base_runs = base["deep_runs"]
    results: list[dict[str, Any]] = []
    for e in entries:
        m = e["method"]
        row: dict[str, Any] = {"method": m.family, "params": m.params, "label": m.label}
        if "error" in e:
            row["error"] = e["error"]
            results.append(row)
            continue
        med = float(np.median(e["times"]))
        row.update(seconds=med, times=e["times"], speedup=base_time / med,
                   forecast_fraction=round(1 - e["deep_runs"] / base_runs, 4) if base_runs else 0.0,
                   exact=bool(np.array_equal(e["out"], base["out"])))
        if kind == "images":
            a, b = _to_uint8(e["out"]), _to_uint8(base["out"])
            p = psnr(a, b)
            row["psnr"] = p if math.isfinite(p) else 99.0
            row["ssim"] = ssim(a[..., 0], b[..., 0])
        else:
            p = _latent_psnr(e["out"], base["out"])
            row["psnr"] = p if math.isfinite(p) else 99.0
        results.append(row)
    if progress:
        progress(total, total, "done")
    cfg = {"model": model, "sampler": "DDIM (eta 0)" if kind == "images" else "DDIM, CFG 7.5 (batched)", "steps": steps,
           "num_images": num_images, "repeats": repeats, "seed": seed, "torch_threads": torch.get_num_threads(),
           "timing": "interleaved rounds, median", "deepcache_package": deepcache_available()}
    return {"config": cfg, "results": results, "summary": summarize_unet(results)}


def summarize_unet(results: list[dict[str, Any]], levels: tuple[float, ...] = (30.0, 35.0, 40.0, 45.0)) -> dict[str, Any]:
    """Best speedup per family at PSNR >= each level."""
    out: dict[str, Any] = {}
    for level in levels:
        best: dict[str, Any] = {}
        for r in results:
            if "speedup" not in r or r["method"] == "none":
                continue
            fam = _family(r)
            if r["psnr"] >= level and r["speedup"] > best.get(fam, {}).get("speedup", 0):
                best[fam] = {"speedup": round(r["speedup"], 3), "psnr": round(r["psnr"], 2), "label": r["label"]}
        out[f"best_at_psnr_{level:g}"] = best
    return out


def _family(r: dict[str, Any]) -> str:
    """One curve per method and non-swept settings (the threshold, the refresh cap and its schedule settings, and
    DeepCache's interval are swept)."""
    if r["method"] != "cg-taylor":
        return r["method"]
    p = r["params"]
    swept = ("threshold", "unet_policy", "max_consecutive", "warmup_steps", "full_last_step")
    extra = "".join(f", {k}={v}" for k, v in p.items() if k not in swept)
    return f"cg-taylor ({p.get('unet_policy', 'shallow')}{extra})"


def write_unet_outputs(report: dict[str, Any], out_dir: Any, stem: str = "bench_cache_unet") -> dict[str, Any]:
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}_pareto.png"}
    write_json(paths["json"], report)
    rows = [dict(r, family=_family(r)) for r in report["results"] if "error" not in r]
    cols = [("label", "method", ""), ("speedup", "speedup", ".2f"), ("forecast_fraction", "deep part skipped", ".2f"),
            ("psnr", "PSNR dB", ".2f"), ("ssim", "SSIM", ".4f"), ("exact", "bit-exact", ""), ("seconds", "s/call", ".2f")]
    c = report["config"]
    md = (f"{c['model']}, {c['sampler']}, {c['steps']} steps, {c['num_images']} images, median of {c['repeats']} "
          f"interleaved timing rounds, {c['torch_threads']} thread(s). deepcache = the DeepCache PyPI package "
          f"(DeepCacheSDHelper, cache_branch_id 0, uniform); deepcache-block = accel's re-implementation of the same "
          f"policy at block granularity.\n\n")
    md += results_markdown(report["results"], cols)
    paths["md"].write_text(md)
    plot_rows = [dict(r, method=_family(r), params={k: v for k, v in r["params"].items() if k == "threshold"})
                 for r in rows]
    pareto_plot(plot_rows, paths["png"])
    return paths
