"""``sample_with_grad``: sample with a diffusion model and get gradients through ordinary autograd.

One entry point and a table of methods, as torchdiffeq keeps its solvers: ``method`` names a row of
:data:`METHODS`, and ``options`` (that method's dataclass, or a dict of its fields) carries what only that
method knows. Inputs are canonicalised once here; each method's runner sees the simple case.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from accel.errors import AccelError
from accel.samplers import Denoiser, Grid, get_step, prepare
from accel.samplers._solvers import Callback, ODEFunc, ode_endpoints

from ._common import Spec, flatten_cond, select_params
from ._continuous import ContinuousAdjoint
from ._discrete import DiscreteAdjoint


@dataclass(frozen=True)
class DiscreteOptions:
    """``method="discrete"`` (default): the exact adjoint of the sampler that ran, equal to autograd, with the memory
    of one network call.

    Attributes:
        sampler: the forward sampler, ``"euler"`` (= DDIM / FlowMatchEuler) or ``"deis2m"``.
        cache: sample with CG-Taylor and differentiate through it: an :class:`accel.CGTaylorConfig`, or
            ``"shipped"`` for the setting the model folder ships for the call's step count (``accel_cache.json``:
            its ``by_steps`` entry where there is one, else its default). The gate's decisions are taken in the
            forward pass and held fixed; gradients flow through block 0, the head and the stored Taylor factors.
            The network is hooked only while a pass runs. None: uncached.
    """

    sampler: str = "euler"
    cache: Any = None

    def __post_init__(self) -> None:
        get_step(self.sampler)


@dataclass(frozen=True)
class AutogradOptions(DiscreteOptions):
    """``method="autograd"``: plain backprop through every step (memory grows with N); the reference. Same fields
    as :class:`DiscreteOptions` (with ``cache``: backprop through the cached forward)."""


@dataclass(frozen=True)
class CheckpointOptions:
    """``method="checkpoint"``: backprop with each step's activations recomputed (``torch.utils.checkpoint``).

    Attributes:
        sampler: the forward sampler, ``"euler"`` or ``"deis2m"``.
    """

    sampler: str = "euler"

    def __post_init__(self) -> None:
        get_step(self.sampler)


@dataclass(frozen=True)
class ContinuousOptions:
    """``method="continuous"``: the AdjointDPM adjoint ODE (Pan et al., ICLR 2024); not the gradient of the sampler
    that ran, offered for comparison.

    Attributes:
        sampler: the forward sampler, ``"euler"`` or ``"deis2m"``.
        order: 1 or 2, the order of the adjoint solver.
        reconstruct: re-solve the state backwards instead of using the stored states.
    """

    sampler: str = "euler"
    order: int = 1
    reconstruct: bool = False

    def __post_init__(self) -> None:
        get_step(self.sampler)
        if self.order not in (1, 2):
            raise AccelError(f"order must be 1 or 2, got {self.order!r}")


@dataclass(frozen=True)
class TorchDiffEqOptions:
    """``method="torchdiffeq"``: ``torchdiffeq.odeint_adjoint`` on the same ODE, the baseline of the paper's code.

    Attributes:
        ode_method: torchdiffeq's solver (``"euler"``, ``"dopri5"``, ...); it replaces the sampler.
        rtol, atol: its tolerances (adaptive solvers).
    """

    ode_method: str = "euler"
    rtol: float = 1e-5
    atol: float = 1e-5


Options = DiscreteOptions | CheckpointOptions | ContinuousOptions | TorchDiffEqOptions


@dataclass(frozen=True)
class _Call:
    """What every method runs on, canonicalised: the denoiser and grid, x_T, the condition, the weights asked for."""

    den: Denoiser
    grid: Grid
    noise: torch.Tensor
    cond: Any
    params: Iterable[torch.Tensor] | None
    callback: Callback | None

    def spec(self, sampler: str, flat: list[torch.Tensor], params: list[torch.Tensor], kind: str) -> Spec:
        return Spec(self.den, self.grid, get_step(sampler), kind, len(flat), len(params), self.callback)


def _discrete(call: _Call, opts: DiscreteOptions) -> torch.Tensor:
    if opts.cache is not None:
        return _cached(call, opts, "discrete")
    kind, flat = flatten_cond(call.cond)
    ps = select_params(call.den, call.params)
    return DiscreteAdjoint.apply(call.spec(opts.sampler, flat, ps, kind), call.noise, *flat, *ps)


def _autograd(call: _Call, opts: AutogradOptions) -> torch.Tensor:
    if opts.cache is not None:
        return _cached(call, opts, "autograd")
    from accel.samplers import sample

    return sample(call.den, call.noise, call.grid, call.cond, opts.sampler, call.callback)


def _continuous(call: _Call, opts: ContinuousOptions) -> torch.Tensor:
    kind, flat = flatten_cond(call.cond)
    ps = select_params(call.den, call.params)
    return ContinuousAdjoint.apply(call.spec(opts.sampler, flat, ps, kind), opts.order, opts.reconstruct, call.noise, *flat, *ps)


def _checkpoint(call: _Call, opts: CheckpointOptions) -> torch.Tensor:
    return _checkpointed(call.den, call.grid, call.noise, call.cond, opts.sampler, call.callback)


def _odeint(call: _Call, opts: TorchDiffEqOptions) -> torch.Tensor:
    _, flat = flatten_cond(call.cond)
    adjoint_params = [c for c in flat if c.requires_grad] + select_params(call.den, call.params)
    return _torchdiffeq(call.den, call.grid, call.noise, call.cond, adjoint_params, opts, call.callback)


METHODS: dict[str, tuple[type, Callable[[_Call, Any], torch.Tensor]]] = {
    "discrete": (DiscreteOptions, _discrete),
    "continuous": (ContinuousOptions, _continuous),
    "torchdiffeq": (TorchDiffEqOptions, _odeint),
    "autograd": (AutogradOptions, _autograd),
    "checkpoint": (CheckpointOptions, _checkpoint),
}
"""Gradient method name -> (its options dataclass, its runner)."""


def _canonical_cond(cond: Any) -> Any:
    if isinstance(cond, int) or (isinstance(cond, list) and cond and all(isinstance(c, int) for c in cond)):
        return torch.as_tensor([cond] if isinstance(cond, int) else cond, dtype=torch.long)
    if isinstance(cond, tuple) and any(isinstance(c, float) for c in cond):  # FLUX's embedded guidance as a number
        return tuple(torch.tensor(c, dtype=torch.float64) if isinstance(c, float) else c for c in cond)
    return cond


def _canonical_options(method: str | None, options: Any) -> tuple[str, Any]:
    """(method name, its options dataclass) from what the caller gave: a name, an options object or a dict."""
    classes = {cls: name for name, (cls, _) in METHODS.items()}
    if method is None:
        method = classes.get(type(options), "discrete")
    if method not in METHODS:
        raise AccelError(f"unknown gradient method {method!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[method][0]
    if options is None:
        return method, cls()
    if isinstance(options, dict):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if "cache" in unknown:
            raise AccelError(f"method={method!r} cannot run with cache: the cache's decisions are per sampler step, which only "
                             "the discrete adjoint and autograd follow; use method='discrete' (or 'autograd', the reference)")
        if unknown:
            raise AccelError(f"method={method!r} has no option {', '.join(map(repr, unknown))}; its options ({cls.__name__}): "
                             f"{', '.join(sorted(fields))}")
        return method, cls(**options)
    if type(options) is not cls:
        raise AccelError(f"method={method!r} takes {cls.__name__} options (or a dict of its fields), got {type(options).__name__}")
    return method, options


def sample_with_grad(
    model_or_pipeline: Any,
    noise: torch.Tensor,
    cond: Any = None,
    *,
    steps: int = 50,
    method: str | None = None,
    options: Options | dict[str, Any] | None = None,
    guidance_scale: float = 1.0,
    uncond: Any = None,
    scheduler: Any = None,
    params: Iterable[torch.Tensor] | None = None,
    callback: Callback | None = None,
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
        method: a key of :data:`METHODS`; default: the method of ``options``' class, else ``"discrete"``.
        options: that method's options (:class:`DiscreteOptions`, :class:`AutogradOptions`,
            :class:`CheckpointOptions`, :class:`ContinuousOptions`, :class:`TorchDiffEqOptions`) or a dict of
            their fields, e.g. ``{"cache": "shipped"}`` or ``{"sampler": "deis2m"}``; default: its defaults.
        guidance_scale, uncond: classifier-free guidance inside the vector field (DiT: null class by default).
        scheduler: the diffusers scheduler, where ``model_or_pipeline`` is not a pipeline.
        params: weights to differentiate; default: the network's parameters that require grad (so freeze with
            ``requires_grad_(False)``, or inject LoRA adapters with peft, to choose).
        callback: called after each forward step with keys i, steps, t, x, denoised (and, with a cache,
            computed: whether the step ran in full).

    Returns:
        x_0, (B, C, H, W), differentiable with respect to noise, float cond tensors and ``params``.
    """
    method, opts = _canonical_options(method, options)
    if not torch.is_tensor(noise) or noise.ndim < 2:
        raise AccelError(f"noise must be a (B, ...) tensor, got {type(noise).__name__} {tuple(getattr(noise, 'shape', ()))}")
    if isinstance(getattr(opts, "cache", None), str):
        opts = dataclasses.replace(opts, cache=_shipped(model_or_pipeline, opts.cache, steps))
    den, grid = prepare(model_or_pipeline, steps, guidance_scale, uncond, scheduler, sample_shape=noise.shape)
    call = _Call(den, grid, noise, _canonical_cond(cond), params, callback)
    return METHODS[method][1](call, opts)


def _shipped(obj: Any, cache: str, steps: int) -> Any:
    """``cache="shipped"``: the model folder's CG-Taylor setting for ``steps`` sampling steps."""
    from accel.caching.shipped import shipped_config

    if cache != "shipped":
        raise AccelError(f"cache must be a CGTaylorConfig or 'shipped', got {cache!r}")
    config = shipped_config(obj, steps=steps)
    if config is None:
        raise AccelError("cache='shipped' needs the model folder's accel_cache.json, and this model ships none; "
                         "pass cache=accel.CGTaylorConfig(...) or write one with `accel calibrate --save`")
    return config


def _cached(call: _Call, opts: DiscreteOptions, method: str) -> torch.Tensor:
    """Sample with CG-Taylor and differentiate through it (``adjoint/_cached.py``)."""
    from accel.caching.grad import CachedRun

    from ._cached import sample_cached

    den = call.den
    run = CachedRun(den.network if den.network is not None else den.model, opts.cache, call.grid.steps)
    kind, flat = flatten_cond(call.cond)
    params = select_params(den, call.params)
    return sample_cached(call.spec(opts.sampler, flat, params, kind), run, method, call.noise, flat, params)


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


def _torchdiffeq(den: Denoiser, grid: Grid, x: torch.Tensor, cond: Any, adjoint_params: list[torch.Tensor],
                 opts: TorchDiffEqOptions, callback: Callback | None) -> torch.Tensor:
    """``torchdiffeq.odeint_adjoint`` on dz/ds = F, the baseline of the paper's released code."""
    from torchdiffeq import odeint_adjoint

    ode_method = opts.ode_method
    z0, s = ode_endpoints(den, x, grid, ode_method)
    func = ODEFunc(den, cond, callback, grid.steps)
    try:
        z = odeint_adjoint(func, z0, s, rtol=opts.rtol, atol=opts.atol, method=ode_method, adjoint_params=tuple(adjoint_params))[-1]
    except ValueError as e:
        raise AccelError(f"torchdiffeq rejected method={ode_method!r}: {e}") from e
    return z / den.schedule.state_scale(grid.alpha[-1], grid.sigma[-1]).to(x.dtype)
