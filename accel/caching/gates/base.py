"""What every CG-Taylor gate is: a small class that decides, from block 0's forecast error, whether a step is forecast.

A gate is built once per enabled model from the threshold and its options, and keeps its per-branch state in an
object of its own (:meth:`Gate.new_state`) that the branch's state holds. Per gated step the hook asks the gate for
its error signal (by default the forecaster's relative L1 error on block 0's output), reduces it over the batch (the
worst sample decides) and asks :meth:`Gate.passes`; then tells the gate what happened (:meth:`Gate.forecasted`,
:meth:`Gate.computed`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..forecasters import Forecaster, Stream
from ..parts import NoOptions


class Gate(ABC):
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, threshold: float, options: Any) -> None:
        self.threshold, self.options = threshold, options

    def new_state(self) -> Any:
        """The per-branch state at the start of a trajectory (and after the weights change)."""
        return None

    def signal(self, forecaster: Forecaster, s: Stream, step: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, (error, reference) sums whose ratio is the error the gate judges."""
        return forecaster.error(s, step, actual)

    @abstractmethod
    def passes(self, state: Any, error: float) -> bool:
        """Whether the step with block-0 relative error ``error`` is forecast."""

    def forecasted(self, state: Any, error: float) -> None:
        """The step was forecast (or would have been, in probe mode)."""

    def computed(self, state: Any) -> None:
        """The step ran in full."""

    def blind(self, state: Any) -> bool:
        """Whether the next step is forecast without running block 0 at all (its output forecast too). Asked before
        the step runs; never on forced steps, in probe mode or on the gradient path."""
        return False

    def went_blind(self, state: Any) -> None:
        """A step was forecast without block 0."""
