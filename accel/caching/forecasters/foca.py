"""FoCa's predictor-corrector (Zheng et al. 2025, arXiv 2508.16211, as cache-dit 1.5.3 runs it) under CG-Taylor's gate.

The feature trajectory is integrated as an ODE: the stream keeps the last two full steps' outputs (the anchors) and
a rolling pair of the two latest values, full or forecast, and takes in its own forecast on every forecast step
(:attr:`Forecaster.advances`). The forecast ``elapsed`` steps after the last full step is Heun's trapezoidal rule from
the anchor, ``F_full + elapsed / 2 (d_full + d_curr)``, with ``d_full`` the anchors' slope per step and ``d_curr`` the
rolling pair's difference (the BDF2 predictor's local slope). Beyond ``horizon`` steps it is blended back towards
the anchor with weight ``horizon / elapsed``. Where cache-dit assumes the anchors are one step apart, here their slope
is divided by the steps between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import AccelError
from .base import Forecaster, Stream

FULL, FULL_PREV, K, K_PREV = range(4)


@dataclass(frozen=True)
class FoCaOptions:
    """horizon: steps after the last full step beyond which the forecast is blended back to the anchor (default 3, cache-dit's)."""

    horizon: float = 3.0

    def __post_init__(self) -> None:
        h = self.horizon
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not h > 0:
            raise AccelError(f"foca forecaster: horizon must be a number > 0, got {h!r}")


class FoCa(Forecaster):
    name = "foca"
    Options = FoCaOptions
    rows = None
    advances = True

    def update(self, s: Stream, h: torch.Tensor, step: int) -> None:
        if s.data is None:
            s.data = h.new_zeros((4, *h.shape))
        d = s.data
        d[FULL_PREV].copy_(d[FULL] if s.valid else h)
        d[FULL].copy_(h)
        d[K_PREV].copy_(d[K] if s.valid else h)
        d[K].copy_(h)
        s.extra = (s.last if s.last is not None else step,)
        s.valid, s.last = min(s.valid + 1, 2), step

    def updated(self, s: Stream, h: torch.Tensor, step: int) -> Stream:
        if s.data is None:
            data = torch.stack([h, h, h, h])
        else:
            data = torch.stack([h, s.data[FULL], h, s.data[K]])
        return Stream(data, min(s.valid + 1, 2), step, (s.last if s.last is not None else step,))

    def advance(self, s: Stream, fc: torch.Tensor, step: int) -> None:
        s.data[K_PREV].copy_(s.data[K])
        s.data[K].copy_(fc)

    def advanced(self, s: Stream, fc: torch.Tensor, step: int) -> Stream:
        return Stream(torch.stack([s.data[FULL], s.data[FULL_PREV], fc.to(s.data.dtype), s.data[K]]), s.valid, s.last, s.extra)

    def latest(self, s: Stream) -> torch.Tensor:
        return s.data[FULL]

    def _forecast(self, s: Stream, step: int) -> torch.Tensor:
        d = s.data
        if s.valid < 2:
            return d[FULL].clone()
        elapsed = float(step - s.last)
        gap = float(s.last - s.extra[0]) or 1.0
        slope = (d[FULL] - d[FULL_PREV]) / gap + (d[K] - d[K_PREV])
        reach = min(elapsed, self.options.horizon)
        heun = d[FULL] + (reach / 2.0) * slope
        if elapsed <= self.options.horizon:
            return heun
        w = self.options.horizon / elapsed
        return w * heun + (1.0 - w) * d[FULL]

    def predict(self, s: Stream, step: int, out: torch.Tensor | None = None) -> torch.Tensor:
        fc = self._forecast(s, step)
        return out.copy_(fc) if out is not None else fc

    def predict_differentiable(self, s: Stream, step: int) -> torch.Tensor:
        return self._forecast(s, step)
