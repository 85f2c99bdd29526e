"""CG-Taylor's forecasters, registered by name: what the forecast of a skipped step is made of.

Each forecaster is one class in its own module (:mod:`.taylor`, ...), owning its options (``CGTaylorConfig.forecaster``
names it, ``forecaster_options`` sets them) and reading its per-branch history from a :class:`Stream`. The hooks and
the gradient path call them only through :class:`Forecaster`'s interface.
"""

from __future__ import annotations

from typing import Any

from ..parts import NoOptions, Registry
from .base import Forecaster, Stream
from .l2p import L2P
from .taylor import Taylor

REGISTRY = Registry("forecaster")
register, options = REGISTRY.register, REGISTRY.options
for _cls in (Taylor, L2P):
    register(_cls)


def build(name: str, values: dict[str, Any] | None, role: str) -> Forecaster:
    """Forecaster ``name`` with ``values`` as its options, for the stream ``role`` ("block0" or "last")."""
    return REGISTRY[name](options(name, values), role)


__all__ = ["Forecaster", "NoOptions", "REGISTRY", "Stream", "build", "options", "register"]
