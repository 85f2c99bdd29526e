"""A budget on the error a run of forecasts accumulates: a step is forecast when the block-0 errors of the forecast
steps since the last full step, this one included, sum to less than the threshold."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Gate


@dataclass
class Spent:
    total: float = 0.0


class CumulativeGate(Gate):
    name = "cumulative"

    def new_state(self) -> Spent:
        return Spent()

    def passes(self, state: Spent, error: float) -> bool:
        return error + state.total < self.threshold

    def forecasted(self, state: Spent, error: float) -> None:
        state.total += error

    def computed(self, state: Spent) -> None:
        state.total = 0.0
