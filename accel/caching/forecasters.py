"""How CG-Taylor extrapolates its stored factors (``CGTaylorConfig.forecaster``).

Every forecaster reads the same finite-difference stack ``D_0..D_K`` (``accel.kernels``) and is a weighted sum of
series evaluated at some offsets (:func:`terms`), so block 0's forecast (which the gate judges) and the forecast
block's (which replaces blocks 1..L-1) always take the same shape. The Taylor-series forecasters are linear in the
factors; ``exp`` is not, and autograd differentiates it as written (:func:`evaluate_differentiable`):

- ``"taylor"``: the series at the offset (the paper; ``damping`` shortens the offset).
- ``"horizon"``: FoCa's horizon rule: beyond ``HORIZON`` steps since the last full step the extrapolation is
  blended back towards the last full step's value with weight ``HORIZON / offset`` (cache-dit's FoCa calibrator,
  which caps its Heun step the same way).
- ``"exp"``: an exponential basis per element (DMD's idea in its simplest form): ``F(o) = D_0 + D_1 (e^(l o) - 1) / l``
  with the rate ``l = D_2 / D_1`` clamped to ``[-EXP_MAX_RATE, 0]``, so each element's extrapolation levels off
  where its finite differences say it decays and is the first-order series where they do not. Needs three valid
  factors (``last_order >= 2``); with fewer it is the Taylor series.
- ``"select"``: on every gated step block 0 picks, among :data:`CANDIDATES` (order and damping), the forecast that
  predicts its own fresh output best; the gate judges that forecast's error and the forecast block uses the same
  candidate. The confidence gate's premise (block 0's forecast error predicts the last block's) turned into a
  choice of forecaster per step.
"""

from __future__ import annotations

import torch

from .. import kernels
from .config import FORECASTERS
from .taylor import forecast

__all__ = ["CANDIDATES", "FORECASTERS", "evaluate", "evaluate_differentiable", "forecast_error", "terms"]

EXP_MAX_RATE = 2.0
HORIZON = 3.0
CANDIDATES: tuple[tuple[int, float], ...] = ((0, 1.0), (1, 1.0), (1, 0.5), (2, 1.0))
"""``select``'s candidates: (Taylor order, damping): reuse, first order, damped first order, second order."""

Terms = list[tuple[float, float, int]]
"""(weight, offset, valid orders) of each series in the sum: a Taylor series, or the ``exp`` series where the count is negative."""


def terms(kind: str, offset: float, n_valid: int, choice: int | None = None) -> Terms:
    """The forecast ``offset`` steps (already damped) after the last full step as weighted series (:data:`Terms`)."""
    if kind == "horizon" and offset > HORIZON:
        w = HORIZON / offset
        return [(w, HORIZON, n_valid), (1.0 - w, 0.0, 1)]
    if kind == "exp" and n_valid >= 3:
        return [(1.0, offset, -n_valid)]  # a negative count marks the exponential series
    if kind == "select" and choice is not None:
        order, damping = CANDIDATES[choice]
        return [(1.0, offset * damping, min(n_valid, order + 1))]
    return [(1.0, offset, n_valid)]


def exp_forecast(factors: torch.Tensor, offset: float, n_valid: int) -> torch.Tensor:
    """The ``"exp"`` forecast (module docstring) in the factors' dtype, with autograd-visible operations; it reads
    ``D_0..D_2`` (:func:`terms` sends it only stacks with ``n_valid >= 3``)."""
    d1, d2 = factors[1], factors[2]
    tiny = torch.finfo(d1.dtype).tiny
    rate = (d2 / torch.where(d1.abs() > tiny, d1, tiny)).clamp(-EXP_MAX_RATE, 0.0)
    decays = rate * offset < -1e-6  # elsewhere (e^(l o) - 1) / l is o to within 1e-6: the first-order series
    gain = torch.where(decays, torch.expm1(rate * offset) / torch.where(decays, rate, 1.0), offset)
    return factors[0] + d1 * gain


def _plain(t: Terms) -> bool:
    """Whether ``t`` is one Taylor series with weight 1: what the fused kernels compute."""
    return len(t) == 1 and t[0][0] == 1.0 and t[0][2] >= 0


def forecast_error(factors: torch.Tensor, t: Terms, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(sum |F^ - actual|, sum |actual|)`` of the forecast ``t`` (the fused kernel for one series)."""
    if _plain(t):
        return kernels.forecast_error(factors, t[0][1], t[0][2], actual)
    fc = evaluate(factors, t, torch.float64 if actual.dtype == torch.float64 else torch.float32)
    b = actual.shape[0]
    err = torch.linalg.vector_norm(fc.sub_(actual).reshape(b, -1), ord=1, dim=1)
    ref = torch.linalg.vector_norm(actual.reshape(b, -1), ord=1, dim=1, dtype=fc.dtype)
    return err.float(), ref.float()


def evaluate(factors: torch.Tensor, t: Terms, dtype: torch.dtype | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The forecast ``t`` as a new tensor (``dtype``, default the factors'), or written into ``out``; one series
    with weight 1 goes through the fused kernel."""
    if _plain(t) and dtype is None:
        return kernels.taylor_forecast(factors, t[0][1], t[0][2], out=out)
    acc = None
    for w, off, n in t:
        part = (kernels.taylor_forecast(factors, off, n) if n >= 0 else exp_forecast(factors, off, -n)).to(dtype or factors.dtype)
        acc = part.mul_(w) if acc is None else acc.add_(part, alpha=w)
    return acc if out is None else out.copy_(acc)


def evaluate_differentiable(factors: torch.Tensor, t: Terms) -> torch.Tensor:
    """The forecast ``t`` with autograd-visible operations (the gradient path)."""
    out = None
    for w, off, n in t:
        part = forecast(factors, off, n) if n >= 0 else exp_forecast(factors, off, -n)
        part = part if w == 1.0 else w * part
        out = part if out is None else out + part
    return out
