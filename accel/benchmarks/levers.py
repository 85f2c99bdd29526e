"""CG-Taylor's levers on a target's selection split: which variant of the forecast or the gate buys quality at
equal compute (issue 22). The test split is never read here: a lever that wins goes into CG-Taylor's grid in
``grids.json``, and the harness (``accel bench cache``) then chooses and tests it like every other setting.

Each lever is a set of :class:`~accel.CGTaylorConfig` fields swept over a threshold ladder; every setting is
measured as the harness measures (per-image PSNR median and 10th percentile against the uncached images,
flips, the share of multiply-accumulates not executed). ``python -m accel.benchmarks.levers --model M``
writes ``levers.json``, ``levers.md`` and ``levers.png`` (PSNR median against compute skipped, one line
per lever) into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Runner, measure, summary
from .methods import Context
from .targets import get_target

LEVERS: dict[str, dict[str, Any]] = {
    "baseline": {},  # the paper's CG-Taylor: last block's output, first order, per-step gate
    "residual": {"residual": True},  # forecast blocks 1..L-1's residual, added to block 0's fresh output
    "residual-o2": {"residual": True, "last_order": 2},
    "cumulative": {"gate": "cumulative"},  # error budget since the last full step
    "residual-cumulative": {"residual": True, "gate": "cumulative"},
    "tail1": {"live_tail": 1},  # the last block runs on the forecast of the one before it
    "residual-tail1": {"residual": True, "live_tail": 1},
    "short-ends": {"warmup_steps": 1, "full_last_step": False},  # fewer forced full steps at both ends
    "residual-short-ends": {"residual": True, "warmup_steps": 1, "full_last_step": False},
    # a damped extrapolation (HiCache's idea in the Taylor basis), alone and on dit-digits' kept lever
    "damped": {"damping": 0.8},
    "residual-short-ends-damped": {"residual": True, "warmup_steps": 1, "full_last_step": False, "damping": 0.8},
    "residual-short-ends-damped6": {"residual": True, "warmup_steps": 1, "full_last_step": False, "damping": 0.6},
    # forecasters (accel.caching.forecasters): FoCa's horizon rule, and block 0 choosing the forecast per step
    "horizon": {"forecaster": "horizon"},
    "select": {"forecaster": "select", "last_order": 2},
    "residual-short-ends-horizon": {"residual": True, "warmup_steps": 1, "full_last_step": False, "forecaster": "horizon"},
    "residual-short-ends-select": {"residual": True, "warmup_steps": 1, "full_last_step": False, "forecaster": "select", "last_order": 2},
    "cumulative-horizon": {"gate": "cumulative", "forecaster": "horizon"},
    "cumulative-select": {"gate": "cumulative", "forecaster": "select", "last_order": 2},
    "cumulative-cap2": {"gate": "cumulative", "max_consecutive": 2},  # SeaCache's and DBCache's run-length cap
    "cumulative-cap3": {"gate": "cumulative", "max_consecutive": 3},
    "exp": {"forecaster": "exp", "last_order": 2},
    "residual-short-ends-exp": {"residual": True, "warmup_steps": 1, "full_last_step": False, "forecaster": "exp", "last_order": 2},
    "cumulative-exp": {"gate": "cumulative", "forecaster": "exp", "last_order": 2},
    # U-Nets: the split inside the outer blocks (DeepCache's branch 0), alone and with the residual forecast
    "layer": {"unet_policy": "layer"},
    "layer-residual": {"unet_policy": "layer", "residual": True},
    "layer-short-ends": {"unet_policy": "layer", "warmup_steps": 1, "full_last_step": False},
}
THRESHOLDS = {
    "step": {"dit": (0.05, 0.1, 0.15, 0.2, 0.3, 0.5), "flux": (0.02, 0.05, 0.1, 0.2, 0.3, 0.5), "unet": (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)},
    "cumulative": {"dit": (0.1, 0.2, 0.3, 0.5, 0.8, 1.2), "flux": (0.05, 0.1, 0.2, 0.4, 0.6, 1.0), "unet": (0.1, 0.2, 0.4, 0.6, 1.0, 1.5)},
}


def settings(lever: str, kind: str) -> list[dict[str, Any]]:
    fields = LEVERS[lever]
    ladder = THRESHOLDS[fields.get("gate", "step")][kind]
    return [{"threshold": t, **fields} for t in ladder]


def run(model: str, levers: list[str], selection: int | None = None, say: Any = print) -> dict[str, Any]:
    """Every lever's ladder on ``model``'s selection split; the rows as the harness's sweep rows."""
    target = get_target(model)
    size = target.full
    items = target.items("selection", selection or size.selection)
    ctx = Context(steps=target.steps)
    t0 = time.perf_counter()
    say(f"[{time.perf_counter() - t0:7.1f} s] {len(items)} selection items, uncached reference")
    ref, ref_macs = Runner(target, "none", {}, ctx).generate(items, size.batch, count_macs=True)
    ref_correct = target.scores(ref, items) if target.scores else None
    rows = []
    plan = [(lv, p) for lv in levers for p in settings(lv, target.kind)]
    for i, (lv, p) in enumerate(plan):
        say(f"[{time.perf_counter() - t0:7.1f} s] {i + 1}/{len(plan)} {lv} threshold={p['threshold']}")
        out, macs = Runner(target, "cg-taylor", p, ctx).generate(items, size.batch, count_macs=True)
        rows.append({"lever": lv, "params": p, "selection": summary(measure(target, ref, ref_macs, out, macs, items), ref_correct)})
    return {"model": target.name, "kind": target.kind, "steps": target.steps, "items": len(items),
            "split_note": target.split_note, "levers": {lv: LEVERS[lv] for lv in levers}, "rows": rows,
            "seconds": time.perf_counter() - t0}


def _by_lever(rep: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The sweep's rows grouped by lever, in the order they ran."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rep["rows"]:
        by.setdefault(r["lever"], []).append(r)
    return by


def psnr_at(rows: list[dict[str, Any]], share: float) -> float | None:
    """A lever's best PSNR median among its settings that skip at least ``share`` of the compute (its Pareto
    front at that share); None when none skips that much."""
    ok = [r["selection"]["psnr_median"] for r in rows if r["selection"]["compute_skipped"] >= share - 1e-9]
    return max(ok) if ok else None


def quartile_shares(rep: dict[str, Any]) -> tuple[float, ...]:
    """The 25th, 50th and 75th percentiles of the compute shares every setting skipped: where levers are compared."""
    return tuple(float(q) for q in np.percentile([r["selection"]["compute_skipped"] for r in rep["rows"]], [25, 50, 75], method="lower"))


def adopt(rep: dict[str, Any]) -> dict[str, Any]:
    """The committed rule for keeping a lever: at each quartile share (:func:`quartile_shares`) its best PSNR
    median must reach the paper's (``baseline``), and beat it at one at least; of the levers that pass, the
    one with the largest mean gain. Returns the lever, its fields and the gains (``baseline`` when none passes)."""
    shares = quartile_shares(rep)
    by = _by_lever(rep)
    base = [psnr_at(by["baseline"], s) for s in shares]
    best = {"lever": "baseline", "fields": {}, "gains_db": [0.0] * len(shares), "shares": list(shares)}
    for lv, rows in by.items():
        vals = [psnr_at(rows, s) for s in shares]
        if lv == "baseline" or any(v is None for v in vals):
            continue
        gains = [v - (b if b is not None else -np.inf) for v, b in zip(vals, base)]
        if min(gains) >= 0 and max(gains) > 0 and np.mean(gains) > np.mean(best["gains_db"]):
            best = {"lever": lv, "fields": rep["levers"][lv], "gains_db": [float(g) for g in gains], "shares": list(shares)}
    return best


def markdown(rep: dict[str, Any], shares: tuple[float, ...] | None = None) -> str:
    """Tables: each lever's PSNR median at equal compute skipped (by default at the quartiles of all the
    settings' shares), and every setting."""
    by = _by_lever(rep)
    shares = shares or quartile_shares(rep)
    out = [f"# CG-Taylor levers on {rep['model']} (selection split, {rep['items']} items, {rep['steps']} steps)", "",
           "Best PSNR median (dB, per image, against the uncached image) among each lever's settings that skip at "
           "least this share of the denoiser's compute (- : none of its settings skips that much):", "",
           "| lever | fields | " + " | ".join(f"{s:.1%} skipped" for s in shares) + " |",
           "|---|---|" + "---|" * len(shares)]
    for lv, rows in by.items():
        vals = [psnr_at(rows, s) for s in shares]
        out.append(f"| {lv} | {json.dumps(rep['levers'][lv]) if rep['levers'][lv] else 'paper'} | "
                   + " | ".join("-" if v is None else f"{v:.1f}" for v in vals) + " |")
    if "baseline" in by:
        a = adopt(rep)
        gains = ", ".join(f"{g:+.1f} dB" for g in a["gains_db"])
        out += ["", f"**Adopted by the rule** (`levers.adopt`: at least the paper's PSNR at every share above, better at one, "
                f"largest mean gain): **{a['lever']}** {json.dumps(a['fields'])} ({gains} at the three shares)."]
    out += ["", "Every setting:", "", "| lever | threshold | compute skipped | PSNR median | PSNR p10 | flips |", "|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        s = r["selection"]
        flips = f"{s['flip_rate']:.1%}" if "flip_rate" in s else "-"
        out.append(f"| {r['lever']} | {r['params']['threshold']} | {s['compute_skipped']:.1%} | {s['psnr_median']:.1f} | {s['psnr_p10']:.1f} | {flips} |")
    return "\n".join(out) + "\n"


def plot(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by = _by_lever(rep)
    for lv, rows in by.items():
        pts = sorted((r["selection"]["compute_skipped"], r["selection"]["psnr_median"]) for r in rows)
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", label=lv)
    ax.set_xlabel("denoiser compute skipped (%)")
    ax.set_ylabel("per-image PSNR median vs uncached (dB)")
    ax.set_title(f"CG-Taylor levers, {rep['model']} selection split ({rep['items']} items)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dit-digits")
    ap.add_argument("--levers", default=",".join(LEVERS), help="comma-separated, from: " + ", ".join(LEVERS))
    ap.add_argument("--selection", type=int, default=None, help="selection items (default: the target's)")
    ap.add_argument("--out-dir", type=Path, default=Path("bench-levers"))
    a = ap.parse_args(argv)
    levers = [x.strip() for x in a.levers.split(",")]
    unknown = [x for x in levers if x not in LEVERS]
    if unknown:
        sys.exit(f"unknown lever(s) {', '.join(unknown)}; known: {', '.join(LEVERS)}")
    rep = run(a.model, levers, a.selection, say=lambda m: print(m, file=sys.stderr, flush=True))
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / "levers.json").write_text(json.dumps(rep, indent=1))
    (a.out_dir / "levers.md").write_text(markdown(rep))
    plot(rep, a.out_dir / "levers.png")
    print(markdown(rep))


if __name__ == "__main__":
    main()
