"""Time per gradient through the CG-Taylor-cached sampler against the uncached discrete adjoint, interleaved in one
process (``accel.benchmarks.adjoint_cache.time_interleaved``), at a named preset of the model's ``accel_cache.json``
or its ``finetune`` entry (all of their fields, not only the threshold), or at its shipped setting: the timing part of
``accel bench adjoint --cache`` without the isolated sweep.

    OMP_NUM_THREADS=1 taskset -c 1 python tools/adjoint_cache_speed.py --model flux-shapes --preset balanced --steps 10,20,50 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    from accel.benchmarks import adjoint as bench
    from accel.benchmarks.adjoint_cache import cache_markdown, time_interleaved
    from accel.caching import CGTaylorConfig, shipped_settings
    from accel.caching.shipped import shipped_entry

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dit-digits")
    p.add_argument("--preset", default=None, help="a preset of accel_cache.json (quality, balanced, fast) or its finetune entry (finetune); default: the shipped setting")
    p.add_argument("--steps", default="10,20,50")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--guidance-scale", type=float, default=None, help="default: 4 for dit-digits, 1 otherwise")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    guidance = args.guidance_scale if args.guidance_scale is not None else (4.0 if args.model == "dit-digits" else 1.0)
    cfg = bench.BenchConfig(model=args.model, steps=tuple(int(s) for s in args.steps.split(",")), methods=("cached",),
                            batch=args.batch, guidance_scale=guidance, isolate=False)
    pipe = bench._load(cfg)
    if args.preset is not None:  # the bench's cached method runs at the preset (the one for each N where the model has one)
        if args.preset == "finetune":
            fixed = CGTaylorConfig(**shipped_entry(pipe, "finetune"))
            bench.cache_config = lambda pipe, cfg, steps=None: fixed
        else:
            bench.cache_config = lambda pipe, cfg, steps=None: CGTaylorConfig(**shipped_settings(pipe, args.preset, steps))
    setting = bench.cache_config(pipe, cfg, max(cfg.steps))
    timing = [time_interleaved(pipe, cfg, n, args.rounds) for n in cfg.steps]
    extras = {"model": cfg.model, "preset": args.preset or "shipped", "cache": setting.to_dict(), "threads": torch.get_num_threads(),
              "device": cfg.device, "dtype": cfg.dtype, "batch": cfg.batch, "guidance_scale": cfg.guidance_scale,
              "timing": timing, "fidelity": [], "command": "python tools/adjoint_cache_speed.py " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(extras, indent=2))
    md = f"Command: `{extras['command']}` (preset {extras['preset']})\n\n" + cache_markdown([], extras)
    (args.out / "speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
