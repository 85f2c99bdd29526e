"""Rich progress bars wired to the library's callbacks."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``update(done, total=None, info="")``. The bar appears at the first update (so errors raised
    while loading print without an empty bar) and draws to stderr so stdout stays machine-readable."""
    if not enabled:
        yield lambda *a, **k: None
        return
    from rich.console import Console

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    state: dict[str, Any] = {}

    def update(done: int, total_now: int | None = None, info: str = "") -> None:
        if "prog" not in state:
            state["prog"] = Progress(*cols, console=Console(stderr=True), transient=False)
            state["prog"].start()
            state["task"] = state["prog"].add_task(description, total=total, info="")
        state["prog"].update(state["task"], completed=done, total=total_now if total_now is not None else total, info=info)

    try:
        yield update
    finally:
        if "prog" in state:
            state["prog"].stop()
