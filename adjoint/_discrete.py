"""The exact discrete adjoint of a sampler (discretise-then-optimise).

Forward: run the N steps without a graph and keep only the N states (and, for multistep methods, the carried
field). Backward: for i = N-1 .. 0, re-run step i with gradients at the state it started from and take one
vector-Jacobian product. The result is autograd through the same sampler, to rounding, with the activation
memory of a single network call.
"""

from __future__ import annotations

from typing import Any

import torch

from ._common import Spec, accumulate, detached_leaves, run_forward


class DiscreteAdjoint(torch.autograd.Function):
    """``DiscreteAdjoint.apply(spec, x_T, *cond_tensors, *params) -> x_0``."""

    @staticmethod
    def forward(ctx: Any, spec: Spec, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        cond, _, _ = spec.split(tensors)
        out, states, carries = run_forward(spec, x, cond, keep_states=True)
        ctx.spec, ctx.states, ctx.carries = spec, states, carries
        ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        spec: Spec = ctx.spec
        tensors = ctx.saved_tensors
        _, flat_cond, params = spec.split(tensors)
        want_cond = [ctx.needs_input_grad[2 + j] for j in range(spec.n_cond)]
        want_params = [ctx.needs_input_grad[2 + spec.n_cond + j] for j in range(spec.n_params)]
        leaves = detached_leaves(flat_cond)
        cond = spec.unflatten(leaves)
        cond_in = [c for c, w in zip(leaves, want_cond) if w]
        param_in = [p for p, w in zip(params, want_params) if w]
        g_cond: list[torch.Tensor | None] = [None] * len(cond_in)
        g_param: list[torch.Tensor | None] = [None] * len(param_in)
        a_x, a_carry = grad_out, None
        for i in reversed(range(spec.grid.steps)):
            a_x, a_carry = _step_vjp(spec, i, ctx.states[i], ctx.carries[i], cond, a_x, a_carry, cond_in, param_in, g_cond, g_param)
        it_c, it_p = iter(g_cond), iter(g_param)
        out_cond = [next(it_c) if w else None for w in want_cond]
        out_params = [next(it_p) if w else None for w in want_params]
        return (None, a_x, *out_cond, *out_params)


def _step_vjp(
    spec: Spec,
    i: int,
    x: torch.Tensor,
    carry: torch.Tensor | None,
    cond: Any,
    a_x: torch.Tensor,
    a_carry: torch.Tensor | None,
    cond_in: list[torch.Tensor],
    param_in: list[torch.Tensor],
    g_cond: list[torch.Tensor | None],
    g_param: list[torch.Tensor | None],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Re-run step i with a graph and pull (a_x, a_carry) back to its inputs; accumulates cond/param grads."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        ci = carry.detach().requires_grad_(True) if carry is not None else None
        x_next, carry_next, _ = spec.step(spec.denoiser, spec.grid, i, xi, cond, ci)
        outs, g_outs = [x_next], [a_x]
        if carry_next is not None and a_carry is not None:
            outs.append(carry_next)
            g_outs.append(a_carry)
        inputs = [xi] + ([ci] if ci is not None else []) + cond_in + param_in
        grads = torch.autograd.grad(outs, inputs, g_outs, allow_unused=True)
    k = 2 if ci is not None else 1
    accumulate(g_cond, grads[k : k + len(cond_in)])
    accumulate(g_param, grads[k + len(cond_in) :])
    a_prev = grads[0] if grads[0] is not None else torch.zeros_like(x)
    return a_prev, (grads[1] if ci is not None else None)
