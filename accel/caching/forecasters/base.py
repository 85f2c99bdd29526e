"""What every CG-Taylor forecaster is: a small class that keeps one stream's history and extrapolates it.

CG-Taylor keeps two streams per branch: block 0's output (the gate judges how well the forecaster predicts it) and
the forecast block's output (or its residual over block 0's; it replaces the skipped blocks). A forecaster is built
once per stream (``role`` "block0" or "last") from its options, and keeps no per-trajectory state of its own: that is
the :class:`Stream`, one per branch and role, which the hooks hold and the gradient path rebuilds.

The gradient path (``accel.caching.grad``) needs two things of every forecaster: an out-of-place update and
prediction that autograd differentiates (:meth:`Forecaster.updated`, :meth:`Forecaster.predict_differentiable`),
and a stream that is a function of the latest :attr:`Forecaster.rows` refreshes alone, so that it can be rebuilt from
them bit for bit (``None``: of every refresh so far). A forecaster that also takes in its own forecasts
(:attr:`Forecaster.advances`, e.g. L2P's entries) is rebuilt by replaying every step since the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..parts import NoOptions


@dataclass
class Stream:
    """One stream's history: the forecaster's tensor ``data`` (rows over the feature's shape), how many rows hold
    a value, the step of the last refresh, and anything else the forecaster keeps (immutable, e.g. the steps)."""

    data: torch.Tensor | None = None
    valid: int = 0
    last: int | None = None
    extra: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() if self.data is not None else 0


class Forecaster(ABC):
    """Extrapolates one stream of a block's outputs over the steps since its last refresh.

    Subclasses set ``name`` and ``Options`` (a frozen dataclass that validates itself) and implement the abstract
    operations; :func:`accel.caching.forecasters.register` adds them to the registry.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    rows: ClassVar[int | None] = None  # refreshes that determine the stream (None: all): set per instance where it depends on options
    advances: ClassVar[bool] = False  # the stream also takes in its own forecast on forecast steps (:meth:`advance`)

    def __init__(self, options: Any, role: str) -> None:
        self.options, self.role = options, role

    def fitted_steps(self) -> int | None:
        """The sampling step count this forecaster's options were fitted for (None: any)."""
        return None

    @abstractmethod
    def update(self, s: Stream, h: torch.Tensor, step: int) -> None:
        """A full step at ``step`` computed ``h``: refresh ``s`` in place (the forward path)."""

    @abstractmethod
    def updated(self, s: Stream, h: torch.Tensor, step: int) -> Stream:
        """The stream after a refresh with ``h``, as a new stream whose tensor autograd can differentiate; ``s`` stays valid."""

    def advance(self, s: Stream, fc: torch.Tensor, step: int) -> None:
        """A forecast step used ``fc`` (this forecaster's own forecast at ``step``): take it in, in place (only where
        :attr:`advances`)."""

    def advanced(self, s: Stream, fc: torch.Tensor, step: int) -> Stream:
        """:meth:`advance` out of place, for the gradient path; ``s`` stays valid."""
        return s

    @abstractmethod
    def latest(self, s: Stream) -> torch.Tensor:
        """The output the last refresh took in (in the stream's dtype): what the gradient path keeps per full step."""

    @abstractmethod
    def predict(self, s: Stream, step: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The forecast of the block's output at ``step`` (written into ``out`` when given)."""

    @abstractmethod
    def predict_differentiable(self, s: Stream, step: int) -> torch.Tensor:
        """:meth:`predict` with autograd-visible operations (the gradient path)."""

    def error(self, s: Stream, step: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, ``(sum |forecast - actual|, sum |actual|)`` in float32: the gate's signal."""
        fc = self.predict(s, step).to(torch.float64 if actual.dtype == torch.float64 else torch.float32)
        b = actual.shape[0]
        err = torch.linalg.vector_norm(fc.sub_(actual).reshape(b, -1), ord=1, dim=1)
        ref = torch.linalg.vector_norm(actual.reshape(b, -1), ord=1, dim=1, dtype=fc.dtype)
        return err.float(), ref.float()
