"""Shared benchmark plumbing: timing, counting executed blocks, writing JSON/Markdown."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls; also returns all times and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


class ExecutionCounter:
    """Counts how often a probe module really runs (a skipped or forecast block never calls its sublayers)."""

    def __init__(self, probe: torch.nn.Module) -> None:
        self.count = 0
        self._handle = probe.register_forward_pre_hook(self._hit)

    def _hit(self, module: torch.nn.Module, args: Any) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


def first_linear(block: torch.nn.Module) -> torch.nn.Module:
    """A probe that runs only when the block's attention really computes: the first Linear inside the
    first attention submodule (skipped by block caches and by attention forecasts alike)."""
    for name, m in block.named_modules():
        if "attn" in name.split(".")[-1]:
            return next(x for x in m.modules() if isinstance(x, torch.nn.Linear))
    return next(m for m in block.modules() if isinstance(m, torch.nn.Linear))


def write_json(path: Path | str, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=float))


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(results: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A benchmark's rows as a Markdown table, followed by the methods that did not run and their errors."""
    md = markdown_table([r for r in results if "error" not in r], columns)
    errs = [r for r in results if "error" in r]
    if errs:
        md += "\nNot run:\n" + "".join(f"- {r['label']}: {r['error']}\n" for r in errs)
    return md
