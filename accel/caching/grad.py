"""CG-Taylor in a differentiable sampler (``accel.adjoint.sample_with_grad(..., options={"cache": CGTaylorConfig(...)})``).

A :class:`CachedRun` hooks CG-Taylor on one denoiser for one sampling run whose sampler calls the denoiser
once per step (the ``accel.samplers`` steps do: guidance is one batched call), and only while a pass runs:
nothing stays hooked between the forward pass and the backward sweep, or after an error.

- The steps are numbered by the sampler (:class:`ScriptedTrajectory`), not read from a scheduler.
- The controller runs in differentiable mode (``hooks.py``): the last block's factor stack is updated out of
  place and the forecast is computed from it with autograd-visible operations (``taylor.py``), so a forecast
  step's output depends on the stored factors, and through them on the last block's outputs at earlier full
  steps. The gate's own (block-0) factors and its decisions carry no gradient.
- The forward pass records, per step, the gate's decision (:class:`StepPlan`), and per full step only the new
  first row of the last block's factor stack (its output). :meth:`CachedRun.factors` rebuilds the stack any step
  started from out of the rows of the last K+1 full steps before it, with the forward's own update: bit for bit
  the stack the forward used (row k of a stack depends only on the k+1 latest outputs), at 1/(K+1) of the memory
  of keeping every stack. A replay pass re-runs single steps with those decisions imposed and those factors
  given, which is what the discrete adjoint's backward sweep needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..errors import AccelError
from .api import attach_controller
from .blocks import BlockSpec, find_denoiser
from .config import CGTaylorConfig
from .hooks import ControllerHook, controller_of, remove
from .state import CGTaylorState, ContextStates, branch_key
from .taylor import updated
from .trajectory import forced

GRAD_BATCH_POLICIES = ("any", "mean")
"""Batch policies the gradient path honours: one decision per denoiser call, for the whole batch."""


@dataclass
class StepPlan:
    """What the forward pass did at one step: run in full (``computed``) or forecast, and, of the last block's
    factor stack the step started from, its valid orders and the step of the last full step (the stack itself:
    :meth:`CachedRun.factors`)."""

    computed: bool
    n_valid: int
    last_full: int | None
    choice: int | None = None  # ``forecaster="select"``: the candidate the forecast used


@dataclass
class _Row:
    """One refresh of the last block's factors in the forward pass: its step, the stack's new first row (the
    block's output, in the factors' dtype) and the steps since the previous refresh."""

    step: int
    row: torch.Tensor
    delta: float


class ScriptedTrajectory:
    """Numbers the calls of a sampler that calls the denoiser once per step: the step is set before each call
    (``expect``); a replayed step takes its decision and factors from a :class:`StepPlan`."""

    def __init__(self, states: ContextStates, config: CGTaylorConfig, steps: int) -> None:
        self.states, self.config, self.steps = states, config, steps
        self.step, self.calls = 0, 0
        self.replay: StepPlan | None = None
        self.factors: torch.Tensor | None = None  # replay: the factors to start from (a leaf that requires grad)
        self.before: tuple[torch.Tensor | None, int, int | None] | None = None  # forward: (fl, nl, last_full) the step started from

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
            st.fl, st.nl, st.last_full = self.factors, p.n_valid, p.last_full
            st.imposed, st.force, st.choice = p.computed, None, p.choice
        else:
            self.before = (st.fl, st.nl, st.last_full)
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
    if config.batch_policy not in GRAD_BATCH_POLICIES:
        raise AccelError(f"batch_policy={config.batch_policy!r} cannot be differentiated: the gradient path holds one gate decision "
                         f"per denoiser call fixed; use one of {GRAD_BATCH_POLICIES}")
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
        self._rows: list[_Row] = []  # per refresh of the last block's factors, in order
        self._rebuilt: tuple[int, torch.Tensor] | None = None  # (refreshes it holds, stack): the stack last rebuilt
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
        """After a step: record the forward step's plan; returns the last block's factors after the step."""
        traj = self._trajectory()
        if traj.calls != 1:
            raise AccelError(f"the sampler made no denoiser call in step {traj.step}; the cached gradient path needs one call per step")
        st = self._controller.states.get_state()
        if traj.replay is None:
            fl, nl, last_full = traj.before
            self.plans.append(StepPlan(bool(st.compute), nl, last_full, None if st.compute else st.choice))
            # a step that refreshed the factors keeps the new first row only (a copy, not a view of the stack); no
            # step follows the last one, so its refresh is not kept
            if st.fl is not None and st.fl is not fl and traj.step < self.steps - 1:
                delta = float(st.last_full - last_full) if last_full is not None else 1.0
                self._rows.append(_Row(traj.step, st.fl[0].detach().clone(), delta))
        return st.fl

    def factors(self, i: int) -> torch.Tensor | None:
        """The last block's factor stack (K+1, *S) that step ``i`` of the forward pass started from (None before
        the first full step), rebuilt from the rows of the last K+1 refreshes before it with the forward's update
        (:func:`~accel.caching.taylor.updated`), so bit for bit the stack the forward used. The last one rebuilt
        is kept: the steps after one full step share its stack."""
        k = sum(r.step < i for r in self._rows)
        if k == 0:
            return None
        if self._rebuilt is not None and self._rebuilt[0] == k:
            return self._rebuilt[1]
        self._rebuilt = None  # free the previous stack before building the next
        fl, nl = None, 0
        for r in self._rows[max(0, k - self.config.last_order - 1):k]:
            fl, nl = updated(fl, r.row, r.delta, nl, self.config.last_order, r.row.dtype)
        if nl != self.plans[i].n_valid:
            raise AccelError(f"internal: the rebuilt factor stack of step {i} has {nl} valid orders, the forward's had {self.plans[i].n_valid}")
        self._rebuilt = (k, fl)
        return fl

    def _trajectory(self) -> ScriptedTrajectory:
        if self._controller is None:
            raise AccelError("CachedRun steps run only inside `with run.hooked():`")
        return self._controller.trajectory

    @property
    def decisions(self) -> list[bool]:
        """Per step of the forward pass: True where it ran in full, False where it was forecast."""
        return [p.computed for p in self.plans]
