"""Where a denoiser call is in its sampling trajectory, and whether its step must run in full.

The controller hook (``hooks.py``) asks a trajectory, once per denoiser call, to select the call's branch
(its cache context and its position among the calls at the same timestep), to number its step and to say
whether the step is forced to run in full (warm-up, last step, skip cap). :class:`Trajectory` reads this from
the calls themselves: the timestep against the scheduler's timesteps (right for trajectories that start
part-way and for a second denoiser taking over mid-trajectory), a new trajectory on every ``set_timesteps``,
and a restart of the factors when the LoRA adapters change. A caller that drives the sampler itself (the
gradient path, ``accel.caching.grad``) numbers the steps directly with a trajectory of its own.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import CGTaylorConfig
from .state import CGTaylorState, ContextStates, branch_key


def weights_version(model: torch.nn.Module | None) -> tuple[Any, ...] | None:
    """What the LoRA adapters do to the model now (None without peft layers): per peft layer its active and
    merged adapters, whether adapters are disabled, and the scales. ``load_lora_weights``, ``set_adapters``,
    ``fuse_lora``, ``unfuse_lora``, ``unload_lora_weights`` and ``enable/disable_lora`` all change it. Only walks
    the modules of a model that has had adapters loaded."""
    if model is None or not (getattr(model, "_hf_peft_config_loaded", False) or getattr(model, "peft_config", None)):
        return None
    from peft.tuners.tuners_utils import BaseTunerLayer

    return tuple(
        (name, tuple(m.active_adapters), bool(m.disable_adapters), tuple(m.merged_adapters),
         tuple(sorted(getattr(m, "scaling", {}).items())))
        for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)
    )


def scalar_timestep(t: Any) -> float | None:
    """A call's timestep as one float (the first entry of a per-sample tensor), or None."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return float(t.reshape(-1)[0].item()) if t.numel() else None
    return float(t)


def call_arg(params: list[str], names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The first of ``names`` given to a call, by keyword or positionally (``params``: the forward's signature)."""
    for n in names:
        if n in kwargs:
            return kwargs[n]
        if n in params and params.index(n) < len(args):
            return args[params.index(n)]
    return None


def call_signature(params: list[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """(shape, dtype, device) of a call's sample: a branch whose signature changes starts afresh."""
    x = call_arg(params, ("hidden_states", "sample", "x"), args, kwargs)
    x = x if isinstance(x, torch.Tensor) else next((a for a in args if isinstance(a, torch.Tensor)), None)
    return (tuple(x.shape), x.dtype, x.device) if x is not None else None


def forced(st: CGTaylorState, config: CGTaylorConfig, last: bool) -> str | None:
    """Why step ``st.step`` must run in full without asking the gate, or None: warm-up (also until both streams
    hold a value) or the last step (``full_last_step``)."""
    if st.step - st.warm_from < config.warmup_steps or not st.s0.valid or not st.sl.valid:
        return "warmup"
    if config.full_last_step and last:
        return "last"
    return None


class Trajectory:
    """Reads each call's place in the trajectory from its timestep and the scheduler (see the module docstring)."""

    def __init__(self, states: ContextStates, config: CGTaylorConfig, params: list[str], scheduler: Any = None,
                 model: torch.nn.Module | None = None) -> None:
        self.states, self.config, self.params, self.scheduler, self.model = states, config, params, scheduler, model
        self._unique: tuple[Any, torch.Tensor | None] = (None, None)  # (scheduler timesteps, their unique values)
        self._count: tuple[Any, Any, int] = (None, None, 0)  # (scheduler timesteps, begin index, number of steps)
        self.weights: tuple[Any, ...] | None = weights_version(model)  # weights_version(model) at the last call

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CGTaylorState:
        """Select and number the branch of this call and decide whether it is forced to run in full."""
        sig = call_signature(self.params, args, kwargs)
        t = scalar_timestep(call_arg(self.params, ("timestep", "timesteps", "t"), args, kwargs))
        self._check_weights()
        n_steps = self.num_steps()
        key, pos = self._branch(t, n_steps, self._matches(t))
        st = self.states.activate(key)
        if st.signature != sig:  # another shape, dtype or device: this branch starts afresh
            st.reset()
            st.signature = sig
        st.step, st.last_t = self.states.order(self.states.context_name()).step, t
        last = pos[0] >= pos[1] - 1 if pos is not None else n_steps is not None and st.step >= n_steps - 1
        st.force = forced(st, self.config, last)
        return st

    def _check_weights(self) -> None:
        """Every branch restarts its factors when the denoiser's LoRA state changed since the last call."""
        version = weights_version(self.model)
        if version != self.weights:
            for st in self.states.states().values():
                st.restart()
            self.weights = version

    def num_steps(self) -> int | None:
        """The number of sampling steps of the running trajectory, where the scheduler or the pipeline tells."""
        ctx = self.states._context
        if ctx is not None and ctx.num_inference_steps is not None:
            return int(ctx.num_inference_steps)
        ts = self._schedule()
        if ts is None:
            return None
        begin = getattr(self.scheduler, "begin_index", None)  # img2img / inpainting start part-way (strength < 1)
        if self._count[0] is not ts or self._count[1] != begin:  # counted once per schedule, not every call
            self._count = (ts, begin, int(torch.unique(ts[begin:] if isinstance(begin, int) else ts).numel()))
        return self._count[2]

    def _schedule(self) -> torch.Tensor | None:
        ts = getattr(self.scheduler, "timesteps", None)
        return ts if isinstance(ts, torch.Tensor) and ts.numel() else None

    def _matches(self, t: float | None) -> list[tuple[int, int, int]]:
        """Where the timestep is in the scheduler's timesteps: (scale, index, number of steps) for each reading
        that finds it, scale 0 as given, 1 divided by 1000 (as FLUX-style pipelines pass it). Unlike a count of
        calls, this is right for trajectories that start part-way (img2img, inpainting, strength < 1) and for
        a denoiser that takes over mid-trajectory (Wan 2.2's second transformer)."""
        ts = self._schedule()
        if ts is None or t is None:
            return []
        if self._unique[0] is not ts:
            self._unique = (ts, torch.unique_consecutive(ts.detach().to("cpu", torch.float64)))
        u = self._unique[1]
        found = []
        for scale, v in enumerate((t, t * 1000.0)):
            d = (u - v).abs()
            i = int(d.argmin())
            if d[i] <= 1e-2 * max(1.0, abs(v)):  # loose: the pipeline may cast the timestep to bfloat16
                found.append((scale, i, len(u)))
        return found

    def _branch(self, t: float | None, n_steps: int | None, found: list[tuple[int, int, int]]) -> tuple[str, tuple[int, int] | None]:
        """The branch of this call (its context, and its position among the calls at the same timestep), and
        the step's place in the schedule: the cache context's ``step_index``, else a reading of the timestep
        in ``found`` that is consistent with the trajectory so far (None when there is none or two disagree)."""
        name = self.states.context_name()
        order = self.states.order(name)
        ctx = self.states._context
        sched = self._schedule()
        # The scheduler's timesteps are a new tensor on every pipeline call (set_timesteps): a new trajectory,
        # even when the last one was cut short (interrupted, or an exception in a callback).
        rescheduled = sched is not None and order.schedule is not None and sched is not order.schedule
        if t is not None and t == order.last_t and not rescheduled:
            order.position += 1  # another call of the same step (uncond, reference image, guidance...)
            return branch_key(name, order.position), order.pos
        if order.step >= 0 and (
            (t is not None and order.last_t is not None and (t - order.last_t) * order.direction < 0)
            or (ctx is not None and ctx.step_index == 0)
            or order.ended
            or rescheduled
            or (order.pos is None and n_steps is not None and order.step + 1 >= n_steps)
        ):
            self.states.drop(name)  # timesteps went back, past the last step, or rescheduled: a new trajectory
        if order.direction == 0 and t is not None and order.last_t is not None:
            order.direction = math.copysign(1.0, t - order.last_t)
        order.step += 1
        order.position = 0
        order.last_t = t
        order.schedule = sched
        # A reading of the timestep counts only if the steps go through the schedule one entry at a time from
        # where the trajectory started: AuraFlow's first timestep 1.0 as given is also the schedule's last
        # value, and Lumina feeds the model 1 - t/1000.
        if ctx is not None and ctx.step_index is not None and ctx.num_inference_steps is not None:
            order.pos = (int(ctx.step_index), int(ctx.num_inference_steps))
        else:
            if order.step == 0:
                order.origins = {k: i for k, i, _ in found}
            ok = {k: (i, n) for k, i, n in found if order.origins.get(k) == i - order.step}
            order.origins = {k: o for k, o in order.origins.items() if k in ok}
            order.pos = next(iter(ok.values())) if len(set(ok.values())) == 1 else None
        order.ended = order.pos is not None and order.pos[0] >= order.pos[1] - 1
        return name, order.pos
