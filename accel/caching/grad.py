"""CG-Taylor in a differentiable sampler (``accel.adjoint.sample_with_grad(..., options={"cache": CGTaylorConfig(...)})``).

A :class:`CachedRun` hooks CG-Taylor on one denoiser for one sampling run whose sampler calls the denoiser
once per step (the ``accel.samplers`` steps do: guidance is one batched call), and only while a pass runs:
nothing stays hooked between the forward pass and the backward sweep, or after an error.

- The steps are numbered by the sampler (:class:`ScriptedTrajectory`), not read from a scheduler.
- The controller runs in differentiable mode (``hooks.py``): the forecast block's stream is updated out of
  place and the forecast is computed from it with autograd-visible operations (the forecaster's
  ``updated`` and ``predict_differentiable``), so a forecast step's output depends on the stream's tensor (the
  "factors"), and through it on the forecast block's outputs at earlier full steps. Block 0's stream, which the
  gate judges, and the gate's decisions carry no gradient.
- The forward pass records, per step, the gate's decision (:class:`StepPlan`), and per full step only the
  forecast block's output that refreshed the stream. :meth:`CachedRun.factors` rebuilds the stream any step
  started from out of the outputs of the forecaster's ``rows`` latest full steps before it (every one when it
  says None), with the forward's own update: bit for bit the stream the forward used, at a fraction of the
  memory of keeping every stream. A replay pass re-runs single steps with those decisions imposed and those
  factors given, which is what the discrete adjoint's backward sweep needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..errors import AccelError
from .api import attach_controller
from .blocks import BlockSpec, find_denoiser
from .config import CGTaylorConfig
from .forecasters import Stream
from .hooks import ControllerHook, controller_of, remove
from .state import CGTaylorState, ContextStates, branch_key
from .trajectory import forced

@dataclass
class StepPlan:
    """What the forward pass did at one step: run in full (``computed``) or forecast, and the forecast block's
    stream the step started from, without its tensor (:meth:`CachedRun.factors` rebuilds that)."""

    computed: bool
    stream: Stream


@dataclass
class _Row:
    """One refresh of the forecast block's stream in the forward pass: its step and the output it took in."""

    step: int
    row: torch.Tensor


class ScriptedTrajectory:
    """Numbers the calls of a sampler that calls the denoiser once per step: the step is set before each call
    (``expect``); a replayed step takes its decision and factors from a :class:`StepPlan`."""

    def num_steps(self) -> None:
        """The caller numbers the steps; how many there are is not the hooks' to check."""
        return None

    def __init__(self, states: ContextStates, config: CGTaylorConfig, steps: int) -> None:
        self.states, self.config, self.steps = states, config, steps
        self.step, self.calls = 0, 0
        self.replay: StepPlan | None = None
        self.factors: torch.Tensor | None = None  # replay: the stream's tensor to start from (a leaf that requires grad)
        self.before: tuple[Stream, int | None] | None = None  # forward: (the forecast block's stream, last_full) the step started from

    def expect(self, step: int, replay: StepPlan | None = None, factors: torch.Tensor | None = None) -> None:
        self.step, self.calls, self.replay, self.factors = step, 0, replay, factors

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CGTaylorState:
        if self.calls:
            raise AccelError(f"the sampler called the denoiser twice in step {self.step}; the cached gradient path needs one call "
                             "per step (accel.samplers' steps make one, with guidance batched)")
        self.calls += 1
        st = self.states.activate(branch_key(self.states.context_name(), 0))
        st.step, st.last_t = self.step, None
        if self.replay is not None:
            p = self.replay
            st.sl = dataclasses.replace(p.stream, data=self.factors)
            st.last_full = p.stream.last
            st.imposed, st.force = p.computed, None
        else:
            self.before = (st.sl, st.last_full)
            st.imposed, st.force = None, forced(st, self.config, last=self.step == self.steps - 1)
        return st


def _compiled(model: torch.nn.Module) -> str | None:
    """Why ``model`` runs compiled code (the module or one of its blocks), or None."""
    if hasattr(model, "_orig_mod"):
        return "it is a torch.compile wrapper (OptimizedModule)"
    for name, m in model.named_modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            return f"{'the model' if not name else name} was compiled in place (.compile())"
    return None


def check(model: Any, config: Any) -> torch.nn.Module:
    """The denoiser module to hook, or one AccelError saying why the gradient path cannot honour this setting."""
    if not isinstance(config, CGTaylorConfig):
        raise AccelError(f"cache must be an accel.CGTaylorConfig, got {type(config).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise AccelError(f"cache= needs a diffusers network (a torch module with blocks) to hook; got a {type(model).__name__}")
    why = _compiled(model)
    if why is not None:
        raise AccelError(f"cannot differentiate through the cache of a compiled model: {why}. The backward sweep re-runs single "
                         "steps with recorded gate decisions through eager hooks; pass the uncompiled module (model._orig_mod)")
    inner = find_denoiser(model)
    if controller_of(inner) is not None:
        raise AccelError(f"CG-Taylor is already enabled on {type(inner).__name__}; sample_with_grad(options={{'cache': ...}}) enables it itself for "
                         "the run (and removes it after): call accel.disable(...) first")
    if getattr(inner, "is_cache_enabled", False):
        raise AccelError(f"another diffusers cache is enabled on {type(inner).__name__}; call its disable_cache() first")
    return inner


class CachedRun:
    """CG-Taylor on ``model`` for one differentiable run of ``steps`` steps (see the module docstring)."""

    def __init__(self, model: Any, config: CGTaylorConfig, steps: int) -> None:
        self.model = check(model, config)
        self.config, self.steps = config, steps
        self.plans: list[StepPlan] = []
        self._rows: list[_Row] = []  # per refresh of the forecast block's stream, in order
        self._forecaster = config.build_forecaster("last")
        self._rebuilt: tuple[Any, torch.Tensor] | None = None  # (key, stream tensor): the stream last rebuilt
        self._order: list[BlockSpec] | None = None  # the blocks in execution order, once a pass has found it
        self._controller: ControllerHook | None = None

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """CG-Taylor hooked (differentiable mode, steps numbered by the sampler) for one pass; removed after, even on error."""
        ctrl = attach_controller(self.model, self.config, order=self._order)
        ctrl.differentiable = True
        ctrl.trajectory = ScriptedTrajectory(ctrl.states, self.config, self.steps)
        self._controller = ctrl
        try:
            yield
            self._order = list(ctrl.blocks)
        finally:
            self._controller = None
            remove(self.model)

    def begin_step(self, i: int, replay: bool = False, factors: torch.Tensor | None = None) -> None:
        """Before the sampler's step ``i``: a forward step, or a replay of the recorded one from ``factors``."""
        self._trajectory().expect(i, self.plans[i] if replay else None, factors)

    def end_step(self) -> torch.Tensor | None:
        """After a step: record the forward step's plan; returns the forecast block's stream tensor after the step."""
        traj = self._trajectory()
        if traj.calls != 1:
            raise AccelError(f"the sampler made no denoiser call in step {traj.step}; the cached gradient path needs one call per step")
        st = self._controller.states.get_state()
        if traj.replay is None:
            before, _ = traj.before
            self.plans.append(StepPlan(bool(st.compute), dataclasses.replace(before, data=None)))
            # a step that refreshed the stream keeps the output it took in (a copy); no step follows the last one,
            # so its refresh is not kept
            if st.compute and st.sl is not before and traj.step < self.steps - 1:
                self._rows.append(_Row(traj.step, self._forecaster.latest(st.sl).detach().clone()))
        return st.sl.data

    def factors(self, i: int) -> torch.Tensor | None:
        """The forecast block's stream tensor that step ``i`` of the forward pass started from (None before the first
        full step), rebuilt from the outputs of the forecaster's ``rows`` latest refreshes before it with the
        forward's update (``Forecaster.updated``), so bit for bit the tensor the forward used. The last one rebuilt
        is kept: the steps after one full step share it."""
        k = sum(r.step < i for r in self._rows)
        if k == 0:
            return None
        fc = self._forecaster
        key = (k, i if fc.advances else None)  # an advancing stream changes on forecast steps too
        if self._rebuilt is not None and self._rebuilt[0] == key:
            return self._rebuilt[1]
        self._rebuilt = None  # free the previous stream before building the next
        s = Stream()
        if fc.advances:  # replay every step: full steps take their output in, forecast steps their own forecast
            rows = iter(self._rows)
            for j in range(i):
                if self.plans[j].computed:
                    s = fc.updated(s, next(rows).row, j)
                elif s.data is not None:
                    s = fc.advanced(s, fc.predict_differentiable(s, j), j)
        else:
            for r in self._rows[max(0, k - fc.rows) if fc.rows is not None else 0:k]:
                s = fc.updated(s, r.row, r.step)
        want = self.plans[i].stream
        if (s.valid, s.last, s.extra) != (want.valid, want.last, want.extra):
            raise AccelError(f"internal: the rebuilt stream of step {i} is not the one the forward used "
                             f"({s.valid}, {s.last}, {s.extra} vs {want.valid}, {want.last}, {want.extra})")
        self._rebuilt = (key, s.data)
        return s.data

    def _trajectory(self) -> ScriptedTrajectory:
        if self._controller is None:
            raise AccelError("CachedRun steps run only inside `with run.hooked():`")
        return self._controller.trajectory

    @property
    def decisions(self) -> list[bool]:
        """Per step of the forward pass: True where it ran in full, False where it was forecast."""
        return [p.computed for p in self.plans]
