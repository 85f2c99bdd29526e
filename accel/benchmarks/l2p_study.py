"""A selection-split study of L2P's learned predictor under CG-Taylor's gate against the Taylor forecaster: the
coefficients are fitted on the uncached trajectories of the selection split's first ``--fit-items`` items (block 0's
output and the forecast block's residual over it, at every step), then both forecasters run on the next ``--items``
items at the same thresholds, through the harness's own runner and figures (never the test split).

    python -m accel.benchmarks.l2p_study dit-digits --fit-items 16 --items 32 --steps 50 --thresholds 0.04,0.06,0.1,0.15

Each setting: residual forecast, warm-up 0.04 N steps, no forced last step, the step gate (the transformer space's
fixed knobs). Prints one JSON line per setting, then a table.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from ..caching.forecasters.l2p import fit_pipeline
from . import harness
from .gate_study import evaluate, fixed_knobs, markdown
from .methods import Context
from .targets import get_target


def study(model: str, fit_items: int, items: int, steps: int, thresholds: list[float], history: int = 4,
          batch: int = 16) -> list[dict[str, Any]]:
    t = get_target(model)
    t.steps = steps
    ctx = Context(steps=steps, guidance_batched=t.guidance_batched)
    pool = t.items("selection", fit_items + items)
    fitting = pool[:fit_items]
    calls = [lambda p, chunk=fitting[i:i + batch]: t.generate(p, chunk) for i in range(0, len(fitting), batch)]
    opts = fit_pipeline(t.load(), calls, steps, history, residual=True)
    ref = harness.reference(t, harness.Runner(t, "none", {}, ctx), pool[fit_items:], batch)
    rows = []
    for thr in thresholds:
        for name, fo in (("taylor", {}), ("l2p", opts)):
            params = {**fixed_knobs(t.kind, steps), "gate": "step", "threshold": thr, "forecaster": name, "forecaster_options": fo}
            rows.append({"model": model, "steps": steps, "threshold": thr, "forecaster": name, **evaluate(t, ctx, ref, params, batch)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--fit-items", type=int, default=16)
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--history", type=int, default=4)
    ap.add_argument("--thresholds", default="0.04,0.06,0.1,0.15")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(markdown(study(a.model, a.fit_items, a.items, a.steps, [float(v) for v in a.thresholds.split(",")], a.history), "forecaster"))
