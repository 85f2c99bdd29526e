"""Spectrum (Han et al., CVPR 2026, arXiv 2603.01623) as a benchmark peer, written from the paper and how its
public code (hanjq17/Spectrum) runs it; no package ships it.

The last transformer block's output (the hidden stream before the output head; FLUX: the image tokens after the
last single-stream block) is forecast on the steps a fixed schedule leaves out (``SpectrumConfig.schedule``): there
every block is skipped, the embedders and the head still run. The forecast is a multi-output ridge regression over
every full step so far on Chebyshev polynomials T_0..T_M of tau = 2 t / N - 1 (t the step index, N the step
count; the reference code hard-codes N = 50, which this reproduces at 50 steps). All elements share the design X,
so only G = X^T X + lam I (P x P, float64) and S = X^T H (P fp32 copies of the stream) are kept, and the forecast
(G^-1 x*)^T S equals a refit's x*^T C, C = G^-1 X^T H. It is blended with the first-order Newton forward difference
of the last two full steps i-1, i: h = w h_cheb + (1 - w) h_lin, h_lin = h_i + r (h_i - h_{i-1}), r = (t* - t_i) /
(t_i - t_{i-1}). Unlike the reference (bf16 tau and coefficients), tau and G are float64 and S is fp32.

Steps are counted per denoiser call, one call per step per diffusers cache context: DiT's batched CFG (both
branches in one call) is one stream, FLUX's true CFG (``cache_context("cond")`` / ``("uncond")``) one per context.
Two calls per step without a context are not supported (the counter would advance twice per step). A context's
counter restarts after N calls or at a context's ``step_index=0``. Transformer denoisers only (not U-Nets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers.hooks.hooks import BaseState, ModelHook, StateManager

from ..caching.blocks import BlockSpec, find_blocks, find_denoiser
from ..caching.hooks import attach, controller_of, detach
from ..errors import AccelError

CONTROLLER_HOOK = "accel_spectrum"
BLOCK_HOOK = "accel_spectrum_block"


def chebyshev_basis(t: float, span: int, p: int) -> torch.Tensor:
    """``[T_0(tau) .. T_{p-1}(tau)]`` at ``tau = 2 t / span - 1``, float64 on the CPU."""
    tau = 2.0 * float(t) / span - 1.0
    x = [1.0, tau]
    while len(x) < p:
        x.append(2.0 * tau * x[-1] - x[-2])
    return torch.tensor(x[:p], dtype=torch.float64)


def ridge_weights(gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``G^-1 x`` (float64) by Cholesky; a tiny jitter where ``G`` is singular (no penalty, too few steps)."""
    chol, info = torch.linalg.cholesky_ex(gram)
    if info:
        chol = torch.linalg.cholesky(gram + 1e-6 * max(gram.diag().mean().item(), 1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype))
    return torch.cholesky_solve(x[:, None], chol)[:, 0]


# field: (type, check, the rule in words)
_RULES: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "warmup_steps": (int, lambda v: v >= 1, ">= 1 (step 0 runs in full: there is nothing to forecast from before it)"),
    "window_size": ((int, float), lambda v: v >= 1, ">= 1 (floor(window) is the period of full steps after the warm-up)"),
    "flex_window": ((int, float), lambda v: v >= 0, ">= 0 (the window grows by it after each full step)"),
    "degree": (int, lambda v: v >= 0, ">= 0 (the Chebyshev degree M; P = M + 1 basis functions)"),
    "lam": ((int, float), lambda v: v >= 0, ">= 0 (the ridge penalty)"),
    "w": ((int, float), lambda v: 0 <= v <= 1, "in [0, 1] (1: pure Chebyshev forecast, 0: pure linear)"),
    "num_inference_steps": (int, lambda v: v >= 1, ">= 1"),
}


@dataclass(frozen=True)
class SpectrumConfig:
    """Spectrum's settings (defaults: the reference run script on FLUX.1-dev). warmup_steps: the first steps, all run in full (>= 1). window_size (N_0) and flex_window (alpha): after the
    warm-up a step runs in full when (consecutive forecast steps + 1) is a multiple of floor(ws); ws starts at
    window_size and grows by flex_window after each full step (0.75: 14 of 50 steps full; 3.0: 10 of 50).
    degree (M): Chebyshev degree, P = M + 1 basis functions. lam: ridge penalty (on every coefficient, T_0 too).
    w: weight of the Chebyshev forecast against the linear one (the paper: 1.0; its README and scripts: 0.5).
    num_inference_steps (N): the trajectory length, for the schedule and the time map tau = 2 t / N - 1.
    """

    warmup_steps: int = 5
    window_size: float = 2.0
    flex_window: float = 0.75
    degree: int = 4
    lam: float = 0.1
    w: float = 0.5
    num_inference_steps: int = 50

    def __post_init__(self) -> None:
        for name, (kind, ok, rule) in _RULES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v):
                raise ValueError(f"SpectrumConfig.{name}={v!r}: must be {'an integer' if kind is int else 'a finite number'}")
            if not ok(v):
                raise ValueError(f"SpectrumConfig.{name}={v!r}: must be {rule}")

    def schedule(self, num_steps: int | None = None) -> list[bool]:
        """Which of the ``num_steps`` (default ``num_inference_steps``) steps run in full (True) or are forecast."""
        n = self.num_inference_steps if num_steps is None else num_steps
        full: list[bool] = []
        ws, cached = float(self.window_size), 0
        for s in range(n):
            run = s < self.warmup_steps or (cached + 1) % math.floor(ws) == 0
            if run and s >= self.warmup_steps:
                ws = round(ws + self.flex_window, 3)  # as the reference: no drift from repeated float additions
            cached = 0 if run else cached + 1
            full.append(run)
        return full


class ChebyshevRidge:
    """One stream's forecaster: the ridge fit's sufficient statistics G and S, and the last two full features."""

    def __init__(self, degree: int, lam: float, w: float, num_steps: int) -> None:
        self.p, self.lam, self.w, self.n = degree + 1, float(lam), float(w), num_steps
        self.gram = self.lam * torch.eye(self.p, dtype=torch.float64)  # G = X^T X + lam I
        self.moments: torch.Tensor | None = None  # S = X^T H: (P, *feature shape), fp32
        self.last: list[tuple[float, torch.Tensor]] = []  # (step, feature) of the last two full steps (w < 1)
        self.dtype: torch.dtype | None = None

    def basis(self, t: float) -> torch.Tensor:
        """x(tau) = [T_0(tau) .. T_M(tau)], tau = 2 t / N - 1, float64 on the CPU."""
        return chebyshev_basis(t, self.n, self.p)

    def update(self, t: float, h: torch.Tensor) -> None:
        """Add a full step's feature: G += x x^T, S += x h^T."""
        x = self.basis(t)
        self.gram += torch.outer(x, x)
        h = h.detach()
        h32 = h.float()  # one fp32 copy for the P updates (the feature itself when it is fp32)
        if self.moments is None:
            self.moments = torch.zeros((self.p, *h.shape), dtype=torch.float32, device=h.device)
        for i, xi in enumerate(x.tolist()):
            self.moments[i].add_(h32, alpha=xi)
        if self.w < 1:
            self.last = [*self.last[-1:], (float(t), h.clone())]
        self.dtype = h.dtype

    def weights(self, t: float) -> torch.Tensor:
        """G^-1 x(tau*) (float64): the forecast is sum_p weights[p] S[p]."""
        return ridge_weights(self.gram, self.basis(t))

    def chebyshev(self, t: float) -> torch.Tensor:
        """The ridge forecast x(tau*)^T C at step ``t`` (fp32)."""
        a = self.weights(t).to(device=self.moments.device, dtype=torch.float32)
        return torch.tensordot(a, self.moments, dims=1)

    def linear(self, t: float) -> torch.Tensor:
        """First-order Newton forward difference from the last two full steps (a new fp32 tensor)."""
        (tp, hp), (ti, hi) = self.last[0], self.last[-1]
        r = (float(t) - ti) / (ti - tp) if ti != tp else 0.0  # one full step so far: the last feature
        return hi.to(torch.float32, copy=True).mul_(1.0 + r).sub_(hp.float(), alpha=r)

    def predict(self, t: float) -> torch.Tensor:
        """h = w h_cheb + (1 - w) h_lin, in the feature's dtype (a term of weight 0 is not computed)."""
        out = self.chebyshev(t).mul_(self.w) if self.w > 0 else 0.0
        if self.w < 1:
            out = self.linear(t).mul_(1.0 - self.w).add_(out)
        return out.to(self.dtype)


class _Stream(BaseState):
    """One cache context's trajectory: step counter, forecaster, full and forecast calls."""

    def __init__(self) -> None:
        self.step, self.full, self.forecast, self.forecaster = 0, 0, 0, None

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.__init__()


class _States(StateManager):
    """diffusers' per-context state, with a ``default`` context for calls made outside any ``cache_context``."""

    def get_state(self) -> _Stream:
        return self._state_cache.setdefault(self._context.name if self._context is not None else "default", _Stream())


class SpectrumHook(ModelHook):
    """On the denoiser: numbers the call, decides full or forecast, and feeds the forecaster after a full call."""

    _is_stateful = True

    def __init__(self, config: SpectrumConfig, blocks: list[BlockSpec]) -> None:
        super().__init__()
        self.config, self.blocks, self.plan = config, blocks, config.schedule()
        self.states = _States(_Stream)
        self.order: list[BlockSpec] | None = None  # the blocks in the order the first full call ran them
        self.ran: list[BlockSpec] = []  # the blocks the current call ran, while the order is not known
        self.full = True  # whether the current call runs its blocks
        self.forecast: torch.Tensor | None = None  # the current call's forecast of the last block's output
        self.feature: torch.Tensor | None = None  # the latest block output of the current full call
        self.finished: dict[str, dict[str, int]] = {}  # stats() of the last trajectory reset

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        st = self._begin()
        try:
            out = self.fn_ref.original_forward(*args, **kwargs)
            self._end(st)
        finally:
            self.forecast, self.feature, self.ran = None, None, []
        return out

    @torch.compiler.disable
    def _begin(self) -> _Stream:
        st = self.states.get_state()
        index = getattr(self.states._context, "step_index", None)  # where the loop is, if the pipeline says
        if index == 0 or (index is None and st.step >= self.config.num_inference_steps):
            st.reset()  # a new trajectory (the reference's counter wraps at N too)
        if index is not None:
            st.step = int(index)
        s = st.step
        self.full = s >= len(self.plan) or self.plan[s] or st.forecaster is None or self.order is None
        self.forecast = None if self.full else st.forecaster.predict(s)
        return st

    @torch.compiler.disable
    def _end(self, st: _Stream) -> None:
        if self.full:
            if self.feature is None:
                raise AccelError("Spectrum: no transformer block ran in the denoiser's call")
            if self.order is None:
                self.order = list({id(b): b for b in self.ran}.values())  # first-run order, each block once
            if st.forecaster is None:
                c = self.config
                st.forecaster = ChebyshevRidge(c.degree, c.lam, c.w, c.num_inference_steps)
            st.forecaster.update(st.step, self.feature)
            st.full += 1
        else:
            st.forecast += 1
        st.step += 1

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        """Forget every context's trajectory (pipelines call it when they finish: ``maybe_free_model_hooks``)."""
        self.finished = self.stats() or self.finished
        self.states.reset()
        return module

    def stats(self) -> dict[str, dict[str, int]]:
        return {k: {"full": s.full, "forecast": s.forecast} for k, s in self.states._state_cache.items() if s.full}


class _BlockHook(ModelHook):
    """On every block: run it on full calls, else pass its inputs through (the last block: the forecast as output)."""

    def __init__(self, controller: SpectrumHook, spec: BlockSpec) -> None:
        super().__init__()
        self.controller, self.spec = controller, spec

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        c, spec = self.controller, self.spec
        if c.full:
            out = self.fn_ref.original_forward(*args, **kwargs)
            if not spec.known or spec.tuple_len is None:
                spec.learn(args, kwargs, out)
            c.feature = spec.hidden_out(out)
            if c.order is None:
                c.ran.append(spec)
            return out
        return spec.passthrough(args, kwargs, hidden=c.forecast if spec is c.order[-1] else None)


class SpectrumHandle:
    """Spectrum applied to one denoiser: ``reset()`` between pipeline calls, ``remove()`` to undo exactly.
    ``others``: the handles of further denoisers of the same pipeline (a second expert), reset and removed with it."""

    def __init__(self, model: torch.nn.Module, hook: SpectrumHook) -> None:
        self.model, self.hook, self.config = model, hook, hook.config
        self.removed = False
        self.others: list[SpectrumHandle] = []

    def reset(self) -> None:
        """Forget every context's trajectory (step counters, fits): call it between pipeline calls."""
        self.hook.reset_state(self.model)
        for h in self.others:
            h.reset()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per cache context: full and forecast calls of the trajectory in progress, else of the last one."""
        return self.hook.stats() or dict(self.hook.finished)

    def remove(self) -> None:
        """Take every hook off: the denoiser and its blocks are as they were before ``apply_spectrum``."""
        if self.removed:
            return
        for spec in self.hook.blocks:
            detach(spec.module, (BLOCK_HOOK,))
        reg = self.model.__dict__.get("_diffusers_hook")
        if reg is not None:
            reg.invalidate_child_registries_cache()  # diffusers' cached list of the blocks' registries
        detach(self.model, (CONTROLLER_HOOK,))
        self.removed = True
        for h in self.others:
            h.remove()


def apply_spectrum(pipe_or_denoiser: Any, config: SpectrumConfig | None = None) -> SpectrumHandle:
    """Hook Spectrum onto a pipeline's transformer (or the transformer itself)."""
    config = config if config is not None else SpectrumConfig()
    model = find_denoiser(pipe_or_denoiser)
    reg = model.__dict__.get("_diffusers_hook")
    if reg is not None and reg.get_hook(CONTROLLER_HOOK) is not None:
        raise AccelError(f"Spectrum is already applied to this {type(model).__name__}; remove() its handle first")
    if controller_of(model) is not None:
        raise AccelError(f"CG-Taylor is enabled on this {type(model).__name__}; disable it before applying Spectrum")
    blocks = find_blocks(model)
    if any(b.kind != "transformer" for b in blocks):
        raise AccelError(f"Spectrum here supports transformer denoisers, not {type(model).__name__} (a U-Net)")
    hook = SpectrumHook(config, blocks)
    attach(model, hook, CONTROLLER_HOOK)
    for spec in blocks:
        attach(spec.module, _BlockHook(hook, spec), BLOCK_HOOK)
    model._diffusers_hook.invalidate_child_registries_cache()
    return SpectrumHandle(model, hook)


def apply(pipe: Any, params: dict[str, Any], steps: int) -> Callable[[], None]:
    """The benchmark's adapter: Spectrum with ``params`` (SpectrumConfig fields but ``num_inference_steps``) for
    ``steps``-step trajectories on ``pipe``'s denoiser. Returns the reset function (a bound method: its
    ``__self__`` is the handle, whose ``remove()`` undoes the hooks). A second expert (Wan 2.2's ``transformer_2``)
    gets Spectrum too, with its own fit over the steps it runs."""
    from ..caching.blocks import find_denoisers

    handles = [apply_spectrum(m, SpectrumConfig(**params, num_inference_steps=steps)) for m in find_denoisers(pipe)]
    for extra in handles[1:]:
        handles[0].others.append(extra)
    return handles[0].reset
