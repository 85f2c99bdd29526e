"""accel: acceleration for Hugging Face diffusers.

- CG-Taylor caching: ``accel.enable(pipe, accel.CGTaylorConfig(threshold=...))``, ``accel.disable(pipe)``,
  ``with accel.cached(pipe): ...``, ``accel.stats(pipe)``.
- Shipped models: ``accel.zoo.load("dit-digits")``.
- Adjoint gradients through sampling: ``accel.adjoint``; ODE samplers: ``accel.samplers``;
  invertible diffusion for compressed sensing: ``accel.invertible``; fused cache ops: ``accel.kernels``.

Names are imported on first use, so ``import accel`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import AccelError

__version__ = "0.1.0"
_LAZY = {name: ".caching" for name in ("CGTaylorConfig", "CacheStats", "cached", "disable", "enable", "is_enabled", "reset", "stats")}
__all__ = ["AccelError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'accel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
