"""The continuous adjoint of AdjointDPM (optimise-then-discretise), solved backwards in (z, s).

With z' = F(z, s) (y = x/alpha and rho = sigma/alpha for VP models; Pan et al. 2023, Eq. 9-11) and
a(s) = dL/dz(s), the augmented system, integrated from s_N back to s_0, is

    dz/ds = F,   da/ds = -a^T dF/dz,   dG_theta/ds = -a^T dF/dtheta,   dG_c/ds = -a^T dF/dc,

with G(s_N) = 0 and dL/dtheta = G_theta(s_0). It is solved on the sampler's grid, first order (Euler, as
the paper) or second order (the multistep exponential-integrator update of AdjointDEIS-2M, Blasingame and
Liu 2024: the integrand extrapolated linearly in log s = -lambda and integrated exactly). This is *not* the gradient of the discrete
sampler that ran; its error falls with N at the method's order (see accel.benchmarks.adjoint).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._common import Spec, accumulate, detached_leaves, run_forward


class ContinuousAdjoint(torch.autograd.Function):
    """``ContinuousAdjoint.apply(spec, order, reconstruct, x_T, *cond_tensors, *params) -> x_0``.

    ``reconstruct=True`` re-solves the state backwards (the paper: nothing stored); ``False`` resets it to
    the forward states at every grid point (what torchdiffeq's ``odeint_adjoint`` does with a full grid).
    """

    @staticmethod
    def forward(ctx: Any, spec: Spec, order: int, reconstruct: bool, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        cond, _, _ = spec.split(tensors)
        out, states, _ = run_forward(spec, x, cond, keep_states=not reconstruct)
        ctx.spec, ctx.order, ctx.states = spec, order, (states + [out] if not reconstruct else None)
        ctx.save_for_backward(out, *tensors)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        spec: Spec = ctx.spec
        out, *tensors = ctx.saved_tensors
        _, flat_cond, params = spec.split(tensors)
        off = 4
        want_cond = [ctx.needs_input_grad[off + j] for j in range(spec.n_cond)]
        want_params = [ctx.needs_input_grad[off + spec.n_cond + j] for j in range(spec.n_params)]
        leaves = detached_leaves(flat_cond)
        targets = [c for c, w in zip(leaves, want_cond) if w] + [p for p, w in zip(params, want_params) if w]
        a_x, g_targets = _solve_backward(spec, ctx.order, out, ctx.states, spec.unflatten(leaves), grad_out, targets)
        it = iter(g_targets)
        out_cond = [next(it) if w else None for w in want_cond]
        out_params = [next(it) if w else None for w in want_params]
        return (None, None, None, a_x, *out_cond, *out_params)


def _field_vjp(spec: Spec, k: int, z: torch.Tensor, cond: Any, a: torch.Tensor, targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """(F(z_k, s_k), a^T dF/dz, a^T dF/d targets) at grid point k, with one network call and one VJP."""
    den, grid = spec.denoiser, spec.grid
    scale = den.schedule.state_scale(grid.alpha[k], grid.sigma[k]).to(z.dtype)
    with torch.enable_grad():
        zk = z.detach().requires_grad_(True)
        pred = den(zk / scale, grid.t[k], cond)
        field = den.schedule.field(pred.eps, pred.x0)
        grads = torch.autograd.grad(field, [zk, *targets], a, allow_unused=True)
    a_z = grads[0] if grads[0] is not None else torch.zeros_like(z)
    return field.detach(), a_z, list(grads[1:])


def _log_ab2_weight(s_to: float, s_k: float, s_before: float) -> float:
    """w with  int_{s_k}^{s_to} f ds ~= (s_to - s_k) f_k + w (f_k - f_before),  f linear in u = log s.

    Extrapolating in log s (= -lambda for VP models) and integrating exactly against ds = e^u du is the
    exponential-integrator form of AdjointDEIS-2M; going backwards the steps grow geometrically in s, and
    a polynomial in s itself (Adams-Bashforth 2 in rho) is unstable there at small N. w = 0 (an Euler
    step) when the previous point is s = 0 (infinitely far in log s).
    """
    if s_before <= 0:
        return 0.0
    delta = math.log(s_to) - math.log(s_k)
    return ((delta - 1) * s_to + s_k) / (math.log(s_k) - math.log(s_before))


def _solve_backward(
    spec: Spec, order: int, out: torch.Tensor, states: list[torch.Tensor] | None, cond: Any, grad_out: torch.Tensor, targets: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Integrate (z, a, G) from s_N to s_0; return dL/dx_0 and the target gradients."""
    den, grid = spec.denoiser, spec.grid
    n = grid.steps
    scale = lambda k: den.schedule.state_scale(grid.alpha[k], grid.sigma[k]).to(out.dtype)  # noqa: E731
    z, a = out * scale(n), grad_out / scale(n)  # x = z / scale  =>  dL/dz = dL/dx / scale
    g: list[torch.Tensor | None] = [None] * len(targets)
    prev = None  # (field, a^T dF/dz, target vjps, s) at the previous (later-in-s) grid point
    for k in range(n, 0, -1):
        if states is not None:
            z = states[k] * scale(k)
        field, jz, jt = _field_vjp(spec, k, z, cond, a, targets)
        h = float(grid.s[k - 1] - grid.s[k])
        if order == 2 and prev is not None:
            r = _log_ab2_weight(float(grid.s[k - 1]), float(grid.s[k]), float(prev[3])) / h
            d_z, d_a = field + r * (field - prev[0]), jz + r * (jz - prev[1])
            d_t = [x if x is None or y is None else x + r * (x - y) for x, y in zip(jt, prev[2])]
        else:
            d_z, d_a, d_t = field, jz, jt
        prev = (field, jz, jt, grid.s[k])
        z, a = z + h * d_z, a - h * d_a
        accumulate(g, d_t, -h)
    return a * scale(0), g
