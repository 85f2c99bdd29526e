"""The README's prompt grid for flux-shapes: one row per prompt, one column per seed, uncached, 28 steps.

    python tools/flux_shapes_grid.py docs/flux-shapes-grid.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from accel.zoo import load

PROMPTS = ["a red circle", "an orange triangle", "a blue square", "two white circles", "three yellow triangles",
           "a red circle to the left of a blue square", "a green triangle above a yellow circle"]
SEEDS = range(6)


def main(path: str) -> None:
    pipe = load("flux-shapes")
    pipe.set_progress_bar_config(disable=True)
    prompts = [p for p in PROMPTS for _ in SEEDS]
    gens = [torch.Generator().manual_seed(s) for _ in PROMPTS for s in SEEDS]
    images = pipe(prompts, num_inference_steps=28, generator=gens).images
    fig, axes = plt.subplots(len(PROMPTS), len(SEEDS), figsize=(len(SEEDS) * 1.2 + 3.2, len(PROMPTS) * 1.2), dpi=100)
    for i, p in enumerate(PROMPTS):
        for j in SEEDS:
            ax = axes[i, j]
            ax.imshow(images[i * len(SEEDS) + j], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[i, 0].set_ylabel(p, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "flux-shapes-grid.png")
