"""Noise schedules and time grids in the variables of the reparameterised probability-flow ODE.

A variance-preserving (VP) model sees ``x_t = alpha_t x_0 + sigma_t eps`` with ``alpha^2 + sigma^2 = 1``; a
flow-matching (rectified-flow) model sees ``x_s = (1 - s) x_0 + s eps``. Both probability-flow ODEs are
written as one simple ODE ``dz/ds = F`` (Pan et al. 2023, "AdjointDPM", Sec. 3.2):

* VP:   ``z = x / alpha``, ``s = rho = sigma / alpha``, ``F = eps``  (explicit Euler here is DDIM);
* flow: ``z = x``,         ``s = sigma``,                ``F = v = eps - x_0``  (Euler here is FlowMatchEuler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

from accel.errors import AccelError


@dataclass(frozen=True)
class VPSchedule:
    """A discrete VP schedule from diffusers' ``alphas_cumprod`` (T,), extended to real-valued t.

    ``log rho`` is interpolated linearly between integer timesteps, so integer t are exact and the map
    t -> rho is invertible (needed by adaptive ODE solvers that ask for any rho).
    """

    alphas_cumprod: torch.Tensor  # (T,) float64
    kind: str = "vp"

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def _log_rho_table(self, device: torch.device) -> torch.Tensor:
        acp = self.alphas_cumprod.to(device=device, dtype=torch.float64)
        return 0.5 * ((1 - acp) / acp).log()  # increasing in t

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t, sigma_t at model timesteps ``t`` (any shape; real t in [0, T-1], log rho interpolated linearly)."""
        tab = self._log_rho_table(t.device)
        tt = t.double().clamp(0, self.num_train_timesteps - 1)
        lo = tt.floor().long().clamp(max=self.num_train_timesteps - 2)
        w = tt - lo
        rho = ((1 - w) * tab[lo] + w * tab[lo + 1]).exp()
        alpha = (1 + rho * rho).rsqrt()
        return alpha, rho * alpha

    def ode_time(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """rho = sigma / alpha (the square root of the inverse SNR)."""
        return sigma / alpha

    def state_scale(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """z = x * scale, with scale = 1 / alpha."""
        return 1 / alpha

    def field(self, eps: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """dz/ds = eps."""
        return eps

    def from_ode_time(self, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, alpha, sigma) at ODE time rho: the exact inverse of :meth:`alpha_sigma` on [0, T-1]."""
        rho = rho.double()
        alpha = (1 + rho * rho).rsqrt()
        tab = self._log_rho_table(rho.device)
        lr = rho.clamp_min(1e-300).log().reshape(-1)
        hi = torch.searchsorted(tab, lr).clamp(1, self.num_train_timesteps - 1)
        lo = hi - 1
        w = (lr - tab[lo]) / (tab[hi] - tab[lo])
        t = (lo.double() + w).clamp(0, self.num_train_timesteps - 1).reshape(rho.shape)
        return t, alpha, rho * alpha


@dataclass(frozen=True)
class FlowSchedule:
    """Rectified flow ``x_s = (1 - s) x_0 + s eps``, model timestep ``t = s * T`` (SD3, FLUX)."""

    num_train_timesteps: int = 1000
    kind: str = "flow"

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = t.double() / self.num_train_timesteps
        return 1 - s, s

    def ode_time(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def state_scale(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(alpha)

    def field(self, eps: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """dz/ds = v = eps - x0 (the velocity a flow-matching model predicts)."""
        return eps - x0

    def from_ode_time(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = s.double()
        return s * self.num_train_timesteps, 1 - s, s


Schedule = Union[VPSchedule, FlowSchedule]


@dataclass(frozen=True)
class Grid:
    """N + 1 time points of an N-step sampler, from noise (index 0) to data (index N); all (N+1,) float64.

    ``t`` is what the network is given (diffusers' timestep), ``alpha``/``sigma`` the noise levels, and
    ``s`` the ODE time (rho for VP models, sigma for flow models). The network is never called at point N.
    """

    t: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    s: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.t.shape[0]) - 1

    def to(self, device: torch.device | str) -> "Grid":
        return Grid(*(v.to(device) for v in (self.t, self.alpha, self.sigma, self.s)))


def make_grid(schedule: Schedule, t: torch.Tensor, alpha: torch.Tensor | None = None, sigma: torch.Tensor | None = None) -> Grid:
    """A grid at model timesteps ``t`` (N+1,); alpha/sigma default to the schedule's values at t."""
    t = torch.as_tensor(t, dtype=torch.float64)
    a, s = schedule.alpha_sigma(t)
    a = a if alpha is None else torch.as_tensor(alpha, dtype=torch.float64)
    s = s if sigma is None else torch.as_tensor(sigma, dtype=torch.float64)
    if t.ndim != 1 or t.shape[0] < 2 or a.shape != t.shape or s.shape != t.shape:
        raise AccelError(f"a grid needs N+1 >= 2 time points as 1-D tensors; got t {tuple(t.shape)}, alpha {tuple(a.shape)}, sigma {tuple(s.shape)}")
    return Grid(t, a, s, schedule.ode_time(a, s))


def schedule_from_scheduler(scheduler: Any) -> tuple[Schedule, str]:
    """(schedule, prediction_type) for a diffusers scheduler of the DDPM family or FlowMatchEulerDiscreteScheduler."""
    name = type(scheduler).__name__
    cfg = scheduler.config
    if "FlowMatch" in name:
        return FlowSchedule(int(cfg.num_train_timesteps)), "flow"
    acp = getattr(scheduler, "alphas_cumprod", None)
    if acp is None:
        raise AccelError(f"scheduler {name} has neither alphas_cumprod (DDPM family) nor a flow-matching config; use DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, ... or FlowMatchEulerDiscreteScheduler")
    pred = getattr(cfg, "prediction_type", "epsilon")
    if pred not in ("epsilon", "v_prediction", "sample"):
        raise AccelError(f"scheduler {name} has prediction_type={pred!r}; supported: 'epsilon', 'v_prediction', 'sample'")
    return VPSchedule(torch.as_tensor(acp, dtype=torch.float64).clone()), pred


def grid_from_scheduler(scheduler: Any, steps: int, **set_timesteps_kwargs: Any) -> Grid:
    """The time grid that ``scheduler`` uses for ``steps`` steps (it is not modified: a fresh copy is asked).

    DDPM family: the scheduler's timesteps, then DDIM's final point (``t - T // N``, or ``final_alpha_cumprod``
    when that is negative). Flow matching: ``timesteps`` and ``sigmas`` (with its shift) as set by the scheduler.
    """
    if not isinstance(steps, int) or steps <= 0:
        raise AccelError(f"steps must be a positive integer, got {steps!r}")
    schedule, _ = schedule_from_scheduler(scheduler)
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(steps, **set_timesteps_kwargs)
    ts = fresh.timesteps.detach().cpu().double()
    if isinstance(schedule, FlowSchedule):
        sig = fresh.sigmas.detach().cpu().double()  # (N+1,), ends at 0; timesteps are sigmas * T
        return make_grid(schedule, sig * schedule.num_train_timesteps, 1 - sig, sig)
    last = ts[-1] - scheduler.config.num_train_timesteps // steps
    t = torch.cat([ts, last.reshape(1)])
    alpha, sigma = schedule.alpha_sigma(t)
    if last < 0:
        final = getattr(fresh, "final_alpha_cumprod", None)
        acp_end = torch.as_tensor(final if final is not None else schedule.alphas_cumprod[0], dtype=torch.float64)
        alpha[-1], sigma[-1] = acp_end.sqrt(), (1 - acp_end).sqrt()
        t[-1] = 0.0
    return make_grid(schedule, t, alpha, sigma)
