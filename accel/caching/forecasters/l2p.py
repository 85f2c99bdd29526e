"""L2P's learned linear predictor (CVPR 2026, arXiv 2604.26365) under CG-Taylor's gate.

The stream keeps one entry per step, newest first: the block's output on full steps, this forecaster's own forecast
on forecast steps (:attr:`Forecaster.advances`). The forecast at step ``s`` is ``sum_j w[s][j] entry_j`` over the
``history`` latest entries, with one row of coefficients per step fitted by least squares on uncached trajectories
(:func:`fit`, ridge towards reusing the latest entry, as L2P starts from the identity) and passed as options, so that
a model's ``accel_cache.json`` ships them. A step without a fitted row is forecast by linear extrapolation from the
two latest entries. Where fewer entries exist than a row has coefficients, the row is cut to them and rescaled to
its sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ...errors import AccelError
from .base import Forecaster, Stream

DEFAULT_ROW = (2.0, -1.0)


def _rows(name: str, value: object, history: int) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, (list, tuple)):
        raise AccelError(f"l2p forecaster: {name} must be a list of rows of coefficients, got {value!r}")
    rows = []
    for row in value:
        if (not isinstance(row, (list, tuple)) or len(row) > history
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in row)):
            raise AccelError(f"l2p forecaster: each row of {name} must be at most {history} finite numbers, got {row!r}")
        rows.append(tuple(float(c) for c in row))
    return tuple(rows)


@dataclass(frozen=True)
class L2POptions:
    """history: how many of the latest entries a forecast combines. block0 / last: per step, the coefficients (newest
    entry first) of the forecast of block 0's output and of the forecast block's (fitted by :func:`fit`)."""

    history: int = 4
    block0: tuple[tuple[float, ...], ...] = ()
    last: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        k = self.history
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 16:
            raise AccelError(f"l2p forecaster: history must be an int from 2 to 16, got {k!r}")
        for name in ("block0", "last"):
            object.__setattr__(self, name, _rows(name, getattr(self, name), k))


class L2P(Forecaster):
    name = "l2p"
    Options = L2POptions
    rows = None
    advances = True

    def fitted_steps(self) -> int | None:
        return len(self.options.last) or None

    def _coefs(self, step: int, valid: int) -> tuple[float, ...]:
        fitted = self.options.block0 if self.role == "block0" else self.options.last
        row = fitted[step] if step < len(fitted) and fitted[step] else DEFAULT_ROW
        if len(row) <= valid:
            return row
        cut, total = row[:valid], sum(row)
        return tuple(c * total / sum(cut) for c in cut) if sum(cut) else cut

    def _insert(self, s: Stream, h: torch.Tensor) -> None:
        if s.data is None:
            s.data = h.new_zeros((self.options.history, *h.shape))
        s.data[1:] = s.data[:-1].clone()
        s.data[0].copy_(h)
        s.valid = min(s.valid + 1, self.options.history)

    def _inserted(self, s: Stream, h: torch.Tensor) -> torch.Tensor:
        if s.data is None:
            return torch.cat([h[None], h.new_zeros((self.options.history - 1, *h.shape))])
        return torch.cat([h.to(s.data.dtype)[None], s.data[:-1]])

    def update(self, s: Stream, h: torch.Tensor, step: int) -> None:
        self._insert(s, h)
        s.last = step

    def updated(self, s: Stream, h: torch.Tensor, step: int) -> Stream:
        return Stream(self._inserted(s, h), min(s.valid + 1, self.options.history), step)

    def advance(self, s: Stream, fc: torch.Tensor, step: int) -> None:
        self._insert(s, fc)

    def advanced(self, s: Stream, fc: torch.Tensor, step: int) -> Stream:
        return Stream(self._inserted(s, fc), min(s.valid + 1, self.options.history), s.last)

    def latest(self, s: Stream) -> torch.Tensor:
        return s.data[0]

    def predict_differentiable(self, s: Stream, step: int) -> torch.Tensor:
        coefs = self._coefs(step, s.valid)
        out = coefs[0] * s.data[0]
        for j in range(1, len(coefs)):
            out = out + coefs[j] * s.data[j]
        return out

    def predict(self, s: Stream, step: int, out: torch.Tensor | None = None) -> torch.Tensor:
        fc = self.predict_differentiable(s, step)
        return out.copy_(fc) if out is not None else fc


def fit(trajectories: Sequence[torch.Tensor], history: int = 4, ridge: float = 1e-3) -> list[list[float]]:
    """Per step s >= 1, the coefficients over the min(s, history) previous outputs (newest first) that predict the
    output at s in least squares over every trajectory (each ``(steps, ...)``, uncached), with a ridge of ``ridge`` x
    the mean energy of the inputs towards reusing the latest output. Row 0 is empty (step 0 is never forecast)."""
    steps = trajectories[0].shape[0]
    rows: list[list[float]] = [[]]
    for s in range(1, steps):
        k = min(s, history)
        x = torch.cat([torch.stack([t[s - 1 - j].double().reshape(-1) for j in range(k)], 1) for t in trajectories])
        y = torch.cat([t[s].double().reshape(-1) for t in trajectories])
        gram = x.T @ x
        lam = ridge * float(gram.diagonal().mean())
        prior = torch.zeros(k, dtype=torch.float64)
        prior[0] = 1.0
        w = torch.linalg.solve(gram + lam * torch.eye(k, dtype=torch.float64), x.T @ y + lam * prior)
        rows.append([round(float(c), 6) for c in w])
    return rows


def record(pipe: Any, call: Callable[[Any], Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per call of ``pipe``'s denoiser during ``call(pipe)`` (uncached), the hidden outputs of the first and the last
    block that ran, in execution order: the streams CG-Taylor forecasts (block 0's and the forecast block's)."""
    from ..blocks import find_blocks, find_denoisers

    models = find_denoisers(pipe)
    if len(models) > 1:
        raise AccelError("l2p forecaster: its rows are fitted per step of one denoiser's trajectory, and this pipeline "
                         "switches to a second expert (transformer_2) mid-trajectory: use the taylor forecaster on it")
    model = models[0]
    ran: list[torch.Tensor] = []  # this call's first block output and its latest
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def block_done(spec: Any, out: Any) -> None:
        h = spec.hidden_out(out).detach().float()
        if ran:
            ran[1:] = [h]
        else:
            ran.append(h)

    def call_done(*_: Any) -> None:
        if len(ran) == 2:
            calls.append((ran[0], ran[1]))

    handles = [model.register_forward_pre_hook(lambda *_: ran.clear()), model.register_forward_hook(call_done)]
    handles += [s.module.register_forward_hook(lambda m, a, o, s=s: block_done(s, o)) for s in find_blocks(model)]
    try:
        with torch.no_grad():
            call(pipe)
    finally:
        for h in handles:
            h.remove()
    return calls


def fit_pipeline(pipe: Any, calls: Sequence[Callable[[Any], Any]], steps: int, history: int = 4, residual: bool = True,
                 ridge: float = 1e-3) -> dict[str, Any]:
    """The l2p forecaster's options for ``pipe`` at ``steps`` sampling steps: rows fitted (:func:`fit`) on the uncached
    trajectories that each of ``calls`` samples (every guidance branch a trajectory of its own), for block 0's output
    and for the forecast block's (its residual over block 0's with ``residual``, as ``CGTaylorConfig.residual``)."""
    b0: list[torch.Tensor] = []
    last: list[torch.Tensor] = []
    for c in calls:
        outs = record(pipe, c)
        if not outs or len(outs) % steps:
            raise AccelError(f"l2p forecaster: a {steps}-step sampling call ran the denoiser {len(outs)} times, not a "
                             f"multiple of {steps}; fit at the step count the pipeline is called with")
        per = len(outs) // steps  # calls per step: one per guidance branch the pipeline runs separately
        for j in range(per):
            first = torch.stack([outs[s * per + j][0] for s in range(steps)])
            end = torch.stack([outs[s * per + j][1] for s in range(steps)])
            if residual and first.shape != end.shape:
                raise AccelError(f"l2p forecaster: residual=True needs block 0 and the forecast block to output the same "
                                 f"shape; got {tuple(first.shape[1:])} and {tuple(end.shape[1:])}")
            b0.append(first)
            last.append(end - first if residual else end)
    return {"history": history, "block0": fit(b0, history, ridge), "last": fit(last, history, ridge)}
