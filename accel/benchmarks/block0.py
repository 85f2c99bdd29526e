"""What block 0's cost takes from CG-Taylor: its share of a step's compute on each transformer target, and CG-Taylor's
committed test speedups beside what the same decisions would give if forecast steps did not run block 0.

    python -m accel.benchmarks.block0 docs/bench/cache

On a forecast step CG-Taylor runs block 0 (the gate needs its output) and forecasts the rest; caches that skip whole
steps (TaylorSeer, Spectrum) run nothing. With ``b`` block 0's share of a full step and ``S`` the measured compute
speedup, the executed share is ``1 / S = (1 - f) + f b`` (warm-up steps count as full), so the forecast share is
``f = (1 - 1/S) / (1 - b)`` and the same decisions without block 0 would give ``1 / (1 - f)``. In FLUX.1 (57 blocks)
``b`` is under 2%; in the toys it is 8-13%, which is where the toys' verdicts tilt towards whole-step caches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from .compute import ComputeCounter
from .targets import get_target


def block0_share(name: str) -> float:
    """Block 0's share of the denoiser's multiply-accumulates in one sampling call of ``name`` (two steps, one item)."""
    from ..caching.blocks import find_blocks, find_denoiser

    t = get_target(name)
    pipe, t.steps = t.load(), 2
    den = find_denoiser(pipe)
    with ComputeCounter(den) as whole, ComputeCounter(find_blocks(den)[0].module) as first:
        t.generate(pipe, t.items("selection", 1))
    return first.macs / whole.macs


def rows(root: Path) -> list[dict[str, Any]]:
    """Per committed transformer report and level: CG-Taylor's test speedup, its forecast share, the bound without
    block 0, and the leader."""
    reports = [json.loads(p.read_text()) for p in sorted(Path(root).glob("**/bench_cache.json"))]
    reports = [r for r in reports if r["config"]["kind"] != "unet" and not r["config"].get("quick")]
    shares = {n: block0_share(n) for n in sorted({r["config"]["model"] for r in reports})}
    out = []
    for r in reports:
        b = shares[r["config"]["model"]]
        for lv, v in r["verdict"].items():
            ours = next((e for e in v["entries"] if e["method"] == "cg-taylor" and e.get("setting")), None)
            lead = v["leader"]
            row = {"model": r["config"]["model"], "steps": r["config"]["steps"], "level": lv, "block0_share": b,
                   "leader": lead["method"] if lead else None, "leader_speedup": lead["speedup"] if lead else None}
            if ours is not None:
                s = ours["test"]["compute_speedup"]
                f = (1 - 1 / s) / (1 - b)
                row |= {"speedup": s, "holds": ours["holds_on_test"], "forecast_share": f, "without_block0": 1 / max(1 - f, 1e-9)}
            out.append(row)
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| model | steps | level | block 0's share | CG-Taylor (test) | forecast share | same decisions without block 0 | leader |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        ours = (f"{r['speedup']:.2f}x" + ("" if r["holds"] else " (fails on test)")) if "speedup" in r else "holds no setting"
        lead = f"{r['leader']} {r['leader_speedup']:.2f}x" if r["leader"] else "-"
        lines.append(f"| {r['model']} | {r['steps']} | {r['level']} dB | {r['block0_share']:.1%} | {ours} | "
                     f"{r.get('forecast_share', float('nan')):.2f} | {r.get('without_block0', float('nan')):.2f}x | {lead} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(markdown(rows(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/bench/cache"))))
