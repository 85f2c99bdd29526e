"""Rich progress bars wired to the library's callbacks."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``update(done, total=None, **fields)``; draws to stderr so stdout stays machine-readable."""
    if not enabled:
        yield lambda *a, **k: None
        return
    from rich.console import Console

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=Console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def update(done: int, total: int | None = None, info: str = "") -> None:
            prog.update(task, completed=done, total=total if total is not None else prog.tasks[0].total, info=info)

        yield update
