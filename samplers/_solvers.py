"""ODE samplers on the reparameterised probability-flow ODE dz/ds = F (see ``_schedules``).

Each solver is a *step function* ``step(denoiser, grid, i, x, cond, carry) -> (x_next, carry_next, pred)``
(``carry`` holds what a multistep method remembers; None for one-step methods) so that the adjoint
package can re-run any single step with gradients. ``sample`` is the loop around a step function.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from accel.errors import AccelError

from ._models import Cond, Denoiser, Prediction, denoiser_from_pipeline
from ._schedules import Grid, grid_from_scheduler

Callback = Callable[[dict[str, Any]], None]
"""Called after every step with the fixed keys ``i``, ``steps``, ``t``, ``x``, ``denoised``."""
StepFn = Callable[[Denoiser, Grid, int, torch.Tensor, Cond, Optional[torch.Tensor]], tuple[torch.Tensor, Optional[torch.Tensor], Prediction]]


def euler_step(denoiser: Denoiser, grid: Grid, i: int, x: torch.Tensor, cond: Cond = None, carry: torch.Tensor | None = None) -> tuple[torch.Tensor, None, Prediction]:
    """One explicit Euler step on dz/ds = F from grid point i to i+1, written as x' = alpha' x0 + sigma' eps.

    For VP models this is Euler in (y = x/alpha, rho = sigma/alpha), i.e. DDIM (Song et al. 2021; Pan et al.
    2023, Eq. 7); for flow models it is Euler on dx/dsigma = v, i.e. FlowMatchEulerDiscreteScheduler.
    """
    pred = denoiser(x, grid.t[i], cond)
    a, s = grid.alpha[i + 1].to(x.dtype), grid.sigma[i + 1].to(x.dtype)
    return a * pred.x0 + s * pred.eps, None, pred


def deis2m_step(denoiser: Denoiser, grid: Grid, i: int, x: torch.Tensor, cond: Cond = None, carry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, Prediction]:
    """Second-order multistep: F extrapolated linearly through the last two points and integrated exactly in s.

    z' = z + h F_i + h^2 / (2 h_prev) (F_i - F_{i-1}); the variable-step Adams-Bashforth 2 in the paper's
    variables, i.e. rho-AB-DEIS of order 2 (Zhang and Chen 2023). ``carry`` is F_{i-1} (None at i = 0: Euler).
    """
    x_next, _, pred = euler_step(denoiser, grid, i, x, cond)
    field = denoiser.schedule.field(pred.eps, pred.x0)
    if carry is not None and i > 0:
        h, h_prev = grid.s[i + 1] - grid.s[i], grid.s[i] - grid.s[i - 1]
        scale_next = denoiser.schedule.state_scale(grid.alpha[i + 1], grid.sigma[i + 1])
        x_next = x_next + (h * h / (2 * h_prev) / scale_next).to(x.dtype) * (field - carry)
    return x_next, field, pred


SAMPLERS: dict[str, StepFn] = {"euler": euler_step, "deis2m": deis2m_step}
"""Step functions by name: ``euler`` (first order; = DDIM / FlowMatchEuler) and ``deis2m`` (second order)."""


def get_step(sampler: str) -> StepFn:
    """The step function called ``sampler`` (see :data:`SAMPLERS`)."""
    if sampler not in SAMPLERS:
        raise AccelError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)} (or use sample_odeint for torchdiffeq methods)")
    return SAMPLERS[sampler]


def sample(denoiser: Denoiser, x: torch.Tensor, grid: Grid, cond: Cond = None, sampler: str = "euler", callback: Callback | None = None) -> torch.Tensor:
    """Integrate the probability-flow ODE from x = x_T (B, C, H, W) (already scaled noise) along ``grid``.

    Returns x_0 (B, C, H, W). Differentiable by plain autograd (memory grows with the number of steps; see
    ``accel.adjoint`` for constant-memory gradients).
    """
    step = get_step(sampler)
    carry = None
    for i in range(grid.steps):
        x, carry, pred = step(denoiser, grid, i, x, cond, carry)
        if callback is not None:
            callback({"i": i, "steps": grid.steps, "t": float(grid.t[i]), "x": x, "denoised": pred.x0})
    return x


def sample_euler(denoiser: Denoiser, x: torch.Tensor, grid: Grid, cond: Cond = None, callback: Callback | None = None) -> torch.Tensor:
    """First-order sampler (DDIM for VP models, FlowMatchEuler for flow models); see :func:`euler_step`."""
    return sample(denoiser, x, grid, cond, "euler", callback)


def sample_deis2m(denoiser: Denoiser, x: torch.Tensor, grid: Grid, cond: Cond = None, callback: Callback | None = None) -> torch.Tensor:
    """Second-order multistep sampler in the reparameterised variables; see :func:`deis2m_step`."""
    return sample(denoiser, x, grid, cond, "deis2m", callback)


FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")


class ODEFunc(torch.nn.Module):
    """dz/ds = F(z, s) for torchdiffeq; z (B, C, H, W) is x * scale(s), s is rho (VP) or sigma (flow)."""

    def __init__(self, denoiser: Denoiser, cond: Cond = None, callback: Callback | None = None, steps: int = 0) -> None:
        super().__init__()
        self.denoiser, self.cond, self.callback, self.steps, self.nfe = denoiser, cond, callback, steps, 0

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        sched = self.denoiser.schedule
        t, alpha, sigma = sched.from_ode_time(s)
        x = z / sched.state_scale(alpha, sigma).to(z.dtype)
        pred = self.denoiser(x, t, self.cond)
        if self.callback is not None:
            self.callback({"i": self.nfe, "steps": self.steps, "t": float(t), "x": x, "denoised": pred.x0})
        self.nfe += 1
        return sched.field(pred.eps, pred.x0)


def ode_endpoints(denoiser: Denoiser, x: torch.Tensor, grid: Grid, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_0 = x * scale_0, the s points to hand torchdiffeq): the whole grid for fixed-grid methods, else its ends."""
    scale0 = denoiser.schedule.state_scale(grid.alpha[0], grid.sigma[0]).to(x.dtype)
    s = grid.s if method in FIXED_GRID_METHODS else grid.s[[0, -1]]
    return x * scale0, s.to(device=x.device, dtype=x.dtype)


def sample_odeint(
    denoiser: Denoiser,
    x: torch.Tensor,
    grid: Grid,
    cond: Cond = None,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    options: dict[str, Any] | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Solve the reparameterised ODE with ``torchdiffeq.odeint`` and any of its methods (Chen et al. 2018).

    Fixed-grid methods step on ``grid`` (``euler`` then equals :func:`sample_euler`); adaptive ones go from
    the grid's first to its last point. The callback's ``i`` counts network evaluations.
    """
    from torchdiffeq import odeint

    z0, s = ode_endpoints(denoiser, x, grid, method)
    func = ODEFunc(denoiser, cond, callback, grid.steps)
    try:
        z = odeint(func, z0, s, rtol=rtol, atol=atol, method=method, options=options)[-1]
    except ValueError as e:
        raise AccelError(f"torchdiffeq rejected method={method!r}: {e}") from e
    scale_n = denoiser.schedule.state_scale(grid.alpha[-1], grid.sigma[-1]).to(x.dtype)
    return z / scale_n


def flow_shift_mu(scheduler: Any, seq_len: int) -> float:
    """The resolution-dependent shift ``mu`` that FLUX/SD3 pipelines give a dynamically shifting scheduler:
    linear in the number of image tokens between (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift)."""
    cfg = scheduler.config
    lo, hi = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    b0, b1 = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    return float(b0 + (b1 - b0) * (seq_len - lo) / (hi - lo))


def _timestep_kwargs(model: Any, scheduler: Any, steps: int, sample_shape: Any) -> dict[str, Any]:
    """What the model's diffusers pipeline passes to ``scheduler.set_timesteps`` besides the step count."""
    import numpy as np

    from ._models import image_seq_len

    kw: dict[str, Any] = {}
    cfg = scheduler.config
    if type(model).__name__ == "FluxTransformer2DModel" and not cfg.get("use_flow_sigmas", False):
        kw["sigmas"] = np.linspace(1.0, 1 / steps, steps)  # FluxPipeline's default sigmas
    if cfg.get("use_dynamic_shifting", False):
        n = image_seq_len(model, sample_shape) if sample_shape is not None else None
        if n is None:
            raise AccelError(f"{type(scheduler).__name__} shifts its timesteps by image size (use_dynamic_shifting=True): pass sample_shape= "
                             "(the latents' (B, C, H, W)) so that the shift can be computed")
        kw["mu"] = flow_shift_mu(scheduler, n)
    return kw


def prepare(model_or_pipeline: Any, steps: int, guidance_scale: float = 1.0, uncond: Cond = None, scheduler: Any = None,
            sample_shape: Any = None) -> tuple[Denoiser, Grid]:
    """(Denoiser, Grid) for a diffusers pipeline, or for a Denoiser/network plus ``scheduler`` (for the grid).

    ``sample_shape``: the latents' (B, C, H, W); needed for schedulers that shift by resolution (FLUX).
    """
    if isinstance(model_or_pipeline, Denoiser):
        if scheduler is None:
            raise AccelError("pass scheduler= (a diffusers scheduler) to build the time grid for a bare Denoiser")
        den = model_or_pipeline
    elif hasattr(model_or_pipeline, "scheduler") and (hasattr(model_or_pipeline, "transformer") or hasattr(model_or_pipeline, "unet")):
        scheduler = scheduler if scheduler is not None else model_or_pipeline.scheduler
        den = denoiser_from_pipeline(model_or_pipeline, guidance_scale, uncond, scheduler)
    elif scheduler is None:
        raise AccelError(f"got a {type(model_or_pipeline).__name__}, not a pipeline: pass scheduler= as well (e.g. DDIMScheduler())")
    else:
        from ._schedules import schedule_from_scheduler

        schedule, pred = schedule_from_scheduler(scheduler)
        den = Denoiser(model_or_pipeline, schedule, pred, guidance_scale, uncond)
    if not isinstance(steps, int) or steps <= 0:
        raise AccelError(f"steps must be a positive integer, got {steps!r}")
    return den, grid_from_scheduler(scheduler, steps, **_timestep_kwargs(den.model, scheduler, steps, sample_shape))
