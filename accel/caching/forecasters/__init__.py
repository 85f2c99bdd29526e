"""CG-Taylor's forecasters, registered by name: what the forecast of a skipped step is made of.

Each forecaster is one class in its own module (:mod:`.taylor`, ...), owning its options (``CGTaylorConfig.forecaster``
names it, ``forecaster_options`` sets them) and reading its per-branch history from a :class:`Stream`. The hooks and
the gradient path call them only through :class:`Forecaster`'s interface.
"""

from __future__ import annotations

from typing import Any

from ..parts import NoOptions, make_options
from .base import Forecaster, Stream
from .foca import FoCa
from .spectrum import Spectrum
from .taylor import Taylor

REGISTRY: dict[str, type[Forecaster]] = {}


def register(cls: type[Forecaster]) -> type[Forecaster]:
    """Add a forecaster class to the registry under its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


for _cls in (Taylor, Spectrum, FoCa):
    register(_cls)


def options(name: str, values: dict[str, Any] | None) -> Any:
    """The options object of forecaster ``name`` from a dict; one clear error on an unknown name or option."""
    return make_options("forecaster", REGISTRY, name, values)


def build(name: str, values: dict[str, Any] | None, role: str) -> Forecaster:
    """Forecaster ``name`` with ``values`` as its options, for the stream ``role`` ("block0" or "last")."""
    return REGISTRY[name](options(name, values), role)


__all__ = ["Forecaster", "NoOptions", "REGISTRY", "Stream", "build", "options", "register"]
