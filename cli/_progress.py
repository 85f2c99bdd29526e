"""Progress bars wired to the library's callbacks: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any, Callable, Iterator

LOG_EVERY_S = 30.0  # without a terminal (nohup, CI logs): one line at most this often, and at the end


def show_notes() -> None:
    """Print the library's notes (the ``accel`` logger at INFO, e.g. "resuming from step 1200 of 6000 (...)") on
    stderr as plain lines, so that a rerun's first line says where it resumes. Idempotent."""
    log = logging.getLogger("accel")
    if not any(getattr(h, "_accel_notes", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._accel_notes = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``update(done, total=None, info="")``. The bar appears at the first update (so errors raised
    while loading print without an empty bar) and draws to stderr so stdout stays machine-readable.

    When stderr is not a terminal, a rich bar would stay silent until the end; instead one plain line
    (``description done/total [elapsed, s/it] info``) is written every ``LOG_EVERY_S`` seconds and at completion.

    Both clocks start at the first update (``accel sample`` sends ``update(0)`` as sampling starts), so the
    elapsed time is the work's, not the loading before it; s/it counts the steps done since that update.
    """
    if not enabled:
        yield lambda *a, **k: None
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _line_logger(description, total)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    state: dict[str, Any] = {}

    def update(done: int, total_now: int | None = None, info: str = "") -> None:
        if "prog" not in state:
            state["prog"] = Progress(*cols, console=console, transient=False)
            state["prog"].start()
            state["task"] = state["prog"].add_task(description, total=total, info="")
        state["prog"].update(state["task"], completed=done, total=total_now if total_now is not None else total, info=info)

    try:
        yield update
    finally:
        if "prog" in state:
            state["prog"].stop()


def _line_logger(description: str, total: int) -> Callable[..., None]:
    first: dict[str, float] = {}  # time and count of the first update
    last = [-LOG_EVERY_S]

    def update(done: int, total_now: int | None = None, info: str = "") -> None:
        n = total_now if total_now is not None else total
        first.setdefault("t", time.perf_counter())
        first.setdefault("done", done)
        now = time.perf_counter() - first["t"]
        if now - last[0] >= LOG_EVERY_S or done >= n:
            last[0] = now
            rate = f", {now / (done - first['done']):.2f} s/it" if done > first["done"] else ""
            print(f"{description} {done}/{n} [{now:.1f} s{rate}] {info}".rstrip(), file=sys.stderr, flush=True)

    return update
