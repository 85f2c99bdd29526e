"""Per-branch runtime state of CG-Taylor: two factor stacks, the step counter and the per-step record.

A branch is one call position within a step of one cache context. Pipelines that name their calls
(``cache_context("cond")`` / ``("uncond")``) get one branch per name. Pipelines that call the denoiser
several times per step without a context (true CFG, reference-image or guidance calls) are told apart by
call order: the k-th call at the same timestep is branch ``"<context>/k"`` (k >= 1), so every branch keeps
its own factors, gate and decisions and none reads another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks.hooks import BaseState, StateManager

from .forecasters import Stream

DEFAULT_CONTEXT = "default"


@dataclass
class StepRecord:
    """What happened on one denoiser call."""

    step: int
    timestep: float
    computed: bool
    reason: str  # "warmup" | "last" | "gate" | "forecast" | "blind" | "nonfinite" | "threshold0"
    error: float | None = None  # block-0 relative L1 forecast error (None when not measured)
    last_error: float | None = None  # last-block forecast error; measured only in probe mode
    offset: int | None = None  # steps since the last full step


class CGTaylorState(BaseState):
    """State of one branch (``cond``, ``uncond``, ``default``, ``default/1``, ...) over one sampling trajectory."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.s0 = Stream()  # block 0's outputs: the forecast the gate judges
        self.sl = Stream()  # the forecast block's outputs (or residuals): the forecast that replaces the skipped blocks
        self.gate: Any = None  # the gate's per-branch state (``Gate.new_state``), made on the first gated step
        self.signature: tuple[Any, ...] | None = None  # shapes that must not change within a trajectory
        self.last_t: float | None = None
        self.step = -1
        self.last_full: int | None = None
        self.warm_from = 0  # warm-up counts from this step (moved on when the weights change mid-trajectory)
        # Decision for the call in flight.
        self.force: str | None = None  # reason to compute in full without gating, or None
        self.compute = True
        self.blind = False  # this step forecasts block 0 too (the gate allowed it after a very good forecast)
        self.forecast: torch.Tensor | None = None
        self.buffer: torch.Tensor | None = None  # reused forecast memory where the consumer never keeps it (U-Nets)
        self.refresh = True  # refresh the streams after this call (False on probed forecast steps)
        self.imposed: bool | None = None  # a replayed call's recorded decision (True: full), or None: the gate decides
        self.h0: torch.Tensor | None = None  # block 0's output of the step in flight (``residual``: the forecast's base)
        self.records: list[StepRecord] = []

    def restart(self) -> None:
        """Forget the streams but keep the step count and records: the denoiser's weights changed (a LoRA
        adapter was loaded, switched, re-weighted, fused or unloaded), so the next steps warm up afresh."""
        self.s0, self.sl, self.gate = Stream(), Stream(), None
        self.last_full, self.forecast, self.h0 = None, None, None
        self.warm_from = self.step + 1

    @property
    def factor_bytes(self) -> int:
        """Memory held by the two streams (and the reused forecast buffer, where there is one)."""
        return self.s0.nbytes + self.sl.nbytes + (self.buffer.numel() * self.buffer.element_size() if self.buffer is not None else 0)


class CallOrder:
    """Where the calls of one cache context are: step index, timestep and position of the call within the step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.step = -1
        self.last_t: float | None = None
        self.position = 0
        self.direction = 0.0  # -1: timesteps decrease (most pipelines), +1: increase (Lumina), 0: not known yet
        self.schedule: object | None = None  # the scheduler's timesteps tensor seen by this trajectory
        self.origins: dict[int, int] = {}  # per reading of the timestep: schedule index of the first step
        self.pos: tuple[int, int] | None = None  # (index, length) in the schedule of the current step, if known
        self.ended = False  # the current step is the schedule's final step


def branch_key(context: str, position: int) -> str:
    return context if position == 0 else f"{context}/{position}"


class ContextStates(StateManager):
    """diffusers' StateManager keyed by branch: the cache context's name (``default`` without one) and the
    position of the call within its step. The controller selects the branch of each call (``activate``)."""

    def __init__(self) -> None:
        super().__init__(CGTaylorState)
        self._orders: dict[str, CallOrder] = {}
        self._active: str | None = None

    def context_name(self) -> str:
        return self._context.name if self._context is not None else DEFAULT_CONTEXT

    def order(self, name: str) -> CallOrder:
        if name not in self._orders:
            self._orders[name] = CallOrder()
        return self._orders[name]

    def activate(self, key: str) -> CGTaylorState:
        self._active = key
        return self.get_state()

    def get_state(self) -> CGTaylorState:
        key = self._active if self._active is not None else self.context_name()
        if key not in self._state_cache:
            self._state_cache[key] = CGTaylorState()
        return self._state_cache[key]

    def drop(self, name: str) -> None:
        """Forget every branch of context ``name`` (a new trajectory starts)."""
        for key in [k for k in self._state_cache if k == name or k.startswith(name + "/")]:
            del self._state_cache[key]
        self.order(name).reset()

    def states(self) -> dict[str, CGTaylorState]:
        return dict(self._state_cache)

    def reset(self, *args: Any, **kwargs: Any) -> None:
        super().reset(*args, **kwargs)
        self._orders.clear()
        self._active = None


@dataclass
class CacheStats:
    """Per-step decisions of the last pipeline call, per branch (context name, ``/k`` for the k-th extra call
    of a step), and the memory held by each branch's stored factors (bytes)."""

    steps: dict[str, list[StepRecord]] = field(default_factory=dict)
    factor_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def memory(self) -> int:
        """Bytes held by the stored factors of all branches together."""
        return sum(self.factor_bytes.values())

    def fractions(self) -> dict[str, float]:
        """Forecast fraction per branch."""
        return {k: sum(not r.computed for r in v) / len(v) if v else 0.0 for k, v in self.steps.items()}

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
            "factor_bytes": dict(self.factor_bytes),
            "contexts": {k: [vars(r) for r in v] for k, v in self.steps.items()},
        }
