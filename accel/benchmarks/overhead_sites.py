"""Where each caching method works in a FLUX.1 step, as :class:`Probe` s that run its own code (``accel bench cache-overhead``).

Module-level caches (TaylorSeer, PAB, FasterCache) run one module per output shape, counted as often as FLUX.1 has
it; block-level caches (FirstBlockCache, MagCache, SeaCache, DBCache) drive their hooks on FLUX.1's 19 + 38 blocks
replaced by weightless stand-ins of FLUX's block classes that return fixed tensors, so only the cache's own work
runs; CG-Taylor and Spectrum call their forecasting code (``accel.kernels``, ``spectrum.ChebyshevRidge``) directly.
A probe's ``full()`` and ``cached()`` are called alternately (a cache interval of 2), after ``warmup`` pairs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any, Callable

import torch

from .. import kernels


@dataclass(frozen=True)
class Geometry:
    """FLUX.1's shapes: T image tokens (4096 at 1024x1024), T / 8 text tokens, C channels, 19 + 38 blocks."""

    tokens: int = 4096
    channels: int = 3072
    double: int = 19
    single: int = 38
    mlp_ratio: int = 4
    head: int = 64  # the output head's width: 16 latent channels x 2x2 patch

    @property
    def text(self) -> int:
        return max(1, self.tokens // 8)

    def block_macs(self) -> int:
        """MACs of one FLUX.1 double block at N = T + text tokens (formula: :data:`BLOCK_FORMULA`)."""
        n, c, r = self.tokens + self.text, self.channels, self.mlp_ratio
        return (4 + 2 * r) * c * c * n + 2 * n * n * c + 12 * c * c


BLOCK_FORMULA = ("(4 + 2r) C^2 N + 2 N^2 C + 12 C^2: QKV 3 C^2 N and output projections C^2 N over both streams, "
                 "MLP 2 r C^2 N, QK^T and AV 2 N^2 C, AdaLN modulation 2 x 6 C^2")


@dataclass
class Probe:
    """One site of a method: ``full()`` / ``cached()`` run its work on a full / cached step there, ``held`` reaches the
    tensors it keeps between steps, ``sites`` is how many such sites one FLUX.1 step has."""

    full: Callable[[], Any]
    cached: Callable[[], Any]
    held: Any
    sites: int = 1
    inputs: Any = None  # what the site is fed (fixed tensors, a stand-in module), for tests
    warmup: int = 2  # full / cached pairs before timing; the last one is counted (OpCounter)


def _rand(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape).to(dtype)


class _Fixed(torch.nn.Module):
    """A weightless module returning fixed outputs, two sets in turn (what a cache keeps of two calls is distinct)."""

    def __init__(self, *outs: Any) -> None:
        super().__init__()
        self.outs, self.calls = outs, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.outs[self.calls % len(self.outs)]


def _stand_in(cls: type, out: tuple[torch.Tensor, torch.Tensor]) -> torch.nn.Module:
    """A FLUX block of class ``cls`` without weights (so the hooks find the class's metadata) returning ``out``."""
    block = cls.__new__(cls)
    torch.nn.Module.__init__(block)
    block.forward = lambda hidden_states, encoder_hidden_states, *args, **kwargs: out
    return block


class _Stack(torch.nn.Module):
    """FLUX.1's two block lists of stand-ins (block 0 and the last block return tensors of their own, the others
    share a pair) fed fixed (text, image) states; ``latents`` are the packed latents the transformer receives."""

    def __init__(self, g: Geometry, dtype: torch.dtype) -> None:
        from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

        super().__init__()
        pair = lambda: (_rand(1, g.text, g.channels, dtype=dtype), _rand(1, g.tokens, g.channels, dtype=dtype))  # noqa: E731
        shared, self.inputs, self.latents = pair(), pair(), _rand(1, g.tokens, g.head, dtype=dtype)
        self.transformer_blocks = torch.nn.ModuleList(
            _stand_in(FluxTransformerBlock, pair() if i == 0 else shared) for i in range(g.double))
        self.single_transformer_blocks = torch.nn.ModuleList(
            _stand_in(FluxSingleTransformerBlock, pair() if i == g.single - 1 else shared) for i in range(g.single))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        text, image = self.inputs
        for block in (*self.transformer_blocks, *self.single_transformer_blocks):
            text, image = block(hidden_states=image, encoder_hidden_states=text)
        return image


def _stack_probe(stack: _Stack, held: Any, decide: Callable[[bool], None]) -> list[Probe]:
    """A full / cached step of ``stack`` under diffusers' cache context (``decide(full)`` sets the hook's decision)."""
    from diffusers.models.cache_utils import CacheMixin

    step = iter(range(10**9))

    def call(full: bool) -> Any:
        decide(full)
        with CacheMixin.cache_context(stack, "cond", step_index=next(step), sigma=0.5, num_inference_steps=10**9):
            return stack(hidden_states=stack.latents)

    return [Probe(partial(call, True), partial(call, False), held)]


def cg_taylor(g: Geometry, dtype: torch.dtype, residual: bool = False) -> list[Probe]:
    """``accel.kernels`` as CG-Taylor's hooks call them (default orders: block 0 2, last block 1): block 0's forecast
    error on every gated step; the last block's forecast (cached) or both factor updates (full)."""
    h0, hl = _rand(1, g.tokens, g.channels, dtype=dtype), _rand(1, g.tokens, g.channels, dtype=dtype)
    s = SimpleNamespace(f0=kernels.new_factors(h0, 2), fl=kernels.new_factors(hl, 1), n0=0, nl=0)  # the hooks' state

    def gate(offset: float) -> float:
        err, ref = kernels.forecast_error(s.f0, offset, s.n0, h0)
        return float((err / ref.clamp_min(1e-30)).amax(-1).item())  # the gate's relative error, batch policy "any"

    def full() -> None:
        if s.n0:
            gate(2.0)
        s.n0 = kernels.taylor_update(s.f0, h0, 2.0, s.n0)
        s.nl = kernels.taylor_update(s.fl, hl - h0 if residual else hl, 2.0, s.nl)

    def cached() -> tuple[float, torch.Tensor]:
        error, fc = gate(1.0), kernels.taylor_forecast(s.fl, 1.0, s.nl)
        fc = fc.add_(h0) if residual else fc
        bool(torch.isfinite(fc.sum()).item())  # the hooks' finiteness check before a forecast is used
        return error, fc

    return [Probe(full, cached, s, inputs=SimpleNamespace(h0=h0, hl=hl), warmup=4)]  # block 0 holds 3 orders after 3 full steps


def taylorseer(g: Geometry, dtype: torch.dtype, lite: bool = False) -> list[Probe]:
    """diffusers' TaylorSeerState (order 1, float32 factors as the benchmark runs it) on each output shape it caches."""
    from diffusers.hooks.taylorseer_cache import TaylorSeerState

    t, e, c = g.tokens, g.text, g.channels
    sites = ([(((t, g.head),), 1, False), (((e, c), (t, c)), g.double + g.single, True)] if lite else
             [(((t, c),), 2 * g.double, False), (((e, c),), 2 * g.double, False),
              (((t + e, c),), 2 * g.single, False), (((t + e, g.mlp_ratio * c),), g.single, False)])
    probes = []
    for shapes, count, inactive in sites:
        st = TaylorSeerState(taylor_factors_dtype=torch.float32, max_order=1, is_inactive=inactive)
        outs = tuple(_rand(1, *shape, dtype=dtype) for shape in shapes)

        def step(st: Any = st, outs: Any = outs, full: bool = True) -> Any:
            st.current_step += 1  # what the hook's step counter does on every call
            return st.update(outs) if full else st.predict()

        probes.append(Probe(step, partial(step, full=False), st, count))
    return probes


def _attention(g: Geometry, dtype: torch.dtype, hook: Callable[[Callable[[], int]], Any]) -> list[Probe]:
    """A diffusers attention hook on FLUX.1's 19 double-block (image, text) and 38 single-block attention modules;
    full steps run at a timestep outside its skip range, cached ones inside."""
    from diffusers.hooks.hooks import HookRegistry

    t, e, c = g.tokens, g.text, g.channels
    probes = []
    double = lambda: (_rand(1, t, c, dtype=dtype), _rand(1, e, c, dtype=dtype))  # noqa: E731
    for outs, count in (((double(), double()), g.double), ((_rand(1, t + e, c, dtype=dtype), _rand(1, t + e, c, dtype=dtype)), g.single)):
        clock, module = [900], _Fixed(*outs)
        h = hook(lambda clock=clock: clock[0])
        HookRegistry.check_if_exists_or_initialize(module).register_hook(h, "cache")
        x = torch.zeros(1)

        def call(timestep: int, clock: list = clock, module: Any = module, x: Any = x) -> Any:
            clock[0] = timestep
            return module(x)

        probes.append(Probe(partial(call, 900), partial(call, 500), h, count, inputs=module))
    return probes


def pab(g: Geometry, dtype: torch.dtype) -> list[Probe]:
    from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastHook

    return _attention(g, dtype, lambda now: PyramidAttentionBroadcastHook((100, 800), 2, now))


def fastercache(g: Geometry, dtype: torch.dtype) -> list[Probe]:
    from diffusers.hooks.faster_cache import FasterCacheBlockHook

    return _attention(g, dtype, lambda now: FasterCacheBlockHook(2, (-1, 681), True, lambda module: 0.5, now))


def fbcache(g: Geometry, dtype: torch.dtype) -> list[Probe]:
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    stack = _Stack(g, dtype)
    apply_first_block_cache(stack, FirstBlockCacheConfig(threshold=0.2))
    head = stack.transformer_blocks[0]._diffusers_hook.get_hook("fbc_leader_block_hook")
    return _stack_probe(stack, head.state_manager, lambda full: setattr(head, "threshold", -1.0 if full else math.inf))


def magcache(g: Geometry, dtype: torch.dtype) -> list[Probe]:
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    stack, config = _Stack(g, dtype), MagCacheConfig(max_skip_steps=10**9, retention_ratio=0.0, num_inference_steps=10**6, mag_ratios=[1.0, 1.0])
    apply_mag_cache(stack, config)
    head = stack.transformer_blocks[0]._diffusers_hook.get_hook("mag_cache_leader_block_hook")
    return _stack_probe(stack, head.state_manager, lambda full: setattr(config, "threshold", -1.0 if full else math.inf))


def seacache(g: Geometry, dtype: torch.dtype) -> list[Probe]:
    from diffusers import FluxPipeline
    from diffusers.hooks import SeaCacheConfig, apply_sea_cache

    from .methods import _flux_raw_vision

    # the benchmark's FLUX vision adapter reads the pipeline's class (its latent unpacking) and VAE scale factor
    pipe = type("FluxPipe", (), {"_unpack_latents": staticmethod(FluxPipeline._unpack_latents), "vae_scale_factor": 8})()
    stack = _Stack(g, dtype)
    config = SeaCacheConfig(retention_steps=0, cache_end_steps=0, max_consecutive_cached=0, raw_vision_callback=_flux_raw_vision(pipe))
    apply_sea_cache(stack, config)
    leader = stack.transformer_blocks[0]._diffusers_hook.get_hook("sea_cache_leader_block")
    return _stack_probe(stack, (leader.state_manager, leader.shared_state), lambda full: setattr(config, "threshold", 0.0 if full else math.inf))


def dbcache(g: Geometry, dtype: torch.dtype, calibrator: str | None = None) -> list[Probe]:
    """cache-dit's DBCache forward (``CachedBlocks_Pattern_Base``, Fn 1, Bn 0) over FLUX.1's 57 blocks in one context,
    as cache-dit's FLUX adapter chains them by default; block 0 returns another of 7 outputs on each full step, so the
    residuals change from one full step to the next (DMD's snapshots are independent: its fit has full rank; it fits
    its 6 latest snapshots once it has 4, forecasting as TaylorSeer before that)."""
    import cache_dit
    from cache_dit import DBCacheConfig, ForwardPattern
    from cache_dit.caching.cache_blocks.pattern_base import CachedBlocks_Pattern_Base
    from cache_dit.caching.cache_contexts.cache_manager import CachedContextManager

    logging.getLogger(CachedBlocks_Pattern_Base.__module__).setLevel(logging.WARNING)  # an info line per block list otherwise
    calibrators = {"taylorseer": lambda: cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1),
                   "foca": cache_dit.FoCaCalibratorConfig, "dmd": cache_dit.DMDCalibratorConfig}
    stack, manager = _Stack(g, dtype), CachedContextManager("overhead")
    context = manager.new_context(
        name="blocks", calibrator_config=calibrators[calibrator]() if calibrator else None,
        cache_config=DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.5, max_warmup_steps=0, enable_separate_cfg=False))
    blocks = CachedBlocks_Pattern_Base(torch.nn.ModuleList([*stack.transformer_blocks, *stack.single_transformer_blocks]),
                                       forward_pattern=ForwardPattern.Pattern_1, cache_prefix="blocks", cache_context="blocks", context_manager=manager)
    text, image = stack.inputs
    outs = [(torch.randn_like(text), torch.randn_like(image)) for _ in range(7)]  # block 0's, one per full step in turn:
    stack.transformer_blocks[0].forward = lambda hidden_states, encoder_hidden_states, *args, **kwargs: outs[0]

    def call(full: bool) -> Any:
        if full:  # block 0's residual changes by ~100% (above the threshold), the cached residuals change too
            outs.append(outs.pop(0))
        return blocks(image, text)

    return [Probe(partial(call, True), partial(call, False), context, warmup=6 if calibrator == "dmd" else 2)]


def spectrum(g: Geometry, dtype: torch.dtype, steps: int = 50) -> list[Probe]:
    """Spectrum's Chebyshev ridge forecaster (benchmark defaults: degree 4, lambda 0.1, w 0.5) on the last block's output."""
    from .spectrum import ChebyshevRidge, SpectrumConfig

    c, h, clock = SpectrumConfig(num_inference_steps=steps), _rand(1, g.tokens, g.channels, dtype=dtype), iter(range(10**9))
    fit = ChebyshevRidge(c.degree, c.lam, c.w, c.num_inference_steps)
    return [Probe(lambda: fit.update(next(clock), h), lambda: fit.predict(next(clock)), fit)]


# row: (method in the benchmark's registry, probes, what it computes per FLUX.1 step)
ROWS: dict[str, tuple[str, Callable[..., list[Probe]], str]] = {
    "cg-taylor": ("cg-taylor", cg_taylor, "block 0's forecast error (order 2) on every gated step; the last block's forecast (order 1) on cached steps, both factor updates on full ones"),
    "cg-taylor (residual)": ("cg-taylor", partial(cg_taylor, residual=True), "as cg-taylor, plus adding block 0's output to the forecast residual (cached) or subtracting it (full)"),
    "fbcache": ("fbcache", fbcache, "block 0's residual and its relative L1 change; adds the two cached tail residuals (cached) or stores them (full)"),
    "taylorseer": ("taylorseer", taylorseer, "order-1 forecast (cached) or update (full) of 190 outputs of 171 modules: attn (image, text), ff, ff_context of 19 double blocks; attn, proj_mlp, proj_out of 38 single blocks"),
    "taylorseer (lite)": ("taylorseer", partial(taylorseer, lite=True), "order-1 forecast or update of the output head's input (T x 64); zero outputs for the 57 skipped blocks"),
    "magcache": ("magcache", magcache, "adds the cached residual to block 0's input (cached); the last block's output minus that input (full)"),
    "pab": ("pab", pab, "returns the 57 attention modules' cached outputs (cached); keeps them (full)"),
    "fastercache": ("fastercache", fastercache, "extrapolates the 57 attention modules' outputs from their last two (cached); keeps two per module (full)"),
    "seacache": ("seacache", seacache, "an FFT filter of the latents and its relative L1 change; the extrapolated residual added (cached), the residual and text output stored (full)"),
    "dbcache": ("dbcache", dbcache, "block 0's residual and its relative L1 change; adds the cached residuals (cached) or stores the residual of blocks 1-56 (full)"),
    "dbcache-taylorseer": ("dbcache-taylorseer", partial(dbcache, calibrator="taylorseer"), "as dbcache, the cached residuals forecast by cache-dit's TaylorSeer calibrator (order 1)"),
    "dbcache-foca": ("dbcache-foca", partial(dbcache, calibrator="foca"), "as dbcache, the cached residuals forecast by cache-dit's FoCa calibrator"),
    "dbcache-dmd": ("dbcache-dmd", partial(dbcache, calibrator="dmd"), "as dbcache, the cached residuals forecast by cache-dit's DMD calibrator (SVD of the last 6 snapshots)"),
    "spectrum": ("spectrum", spectrum, "the ridge moments and last two features updated (full); the Chebyshev forecast blended with a linear one (cached)"),
}
