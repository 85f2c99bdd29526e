"""The paper's gate: a step is forecast when its block-0 forecast error is below the threshold."""

from __future__ import annotations

from .base import Gate


class StepGate(Gate):
    name = "step"

    def passes(self, state: None, error: float) -> bool:
        return error < self.threshold
