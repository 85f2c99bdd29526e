"""Public CG-Taylor API: ``enable``, ``disable``, ``cached``, ``stats``, ``reset``."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch

from ..errors import AccelError
from .blocks import BlockSpec, find_blocks, find_denoiser, find_denoisers
from .config import CGTaylorConfig
from .hooks import CONTROLLER_HOOK, ControllerHook, attach, controller_of, install, remove
from .shipped import resolve
from .state import CacheStats, ContextStates
from .unet import unet_blocks

_controller = controller_of  # the name other modules use


def enable(obj: Any, config: CGTaylorConfig | None = None, *, preset: str | None = None,
           scheduler: Any = None, steps: int | None = None) -> CGTaylorConfig:
    """Enable CG-Taylor caching on a diffusers pipeline, transformer or U-Net (in place, exactly undoable).

    Args:
        obj: a pipeline (its ``transformer`` / ``unet`` is hooked, and ``transformer_2`` too where a second
            denoiser takes over mid-trajectory, as in Wan 2.2; each keeps its own state) or the denoiser itself.
        config: the caching settings. If omitted: the settings the model folder ships (``accel_cache.json``,
            the benchmark rule's choice for that model; ``accel.caching.shipped``), else ``CGTaylorConfig()``.
        preset: instead of ``config``, one of the folder's named choices: ``"quality"`` (>= 40 dB per-image
            PSNR median against uncached), ``"balanced"`` (>= 35 dB) or ``"fast"`` (>= 30 dB).
        scheduler: the scheduler driving the denoiser, to know the last step (taken from a pipeline).
        steps: the ``num_inference_steps`` you will sample with: without ``config``, the shipped setting
            calibrated for that step count where the folder has one (``accel calibrate --steps N --save``).
    Returns:
        The active config. Enabling again with the same config is a no-op; with another config it is refused.
    """
    if config is not None and (preset is not None or steps is not None):
        raise AccelError("pass either a config or a preset / steps (which pick a shipped setting), not both")
    hint = None
    if config is None:
        chosen = resolve(obj, preset, steps)
        config, hint = chosen.config, chosen.step_hint
    if not isinstance(config, CGTaylorConfig):
        raise AccelError(f"config must be a CGTaylorConfig, got {type(config).__name__}")
    models = find_denoisers(obj)
    for model in models:
        existing = _controller(model)
        if existing is not None and existing.config != config:
            raise AccelError("CG-Taylor is already enabled on this model with another config; call accel.disable(...) first")
        if existing is None and getattr(model, "is_cache_enabled", False):
            raise AccelError(f"another diffusers cache is enabled on {type(model).__name__}; call its disable_cache() first")
    scheduler = scheduler if scheduler is not None else getattr(obj, "scheduler", None)
    for model in models:
        if _controller(model) is None:
            attach_controller(model, config, scheduler).step_hint = hint
    return config


def attach_controller(model: torch.nn.Module, config: CGTaylorConfig, scheduler: Any = None,
                      order: list[BlockSpec] | None = None) -> ControllerHook:
    """Hook CG-Taylor on one denoiser. ``order``: its blocks in execution order, as an earlier controller found
    them (``controller.blocks``); else they are found, and a transformer's first call fixes their order."""
    # [gate, *skipped, forecast]: a U-Net's shallow-path roles, else block 0 / blocks 1..L-2 / block L-1.
    blocks = order or unet_blocks(model, config) or find_blocks(model)
    if config.gate == "lookahead" and any(b.kind != "transformer" for b in blocks):
        raise AccelError(f"the lookahead gate forecasts block 0 too, which needs transformer blocks; {type(model).__name__} "
                         "is a U-Net: use gate='step' or 'cumulative'")
    states = ContextStates()
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    controller = ControllerHook(states, config, blocks, params, scheduler, model)
    attach(model, controller, CONTROLLER_HOOK)
    if order is None and all(b.kind == "transformer" for b in blocks):
        controller.trace_hooks()  # the first call records the order in which the blocks run
    else:
        install(controller, blocks)  # U-Net: down, mid, up; or an order already known
    model._diffusers_hook.invalidate_child_registries_cache()
    return controller


def disable(obj: Any) -> bool:
    """Remove CG-Taylor from a pipeline or model; afterwards it computes exactly as if never touched.

    Returns True if caching was enabled, False if there was nothing to remove.
    """
    removed = False
    for model in find_denoisers(obj):
        removed = remove(model) or removed
    return removed


def is_enabled(obj: Any) -> bool:
    return _controller(find_denoiser(obj)) is not None


def stats(obj: Any) -> CacheStats:
    """Per-step decisions and gate errors of the last sampling run, per context, of the pipeline's main
    denoiser (pass ``pipe.transformer_2`` for a second one)."""
    controller = _controller(find_denoiser(obj))
    if controller is None:
        raise AccelError("CG-Taylor is not enabled on this model; call accel.enable(pipe) first")
    return controller.stats()


def reset(obj: Any) -> None:
    """Forget all cached factors (the next call starts a new trajectory)."""
    for model in find_denoisers(obj):
        controller = _controller(model)
        if controller is not None:
            controller.reset_state(model)


@contextlib.contextmanager
def cached(obj: Any, config: CGTaylorConfig | None = None, **kw: Any) -> Iterator[CGTaylorConfig]:
    """``with accel.cached(pipe, CGTaylorConfig(threshold=0.05)): pipe(...)`` — enabled inside, removed after."""
    cfg = enable(obj, config, **kw)
    try:
        yield cfg
    finally:
        disable(obj)
