"""A selection-split study of CG-Taylor's gates at the same thresholds: compute speedup, PSNR and accuracy drop of
each gate on a target's selection items (never the test split), through the harness's own runner and figures.

    python -m accel.benchmarks.gate_study dit-digits --items 32 --steps 50 --thresholds 0.04,0.06,0.1,0.15
    python -m accel.benchmarks.gate_study unet-natural --items 16 --steps 50,20,10 --gates step,cumulative

Each setting: the knob space's fixed knobs (transformers: residual forecast, warm-up 0.04 N steps, no forced last
step; U-Nets: the shallow split, the same warm-up and last step); gates by ``--gates`` (default ``step``,
``lookahead`` at ratio 0.5 and 1.0; ``name:key=value`` sets an option, or a ``CGTaylorConfig`` field such as
``residual``). With several step counts the same thresholds
run at each (does one threshold mean the same at every step count?). Prints one JSON line per setting, then a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import torch

from ..caching.config import CGTaylorConfig
from . import harness
from .methods import Context
from .targets import get_target
from .tuner import space
from .verdict import summary

GATES = "step,lookahead:ratio=0.5,lookahead:ratio=1.0"
CONFIG_FIELDS = {f.name for f in dataclasses.fields(CGTaylorConfig)}


def _value(text: str) -> bool | int | float:
    """An option's value from the command line: true / false, an int, else a float."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else float(text)


def parse_gates(text: str) -> list[tuple[str, dict[str, float]]]:
    """``"step,lookahead:ratio=0.5"`` -> [("step", {}), ("lookahead", {"ratio": 0.5})]."""
    out = []
    for part in text.split(","):
        name, *opts = part.split(":")
        out.append((name, {k: _value(v) for k, v in (o.split("=") for o in opts)}))
    return out


FIGURES = ("speedup", "psnr_median", "psnr_p10", "accuracy_drop")


def fixed_knobs(kind: str, steps: int) -> dict[str, Any]:
    """The knob space's fixed knobs of CG-Taylor at ``steps`` on a denoiser of ``kind`` (``spaces.json``; U-Nets on
    the shallow split)."""
    return {**space("cg-taylor", kind, steps).fixed, **({"unet_policy": "shallow"} if kind == "unet" else {})}


def evaluate(t: Any, ctx: Context, ref: harness.Split, params: dict[str, Any], batch: int) -> dict[str, Any]:
    """One CG-Taylor setting on the reference's items: compute speedup, PSNR median and p10, accuracy drop."""
    out, macs = harness.Runner(t, "cg-taylor", params, ctx).generate(ref.items, batch, count=True)
    s = summary(harness.measure(t, ref, out, macs), ref.ref)
    return {"speedup": s["compute_speedup"], "psnr_median": s["psnr_median"], "psnr_p10": s["psnr_p10"],
            "accuracy_drop": s.get("accuracy_drop")}


def study(model: str, items: int, steps: int, thresholds: list[float], batch: int = 16,
          gates: list[tuple[str, dict[str, float]]] | None = None) -> list[dict[str, Any]]:
    t = get_target(model)
    t.steps = steps
    ctx = Context(steps=steps, guidance_batched=t.guidance_batched)
    ref = harness.reference(t, harness.Runner(t, "none", {}, ctx), t.items("selection", items), batch)
    rows = []
    for thr in thresholds:
        for gate, opts in gates or parse_gates(GATES):
            fields = {k: v for k, v in opts.items() if k in CONFIG_FIELDS}  # e.g. residual: a config field, not a gate option
            params = {**fixed_knobs(t.kind, steps), "threshold": thr, "gate": gate, **fields,
                      "gate_options": {k: v for k, v in opts.items() if k not in fields}}
            rows.append({"model": model, "steps": steps, "threshold": thr, "gate": gate, **opts, **evaluate(t, ctx, ref, params, batch)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], part: str = "gate") -> str:
    """A table of study rows, one column naming the ``part`` compared (with its options)."""
    lines = [f"| model | steps | threshold | {part} | compute speedup | PSNR median | PSNR p10 | accuracy drop |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        opts = {k: v for k, v in r.items() if k not in ("model", "steps", "threshold", part, *FIGURES)}
        name = r[part] + (f" ({', '.join(f'{k} {v:g}' for k, v in opts.items())})" if opts else "")
        drop = "-" if r["accuracy_drop"] is None else f"{100 * r['accuracy_drop']:+.1f} pts"
        lines.append(f"| {r['model']} | {r['steps']} | {r['threshold']:g} | {name} | {r['speedup']:.2f}x | {r['psnr_median']:.1f} | "
                     f"{r['psnr_p10']:.1f} | {drop} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--steps", default="50", help="one step count, or several: 50,20,10")
    ap.add_argument("--thresholds", default="0.04,0.06,0.1,0.15")
    ap.add_argument("--gates", default=GATES, help="gates to compare, name[:option=value...], comma-separated")
    a = ap.parse_args()
    torch.set_num_threads(1)
    thresholds = [float(v) for v in a.thresholds.split(",")]
    print(markdown([r for n in a.steps.split(",") for r in study(a.model, a.items, int(n), thresholds, gates=parse_gates(a.gates))]))
