"""Reversible coupling units and the memory-saving autograd function (IDM's two-level invertible design).

One unit (MomentumNet-style coupling, one learnable scalar ``v`` in (0, 1), init 0.5)::

    forward:  y1 = (1 - v) * body(x1, *ctx) + v * x2,    y2 = x1
    inverse:  x1 = y2,                                    x2 = (y1 - (1 - v) * body(x1, *ctx)) / v

``body`` maps x1's shape to x2's and need not be invertible.  :func:`run_chain` runs a list of units in one
of three memory modes: ``"plain"`` (ordinary autograd: every intermediate kept), ``"checkpoint"`` (each
unit under ``torch.utils.checkpoint``: its inputs kept, the body recomputed) and ``"reversible"`` (the
custom :class:`ReversibleChain` function: only the last pair of states is kept; backward rebuilds every
unit's inputs from its outputs, recomputes the body with grad and backpropagates locally).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

MODES = ("plain", "checkpoint", "reversible")
_TENSOR = object()  # placeholder for a tensor argument in ReversibleChain's saved context
V_MIN = 0.02  # v lives in (V_MIN, 1 - V_MIN): the inverse divides by v, so v must stay away from 0


def check_mode(mode: str) -> str:
    """Validate a memory mode name."""
    if mode not in MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class Coupling(nn.Module):
    """A reversible unit around ``body`` (an nn.Module called as ``body(x1, *ctx)``).

    ``v = V_MIN + (1 - 2 V_MIN) * sigmoid(logit)`` keeps the unit invertible while it is learned;
    ``v_init`` sets the initial value (0.5 as in IDM).  With ``register_body=False`` the body is used but
    not registered as a submodule (its parameters belong to another module, e.g. a pretrained U-Net);
    :meth:`unit_parameters` still lists them, which is what the reversible backward differentiates.
    """

    def __init__(self, body: nn.Module, v_init: float = 0.5, register_body: bool = True) -> None:
        super().__init__()
        if not V_MIN < v_init < 1 - V_MIN:
            raise ValueError(f"v_init must be in ({V_MIN}, {1 - V_MIN}), got {v_init}")
        if register_body:
            self.body = body
        else:
            object.__setattr__(self, "body", body)
        p = (v_init - V_MIN) / (1 - 2 * V_MIN)
        self.v_logit = nn.Parameter(torch.tensor(float(torch.logit(torch.tensor(p)))))

    @property
    def v(self) -> torch.Tensor:
        return V_MIN + (1 - 2 * V_MIN) * torch.sigmoid(self.v_logit)

    def unit_parameters(self) -> Iterator[nn.Parameter]:
        """Own parameters (v) and the body's, registered or not."""
        yield from self.parameters()
        sub = getattr(self.body, "unit_parameters", None)
        yield from (sub() if sub is not None else self.body.parameters())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, *ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(x1, x2) -> (y1, y2); shapes preserved."""
        v = self.v.to(x1.dtype)
        return (1 - v) * self.body(x1, *ctx) + v * x2, x1

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor, *ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(y1, y2) -> (x1, x2), exact up to rounding."""
        v = self.v.to(y1.dtype)
        return y2, (y1 - (1 - v) * self.body(y2, *ctx)) / v


def _params(units: Sequence[nn.Module]) -> list[nn.Parameter]:
    """Distinct trainable parameters of ``units`` in a stable order."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for u in units:
        for p in (u.unit_parameters() if hasattr(u, "unit_parameters") else u.parameters()):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


class ReversibleChain(torch.autograd.Function):
    """Runs coupling units without keeping their activations; backward rebuilds inputs from outputs.

    ``apply(units, n_ctx, x1, x2, *ctx, *params)``: ``ctx`` are extra arguments every body receives
    (tensors, which may require grad, or other objects such as the CS operator), ``params`` the units' trainable parameters (passed explicitly so that the
    gradients flow through autograd like any other input, also under DistributedDataParallel).
    Only the final pair (and ``ctx``) is saved.
    """

    @staticmethod
    def forward(fctx, units, n_ctx, x1, x2, *rest):  # type: ignore[override]
        ctx_all = rest[:n_ctx]
        with torch.no_grad():
            for u in units:
                x1, x2 = u(x1, x2, *ctx_all)
        fctx.units = units
        fctx.autocast = _autocast_state(x1.device.type)  # backward recomputes the bodies under the same autocast
        fctx.ctx_objects = [_TENSOR if torch.is_tensor(c) else c for c in ctx_all]
        fctx.save_for_backward(x1, x2, *[c for c in ctx_all if torch.is_tensor(c)])
        return x1, x2

    @staticmethod
    def backward(fctx, gy1, gy2):  # type: ignore[override]
        y1, y2, *saved = fctx.saved_tensors
        plist = _params(fctx.units)
        pgrads: list[torch.Tensor | None] = [None] * len(plist)
        cgrads: list[torch.Tensor | None] = [None] * len(fctx.ctx_objects)
        gy1 = torch.zeros_like(y1) if gy1 is None else gy1
        gy2 = torch.zeros_like(y2) if gy2 is None else gy2
        it = iter(saved)
        ctx_in = [next(it).detach().requires_grad_(o_needs) if c is _TENSOR else c for c, o_needs in zip(fctx.ctx_objects, _needs(fctx))]
        for u in reversed(fctx.units):
            with torch.enable_grad(), torch.autocast(**fctx.autocast):
                x1 = y2.detach().requires_grad_(True)
                v = u.v.to(y1.dtype)
                f = u.body(x1, *ctx_in)
                with torch.no_grad():
                    x2 = (y1 - (1 - v) * f) / v
                x2 = x2.detach().requires_grad_(True)
                out = (1 - v) * f + v * x2
                targets = [x1, x2] + [c for c in ctx_in if _wants(c)] + plist
                grads = torch.autograd.grad(out, targets, gy1, allow_unused=True)
            gx1 = gy2 if grads[0] is None else grads[0] + gy2
            gx2 = grads[1] if grads[1] is not None else torch.zeros_like(x2)
            k = 2
            for i, c in enumerate(ctx_in):
                if _wants(c):
                    cgrads[i] = _add(cgrads[i], grads[k])
                    k += 1
            for i in range(len(plist)):
                pgrads[i] = _add(pgrads[i], grads[k + i])
            y1, y2, gy1, gy2 = x1.detach(), x2.detach(), gx1, gx2
        return (None, None, gy1, gy2, *cgrads, *pgrads)


def _autocast_state(device_type: str) -> dict[str, Any]:
    """Keyword arguments of ``torch.autocast`` that reproduce the current autocast state on ``device_type``.

    The autograd engine runs backward outside the caller's ``autocast`` block, so a body recomputed there
    would run in full precision while the forward ran in bf16 / fp16, and inputs rebuilt from the outputs
    would be off by the difference (what ``torch.utils.checkpoint`` guards against the same way).
    """
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return {"device_type": device_type if device_type in ("cpu", "cuda") else "cpu", "enabled": False}
    return {"device_type": device_type, "dtype": torch.get_autocast_dtype(device_type), "enabled": True,
            "cache_enabled": torch.is_autocast_cache_enabled()}


def _needs(fctx: Any) -> list[bool]:
    """Which ctx inputs of a ReversibleChain call need a gradient."""
    n = len(fctx.ctx_objects)
    return list(fctx.needs_input_grad[4 : 4 + n])


def _wants(c: Any) -> bool:
    return torch.is_tensor(c) and c.requires_grad


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Accumulate gradients in place (a fresh copy first: autograd may hand back aliases of its inputs)."""
    if b is None:
        return a
    return b.clone() if a is None else a.add_(b)


def run_chain(units: Sequence[Coupling], x1: torch.Tensor, x2: torch.Tensor, *ctx: Any, mode: str = "reversible") -> tuple[torch.Tensor, torch.Tensor]:
    """Apply coupling ``units`` in order to the pair (x1, x2) (both (B, ...) of one shape) in memory ``mode``.

    ``"reversible"`` falls back to a direct no-grad run when nothing requires grad (inference).
    """
    check_mode(mode)
    needs_grad = torch.is_grad_enabled() and (
        x1.requires_grad or x2.requires_grad or any(_wants(c) for c in ctx) or any(True for _ in _params(units))
    )
    if not needs_grad or mode == "plain":
        for u in units:
            x1, x2 = u(x1, x2, *ctx)
        return x1, x2
    if mode == "checkpoint":
        for u in units:
            x1, x2 = checkpoint(u, x1, x2, *ctx, use_reentrant=False)
        return x1, x2
    plist = _params(units)
    return ReversibleChain.apply(list(units), len(ctx), x1, x2, *ctx, *plist)


def checkpointed(fn: Callable[..., torch.Tensor], *args: torch.Tensor, mode: str = "reversible") -> torch.Tensor:
    """Run a shape-changing piece: plain autograd in ``"plain"`` mode, ``torch.utils.checkpoint`` otherwise."""
    if mode == "plain" or not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False)
