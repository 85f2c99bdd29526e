"""CG-Taylor as diffusers model hooks (Guan et al. 2025, "Forecasting When to Forecast", arXiv 2508.02240).

Four hooks share one per-context state (``ContextStates``):
- the controller, on the denoiser, asks its trajectory (``trajectory.py``) for the call's branch (context,
  and position among the calls at the same timestep), its step and whether it must run in full (warm-up,
  last step, skip cap), and on the first call records the order in which the blocks run;
- the gate, on block 0, compares block 0's real output with its Taylor forecast and decides whether the
  remaining blocks run (Prediction Confidence Gating); on a step the gate lets go blind (``gate="lookahead"``),
  block 0 does not run and its output is forecast too;
- skip hooks on blocks 1..L-2 pass their inputs through on forecast steps;
- the last hook, on block L-1, returns the Taylor forecast of its own output on forecast steps (Last Block
  Forecast) and refreshes its factors on full steps.
Data-dependent decisions run outside compiled graphs (``torch.compiler.disable``). In differentiable mode (the
gradient path, ``grad.py``) the last block's factors stay attached to the autograd graph, and a replayed step
takes its decision from the state (``imposed``) instead of the gate.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from .. import kernels
from ..errors import AccelError
from .blocks import BlockSpec
from .config import CGTaylorConfig
from .forecasters import Forecaster
from .parallel import all_reduce_sum, shard_group, sum_over_shards
from .state import CacheStats, CGTaylorState, ContextStates, StepRecord
from .trajectory import Trajectory

CONTROLLER_HOOK = "accel_cg_taylor"
GATE_HOOK = "accel_cg_taylor_gate"
SKIP_HOOK = "accel_cg_taylor_skip"
LAST_HOOK = "accel_cg_taylor_last"
TRACE_HOOK = "accel_cg_taylor_trace"
BLOCK_HOOKS = (TRACE_HOOK, GATE_HOOK, SKIP_HOOK, LAST_HOOK)
_PRISTINE = "_accel_pristine"  # per-module record of what enable() added, so that disable() removes exactly that


def attach(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    if _PRISTINE not in module.__dict__:
        setattr(module, _PRISTINE, ("_diffusers_hook" not in module.__dict__, "forward" not in module.__dict__))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def detach(module: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Remove our hooks from a module; the registry and forward override go too if enable() created them."""
    reg = module.__dict__.get("_diffusers_hook")
    if reg is not None:
        for name in names:
            reg.remove_hook(name, recurse=False)
    no_registry_before, no_forward_before = module.__dict__.pop(_PRISTINE, (False, False))
    if reg is not None and not reg.hooks and no_registry_before:
        del module._diffusers_hook
    fwd = module.__dict__.get("forward")
    if no_forward_before and fwd is not None and getattr(fwd, "__func__", None) is type(module).forward:
        del module.forward  # back to the class's forward: the module is as it was before enable()


def controller_of(model: torch.nn.Module) -> "ControllerHook | None":
    """The CG-Taylor controller hooked on ``model``, or None."""
    reg = getattr(model, "_diffusers_hook", None)
    hook = reg.get_hook(CONTROLLER_HOOK) if reg is not None else None
    return hook if isinstance(hook, ControllerHook) else None


def remove(model: torch.nn.Module) -> bool:
    """Remove every hook CG-Taylor put on ``model`` and its blocks; False if there was none."""
    controller = controller_of(model)
    if controller is None:
        return False
    for spec in controller.candidates:
        detach(spec.module, BLOCK_HOOKS)
    model._diffusers_hook.invalidate_child_registries_cache()
    detach(model, (CONTROLLER_HOOK,))
    return True


def install(controller: "ControllerHook", blocks: list[BlockSpec]) -> int:
    """Give the blocks, in execution order, their roles: gate (block 0), skip (1..L-2), forecast (L-1). Returns L-1."""
    states, config = controller.states, controller.config
    f = len(blocks) - 1
    controller.blocks = blocks
    forecaster = config.build_forecaster("last")  # the forecast block's, shared by the two hooks that use it
    # On a U-Net the last role is an up block or the mid block, whose consumers never keep the forecast.
    gate = GateHook(states, config, blocks[0], controller, forecaster,
                    reuse_buffer=blocks[f].kind in ("unet_plain", "unet_layer") and not config.residual)
    attach(blocks[0].module, gate, GATE_HOOK)
    for spec in blocks[1:f]:
        attach(spec.module, SkipHook(states, spec), SKIP_HOOK)
    attach(blocks[f].module, LastHook(states, config, blocks[f], controller, forecaster), LAST_HOOK)
    return f


def _all_finite(x: torch.Tensor, group: Any) -> bool:
    """Whether ``x`` is finite on every rank of ``group`` (on this one when there is no group)."""
    bad = (~torch.isfinite(x.sum())).float().reshape(1)
    return not all_reduce_sum(bad, group).item()


class ControllerHook(ModelHook):
    """On the denoiser: per call, its trajectory selects the branch, numbers the step and says whether it must run in full."""

    _is_stateful = True

    def __init__(self, states: ContextStates, config: CGTaylorConfig, blocks: list[BlockSpec], params: list[str], scheduler: Any = None,
                 model: torch.nn.Module | None = None) -> None:
        super().__init__()
        # Probe mode (``accel bench gate``): run every block on every step, but keep the factors and
        # decisions of normal operation, and measure the last-block forecast error on would-be-skipped steps.
        self.probe = False
        # Differentiable mode (the gradient path, ``grad.py``): the last block's factors are updated out of place
        # and forecast with autograd-visible operations, so gradients reach the outputs they were built from.
        self.differentiable = False
        self.states = states
        self.config = config
        self.blocks = blocks
        self.params = params
        self.group: Any = None  # the process group sharding the sequence (context parallelism), else None
        self.candidates: list[BlockSpec] = list(blocks)  # every block that may carry one of our hooks
        self.pending = False  # True until the first call has recorded the order in which the blocks run
        self.trace: list[tuple[BlockSpec, torch.Tensor]] = []
        self.history: tuple[dict[str, list[StepRecord]], dict[str, int]] = ({}, {})
        self.model = model
        self.trajectory = Trajectory(states, config, params, scheduler, model)  # numbers the calls (trajectory.py)
        # Set by ``accel.enable(pipe)`` from the folder's default: (step counts with a setting of their own, the step
        # count the enabled one was chosen at); a trajectory at one of the former says so once.
        self.step_hint: tuple[list[int], int | None] | None = None  # None: nothing to say
        self._hinted: set[Any] = set()
        self.fitted_steps = config.build_forecaster("last").fitted_steps()  # the step count its options were fitted for

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        self._begin(args, kwargs)
        if not self.pending:
            return self.fn_ref.original_forward(*args, **kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)  # every block runs, TraceHooks record the order
        self._discovered()
        return out

    def trace_hooks(self) -> None:
        """Until the first call, every candidate block only records when it runs (its output layout too)."""
        self.pending = True
        for spec in self.candidates:
            attach(spec.module, TraceHook(self, spec), TRACE_HOOK)

    @torch.compiler.disable
    def _discovered(self) -> None:
        """After the first call: the blocks in the order they ran get their roles; the call's block-0 and
        last-block outputs seed the factors (it was a full step)."""
        order: list[BlockSpec] = []
        for spec, _ in self.trace:
            if all(spec is not o for o in order):
                order.append(spec)
        first, last = (self.trace[0][1], self.trace[-1][1]) if self.trace else (None, None)
        self.trace = []
        for spec in self.candidates:
            reg = spec.module.__dict__.get("_diffusers_hook")
            if reg is not None:
                reg.remove_hook(TRACE_HOOK, recurse=False)
        self.pending = False
        if len(order) < 2:
            cls = type(self.model).__name__
            remove(self.model)
            ran = ", ".join(s.name for s in order) or "none"
            raise AccelError(f"cannot cache {cls}: only {len(order)} of its blocks ran in a forward call ({ran}); "
                             "CG-Taylor needs two or more blocks run in sequence. It has been disabled on this model.")
        f = install(self, order)
        self.model._diffusers_hook.invalidate_child_registries_cache()
        self.blocks[0].module._diffusers_hook.get_hook(GATE_HOOK)._gate(first)
        self.blocks[f].module._diffusers_hook.get_hook(LAST_HOOK)._refresh(self.states.get_state(), last)

    @torch.compiler.disable
    def _begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.group = shard_group(self.model) if self.model is not None else None
        st = self.trajectory.begin(args, kwargs)
        st.compute, st.forecast, st.refresh, st.blind = True, None, True, False
        if (st.force is None and st.imposed is None and not self.probe and not self.differentiable and not self.pending
                and st.gate is not None and self.blocks[0].module._diffusers_hook.get_hook(GATE_HOOK).gate.blind(st.gate)):
            st.compute, st.blind = False, True  # block 0 is forecast too (GateHook)
        if st.step == 0:
            n = self.trajectory.num_steps()
            if self.step_hint is not None:
                self._hint(n)
            self._check_fitted(n)

    def _check_fitted(self, n: int | None) -> None:
        fitted = self.fitted_steps
        if n is None or fitted is None or n == fitted or ("fitted", n) in self._hinted:
            return
        import warnings

        self._hinted.add(("fitted", n))
        warnings.warn(f"the {self.config.forecaster} forecaster's options were fitted per step of {fitted}-step sampling, "
                      f"and this call samples {n} steps: its rows fall on the wrong steps (the gate still refuses the "
                      f"forecasts they spoil, at a cost in speed); use a setting fitted for {n} steps "
                      f"(accel calibrate --steps {n} --save, then accel.enable(pipe, steps={n}))", stacklevel=2)

    def _hint(self, n: int | None) -> None:
        counts, chosen = self.step_hint
        if n is None or n not in counts or n == chosen or n in self._hinted:
            return
        import warnings

        self._hinted.add(n)
        warnings.warn(f"this model ships a CG-Taylor setting chosen for {n} sampling steps, and the one enabled was chosen "
                      f"at {chosen if chosen is not None else 'another step count'}; use accel.enable(pipe, steps={n}) "
                      f"to sample {n} steps with it", stacklevel=2)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        finished = self._snapshot()
        if finished[0]:
            self.history = finished
        self.states.reset()
        return module

    def _snapshot(self) -> tuple[dict[str, list[StepRecord]], dict[str, int]]:
        live = {k: st for k, st in self.states.states().items() if st.records}
        return {k: list(st.records) for k, st in live.items()}, {k: st.factor_bytes for k, st in live.items()}

    def stats(self) -> CacheStats:
        """The trajectory in progress if there is one, else the last finished one."""
        steps, memory = self._snapshot()
        return CacheStats(steps, memory) if steps else CacheStats(dict(self.history[0]), dict(self.history[1]))


class TraceHook(ModelHook):
    """On every candidate block during the first call: run it, note that it ran and its hidden output."""

    def __init__(self, controller: ControllerHook, spec: BlockSpec) -> None:
        super().__init__()
        self.controller, self.spec = controller, spec

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = self.fn_ref.original_forward(*args, **kwargs)
        self._record(args, kwargs, out)
        return out

    @torch.compiler.disable
    def _record(self, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        self.spec.learn(args, kwargs, out)
        trace = self.controller.trace
        h = self.spec.hidden_out(out)
        if len(trace) > 1:  # the first output and the latest stay alive
            trace[-1] = (trace[-1][0], None)
        trace.append((self.spec, h))


class GateHook(ModelHook):
    """On block 0: run it, then ask the gate whether the forecaster's forecast of its output can be trusted."""

    def __init__(self, states: ContextStates, config: CGTaylorConfig, spec: BlockSpec, controller: ControllerHook,
                 forecaster: Forecaster, reuse_buffer: bool = False) -> None:
        super().__init__()
        self.states, self.config, self.spec, self.controller = states, config, spec, controller
        self.reuse_buffer = reuse_buffer  # write forecasts into one buffer (see _buffer)
        self.gate = config.build_gate()
        self.judged = config.build_forecaster("block0")  # block 0's forecaster, which the gate judges
        self.forecaster = forecaster  # the forecast block's

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.states.get_state().blind:
            return self.spec.passthrough(args, kwargs, hidden=self._blind())
        out = self.fn_ref.original_forward(*args, **kwargs)
        if not self.spec.known or self.spec.tuple_len is None:
            self.spec.learn(args, kwargs, out)
        self._gate(self.spec.hidden_out(out))
        return out

    @torch.compiler.disable
    def _blind(self) -> torch.Tensor:
        """A step the gate let skip block 0: block 0's output is forecast by its own forecaster, and the forecast
        block's from that (never on the gradient path or in probe mode)."""
        st = self.states.get_state()
        h = self.judged.predict(st.s0, st.step)
        st.forecast, raw = self._forecast(st, h)
        self._advance(st, raw, gated=True)
        self.gate.went_blind(st.gate)
        offset = st.step - st.last_full if st.last_full is not None else 0
        st.records.append(StepRecord(st.step, st.last_t if st.last_t is not None else float("nan"), False, "blind", None, offset=offset))
        return h

    def _error(self, st: CGTaylorState, h: torch.Tensor) -> float:
        """Block 0's relative forecast error at this step, the worst sample's (context parallelism: summed over shards)."""
        err, ref = self.gate.signal(self.judged, st.s0, st.step, h)
        err, ref = sum_over_shards(err, ref, self.controller.group)  # h is this rank's shard
        return float((err / ref.clamp_min(1e-30)).amax().item())

    def _buffer(self, st: CGTaylorState) -> torch.Tensor | None:
        """Where the forecast may be written in place of a fresh tensor: on U-Nets the forecast feeds an up block,
        which concatenates it with a skip connection and never keeps it, so one buffer serves every step (a
        fresh multi-megabyte tensor per step costs page faults that showed as a few percent of a shallow step)."""
        if not self.reuse_buffer:
            return None
        like = st.sl.data[0]
        if st.buffer is None or st.buffer.shape != like.shape or st.buffer.dtype != like.dtype or st.buffer.device != like.device:
            st.buffer = torch.empty_like(like)
        return st.buffer

    def _forecast(self, st: CGTaylorState, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forecast block's output at this step (``residual``: block 0's output ``h`` of this step plus the
        forecast residual), and the forecast in the stream's terms (the residual itself under ``residual``)."""
        if self.controller.differentiable:  # a new tensor, in the gradient's graph (no reused buffer, no fused kernel)
            raw = self.forecaster.predict_differentiable(st.sl, st.step)
            fc = raw.to(h.dtype)
            return (fc + h if self.config.residual else fc), raw
        raw = self.forecaster.predict(st.sl, st.step, out=self._buffer(st))
        if not self.config.residual:
            return raw, raw
        return (raw.clone().add_(h) if self.forecaster.advances else raw.add_(h)), raw

    def _advance(self, st: CGTaylorState, raw: torch.Tensor, gated: bool) -> None:
        """A forecast step: a forecaster that takes in its own forecasts does so (block 0's too, where the gate ran)."""
        if not self.forecaster.advances:
            return
        if self.controller.differentiable:
            st.sl = self.forecaster.advanced(st.sl, raw, st.step)
        else:
            self.forecaster.advance(st.sl, raw, st.step)
        if gated:
            self.judged.advance(st.s0, self.judged.predict(st.s0, st.step), st.step)

    @torch.compiler.disable
    def _gate(self, h: torch.Tensor) -> None:
        st = self.states.get_state()
        if st.imposed is not None:  # a replayed step: the decision recorded by the forward pass, no gate, no block-0 stream
            st.compute = st.imposed
            if not st.compute:
                st.forecast, raw = self._forecast(st, h)
                self._advance(st, raw, gated=False)
            elif self.config.residual:
                st.h0 = h
            return
        live = h  # the forecast's base under ``residual`` (in the gradient's graph on the gradient path)
        h = h.detach()  # the gate's stream and decisions carry no gradient
        if st.gate is None:
            st.gate = self.gate.new_state()
        error: float | None = None
        reason = st.force
        offset = st.step - st.last_full if st.last_full is not None else 0
        if reason is None and self.config.threshold == 0:
            reason = "threshold0"  # the gate can never pass: skip measuring (keeps the overhead minimal)
        if reason is None:
            error = self._error(st, h)
            if not math.isfinite(error):
                reason = "nonfinite"
            elif self.gate.passes(st.gate, error):
                fc, raw = self._forecast(st, live if self.controller.differentiable else h)
                if _all_finite(fc, self.controller.group):
                    st.compute, st.forecast, reason = False, fc, "forecast"
                    self._advance(st, raw, gated=True)
                else:
                    reason = "nonfinite"
            else:
                reason = "gate"
        if not st.compute:
            self.gate.forecasted(st.gate, error or 0.0)
            if self.controller.probe:
                st.compute, st.refresh = True, False  # run the blocks anyway; LastHook measures the forecast
        else:
            self.gate.computed(st.gate)
            if self.config.residual and st.refresh:
                st.h0 = live  # the forecast block's refresh stores its output minus this
            self.judged.update(st.s0, h, st.step)
        computed = st.compute and st.refresh
        st.records.append(StepRecord(st.step, st.last_t if st.last_t is not None else float("nan"), computed, reason or "gate", error,
                                     offset=offset))


class SkipHook(ModelHook):
    """On blocks 1..L-2: on forecast steps return the inputs unchanged instead of running the block."""

    def __init__(self, states: ContextStates, spec: BlockSpec) -> None:
        super().__init__()
        self.states, self.spec = states, spec

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.states.get_state().compute:
            out = self.fn_ref.original_forward(*args, **kwargs)
            if not self.spec.known or self.spec.tuple_len is None or self.spec.out_shape is not None:
                self.spec.learn(args, kwargs, out)  # (the output's shape of this trajectory, for keep_shape)
            return out
        return self.spec.passthrough(args, kwargs)


class LastHook(ModelHook):
    """On block L-1: forecast its output on skipped steps; refresh its factors on full steps."""

    def __init__(self, states: ContextStates, config: CGTaylorConfig, spec: BlockSpec, controller: ControllerHook,
                 forecaster: Forecaster) -> None:
        super().__init__()
        self.states, self.config, self.spec, self.controller = states, config, spec, controller
        self.forecaster = forecaster

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st = self.states.get_state()
        if not st.compute:
            fc, st.forecast = st.forecast, None
            return self.spec.passthrough(args, kwargs, hidden=fc)
        out = self.fn_ref.original_forward(*args, **kwargs)
        if not self.spec.known or self.spec.tuple_len is None:
            self.spec.learn(args, kwargs, out)
        self._refresh(st, self.spec.hidden_out(out))
        return out

    @torch.compiler.disable
    def _refresh(self, st: CGTaylorState, h: torch.Tensor) -> None:
        if st.forecast is not None:  # probe mode: how good was the forecast we would have used?
            err, ref = kernels.forecast_error(st.forecast[None], 0.0, 1, h)
            err, ref = sum_over_shards(err, ref, self.controller.group)
            if st.records:
                st.records[-1].last_error = float((err.sum() / ref.sum().clamp_min(1e-30)).item())
            st.forecast = None
        if not st.refresh:
            return
        if self.config.residual:
            base, st.h0 = st.h0, None
            if base is None or base.shape != h.shape:
                if self.controller.model is not None:
                    remove(self.controller.model)  # nothing stays hooked after the error
                raise AccelError(f"residual=True needs block 0 and the forecast block to output the same shape; got "
                                 f"{None if base is None else tuple(base.shape)} and {tuple(h.shape)}: use residual=False on this model")
            h = h - base
        if self.controller.differentiable:  # a new stream: the old one stays valid for the backward sweep
            st.sl = self.forecaster.updated(st.sl, h, st.step)
        else:
            self.forecaster.update(st.sl, h, st.step)
        st.last_full = st.step
