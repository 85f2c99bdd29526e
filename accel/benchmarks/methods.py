"""The caching methods the benchmark compares: one entry each in :data:`METHODS`.

An entry says which denoiser kinds it applies to (``dit``: a class-conditional DiT; ``flux``: a FLUX
transformer; ``wan``: a Wan video transformer; ``unet``: a U-Net) and how to apply one setting of it to a freshly loaded pipeline. Its knob
space is data, in ``spaces.json`` beside this file, explored by the one tuner (:mod:`accel.benchmarks.tuner`).
Adding a peer is one function here, one line in :data:`METHODS` and its space in ``spaces.json``.

Each ``apply`` returns a function that resets the method's state between pipeline calls.
"""

from __future__ import annotations

import ast
import contextlib
import io
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import AccelError

Reset = Callable[[], None]


@dataclass
class Context:
    """What a method may need beyond its settings: the step count, MagCache's calibrated ratios, the l2p
    forecaster's fitted options (CG-Taylor with ``forecaster="l2p"``), and whether the target batches
    classifier-free guidance's two branches in one call (FasterCache's guidance cache)."""

    steps: int
    mag_ratios: list[float] | None = None
    guidance_batched: bool = False
    l2p: dict[str, Any] | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kinds: tuple[str, ...]
    apply: Callable[[Any, dict[str, Any], Context], Reset]
    source: str  # where the implementation comes from (a package and its class, or this project)


def _denoiser(pipe: Any) -> torch.nn.Module:
    return pipe.transformer if hasattr(pipe, "transformer") and pipe.transformer is not None else pipe.unet


def _reset_diffusers_hooks(model: torch.nn.Module) -> Reset:
    from ..caching.blocks import unwrap

    def reset() -> None:
        reg = unwrap(model).__dict__.get("_diffusers_hook")
        if reg is not None:
            reg.reset_stateful_hooks()

    return reset


def _with_registry(pipe: Any) -> torch.nn.Module:
    """diffusers' block-level hooks need a cache context per call; the pipeline names its calls when the
    denoiser carries a hook registry."""
    from diffusers.hooks.hooks import HookRegistry

    model = _denoiser(pipe)
    HookRegistry.check_if_exists_or_initialize(model)
    return model


def _each_denoiser(pipe: Any, apply_one: Callable[[torch.nn.Module], None]) -> Reset:
    """Apply a diffusers hook to every denoiser of the pipeline (Wan 2.2's two experts each get their own, with its
    own state, as the hooks are meant to be applied per model); one reset for all."""
    from diffusers.hooks.hooks import HookRegistry

    from ..caching.blocks import find_denoisers

    resets = []
    for model in find_denoisers(pipe):
        HookRegistry.check_if_exists_or_initialize(model)
        apply_one(model)
        resets.append(_reset_diffusers_hooks(model))
    return lambda: [r() for r in resets] and None


# --------------------------------------------------------------------------------------------- ours


def _none(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    return lambda: None


def with_l2p_rows(params: dict[str, Any], rows: dict[str, Any] | None) -> dict[str, Any]:
    """A CG-Taylor setting with the l2p forecaster gets the fitted rows as its options (settings name the forecaster
    only: the rows are fitted once per run, on the selection split)."""
    if params.get("forecaster") != "l2p" or params.get("forecaster_options"):
        return params
    if rows is None:
        raise AccelError("the l2p forecaster needs its rows fitted first (the harness fits them on the selection split)")
    return {**params, "forecaster_options": rows}


def _cg_taylor(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from .. import CGTaylorConfig, enable, reset

    enable(pipe, CGTaylorConfig(**with_l2p_rows(params, ctx.l2p)))
    return lambda: reset(pipe)


# --------------------------------------------------------------------------------------------- diffusers


def _fbcache(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    return _each_denoiser(pipe, lambda m: apply_first_block_cache(m, FirstBlockCacheConfig(**params)))


# TaylorSeer (Liu et al. 2025) forecasts every attention and feed-forward output of every block, and in lite
# mode only the output head's input. diffusers' default patterns match neither DiT's "attn1" / "ff" nor FLUX's
# feed-forwards and single-stream MLP, so both families are named here.
_TAYLORSEER_IDS = {
    "DiTTransformer2DModel": ([r"^transformer_blocks\.\d+\.(attn1|ff)$"], [r"^proj_out_2$"]),
    "FluxTransformer2DModel": ([r"^transformer_blocks\.\d+\.(attn|ff|ff_context)$",
                                r"^single_transformer_blocks\.\d+\.(attn|proj_mlp|proj_out)$"], [r"^proj_out$"]),
    "WanTransformer3DModel": ([r"^blocks\.\d+\.(attn1|attn2|ffn)$"], [r"^proj_out$"]),
}


def _taylorseer(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    p = dict(params)
    lite = bool(p.pop("use_lite_mode", False))

    def one(model: torch.nn.Module) -> None:
        full_ids, lite_ids = _TAYLORSEER_IDS.get(type(model).__name__, (None, None))
        apply_taylorseer_cache(model, TaylorSeerCacheConfig(**p, taylor_factors_dtype=torch.float32, use_lite_mode=lite,
                                                            cache_identifiers=lite_ids if lite else full_ids))

    return _each_denoiser(pipe, one)


def calibrate_magcache(pipe: Any, call: Callable[[Any], Any], steps: int) -> list[float]:
    """Run diffusers' MagCache calibration on ``pipe`` (which it leaves hooked) and return its ratios."""
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    apply_mag_cache(_with_registry(pipe), MagCacheConfig(calibrate=True, num_inference_steps=steps))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        call(pipe)
    lists = [ln for ln in buf.getvalue().splitlines() if ln.strip().startswith("[")]
    if not lists:
        raise AccelError("MagCache calibration printed no ratios")
    return [float(v) for v in ast.literal_eval(lists[-1].strip())]


def _magcache(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    if ctx.mag_ratios is None:
        raise AccelError("MagCache needs its ratios calibrated first (the harness does it on the selection split)")
    if getattr(pipe, "transformer_2", None) is not None:
        raise AccelError("MagCache's calibration covers one denoiser's trajectory; it does not apply to a two-expert pipeline")
    model = _with_registry(pipe)
    apply_mag_cache(model, MagCacheConfig(**params, num_inference_steps=ctx.steps, mag_ratios=ctx.mag_ratios))
    return _reset_diffusers_hooks(model)


def _now(pipe: Any) -> Callable[[], Any]:
    if not hasattr(type(pipe), "current_timestep"):
        raise AccelError(f"{type(pipe).__name__} does not expose current_timestep, which this method's callbacks read")
    return lambda: pipe.current_timestep


def _pab(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    p = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return _each_denoiser(pipe, lambda m: apply_pyramid_attention_broadcast(
        m, PyramidAttentionBroadcastConfig(**p, current_timestep_callback=_now(pipe))))


def _fastercache(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache

    p = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    extra: dict[str, Any] = {"is_guidance_distilled": not ctx.guidance_batched}
    if ctx.guidance_batched:  # FasterCache's guidance cache: the unconditional branch reused between its refreshes
        extra["_unconditional_conditional_input_kwargs_identifiers"] = ["hidden_states", "timestep", "class_labels"]
    # Video latents (B, C, F, H, W): the layout diffusers' FasterCache names "BCFHW"
    fmt = "BCFHW" if type(_denoiser(pipe)).__name__ == "WanTransformer3DModel" else "BCHW"

    def one(model: torch.nn.Module) -> None:
        if ctx.guidance_batched:
            _uncond_first_kwargs(model)  # stays for the pipeline's lifetime (the harness loads a fresh one per setting)
        apply_faster_cache(model, FasterCacheConfig(**p, current_timestep_callback=_now(pipe), tensor_format=fmt, **extra))

    return _each_denoiser(pipe, one)


def _uncond_first_kwargs(model: torch.nn.Module) -> list[Any]:
    """FasterCache reads the guidance batch as [unconditional, conditional] in keyword arguments; the
    class-conditional pipeline passes [conditional, unconditional] with the sample positional. Reorder the
    inputs before the call and the output after it (a pure permutation: the pipeline's result is unchanged)."""
    def swap(x: Any) -> Any:
        return torch.cat(x.chunk(2)[::-1]) if isinstance(x, torch.Tensor) and x.shape[0] % 2 == 0 else x

    def before(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        kw = dict(kwargs)
        if args:
            kw["hidden_states"], args = args[0], args[1:]
        return args, {k: swap(v) if k in ("hidden_states", "timestep", "class_labels") else v for k, v in kw.items()}

    def after(module: Any, args: tuple, kwargs: dict[str, Any], out: Any) -> Any:
        if hasattr(out, "sample"):
            out.sample = swap(out.sample)
            return out
        return (swap(out[0]), *out[1:]) if isinstance(out, tuple) else swap(out)

    return [model.register_forward_pre_hook(before, with_kwargs=True), model.register_forward_hook(after, with_kwargs=True)]


def _seacache(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from diffusers.hooks import SeaCacheConfig, apply_sea_cache

    _pass_scheduler_position(pipe)
    # FLUX needs a vision adapter (its latents come packed); diffusers reads Wan's latents itself
    raw = _flux_raw_vision(pipe) if type(_denoiser(pipe)).__name__ == "FluxTransformer2DModel" else None
    return _each_denoiser(pipe, lambda m: apply_sea_cache(m, SeaCacheConfig(**params, raw_vision_callback=raw)))


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


# --------------------------------------------------------------------------------------------- cache-dit


def quiet_cache_dit() -> None:
    """cache-dit's loggers at WARNING: it logs an info line per block list per pipeline otherwise. Each of its modules
    has its own logger that does not propagate, so every one is set."""
    import logging

    import cache_dit  # noqa: F401  (its modules create their loggers on import)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _cache_dit(calibrator: str | None) -> Callable[[Any, dict[str, Any], Context], Reset]:
    """cache-dit's DBCache (Fn front blocks always computed, Bn back blocks too, the middle cached while the
    Fn residual changes less than the threshold), with one of its calibrators on the cached residual."""

    def apply(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
        import cache_dit
        from cache_dit import DBCacheConfig

        quiet_cache_dit()

        p = dict(params)
        mask = p.pop("steps_mask_policy", None)
        order = p.pop("order", 1)
        cfg = DBCacheConfig(Fn_compute_blocks=p.pop("Fn"), Bn_compute_blocks=p.pop("Bn"), num_inference_steps=ctx.steps,
                            steps_computation_mask=cache_dit.steps_mask(total_steps=ctx.steps, mask_policy=mask) if mask else None,
                            **p)
        cal = None
        if calibrator == "taylorseer":
            cal = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=order)
        elif calibrator == "foca":
            cal = cache_dit.FoCaCalibratorConfig()
        elif calibrator == "dmd":
            cal = cache_dit.DMDCalibratorConfig()
        target: Any = pipe
        model = _denoiser(pipe)
        if type(model).__name__ == "DiTTransformer2DModel":  # not in cache-dit's registry: name its blocks
            from cache_dit import BlockAdapter, ForwardPattern

            target = BlockAdapter(pipe=pipe, transformer=model, blocks=model.transformer_blocks,
                                  forward_pattern=ForwardPattern.Pattern_3)
            # DiT's forward reads transformer_blocks[0].norm1 for its final modulation, and cache-dit swaps the
            # block list for one CachedBlocks module during the call: forward that read to the real first block.
            from cache_dit.caching.cache_blocks.pattern_base import CachedBlocks_Pattern_Base

            if not hasattr(CachedBlocks_Pattern_Base, "norm1"):
                CachedBlocks_Pattern_Base.norm1 = property(lambda self: self.transformer_blocks[0].norm1)
        cache_dit.enable_cache(target, cache_config=cfg, calibrator_config=cal)
        return lambda: None  # cache-dit starts a new context on every pipeline call

    return apply


# --------------------------------------------------------------------------------------------- DeepCache


def _deepcache(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(**params)
    helper.enable()
    # Its state is the first timestep seen and the cached outputs (overwritten by the next full step):
    # a new call starts a new schedule once the first timestep is forgotten.
    return lambda: setattr(helper, "start_timestep", None)


def _deepcache_block(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from .deepcache_block import DeepCacheBlock

    return DeepCacheBlock(pipe.unet, params["cache_interval"], params.get("split", "block")).reset


def _spectrum(pipe: Any, params: dict[str, Any], ctx: Context) -> Reset:
    from .spectrum import apply

    return apply(pipe, params, ctx.steps)


METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("none", ("dit", "flux", "wan", "unet"), _none, "no cache (the reference)"),
    MethodSpec("cg-taylor", ("dit", "flux", "wan", "unet"), _cg_taylor, "accel (this project)"),
    MethodSpec("fbcache", ("dit", "flux", "wan"), _fbcache, "diffusers FirstBlockCacheConfig"),
    MethodSpec("taylorseer", ("dit", "flux", "wan"), _taylorseer, "diffusers TaylorSeerCacheConfig"),
    MethodSpec("magcache", ("dit", "flux", "wan"), _magcache, "diffusers MagCacheConfig (ratios calibrated on the selection split)"),
    MethodSpec("pab", ("dit", "flux", "wan"), _pab, "diffusers PyramidAttentionBroadcastConfig"),
    MethodSpec("fastercache", ("dit", "flux", "wan"), _fastercache, "diffusers FasterCacheConfig (its guidance cache on where the target batches guidance)"),
    MethodSpec("seacache", ("flux", "wan"), _seacache, "diffusers SeaCacheConfig (FLUX: with the scheduler position and a vision adapter)"),
    MethodSpec("dbcache", ("dit", "flux", "wan"), _cache_dit(None), "cache-dit DBCacheConfig"),
    MethodSpec("dbcache-taylorseer", ("dit", "flux", "wan"), _cache_dit("taylorseer"), "cache-dit DBCache + TaylorSeerCalibratorConfig"),
    MethodSpec("dbcache-foca", ("dit", "flux", "wan"), _cache_dit("foca"), "cache-dit DBCache + FoCaCalibratorConfig"),
    MethodSpec("dbcache-dmd", ("dit", "flux", "wan"), _cache_dit("dmd"), "cache-dit DBCache + DMDCalibratorConfig"),
    MethodSpec("deepcache", ("unet",), _deepcache, "DeepCache package DeepCacheSDHelper"),
    MethodSpec("deepcache-block", ("unet",), _deepcache_block, "DeepCache's uniform policy on the block split (the package's branch 2) or the layer split (its branch 1); re-implemented here"),
    MethodSpec("spectrum", ("dit", "flux", "wan"), _spectrum, "Spectrum (Chebyshev ridge forecast; re-implemented here from its paper)"),
)}


def label(method: str, params: dict[str, Any]) -> str:
    return method + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
