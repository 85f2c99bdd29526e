"""CG-Taylor's gates, registered by name: when a step may be forecast.

Each gate is one class in its own module (:mod:`.step`, :mod:`.cumulative`, ...), owning its options
(``CGTaylorConfig.gate`` names it, ``gate_options`` sets them) and its per-branch state. The hooks call them only
through :class:`Gate`'s interface.
"""

from __future__ import annotations

from typing import Any

from ..parts import Registry
from .base import Gate
from .cumulative import CumulativeGate
from .lookahead import LookaheadGate
from .step import StepGate

REGISTRY = Registry("gate")
register, options = REGISTRY.register, REGISTRY.options
for _cls in (StepGate, CumulativeGate, LookaheadGate):
    register(_cls)


def build(name: str, threshold: float, values: dict[str, Any] | None) -> Gate:
    """Gate ``name`` at ``threshold`` with ``values`` as its options."""
    return REGISTRY[name](threshold, options(name, values))


__all__ = ["Gate", "REGISTRY", "build", "options", "register"]
