"""The step gate with an error scale that follows the step size, so that one threshold means the same at every step
count: a step is forecast when its block-0 error is below ``threshold x (h / h_ref) ** power``, where ``h`` is the
span of the step in the scheduler's time (timesteps over their scale: 1000, or 1 where the pipeline passes t / 1000)
and ``h_ref = 1 / reference_steps`` is one step of a uniform ``reference_steps``-step schedule. Larger steps change
block 0's output more between steps, so at 10 or 20 steps the paper's gate, with a threshold tuned at 50, forecasts
almost nothing; this one judges the error per unit of trajectory. A step whose span is not known (the first, or a
pipeline that passes no timestep) is judged at the plain threshold."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import AccelError
from .base import Gate


@dataclass(frozen=True)
class ScaledOptions:
    """power: how the threshold grows with the step's span (1: in proportion). reference_steps: the step count at
    which the threshold means what the step gate's does (a uniform schedule of this many steps)."""

    power: float = 1.0
    reference_steps: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)) or not 0 < self.power <= 4:
            raise AccelError(f"scaled gate: power must be in (0, 4], got {self.power!r}")
        r = self.reference_steps
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise AccelError(f"scaled gate: reference_steps must be an int >= 1, got {r!r}")


@dataclass
class Span:
    prev_t: float | None = None
    scale: float | None = None  # the timesteps' unit: 1000, or 1 for pipelines that pass t / 1000
    span: float | None = None  # this step's span in [0, 1] time


class ScaledGate(Gate):
    name = "scaled"
    Options = ScaledOptions

    def new_state(self) -> Span:
        return Span()

    def at(self, state: Span, t: float | None) -> None:
        if t is None:
            state.prev_t = state.span = None
            return
        if state.scale is None:
            state.scale = 1000.0 if abs(t) > 1.5 else 1.0
        state.span = abs(t - state.prev_t) / state.scale if state.prev_t is not None else None
        state.prev_t = t

    def limit(self, state: Span) -> float:
        """The threshold at this step's span."""
        if state is None or not state.span:
            return self.threshold
        return self.threshold * (state.span * self.options.reference_steps) ** self.options.power

    def passes(self, state: Span, error: float) -> bool:
        return error < self.limit(state)
