"""The paper's gate, plus steps that skip block 0 too: a forecast step whose block-0 error is far below the threshold
(under ``ratio`` x threshold) lets the next step be forecast without running block 0, whose output is then forecast
as well. Block 0 is what CG-Taylor still runs on a forecast step; this takes it off up to ``max_blind`` steps in a row
where the forecast has just been judged very good. Such a step is recorded as ``"blind"``. The gradient path and
probe mode never take blind steps (they need block 0's real output on every step)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import AccelError
from .step import StepGate


@dataclass(frozen=True)
class LookaheadOptions:
    """ratio: a gated forecast step with block-0 error below ratio x threshold lets the next step skip block 0.
    max_blind: at most this many steps in a row without block 0 before the gate judges again."""

    ratio: float = 1.0
    max_blind: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise AccelError(f"lookahead gate: ratio must be in (0, 1], got {self.ratio!r}")
        if isinstance(self.max_blind, bool) or not isinstance(self.max_blind, int) or self.max_blind < 1:
            raise AccelError(f"lookahead gate: max_blind must be an int >= 1, got {self.max_blind!r}")


@dataclass
class Run:
    blind: int = 0  # blind steps since the gate last judged
    next_blind: bool = False


class LookaheadGate(StepGate):
    name = "lookahead"
    Options = LookaheadOptions

    def new_state(self) -> Run:
        return Run()

    def forecasted(self, state: Run, error: float) -> None:
        state.blind = 0
        state.next_blind = error < self.options.ratio * self.threshold

    def computed(self, state: Run) -> None:
        state.blind, state.next_blind = 0, False

    def blind(self, state: Run | None) -> bool:
        return state is not None and state.next_blind

    def went_blind(self, state: Run) -> None:
        state.blind += 1
        state.next_blind = state.blind < self.options.max_blind
