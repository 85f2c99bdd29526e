"""Options of a registered part (a gate or a forecaster) from a plain dict, with one clear error when they are wrong."""

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
