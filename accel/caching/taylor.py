"""Taylor factor updates and forecasts that autograd can differentiate (the gradient path's form).

The same maths as ``accel.kernels`` (TaylorSeer's finite differences, Liu et al. 2025; CG-Taylor's last-block
forecast, Guan et al. 2025), written out of place: a full step returns a new factor stack instead of
overwriting the old one, so the stack of every step stays valid for the backward sweep, and the forecast is a
linear function of the factors through which gradients reach the last block's outputs at earlier full steps.
"""

from __future__ import annotations

import torch

from ..kernels.reference import taylor_coefficients


def forecast(factors: torch.Tensor, offset: float, n_valid: int) -> torch.Tensor:
    """``sum_{i < n_valid} D_i offset^i / i!`` of the stack ``factors`` (K+1, *S) -> S, in the factors' dtype."""
    coefs = taylor_coefficients(offset, n_valid)
    out = factors[0]
    for i in range(1, n_valid):
        out = out + coefs[i] * factors[i]
    return out


def updated(factors: torch.Tensor | None, new: torch.Tensor, delta: float, n_valid: int, order: int,
            dtype: torch.dtype | None = None) -> tuple[torch.Tensor, int]:
    """The factor stack after a full step that computed ``new`` (S), ``delta`` steps after the previous one.

    ``D_0 <- new``, ``D_{i+1} <- (D_i_new - D_i_old) / delta`` for the orders that become valid; the rows beyond
    stay as they were. ``factors`` None starts an empty stack of ``order + 1`` rows (``dtype`` defaults to
    ``new``'s). Returns (the new stack (K+1, *S), the new number of valid orders).
    """
    if factors is None:
        factors = torch.zeros((order + 1, *new.shape), dtype=dtype or new.dtype, device=new.device)
        n_valid = 0
    new_n = min(n_valid + 1, factors.shape[0])
    rows = [new.to(factors.dtype)]
    for i in range(1, new_n):
        rows.append((rows[-1] - factors[i - 1]) / delta)
    return torch.stack(rows + list(factors[new_n:])), new_n
