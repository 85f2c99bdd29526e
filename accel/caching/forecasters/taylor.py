"""The Taylor forecaster (the CG-Taylor paper's, after TaylorSeer): finite differences over the full steps.

The stream's tensor is the stack ``D_0..D_K`` (``D_0`` the latest output, ``D_{i+1} = (D_i new - D_i old) / delta``),
the forecast ``sum_{i < valid} D_i offset^i / i!`` at ``offset`` steps after the last refresh. The forward path runs
the fused ops of ``accel.kernels`` in place; the gradient path the same maths out of place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import kernels
from ...errors import AccelError
from ...kernels.reference import taylor_coefficients
from .base import Forecaster, Stream


@dataclass(frozen=True)
class TaylorOptions:
    """order: Taylor order of the forecast block's forecast (default 1, the paper's on every model).
    block0_order: Taylor order of block 0's forecast, which only the gate reads (default 2: a sharper judge)."""

    order: int = 1
    block0_order: int = 2

    def __post_init__(self) -> None:
        for name in ("order", "block0_order"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 4:
                raise AccelError(f"taylor forecaster: {name} must be an int from 0 to 4 (higher orders only amplify noise), got {v!r}")


def series(factors: torch.Tensor, offset: float, n_valid: int) -> torch.Tensor:
    """``sum_{i < n_valid} D_i offset^i / i!`` with autograd-visible operations, in the factors' dtype."""
    coefs = taylor_coefficients(offset, n_valid)
    out = factors[0]
    for i in range(1, n_valid):
        out = out + coefs[i] * factors[i]
    return out


class Taylor(Forecaster):
    name = "taylor"
    Options = TaylorOptions

    def __init__(self, options: TaylorOptions, role: str) -> None:
        super().__init__(options, role)
        self.order = options.block0_order if role == "block0" else options.order
        self.rows = self.order + 1  # row k of the stack depends on the k + 1 latest outputs

    @staticmethod
    def _offset(s: Stream, step: int) -> float:
        return float(step - s.last) if s.last is not None else 0.0

    def update(self, s: Stream, h: torch.Tensor, step: int) -> None:
        if s.data is None:
            s.data = kernels.new_factors(h, self.order)
        s.valid = kernels.taylor_update(s.data, h, self._offset(s, step) or 1.0, s.valid)
        s.last = step

    def updated(self, s: Stream, h: torch.Tensor, step: int) -> Stream:
        factors, valid = s.data, s.valid
        if factors is None:
            factors, valid = torch.zeros((self.order + 1, *h.shape), dtype=h.dtype, device=h.device), 0
        delta = self._offset(s, step) or 1.0
        new = min(valid + 1, factors.shape[0])
        rows = [h.to(factors.dtype)]
        for i in range(1, new):
            rows.append((rows[-1] - factors[i - 1]) / delta)
        return Stream(torch.stack(rows + list(factors[new:])), new, step)

    def latest(self, s: Stream) -> torch.Tensor:
        return s.data[0]

    def predict(self, s: Stream, step: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return kernels.taylor_forecast(s.data, self._offset(s, step), s.valid, out=out)

    def predict_differentiable(self, s: Stream, step: int) -> torch.Tensor:
        return series(s.data, self._offset(s, step), s.valid)

    def error(self, s: Stream, step: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.forecast_error(s.data, self._offset(s, step), s.valid, actual)
