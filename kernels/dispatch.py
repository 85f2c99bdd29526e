"""Backend choice (Triton or PyTorch reference) and argument checks for the cached-feature-prediction ops.

``ACCEL_KERNELS`` overrides the choice: ``auto`` (default) uses Triton when it is installed, every tensor
is on CUDA and the shape is supported, else the reference; ``torch`` always uses the reference; ``triton``
always uses Triton and fails with a clear error where it cannot (a CPU tensor is accepted only under
``TRITON_INTERPRET=1``, Triton's CPU interpreter, which is for testing). Triton is imported only when a
Triton op actually runs, never by ``import accel``.

``accel.kernels`` is a leaf of the package: it imports nothing from the rest of ``accel``. Its own
:class:`KernelError` reports a backend that cannot run; the CLI prints it as one line, like ``AccelError``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import warnings

import torch


class KernelError(Exception):
    """A kernel backend asked for that cannot run here (an unknown ``ACCEL_KERNELS`` value, triton missing or
    unable to take these tensors), or bad settings for the kernel benchmark. The message says how to fix it."""


ENV_VAR = "ACCEL_KERNELS"
MODES = ("auto", "torch", "triton")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The Triton kernels unroll the loop over orders at compile time (one specialisation per n_valid), so the
# number of stored orders is capped; TaylorSeer-style caches use K <= 4.
MAX_TRITON_ORDERS = 8
# Element offsets inside one D_i are int32 in the kernels; the margin keeps the last (masked) block's
# offsets, up to 4 tiles of 1024 past the end, from overflowing.
MAX_TRITON_NUMEL = 2**31 - 2**20


def mode() -> str:
    """The ``ACCEL_KERNELS`` setting (``auto`` when unset); raises KernelError on an unknown value."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise KernelError(f"{ENV_VAR}={value!r} is not a known kernel backend: use one of {', '.join(MODES)}")
    return value


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    """True when the ``triton`` package can be found (it is not imported here)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None: treated as not installed
        return False


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (Triton kernels then run on CPU tensors, slowly, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() == "1"


def triton_unsupported(*tensors: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot take these tensors (the first is ``factors``), or None when they can."""
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        return f"tensors are on different devices {sorted(str(d) for d in devices)}"
    device = next(iter(devices))
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return f"tensors are on {device}, Triton needs CUDA (or CPU tensors with TRITON_INTERPRET=1)"
    for t in tensors:
        if t.dtype not in SUPPORTED_DTYPES:
            return f"dtype {t.dtype} is not one of float32, float16, bfloat16"
        if not t.is_contiguous():
            return f"a tensor of shape {tuple(t.shape)} is not contiguous"
    factors = tensors[0]
    if factors.shape[0] > MAX_TRITON_ORDERS:
        return f"{factors.shape[0]} stored orders exceed the Triton limit of {MAX_TRITON_ORDERS}"
    if factors[0].numel() > MAX_TRITON_NUMEL:
        return f"{factors[0].numel()} elements per order exceed the int32 indexing limit {MAX_TRITON_NUMEL}"
    return None


def backend(*tensors: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"``: the backend the ops use for these tensors (``factors`` first) under ``ACCEL_KERNELS``."""
    chosen = mode()
    if chosen == "torch":
        return "torch"
    why = triton_unsupported(*tensors) if tensors else None
    if chosen == "auto":  # the CPU interpreter is for tests only: auto never picks it
        on_cuda = bool(tensors) and tensors[0].device.type == "cuda"
        return "triton" if why is None and on_cuda and triton_installed() else "torch"
    if not triton_installed():
        raise KernelError(f"{ENV_VAR}=triton but triton is not installed: `pip install accel-diffusion[gpu]`, or set {ENV_VAR}=torch")
    if why is not None:
        raise KernelError(f"{ENV_VAR}=triton but {why}; set {ENV_VAR}=torch (or auto) to use the PyTorch reference")
    return "triton"


@functools.lru_cache(maxsize=None)
def _warn_once(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def load_triton():
    """The Triton module (imported here, lazily); None, with one warning, when triton is installed but fails to import."""
    try:
        ops = importlib.import_module("accel.kernels.triton_ops")
    except ImportError as exc:  # a broken triton install: fall back to the reference in auto mode
        if mode() == "triton":
            raise KernelError(f"{ENV_VAR}=triton but importing triton failed ({exc}); reinstall with `pip install accel-diffusion[gpu]`") from exc
        _warn_once(f"triton is installed but failed to import ({exc}); using the PyTorch reference kernels")
        return None
    return ops


# ----------------------------------------------------------------------------------------- argument checks


def _check_float_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_factors(factors: object, n_valid: object, *, allow_empty: bool = False) -> torch.Tensor:
    """Validate the stacked buffer (K+1, B, ...) and ``n_valid`` (1..K+1, or 0..K+1 when ``allow_empty``)."""
    factors = _check_float_tensor("factors", factors)
    if factors.dim() < 2 or factors.shape[0] < 1:
        raise ValueError(f"factors must have shape (K+1, B, ...) with a batch dim, got {tuple(factors.shape)}; make one with new_factors(like, order)")
    if isinstance(n_valid, bool) or not isinstance(n_valid, int):
        raise TypeError(f"n_valid must be an int, got {type(n_valid).__name__}")
    low = 0 if allow_empty else 1
    if not low <= n_valid <= factors.shape[0]:
        raise ValueError(f"n_valid={n_valid} is out of range: this buffer holds K+1={factors.shape[0]} orders, so n_valid must be in {low}..{factors.shape[0]}")
    return factors


def check_like(name: str, t: object, factors: torch.Tensor) -> torch.Tensor:
    """Validate a tensor that must have the shape of one order (``factors.shape[1:]``) and its device."""
    t = _check_float_tensor(name, t)
    if tuple(t.shape) != tuple(factors.shape[1:]):
        raise ValueError(f"{name} has shape {tuple(t.shape)} but the factor buffer {tuple(factors.shape)} stores orders of shape {tuple(factors.shape[1:])}")
    if t.device != factors.device:
        raise ValueError(f"{name} is on {t.device} but factors are on {factors.device}; move them to one device")
    return t


def check_scalar(name: str, value: object, *, nonzero: bool = False) -> float:
    """A finite Python float (ints accepted); ``nonzero`` for divisors."""
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Python float, got a tensor (call .item() once outside the hot loop)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (nonzero and value == 0.0):
        raise ValueError(f"{name}={value} must be finite{' and non-zero' if nonzero else ''}")
    return value
