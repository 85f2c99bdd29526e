"""A Spectrum-style forecaster (Han et al., CVPR 2026, arXiv 2603.01623) under CG-Taylor's gate.

Each stream is fitted over time by a ridge regression on Chebyshev polynomials ``T_0..T_M`` of ``tau = 2 t / span - 1``
over every full step so far (``span`` 50 as in the reference code), blended with the first-order forward difference
of the last two full steps: ``h = w h_cheb + (1 - w) h_lin``. All elements share the design, so the stream keeps only
``S = X^T H`` (``degree + 1`` rows) and the last two full outputs; ``G = X^T X + lam I`` follows from the full steps
(``Stream.extra``). Where Spectrum runs on a fixed schedule, here the gate decides which steps are full.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import AccelError
from .base import Forecaster, Stream


@dataclass(frozen=True)
class SpectrumOptions:
    """degree: Chebyshev degree M (P = M + 1 basis functions; default 4). lam: ridge penalty (default 0.1).
    w: weight of the Chebyshev fit against the linear forward difference (default 0.5, the reference scripts').
    span: the step count the time map spans (default 50, the reference's)."""

    degree: int = 4
    lam: float = 0.1
    w: float = 0.5
    span: int = 50

    def __post_init__(self) -> None:
        for name, ok, rule in (("degree", lambda v: isinstance(v, int) and 0 <= v <= 8, "an int from 0 to 8"),
                               ("lam", lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
                               ("w", lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a number in [0, 1]"),
                               ("span", lambda v: isinstance(v, int) and v >= 1, "an int >= 1")):
            v = getattr(self, name)
            if isinstance(v, bool) or not ok(v):
                raise AccelError(f"spectrum forecaster: {name} must be {rule}, got {v!r}")


def chebyshev_basis(t: float, span: int, p: int) -> torch.Tensor:
    """``[T_0(tau) .. T_{p-1}(tau)]`` at ``tau = 2 t / span - 1``, float64 on the CPU."""
    tau = 2.0 * float(t) / span - 1.0
    x = [1.0, tau]
    while len(x) < p:
        x.append(2.0 * tau * x[-1] - x[-2])
    return torch.tensor(x[:p], dtype=torch.float64)


def ridge_weights(gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``G^-1 x`` (float64) by Cholesky; a tiny jitter where ``G`` is singular (no penalty, too few steps)."""
    chol, info = torch.linalg.cholesky_ex(gram)
    if info:
        chol = torch.linalg.cholesky(gram + 1e-6 * max(gram.diag().mean().item(), 1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype))
    return torch.cholesky_solve(x[:, None], chol)[:, 0]


class Spectrum(Forecaster):
    name = "spectrum"
    Options = SpectrumOptions
    rows = None  # S sums over every full step

    def __init__(self, options: SpectrumOptions, role: str) -> None:
        super().__init__(options, role)
        self.p = options.degree + 1

    def _x(self, step: float) -> torch.Tensor:
        return chebyshev_basis(step, self.options.span, self.p)

    def _gram(self, steps: tuple[int, ...]) -> torch.Tensor:
        g = self.options.lam * torch.eye(self.p, dtype=torch.float64)
        for t in steps:
            x = self._x(t)
            g += torch.outer(x, x)
        return g

    @staticmethod
    def _dtype(h: torch.Tensor) -> torch.dtype:
        return h.dtype  # as the Taylor stack: the forecast comes out in the hidden states' dtype

    def update(self, s: Stream, h: torch.Tensor, step: int) -> None:
        if s.data is None:
            s.data = torch.zeros((self.p + 2, *h.shape), dtype=self._dtype(h), device=h.device)
        x = self._x(step).tolist()
        for i, xi in enumerate(x):
            s.data[i].add_(h, alpha=xi)
        s.data[self.p].copy_(s.data[self.p + 1] if s.valid else h)
        s.data[self.p + 1].copy_(h)
        s.valid, s.last, s.extra = 1, step, (*s.extra, step)

    def updated(self, s: Stream, h: torch.Tensor, step: int) -> Stream:
        x = self._x(step).to(self._dtype(h))
        moments = x.reshape(-1, *[1] * h.dim()) * h.to(x.dtype)
        if s.data is not None:
            moments = s.data[: self.p] + moments
        prev = s.data[self.p + 1] if s.data is not None else h.to(x.dtype)
        data = torch.cat([moments, prev[None], h.to(x.dtype)[None]])
        return Stream(data, 1, step, (*s.extra, step))

    def latest(self, s: Stream) -> torch.Tensor:
        return s.data[self.p + 1]

    def _parts(self, s: Stream, step: int) -> tuple[torch.Tensor, float]:
        """Ridge weights ``G^-1 x(step)`` in the stream's dtype, and the linear ratio ``r``."""
        a = ridge_weights(self._gram(s.extra), self._x(step)).to(device=s.data.device, dtype=s.data.dtype)
        steps = s.extra
        r = (step - steps[-1]) / (steps[-1] - steps[-2]) if len(steps) > 1 else 0.0
        return a, float(r)

    def predict(self, s: Stream, step: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return self._blend(s, step) if out is None else out.copy_(self._blend(s, step))

    def predict_differentiable(self, s: Stream, step: int) -> torch.Tensor:
        return self._blend(s, step)

    def _blend(self, s: Stream, step: int) -> torch.Tensor:
        a, r = self._parts(s, step)
        w = self.options.w
        cheb = torch.tensordot(a, s.data[: self.p], dims=1)
        lin = s.data[self.p + 1] * (1.0 + r) - s.data[self.p] * r
        return w * cheb + (1.0 - w) * lin
