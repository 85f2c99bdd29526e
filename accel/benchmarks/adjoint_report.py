"""Tables and plots of ``accel bench adjoint`` records (see ``bench.py``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TARGETS = ("noise", "cond", "weights")


def to_markdown(records: list[dict[str, Any]]) -> str:
    """One row per (method, N): errors per target, peak memory, time."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault((r["method"], r["steps"]), {"peak_mb": r["peak_mb"], "seconds": r["seconds"]})
        row[r["target"]] = (r["rel_error"], r["cosine"])
    head = "| method | N | noise rel.err (cos) | cond rel.err (cos) | weights rel.err (cos) | peak MB | seconds |\n|---|---|---|---|---|---|---|\n"
    fmt = lambda e: f"{e[0]:.2e} ({e[1]:.4f})" if e else "-"  # noqa: E731
    mb = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    lines = [
        f"| {m} | {n} | {fmt(v.get('noise'))} | {fmt(v.get('cond'))} | {fmt(v.get('weights'))} | {mb(v['peak_mb'])} | {v['seconds']:.3f} |"
        for (m, n), v in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]
    return head + "\n".join(lines) + "\n" + _order_table(records)


def observed_orders(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Log-log slope of relative error versus N (first to last N) per (method, target); about -order."""
    out: dict[tuple[str, str], float] = {}
    for key in {(r["method"], r["target"]) for r in records}:
        pts = sorted((r["steps"], r["rel_error"]) for r in records if (r["method"], r["target"]) == key)
        if len(pts) >= 2 and min(e for _, e in pts) > 1e-6 and pts[-1][0] != pts[0][0]:  # skip rounding-level errors
            out[key] = -math.log(pts[-1][1] / pts[0][1]) / math.log(pts[-1][0] / pts[0][0])
    return out


def _order_table(records: list[dict[str, Any]]) -> str:
    orders = observed_orders(records)
    methods = sorted({m for m, _ in orders})
    if not methods:
        return ""
    rows = [f"| {m} | " + " | ".join(f"{orders[(m, t)]:.2f}" if (m, t) in orders else "-" for t in TARGETS) + " |" for m in methods]
    return "\nObserved order of convergence (log-log slope of error vs N):\n\n| method | noise | cond | weights |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def plot(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """error_vs_steps.png (one panel per target, log-log) and memory_vs_steps.png / time_vs_steps.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(r["method"] for r in records))
    refs = {r["reference"] for r in records}
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(5 * len(TARGETS), 4))
    for ax, target in zip(axes, TARGETS):
        for m in (m for m in methods if m not in refs):  # exact zeros are drawn at 1e-17
            pts = sorted((r["steps"], max(r["rel_error"], 1e-17)) for r in records if r["method"] == m and r["target"] == target)
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=m)
        ax.set(title=f"gradient w.r.t. {target}", xlabel="steps N", ylabel="relative error vs autograd (0 drawn at 1e-17)")
        steps = sorted({r["steps"] for r in records})
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "error_vs_steps.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    for key, name, label in (("peak_mb", "memory_vs_steps.png", "peak memory (MB above baseline)"), ("seconds", "time_vs_steps.png", "forward + backward seconds")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            pts = sorted({(r["steps"], r[key]) for r in records if r["method"] == m and r[key] is not None})
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set(xlabel="steps N", ylabel=label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths
