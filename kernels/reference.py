"""Plain PyTorch references for the cached-feature-prediction ops (fp32 accumulation, fp64 for fp64 inputs).

The cache keeps, per hidden-state tensor of shape ``S = (B, ...)``, a stacked buffer ``factors`` of shape
``(K+1, *S)`` holding the finite-difference "derivatives" ``D_0..D_K`` of TaylorSeer (Liu et al., 2025,
"From Reusing to Forecasting: Accelerating Diffusion Models with TaylorSeers"), of which the first
``n_valid`` are valid. These functions are the ground truth for the Triton kernels in ``triton_ops.py``
and the backend used on the CPU; they take already-validated arguments (see ``accel.kernels``).
"""

from __future__ import annotations

import torch

__all__ = ["taylor_forecast", "taylor_update", "forecast_error", "taylor_coefficients"]


def taylor_coefficients(offset: float, n_valid: int) -> list[float]:
    """``[offset**i / i! for i < n_valid]``, computed by the recurrence ``c_i = c_{i-1} * offset / i``."""
    coefs = [1.0]
    for i in range(1, n_valid):
        coefs.append(coefs[-1] * offset / i)
    return coefs


def _acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64 (the reference also serves float64 callers)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _forecast_acc(factors: torch.Tensor, offset: float, n_valid: int, dtype: torch.dtype,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_{i<n_valid} D_i * offset**i / i!`` of shape ``factors.shape[1:]``: a new ``dtype`` tensor, or
    accumulated in place in ``out`` (which must have that dtype)."""
    coefs = taylor_coefficients(offset, n_valid)
    acc = factors[0].to(dtype, copy=True) if out is None else out.copy_(factors[0])
    for i in range(1, n_valid):
        acc.add_(factors[i], alpha=coefs[i])  # mixed-dtype in-place add accumulates in float32
    return acc


def taylor_forecast(factors: torch.Tensor, offset: float, n_valid: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Taylor forecast ``F^ = sum_{i<n_valid} D_i offset^i / i!``: (K+1, *S) -> S, in ``out.dtype`` or ``factors.dtype``."""
    dtype = _acc_dtype(factors)
    if out is not None and out.dtype == dtype:
        return _forecast_acc(factors, offset, n_valid, dtype, out=out)  # in place: no temporary
    acc = _forecast_acc(factors, offset, n_valid, dtype)
    if out is None:
        return acc.to(factors.dtype)
    return out.copy_(acc)


def taylor_update(factors: torch.Tensor, new: torch.Tensor, delta: float, n_valid: int) -> int:
    """Rebuild the finite differences in place from a freshly computed value ``new`` (shape S); returns the new n_valid.

    ``carry_0 = new``; for ``i < new_n``: ``D_i <- carry_i`` and ``carry_{i+1} = (carry_i - D_i_old) / delta``,
    with ``new_n = min(n_valid + 1, K + 1)``. The carries stay in float32 (float64 for float64 inputs; they
    are not re-read from the possibly lower-precision buffer), which is what the fused kernel does too.
    """
    new_n = min(n_valid + 1, factors.shape[0])
    carry = new.to(_acc_dtype(factors, new), copy=True)
    spare = torch.empty_like(carry) if new_n > 1 else carry  # two buffers, swapped: no allocation per order
    for i in range(new_n):
        if i + 1 < new_n:  # the next order needs D_i_old: read it before overwriting
            torch.sub(carry, factors[i], out=spare).div_(delta)
        factors[i].copy_(carry)
        carry, spare = spare, carry
    return new_n


def forecast_error(factors: torch.Tensor, offset: float, n_valid: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L1 sums ``(sum |F^ - actual|, sum |actual|)`` over all non-batch dims, each float32 of shape (B,).

    The forecast is compared in float32 (float64 for float64 inputs; it is not rounded to ``factors.dtype``). The reference
    materialises ``F^``; the fused kernel does not.
    """
    batch = actual.shape[0]
    dtype = _acc_dtype(factors, actual)
    if actual.numel() == 0:
        return torch.zeros(batch, device=actual.device), torch.zeros(batch, device=actual.device)
    fhat = _forecast_acc(factors, offset, n_valid, dtype).sub_(actual)
    err = torch.linalg.vector_norm(fhat.reshape(batch, -1), ord=1, dim=1)  # sum |.| without an abs() pass
    ref = torch.linalg.vector_norm(actual.reshape(batch, -1), ord=1, dim=1, dtype=dtype)
    return err.float(), ref.float()
