"""``accel bench gate``: does block 0's forecast error predict the last block's? (the paper's premise, measured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import write_json


def run_gate_bench(model: str = "dit-digits", steps: int = 50, num_images: int = 20, threshold: float = 0.05,
                   seeds: tuple[int, ...] = (0, 1), **config: Any) -> dict[str, Any]:
    """Probe mode: every block runs, the factors follow normal CG-Taylor decisions at ``threshold``, and on
    each would-be-forecast step both forecast errors are recorded. Returns the pairs and their correlations."""
    from .. import CGTaylorConfig, enable
    from ..caching.api import _controller
    from ..sampling import load_pipeline

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    enable(pipe, CGTaylorConfig(threshold=threshold, **config))
    ctrl = _controller(pipe.transformer)
    ctrl.probe = True
    pairs: list[dict[str, Any]] = []
    labels = [i % 10 for i in range(num_images)]
    for seed in seeds:
        gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(num_images)]
        pipe(class_labels=labels, num_inference_steps=steps, generator=gens, output_type="pt")
        for ctx, recs in ctrl.stats().steps.items():
            pairs += [{"seed": seed, "context": ctx, "step": r.step, "offset": r.offset, "block0_error": r.error, "last_error": r.last_error}
                      for r in recs if r.error is not None and r.last_error is not None]
    e0 = np.array([p["block0_error"] for p in pairs])
    el = np.array([p["last_error"] for p in pairs])
    out: dict[str, Any] = {"config": {"model": model, "steps": steps, "num_images": num_images, "threshold": threshold, "seeds": list(seeds), **config},
                           "pairs": pairs, "n": len(pairs)}
    if len(pairs) > 2:
        from scipy.stats import pearsonr, spearmanr

        out["pearson"] = float(pearsonr(e0, el)[0])
        out["spearman"] = float(spearmanr(e0, el)[0])
        out["pearson_log"] = float(pearsonr(np.log(e0 + 1e-12), np.log(el + 1e-12))[0])
    return out


def write_gate_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench_gate.json", "png": out_dir / "bench_gate.png"}
    write_json(paths["json"], report)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    if report["n"]:
        e0 = [p["block0_error"] for p in report["pairs"]]
        el = [p["last_error"] for p in report["pairs"]]
        sc = ax.scatter(e0, el, c=[p["offset"] for p in report["pairs"]], s=10, cmap="viridis", alpha=0.8)
        fig.colorbar(sc, ax=ax, label="steps since last full step")
        ax.set_xscale("log")
        ax.set_yscale("log")
    r = report.get("pearson")
    ax.set_title(f"block-0 vs last-block forecast error (n={report['n']}" + (f", r={r:.3f}, log r={report['pearson_log']:.3f})" if r is not None else ")"), fontsize=9)
    ax.set_xlabel("block-0 relative L1 forecast error (gate)")
    ax.set_ylabel("last-block relative L1 forecast error")
    fig.tight_layout()
    fig.savefig(paths["png"])
    plt.close(fig)
    return paths
