"""wan-shapes' task accuracy: sample clips for prompts of the moving-shapes grammar and read them with the video
scorer (``accel.zoo.motion``), per prompt form.

    python -m accel.zoo.wan_shapes.evaluate [--model wan-shapes] [--n 200] [--seed 7] [--steps 20] [--guidance 5,7]

Prompts come from ``motion.prompt_set(n, seed)`` (single and pair in turn), noise seeds ``seed * 1000 + i``; the
benchmark's splits use other prompt seeds (4001, 5001+). Writes one JSON line per guidance scale.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from .. import load, motion


def accuracy(pipe: Any, n: int, seed: int, steps: int, guidance: float, batch: int = 8) -> dict[str, Any]:
    """Objects present and fully correct (objects and direction), per prompt form and overall."""
    prompts = motion.prompt_set(n, seed=seed)
    scores, t0 = [], time.perf_counter()
    for i in range(0, n, batch):
        chunk = prompts[i:i + batch]
        gens = [torch.Generator().manual_seed(seed * 1000 + i + j) for j in range(len(chunk))]
        call = {**getattr(pipe, "accel_call_defaults", {}), "guidance_scale": guidance}
        with torch.no_grad():
            frames = pipe(prompt=chunk, num_inference_steps=steps, generator=gens, output_type="np", **call).frames
        video = (np.clip(np.asarray(frames), 0, 1) * 255).round().astype(np.uint8)
        scores += [motion.score_clip(v, p) for v, p in zip(video, chunk)]
    return {"n": n, "seed": seed, "steps": steps, "guidance": guidance, **motion.summarise_clips(scores),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="wan-shapes")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", default="5")
    a = ap.parse_args()
    pipe = load(a.model)
    pipe.set_progress_bar_config(disable=True)
    for g in (float(v) for v in a.guidance.split(",")):
        print(json.dumps(accuracy(pipe, a.n, a.seed, a.steps, g)), flush=True)


if __name__ == "__main__":
    main()
