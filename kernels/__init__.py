"""Fused ops for cached feature prediction (Taylor forecasting of hidden states), with PyTorch fallbacks.

A cache stores, per hidden-state tensor of shape ``S = (B, ...)``, a contiguous buffer ``factors`` of shape
``(K+1, *S)`` with the finite-difference derivatives ``D_0..D_K`` (TaylorSeer, Liu et al. 2025) and an int
``n_valid``: how many leading orders hold valid data. Each op dispatches to a Triton kernel (one pass over
memory) when triton is installed and the tensors are on CUDA, else to the PyTorch reference in
``accel.kernels.reference``; ``ACCEL_KERNELS=auto|torch|triton`` overrides the choice (see ``backend``).
Importing this package never imports triton, nor anything of ``accel`` outside ``accel.kernels`` (a leaf:
a backend that cannot run raises :class:`KernelError`, which the CLI prints as one line).
"""

from __future__ import annotations

import sys as _sys

if __name__ == "kernels":  # pragma: no cover - exercised in a subprocess by tests/kernels/test_kernels_shadow.py
    # Imported as a top-level ``kernels`` because a checkout's root is on sys.path (``python -m ...`` from the
    # root): that name belongs to Hugging Face's ``kernels`` distribution, which transformers and diffusers import
    # when it is installed. Hand the import over to it; this folder is ``accel.kernels``. The rest of this file
    # then runs on a module object that the import discards. Without that distribution, the import goes on as
    # this folder, as before (transformers' availability probe imports it and finds no version).
    import importlib.machinery
    import importlib.util
    import os

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [p for p in _sys.path if os.path.abspath(p or os.curdir) != _root])
    if _spec is not None and _spec.loader is not None:
        _real = importlib.util.module_from_spec(_spec)
        _sys.modules["kernels"] = _real
        _spec.loader.exec_module(_real)

import torch

from accel.kernels import reference
from accel.kernels.dispatch import KernelError, backend, check_factors, check_like, check_scalar, load_triton

__all__ = ["KernelError", "taylor_forecast", "taylor_update", "forecast_error", "new_factors", "backend"]


def new_factors(like: torch.Tensor, order: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A zeroed factor buffer of shape ``(order+1, *like.shape)`` on ``like.device`` (dtype defaults to ``like.dtype``)."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be an int >= 0 (the highest Taylor order kept), got {order!r}")
    if not isinstance(like, torch.Tensor) or like.dim() < 1:
        raise ValueError(f"like must be a tensor of shape (B, ...), got {like!r:.80}")
    return torch.zeros((order + 1, *like.shape), dtype=dtype or like.dtype, device=like.device)


def taylor_forecast(factors: torch.Tensor, offset: float, n_valid: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Forecast a hidden state ``offset`` steps after the last full step (TaylorSeer, Liu et al. 2025, eq. 7).

    Args:
        factors: (K+1, B, ...) stacked ``D_0..D_K``; float32, float16 or bfloat16.
        offset: step-index distance ``s - s_k`` (Python float).
        n_valid: number of valid leading orders, 1..K+1.
        out: optional (B, ...) tensor to write into (any float dtype; cast on store).
    Returns:
        (B, ...) ``sum_{i<n_valid} D_i offset^i / i!`` accumulated in float32, in ``factors.dtype`` (or ``out``).
    """
    factors = check_factors(factors, n_valid)
    offset = check_scalar("offset", offset)
    tensors = (factors,) if out is None else (factors, check_like("out", out, factors))
    if backend(*tensors) == "triton" and (ops := load_triton()) is not None:
        return ops.taylor_forecast(factors, offset, n_valid, out)
    return reference.taylor_forecast(factors, offset, n_valid, out)


def taylor_update(factors: torch.Tensor, new: torch.Tensor, delta: float, n_valid: int) -> int:
    """After a full step, rebuild the finite differences in place from the computed value ``new``.

    ``D_0 <- new``, ``D_{i+1} <- (D_i_new - D_i_old) / delta`` for the orders that become valid, in one
    pass (each old ``D_i`` read once, each new one written once; differences kept in float32).

    Args:
        factors: (K+1, B, ...) buffer, updated in place.
        new: (B, ...) freshly computed hidden state (may differ in dtype; cast on store).
        delta: step-index distance between this full step and the previous one (non-zero when n_valid > 0).
        n_valid: valid orders before the update, 0..K+1 (0 = empty buffer).
    Returns:
        The new ``n_valid = min(n_valid + 1, K + 1)``.
    """
    factors = check_factors(factors, n_valid, allow_empty=True)
    new = check_like("new", new, factors)
    delta = check_scalar("delta", delta, nonzero=n_valid > 0 and factors.shape[0] > 1)
    if backend(factors, new) == "triton" and (ops := load_triton()) is not None:
        return ops.taylor_update(factors, new, delta, n_valid)
    return reference.taylor_update(factors, new, delta, n_valid)


def forecast_error(factors: torch.Tensor, offset: float, n_valid: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 error of the forecast against a real output, per sample, without materialising the forecast.

    Args:
        factors: (K+1, B, ...) stacked ``D_0..D_K``.
        offset: step-index distance of ``actual`` from the last full step.
        n_valid: valid orders, 1..K+1.
        actual: (B, ...) the real value (e.g. block 0's output on this step).
    Returns:
        ``(err, ref)``, float32 of shape (B,): ``sum |F^ - actual|`` and ``sum |actual|`` over the non-batch
        dims. Per-sample relative L1 is ``err / ref``; global is ``err.sum() / ref.sum()``.
    """
    factors = check_factors(factors, n_valid)
    offset = check_scalar("offset", offset)
    actual = check_like("actual", actual, factors)
    if backend(factors, actual) == "triton" and (ops := load_triton()) is not None:
        return ops.forecast_error(factors, offset, n_valid, actual)
    return reference.forecast_error(factors, offset, n_valid, actual)
