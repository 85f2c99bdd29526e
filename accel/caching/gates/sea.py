"""SeaCache's spectrally filtered distance (Sea, CVPR 2026) as the gate's error signal: block 0's forecast error and
its output are filtered, along the token grid, by the Wiener gain that estimates the clean signal under this step's
noise level, before their relative L1 is taken. At high noise only the low frequencies count (the content the step
can still change), near the end every frequency does. The errors are accumulated as the cumulative gate does
(SeaCache's own rule: a budget spent until a full step), or judged per step (``accumulate=False``).

The filter, per axis of the token grid (time, height, width), with f the FFT frequency in cycles per token and
x_t = a x_0 + b noise: S(f) = 1 / |f| ** power_exp, G(f) = a S / (a^2 S + b^2); the product over the axes is
normalised to mean 1. a and b come from the scheduler at the step's timestep (flow matching: a = 1 - sigma,
b = sigma; DDPM-style: a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar)). The grid comes from the denoiser's latent input
(channels-first latents: the token grid is the latent's over the patch size; packed latents: a square grid); where
the grid or the noise level cannot be read (the gradient path's samplers pass no scheduler; a sharded sequence), the
signal is the plain one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import AccelError
from ..forecasters import Forecaster, Stream
from .base import Where
from .cumulative import CumulativeGate, Spent


@dataclass(frozen=True)
class SeaOptions:
    """power_exp: the exponent of the signal-power prior 1 / |f| ** p (SeaCache's 3). accumulate: spend a budget
    over the forecast steps since the last full step (SeaCache's rule), else judge each step alone."""

    power_exp: float = 3.0
    accumulate: bool = True

    def __post_init__(self) -> None:
        p = self.power_exp
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 8:
            raise AccelError(f"sea gate: power_exp must be in (0, 8], got {p!r}")
        if not isinstance(self.accumulate, bool):
            raise AccelError(f"sea gate: accumulate must be True or False, got {self.accumulate!r}")


def noise_level(scheduler: Any, t: float | None) -> tuple[float, float] | None:
    """(a, b) of x_t = a x_0 + b noise at timestep ``t``, or None where the scheduler does not tell."""
    if t is None or scheduler is None:
        return None
    cfg = getattr(scheduler, "config", {}) or {}
    if "FlowMatch" in type(scheduler).__name__ or cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction":
        sigma = min(max(t / 1000.0 if abs(t) > 1.5 else t, 1e-6), 1 - 1e-6)
        return 1.0 - sigma, sigma
    ac = getattr(scheduler, "alphas_cumprod", None)
    if isinstance(ac, torch.Tensor) and ac.numel():
        a2 = float(ac[min(max(int(round(t)), 0), ac.numel() - 1)])
        return math.sqrt(a2), math.sqrt(max(1.0 - a2, 0.0))
    return None


def token_grid(h: torch.Tensor, latent: tuple[int, ...] | None, patch: Any) -> tuple[tuple[int, ...], bool] | None:
    """(grid, channels_first) of a block output: a U-Net's (B, C, *grid), or a transformer's (B, N, D) with N tokens on
    the latent's grid over the patch size; None where it cannot be told."""
    if h.dim() >= 4:
        return tuple(h.shape[2:]), True
    if h.dim() != 3 or latent is None:
        return None
    n = h.shape[1]
    if len(latent) == 5:  # (B, C, F, H, W) video latents
        p = tuple(patch) if isinstance(patch, (tuple, list)) and len(patch) == 3 else (1, int(patch or 1), int(patch or 1))
        grid = tuple(d // q for d, q in zip(latent[2:], p))
    elif len(latent) == 4:  # (B, C, H, W) image latents
        q = math.isqrt(max(latent[2] * latent[3] // max(n, 1), 1))
        grid = (latent[2] // q, latent[3] // q)
    else:  # packed tokens (FLUX): a square image
        r = math.isqrt(n)
        grid = (r, r)
    return (grid, False) if math.prod(grid) == n else None


def sea_gain(grid: tuple[int, ...], a: float, b: float, power: float, half: bool = False) -> torch.Tensor:
    """The separable Wiener gain over the grid's FFT bins, normalised to mean 1 over the full bins (float64); with
    ``half`` only the last axis's non-negative bins (the layout of a real FFT)."""
    g, full = torch.ones(()), torch.ones(())
    for i, n in enumerate(grid):
        prior = 1.0 / (torch.fft.fftfreq(n, dtype=torch.float64).abs() ** power + 1e-16)
        gain = a * prior / (a * a * prior + b * b + 1e-16)
        full = full[..., None] * gain
        g = g[..., None] * (gain[: n // 2 + 1] if half and i == len(grid) - 1 else gain)
    return g / full.mean()


class SeaGate(CumulativeGate):
    name = "sea"
    Options = SeaOptions
    needs_where = True

    def signal(self, forecaster: Forecaster, s: Stream, step: int, actual: torch.Tensor,
               where: Where | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        layout = token_grid(actual, where.latent, where.patch) if where is not None and not where.sharded else None
        if layout is None or where.noise is None:
            return forecaster.error(s, step, actual)
        grid, first = layout
        dtype = torch.float64 if actual.dtype == torch.float64 else torch.float32
        x = actual.to(dtype)
        d = forecaster.predict(s, step).to(dtype) - x
        b = x.shape[0]
        if not first:  # (B, N, D) -> (B, *grid, D)
            x, d = x.reshape(b, *grid, -1), d.reshape(b, *grid, -1)
        axes = tuple(range(2, 2 + len(grid))) if first else tuple(range(1, 1 + len(grid)))
        gain = sea_gain(grid, *where.noise, self.options.power_exp, half=True).to(x.device, dtype)
        gain = gain if first else gain[..., None]

        def l1(v: torch.Tensor) -> torch.Tensor:  # real FFTs: the gain is even in every frequency
            return torch.fft.irfftn(torch.fft.rfftn(v, dim=axes).mul_(gain), s=grid, dim=axes).abs().reshape(b, -1).sum(1)

        return l1(d).float(), l1(x).float()

    def passes(self, state: Spent, error: float) -> bool:
        return error + (state.total if self.options.accumulate else 0.0) < self.threshold
