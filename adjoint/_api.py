"""``sample_with_grad``: sample with a diffusion model and get gradients through ordinary autograd."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from accel.errors import AccelError
from accel.samplers import Denoiser, Grid, get_step, prepare
from accel.samplers._solvers import Callback, ODEFunc, ode_endpoints

from ._common import Spec, flatten_cond, select_params
from ._continuous import ContinuousAdjoint
from ._discrete import DiscreteAdjoint

METHODS = ("discrete", "continuous", "torchdiffeq", "autograd", "checkpoint")
"""``discrete``: exact adjoint of the sampler (default). ``continuous``: the AdjointDPM adjoint ODE.
``torchdiffeq``: ``odeint_adjoint`` on the same ODE. ``autograd``: plain backprop through every step (memory
grows with N). ``checkpoint``: backprop with each step recomputed (``torch.utils.checkpoint``)."""


def _canonical_cond(cond: Any) -> Any:
    if isinstance(cond, int) or (isinstance(cond, list) and cond and all(isinstance(c, int) for c in cond)):
        return torch.as_tensor([cond] if isinstance(cond, int) else cond, dtype=torch.long)
    if isinstance(cond, tuple) and any(isinstance(c, float) for c in cond):  # FLUX's embedded guidance as a number
        return tuple(torch.tensor(c, dtype=torch.float64) if isinstance(c, float) else c for c in cond)
    return cond


def sample_with_grad(
    model_or_pipeline: Any,
    noise: torch.Tensor,
    cond: Any = None,
    *,
    steps: int = 50,
    method: str = "discrete",
    sampler: str = "euler",
    guidance_scale: float = 1.0,
    uncond: Any = None,
    scheduler: Any = None,
    params: Iterable[torch.Tensor] | None = None,
    order: int = 1,
    reconstruct: bool = False,
    ode_method: str = "euler",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    callback: Callback | None = None,
    cache: Any = None,
) -> torch.Tensor:
    """Generate x_0 from ``noise`` so that ``loss(x_0).backward()`` reaches noise, conditioning and weights.

    AdjointDPM (Pan et al., ICLR 2024) with the exact discrete adjoint as the default.

    Args:
        model_or_pipeline: a diffusers pipeline (``.transformer``/``.unet`` + ``.scheduler``), a
            :class:`accel.samplers.Denoiser`, or a network; the latter two need ``scheduler=``.
        noise: x_T, (B, C, H, W); set ``requires_grad`` for its gradient.
        cond: class labels (B,) long (no gradient), class embeddings (B, L, D) from
            ``accel.samplers.class_embeddings`` or prompt embeddings (float, differentiable), a tuple of tensors
            (SD3: embeddings, pooled; FLUX: embeddings, pooled[, guidance]), or None.
        steps: number of sampler steps N.
        method: one of :data:`METHODS`.
        sampler: ``"euler"`` (= DDIM / FlowMatchEuler) or ``"deis2m"``; the forward sampler for all methods
            but ``torchdiffeq`` (which uses ``ode_method``).
        guidance_scale, uncond: classifier-free guidance inside the vector field (DiT: null class by default).
        params: weights to differentiate; default: the network's parameters that require grad (so freeze with
            ``requires_grad_(False)``, or inject LoRA adapters with peft, to choose).
        order: 1 or 2, the order of the continuous adjoint solver (``method="continuous"``).
        reconstruct: continuous adjoint only: re-solve the state backwards instead of using stored states.
        ode_method, rtol, atol: torchdiffeq settings (``method="torchdiffeq"``).
        callback: called after each forward step with keys i, steps, t, x, denoised (and, with ``cache``,
            computed: whether the step ran in full).
        cache: an :class:`accel.CGTaylorConfig` to sample with CG-Taylor caching and differentiate through it
            (``method="discrete"``: the exact adjoint of the cached sampler, memory not growing with the steps
            beyond the stored factors; ``"autograd"``: backprop through the cached forward). The gate's decisions
            are taken in the forward pass and held fixed; gradients flow through block 0, the head and the
            stored Taylor factors into the last block's outputs at earlier full steps. The network is hooked only
            while a pass runs. ``cache="shipped"``: the setting the model folder ships for ``steps`` steps
            (``accel_cache.json``: its ``by_steps`` entry where there is one, else its default).

    Returns:
        x_0, (B, C, H, W), differentiable with respect to noise, float cond tensors and ``params``.
    """
    if method not in METHODS:
        raise AccelError(f"unknown gradient method {method!r}; choose one of {', '.join(METHODS)}")
    if order not in (1, 2):
        raise AccelError(f"order must be 1 or 2, got {order!r}")
    if not torch.is_tensor(noise) or noise.ndim < 2:
        raise AccelError(f"noise must be a (B, ...) tensor, got {type(noise).__name__} {tuple(getattr(noise, 'shape', ()))}")
    if isinstance(cache, str):
        cache = _shipped(model_or_pipeline, cache, steps)
    den, grid = prepare(model_or_pipeline, steps, guidance_scale, uncond, scheduler, sample_shape=noise.shape)
    cond = _canonical_cond(cond)
    step = get_step(sampler)
    if cache is not None:
        return _cached(den, grid, step, noise, cond, method, select_params(den, params), cache, callback)
    if method == "autograd":
        from accel.samplers import sample

        return sample(den, noise, grid, cond, sampler, callback)
    if method == "checkpoint":
        return _checkpointed(den, grid, noise, cond, sampler, callback)
    kind, flat = flatten_cond(cond)
    ps = select_params(den, params)
    if method == "torchdiffeq":
        return _torchdiffeq(den, grid, noise, cond, [c for c in flat if c.requires_grad] + ps, ode_method, rtol, atol, callback)
    spec = Spec(den, grid, step, kind, len(flat), len(ps), callback)
    if method == "discrete":
        return DiscreteAdjoint.apply(spec, noise, *flat, *ps)
    return ContinuousAdjoint.apply(spec, order, reconstruct, noise, *flat, *ps)


def _shipped(obj: Any, cache: str, steps: int) -> Any:
    """``cache="shipped"``: the model folder's CG-Taylor setting for ``steps`` sampling steps."""
    from accel.caching import CGTaylorConfig
    from accel.caching.shipped import shipped_settings

    if cache != "shipped":
        raise AccelError(f"cache must be a CGTaylorConfig or 'shipped', got {cache!r}")
    settings = shipped_settings(obj, steps=steps)
    if not settings:
        raise AccelError("cache='shipped' needs the model folder's accel_cache.json, and this model ships none; "
                         "pass cache=accel.CGTaylorConfig(...) or write one with `accel calibrate --save`")
    return CGTaylorConfig(**settings)


def _cached(den: Denoiser, grid: Grid, step: Any, noise: torch.Tensor, cond: Any, method: str, params: list[torch.Tensor],
            cache: Any, callback: Callback | None) -> torch.Tensor:
    """Sample with CG-Taylor and differentiate through it (``adjoint/_cached.py``)."""
    from accel.caching.grad import CachedRun

    from ._cached import CACHE_METHODS, sample_cached

    if method not in CACHE_METHODS:
        raise AccelError(f"method={method!r} cannot run with cache=: the cache's decisions are per sampler step, which only the "
                         f"discrete adjoint and autograd follow; use method={CACHE_METHODS[0]!r} (or {CACHE_METHODS[1]!r}, the reference)")
    run = CachedRun(den.network if den.network is not None else den.model, cache, grid.steps)
    kind, flat = flatten_cond(cond)
    spec = Spec(den, grid, step, kind, len(flat), len(params), callback)
    return sample_cached(spec, run, method, noise, flat, params)


def _checkpointed(den: Denoiser, grid: Grid, x: torch.Tensor, cond: Any, sampler: str, callback: Callback | None) -> torch.Tensor:
    """Backprop through every step with each step's activations recomputed in the backward pass."""
    from torch.utils.checkpoint import checkpoint

    step = get_step(sampler)
    carry = None
    for i in range(grid.steps):

        def one(xx: torch.Tensor, cc: torch.Tensor | None, i: int = i) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
            x_next, c_next, pred = step(den, grid, i, xx, cond, cc)
            return x_next, c_next, pred.x0

        x, carry, x0 = checkpoint(one, x, carry, use_reentrant=False)
        if callback is not None:
            callback({"i": i, "steps": grid.steps, "t": float(grid.t[i]), "x": x, "denoised": x0})
    return x


def _torchdiffeq(
    den: Denoiser, grid: Grid, x: torch.Tensor, cond: Any, adjoint_params: list[torch.Tensor], ode_method: str, rtol: float, atol: float, callback: Callback | None
) -> torch.Tensor:
    """``torchdiffeq.odeint_adjoint`` on dz/ds = F, the baseline of the paper's released code."""
    from torchdiffeq import odeint_adjoint

    z0, s = ode_endpoints(den, x, grid, ode_method)
    func = ODEFunc(den, cond, callback, grid.steps)
    try:
        z = odeint_adjoint(func, z0, s, rtol=rtol, atol=atol, method=ode_method, adjoint_params=tuple(adjoint_params))[-1]
    except ValueError as e:
        raise AccelError(f"torchdiffeq rejected method={ode_method!r}: {e}") from e
    return z / den.schedule.state_scale(grid.alpha[-1], grid.sigma[-1]).to(x.dtype)
