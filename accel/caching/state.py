"""Per-context runtime state of CG-Taylor: two factor stacks, the step counter and the per-step record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks.hooks import BaseState, StateManager

DEFAULT_CONTEXT = "default"


@dataclass
class StepRecord:
    """What happened on one denoiser call."""

    step: int
    timestep: float
    computed: bool
    reason: str  # "warmup" | "last" | "cap" | "gate" | "forecast" | "nonfinite" | "repeat" | "threshold0"
    error: float | None = None  # block-0 relative L1 forecast error (None when not measured)
    last_error: float | None = None  # last-block forecast error; measured only in probe mode
    offset: int | None = None  # steps since the last full step


class CGTaylorState(BaseState):
    """State of one context (``cond``, ``uncond`` or ``default``) over one sampling trajectory."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.f0: torch.Tensor | None = None  # (K0+1, *S) block-0 output factors
        self.n0 = 0
        self.fl: torch.Tensor | None = None  # (KL+1, *S) last-block output factors
        self.nl = 0
        self.signature: tuple[Any, ...] | None = None  # shapes that must not change within a trajectory
        self.last_t: float | None = None
        self.step = -1
        self.last_full: int | None = None
        self.consecutive = 0
        # Decision for the call in flight.
        self.force: str | None = None  # reason to compute in full without gating, or None
        self.compute = True
        self.forecast: torch.Tensor | None = None
        self.refresh = True  # refresh the factor stacks after this call (False on probed forecast steps)
        self.records: list[StepRecord] = []


class ContextStates(StateManager):
    """diffusers' StateManager, but a model called without any ``cache_context`` uses one default context."""

    def __init__(self) -> None:
        super().__init__(CGTaylorState)

    def get_state(self) -> CGTaylorState:
        name = self._context.name if self._context is not None else DEFAULT_CONTEXT
        if name not in self._state_cache:
            self._state_cache[name] = CGTaylorState()
        return self._state_cache[name]

    def states(self) -> dict[str, CGTaylorState]:
        return dict(self._state_cache)


@dataclass
class CacheStats:
    """Per-step decisions of the last pipeline call, per context."""

    steps: dict[str, list[StepRecord]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(len(v) for v in self.steps.values())

    @property
    def forecast_fraction(self) -> float:
        """Fraction of denoiser calls whose blocks 1..L-1 were skipped."""
        n = self.calls
        return sum(not r.computed for v in self.steps.values() for r in v) / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "forecast_fraction": self.forecast_fraction,
            "calls": self.calls,
            "contexts": {k: [vars(r) for r in v] for k, v in self.steps.items()},
        }
