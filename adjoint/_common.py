"""What every gradient method shares: the flattened inputs of the sampler and one network VJP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from accel.samplers import Denoiser, Grid
from accel.samplers._solvers import Callback, StepFn
from accel.errors import AccelError


@dataclass
class Spec:
    """Everything a custom autograd Function needs besides its tensor inputs (x_T, *cond, *params)."""

    denoiser: Denoiser
    grid: Grid
    step: StepFn
    cond_kind: str  # "none" | "tensor" | "tuple"
    n_cond: int
    n_params: int
    callback: Callback | None = None

    def split(self, tensors: Sequence[torch.Tensor]) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
        """(cond in the denoiser's form, flat cond tensors, params) from the flat Function inputs."""
        flat = list(tensors[: self.n_cond])
        params = list(tensors[self.n_cond : self.n_cond + self.n_params])
        return self.unflatten(flat), flat, params

    def unflatten(self, flat: Sequence[torch.Tensor]) -> Any:
        if self.cond_kind == "none":
            return None
        return flat[0] if self.cond_kind == "tensor" else tuple(flat)


def flatten_cond(cond: Any) -> tuple[str, list[torch.Tensor]]:
    """cond (None, a tensor, or a tuple/list of tensors) -> (kind, flat list)."""
    if cond is None:
        return "none", []
    if torch.is_tensor(cond):
        return "tensor", [cond]
    if isinstance(cond, (tuple, list)) and all(torch.is_tensor(c) for c in cond):
        return "tuple", list(cond)
    raise AccelError(f"cond must be None, a tensor or a tuple of tensors, got {type(cond).__name__}")


def select_params(denoiser: Denoiser, params: Any) -> list[torch.Tensor]:
    """The weights to differentiate: None -> the network's parameters that require grad; or an explicit list."""
    if params is None:
        net = denoiser.network
        return [p for p in net.parameters() if p.requires_grad] if net is not None else []
    params = list(params)
    bad = [type(p).__name__ for p in params if not (torch.is_tensor(p) and p.requires_grad)]
    if bad:
        raise AccelError(f"params must be tensors that require grad; got {len(bad)} that are not (e.g. {bad[0]}); call p.requires_grad_() or pass params=None")
    return params


def detached_leaves(flat: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Fresh leaves with the same values; floating ones require grad (so a VJP can reach them)."""
    return [c.detach().requires_grad_(torch.is_floating_point(c)) for c in flat]


def accumulate(acc: list[torch.Tensor | None], grads: Sequence[torch.Tensor | None], scale: float = 1.0) -> None:
    """acc[j] += scale * grads[j] (None stays None until a gradient arrives)."""
    for j, g in enumerate(grads):
        if g is None:
            continue
        g = g if scale == 1.0 else g * scale
        acc[j] = g if acc[j] is None else acc[j] + g


def run_forward(spec: Spec, x: torch.Tensor, cond: Any, keep_states: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """Run the sampler without a graph; return x_N and, if asked, the N states x_i and carries it started from."""
    states: list[torch.Tensor] = []
    carries: list[torch.Tensor | None] = []
    carry = None
    grid = spec.grid
    with torch.no_grad():
        for i in range(grid.steps):
            if keep_states:
                states.append(x)
                carries.append(carry)
            x, carry, pred = spec.step(spec.denoiser, grid, i, x, cond, carry)
            if spec.callback is not None:
                spec.callback({"i": i, "steps": grid.steps, "t": float(grid.t[i]), "x": x, "denoised": pred.x0})
    return x, states, carries
