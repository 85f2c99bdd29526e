"""``accel calibrate``: pick a CG-Taylor threshold for a model from a measured sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._outputs import OutDir
from ._progress import progress_bar


def calibrate(
    model: Annotated[str, typer.Option("--model", "-m", help="Shipped model name or local pipeline folder.")] = "dit-digits",
    min_psnr: Annotated[Optional[float], typer.Option(help="Largest threshold keeping PSNR vs uncached >= this (dB).")] = None,
    target_speedup: Annotated[Optional[float], typer.Option(help="Smallest threshold reaching this speedup instead.")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 50,
    num_images: Annotated[int, typer.Option(help="Images (seeds) per call.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed calls per threshold.")] = 3,
    out_dir: OutDir = Path("calibration"),
    save: Annotated[bool, typer.Option(help="Write the recommendation into the model folder (accel_cache.json).")] = False,
    thresholds: Annotated[Optional[str], typer.Option(help="Thresholds to sweep, comma-separated (default: a 13-point grid).")] = None,
) -> None:
    """Sweep thresholds on a few seeds, recommend one, write the Pareto plot."""
    from accel.benchmarks.calibrate import CALIBRATION_THRESHOLDS, calibrate as run

    if min_psnr is None and target_speedup is None:
        min_psnr = 30.0
    from .bench import _floats

    grid = _floats(thresholds) or CALIBRATION_THRESHOLDS
    with progress_bar("calibrating", len(grid) + 1) as bar:
        rec = run(model, min_psnr=min_psnr, target_speedup=target_speedup, steps=steps, num_images=num_images,
                  repeats=repeats, thresholds=grid, out_dir=out_dir, save=save, progress=lambda i, n, label: bar(i, n, info=label))
    typer.echo(f"recommended threshold {rec['threshold']:g}: speedup {rec['speedup']:.2f}x, PSNR {rec['psnr']:.1f} dB, "
               f"{100 * rec['forecast_fraction']:.0f}% of steps forecast"
               + (f", digit accuracy {rec['accuracy']:.3f}" if rec.get("accuracy") is not None else "")
               + (f"; saved to {rec['saved_to']}" if "saved_to" in rec else ""))
