"""The registries of CG-Taylor's parts (gates, forecasters): name -> class, and each part's options from a plain dict
with one clear error when they are wrong."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import AccelError


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A part without options."""


def make_options(kind: str, registry: dict[str, type], name: Any, values: dict[str, Any] | None) -> Any:
    """``registry[name].Options(**values)``; an AccelError naming the known parts or options otherwise."""
    if not isinstance(name, str) or name not in registry:
        raise AccelError(f"{kind} must be one of {tuple(registry)}, got {name!r}")
    cls = registry[name].Options
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        offer = f"its options are {', '.join(sorted(known))}" if known else "it takes no options"
        raise AccelError(f"{kind} {name!r} has no option {', '.join(unknown)}: {offer}")
    return cls(**values)


class Registry(dict):
    """Part classes by name (``cls.name``), of one ``kind`` ("gate", "forecaster")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, cls: type) -> type:
        """Add a part class under its ``name``."""
        self[cls.name] = cls
        return cls

    def options(self, name: str, values: dict[str, Any] | None) -> Any:
        """The options object of part ``name`` from a dict; one clear error on an unknown name or option."""
        return make_options(self.kind, self, name, values)

