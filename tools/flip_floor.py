"""The flux-shapes flip reader's floor: how often it fires on images that differ from the uncached ones only by a
nudge of the initial noise (latents + eps x fresh noise, eps relative to the unit-variance noise). A cache's flip
rate is read against this: at equal PSNR median a neutral nudge flips about as often as the caches do.

    python tools/flip_floor.py --split test --items 512 --eps 0.003,0.01,0.02,0.04 --out docs/bench/cache/flux-shapes/flip-floor
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from accel.benchmarks.harness import per_item_psnr
from accel.benchmarks.targets import get_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=("selection", "test"))
    ap.add_argument("--items", type=int, default=512)
    ap.add_argument("--eps", default="0.003,0.01,0.02,0.04")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t = get_target("flux-shapes")
    pipe = t.load()
    items = t.items(a.split, a.items)
    prepare, nudge = pipe.prepare_latents, {"eps": 0.0, "calls": 0}

    def nudged(*args, **kw):
        lat, ids = prepare(*args, **kw)
        if nudge["eps"]:
            g = torch.Generator().manual_seed(777 + nudge["calls"])
            nudge["calls"] += 1
            lat = lat + nudge["eps"] * torch.randn(lat.shape, generator=g, dtype=lat.dtype)
        return lat, ids

    pipe.prepare_latents = nudged

    def generate() -> np.ndarray:
        return np.concatenate([t.generate(pipe, items[i:i + t.full.batch]) for i in range(0, len(items), t.full.batch)])

    t0 = time.perf_counter()
    ref = generate()
    rows = []
    for eps in (float(e) for e in a.eps.split(",")):
        nudge["eps"], nudge["calls"] = eps, 0
        out = generate()
        p, f = per_item_psnr(ref, out, False), t.flips(ref, out, items)
        rows.append({"eps": eps, "psnr_median": float(np.median(p)), "psnr_p10": float(np.percentile(p, 10)),
                     "flip_rate": float(f.mean()), "flipped": int(f.sum()), "n": len(items),
                     "psnr_of_flipped": sorted(p[f].round(1).tolist())})
        print(f"[{time.perf_counter() - t0:6.0f} s] eps {eps}: PSNR median {rows[-1]['psnr_median']:.1f} dB, "
              f"flips {rows[-1]['flipped']}/{len(items)} ({rows[-1]['flip_rate']:.1%})", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "flip_floor.json").write_text(json.dumps({"split": a.split, "flip_reader": t.flip_reader, "rows": rows}, indent=1))
    lines = [f"# flux-shapes flip reader under a neutral nudge ({a.split} split, {len(items)} items)", "",
             "| eps | PSNR median | PSNR p10 | flips |", "|---|---|---|---|"]
    lines += [f"| {r['eps']} | {r['psnr_median']:.1f} | {r['psnr_p10']:.1f} | {r['flipped']}/{r['n']} ({r['flip_rate']:.1%}) |" for r in rows]
    (a.out / "flip_floor.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
