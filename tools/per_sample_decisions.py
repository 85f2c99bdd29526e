"""What per-sample gate decisions in a batch would buy (issue 22's lever), measured without building them: on
DiT and Flux blocks no sample reads another, so deciding per sample is exactly running each item as a batch of
one under the ``any`` policy. Compares compute skipped and PSNR at the harness's batch and at batch 1 (selection split).

    python tools/per_sample_decisions.py --model flux-shapes --fields '{"gate": "cumulative"}' --thresholds 0.1,0.3,0.6
"""

from __future__ import annotations

import argparse
import json

from accel.benchmarks.harness import Runner, measure, summary
from accel.benchmarks.methods import Context
from accel.benchmarks.targets import get_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--items", type=int, default=None, help="selection items (default: the harness's)")
    ap.add_argument("--fields", default="{}", help="CGTaylorConfig fields besides the threshold, as JSON")
    ap.add_argument("--thresholds", required=True)
    a = ap.parse_args()
    t = get_target(a.model)
    items, ctx, fields = t.items("selection", a.items or t.full.selection), Context(steps=t.steps), json.loads(a.fields)
    ref, ref_macs = Runner(t, "none", {}, ctx).generate(items, t.full.batch, count_macs=True)
    print("| threshold | batch | compute skipped | PSNR median | PSNR p10 | flips |\n|---|---|---|---|---|---|")
    for th in (float(x) for x in a.thresholds.split(",")):
        for b in (t.full.batch, 1):
            out, macs = Runner(t, "cg-taylor", {"threshold": th, **fields}, ctx).generate(items, b, count_macs=True)
            s = summary(measure(t, ref, ref_macs, out, macs, items), None)
            print(f"| {th} | {b} | {s['compute_skipped']:.1%} | {s['psnr_median']:.1f} | {s['psnr_p10']:.1f} | {s.get('flipped', '-')} |", flush=True)


if __name__ == "__main__":
    main()
