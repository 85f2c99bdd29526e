"""Gradients through a CG-Taylor-cached sampler (``sample_with_grad(..., options={"cache": CGTaylorConfig(...)})``).

The cached sampler is a recurrence on the pair (x_i, F_i), F_i the last block's Taylor factor stack:

- a full step runs the whole network at x_i and refreshes F_{i+1} = U(F_i, h_i) from the last block's output h_i;
- a forecast step runs block 0 (the gate), skips the rest and feeds the head the forecast T(F_i, i - k) in place
  of the last block's output; F_{i+1} = F_i.

The gate's decisions are taken in the forward pass and held fixed (a piecewise-smooth function is
differentiated on its piece). ``method="discrete"`` is the exact adjoint of that recurrence: the forward pass
runs without a graph and keeps the states x_i and, per full step, the new first row of the factor stack (the
last block's output); the backward sweep rebuilds the stack step i started from out of those rows (exactly:
``CachedRun.factors``), re-runs step i with its recorded decision and factors and pulls (a_x, a_F) back through
one step's graph, so memory holds one network call's activations, the states and one stored output per full
step, whatever the number of steps. ``method="autograd"`` is plain backprop through the same cached
forward (the reference: the factors stay attached to the graph).
"""

from __future__ import annotations

from typing import Any

import torch

from accel.caching.grad import CachedRun

from ._common import Spec, accumulate, detached_leaves


def _run(spec: Spec, run: CachedRun, x: torch.Tensor, cond: Any, keep: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """The cached sampler's forward pass (under the caller's grad mode); keeps the states x_i and carries if asked."""
    states: list[torch.Tensor] = []
    carries: list[torch.Tensor | None] = []
    carry = None
    grid = spec.grid
    with run.hooked():
        for i in range(grid.steps):
            if keep:
                states.append(x)
                carries.append(carry)
            run.begin_step(i)
            x, carry, pred = spec.step(spec.denoiser, grid, i, x, cond, carry)
            run.end_step()
            if spec.callback is not None:
                spec.callback({"i": i, "steps": grid.steps, "t": float(grid.t[i]), "x": x, "denoised": pred.x0,
                               "computed": run.plans[i].computed})
    return x, states, carries


def sample_cached(spec: Spec, run: CachedRun, method: str, x: torch.Tensor, flat: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """x_0 of the cached sampler from x_T, differentiable w.r.t. x_T, the float cond tensors and ``params``."""
    if method == "autograd":
        return _run(spec, run, x, spec.unflatten(flat), keep=False)[0]
    return CachedDiscreteAdjoint.apply(spec, run, x, *flat, *params)


class CachedDiscreteAdjoint(torch.autograd.Function):
    """``CachedDiscreteAdjoint.apply(spec, run, x_T, *cond_tensors, *params) -> x_0``."""

    @staticmethod
    def forward(ctx: Any, spec: Spec, run: CachedRun, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        cond, _, _ = spec.split(tensors)
        with torch.no_grad():
            out, states, carries = _run(spec, run, x, cond, keep=True)
        ctx.spec, ctx.run, ctx.states, ctx.carries = spec, run, states, carries
        ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        spec: Spec = ctx.spec
        run: CachedRun = ctx.run
        _, flat_cond, params = spec.split(ctx.saved_tensors)
        want_cond = [ctx.needs_input_grad[3 + j] for j in range(spec.n_cond)]
        want_params = [ctx.needs_input_grad[3 + spec.n_cond + j] for j in range(spec.n_params)]
        leaves = detached_leaves(flat_cond)
        cond = spec.unflatten(leaves)
        cond_in = [c for c, w in zip(leaves, want_cond) if w]
        param_in = [p for p, w in zip(params, want_params) if w]
        g_cond: list[torch.Tensor | None] = [None] * len(cond_in)
        g_param: list[torch.Tensor | None] = [None] * len(param_in)
        adj = (grad_out, None, None)  # (a_x, a_carry, a_F)
        with run.hooked():
            for i in reversed(range(spec.grid.steps)):
                adj = _step_vjp(spec, run, i, ctx.states[i], ctx.carries[i], cond, adj, cond_in + param_in, g_cond, g_param)
        it_c, it_p = iter(g_cond), iter(g_param)
        return (None, None, adj[0], *[next(it_c) if w else None for w in want_cond], *[next(it_p) if w else None for w in want_params])


def _step_vjp(
    spec: Spec,
    run: CachedRun,
    i: int,
    x: torch.Tensor,
    carry: torch.Tensor | None,
    cond: Any,
    adj: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    wrt: list[torch.Tensor],
    g_cond: list[torch.Tensor | None],
    g_param: list[torch.Tensor | None],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Re-run step i with its recorded decision and factors, and pull (a_x, a_carry, a_F) back to its inputs;
    accumulates the cond and weight gradients (``wrt`` = cond leaves then params)."""
    a_x, a_carry, a_f = adj
    plan = run.plans[i]
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        ci = carry.detach().requires_grad_(True) if carry is not None else None
        factors = run.factors(i)
        fi = factors.detach().requires_grad_(True) if factors is not None else None
        run.begin_step(i, replay=True, factors=fi)
        x_next, carry_next, _ = spec.step(spec.denoiser, spec.grid, i, xi, cond, ci)
        f_next = run.end_step()
        outs, g_outs = [x_next], [a_x]
        if carry_next is not None and a_carry is not None:
            outs.append(carry_next)
            g_outs.append(a_carry)
        changed = f_next is not None and f_next is not fi  # F_{i+1} = U(F_i, h_i): a refresh, or a forecaster taking in its forecast
        if changed and a_f is not None:
            outs.append(f_next)
            g_outs.append(a_f)
        inputs = [xi] + ([ci] if ci is not None else []) + ([fi] if fi is not None else []) + wrt
        grads = list(torch.autograd.grad(outs, inputs, g_outs, allow_unused=True))
    a_prev = grads.pop(0)
    a_carry_prev = grads.pop(0) if ci is not None else None
    a_f_prev = grads.pop(0) if fi is not None else None
    if not changed and a_f is not None:  # a step that kept the factors: F_{i+1} = F_i
        a_f_prev = a_f if a_f_prev is None else a_f_prev + a_f
    n_cond = len(g_cond)
    accumulate(g_cond, grads[:n_cond])
    accumulate(g_param, grads[n_cond:])
    return (a_prev if a_prev is not None else torch.zeros_like(x)), a_carry_prev, a_f_prev
