"""accel: acceleration for Hugging Face diffusers.

- CG-Taylor caching: ``accel.enable(pipe, accel.CGTaylorConfig(threshold=...))``, ``accel.disable(pipe)``,
  ``with accel.cached(pipe): ...``, ``accel.stats(pipe)``.
- Shipped models: ``accel.zoo.load("dit-digits")``.
- Adjoint gradients through sampling: ``accel.adjoint``; ODE samplers: ``accel.samplers``;
  invertible diffusion for compressed sensing: ``accel.invertible``; fused cache ops: ``accel.kernels``.
"""

from .caching import CacheStats, CGTaylorConfig, cached, disable, enable, is_enabled, reset, stats
from .utils import AccelError

__version__ = "0.1.0"
__all__ = ["AccelError", "CGTaylorConfig", "CacheStats", "__version__", "cached", "disable", "enable", "is_enabled", "reset", "stats"]
