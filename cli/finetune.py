"""``accel finetune``: fine-tuning command group; ``TOP_LEVEL`` lists commands that sit at the top level."""

from __future__ import annotations

from typing import Any, Callable

import typer

app = typer.Typer(no_args_is_help=True)

# (name, help, function) of commands mounted directly under ``accel`` (e.g. ``accel reconstruct``).
TOP_LEVEL: list[tuple[str, str, Callable[..., Any]]] = []
