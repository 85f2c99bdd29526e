"""Overhead of CG-Taylor at threshold 0 (issue 22: within 3%): the uncached pipeline and CG-Taylor at threshold 0
(with the shipped setting's other fields, so the levers' code paths run too) generate the same items, interleaved
with the order alternating each round; the output is checked bit-identical. Prints and writes JSON.

    OMP_NUM_THREADS=1 taskset -c 0 python tools/threshold0_overhead.py --model dit-digits --rounds 10 --out docs/bench/cache/threshold0-dit-digits.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

import accel
from accel.caching import shipped_config
from accel.benchmarks.targets import get_target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dit-digits")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    target = get_target(a.model)
    items = target.items("test", a.items)
    plain, cached = target.load(), target.load()
    cfg = dataclasses.replace(shipped_config(cached) or accel.CGTaylorConfig(), threshold=0.0)
    accel.enable(cached, cfg)
    runs = {"uncached": plain, "threshold0": cached}
    ref = target.generate(plain, items)
    same = bool(np.array_equal(ref, target.generate(cached, items)))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(a.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            target.generate(runs[name], items)
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rep = {"model": a.model, "items": len(items), "rounds": a.rounds, "config": cfg.to_dict(), "bit_identical": same,
           "median_s": med, "overhead": med["threshold0"] / med["uncached"] - 1, "times": times,
           "threads": torch.get_num_threads()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rep, indent=1))
    print(f"{a.model}: threshold 0 bit-identical={same}, overhead {100 * rep['overhead']:+.1f}% "
          f"(median {med['threshold0']:.3f} s vs {med['uncached']:.3f} s, {a.rounds} rounds)")


if __name__ == "__main__":
    main()
