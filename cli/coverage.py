"""``accel coverage``: which diffusers denoisers CG-Taylor supports, checked on tiny random models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._progress import progress_bar


def coverage(
    out: Annotated[Path, typer.Option(help="Markdown table to write.")] = Path("docs/coverage.md"),
    gate: Annotated[str, typer.Option(help="The gate the forecasting check runs under (a registered gate: step, cumulative, lookahead).")] = "step",
) -> None:
    """Every denoiser class the installed diffusers exports: tiny config, sampling loop, the four cache checks."""
    import torch

    from accel.coverage.check import write

    torch.set_num_threads(1)  # tiny models: threads only add overhead
    with progress_bar("coverage", 1) as bar:
        results = write(out, progress=lambda i, n, name: bar(i, n, info=name), gate=gate)
    dens = [r for r in results if not r.status.startswith("not a denoiser")]
    sup = sum(r.supported for r in dens)
    typer.echo(f"supported: {sup} of {len(dens)} denoisers ({100 * sup / max(len(dens), 1):.0f}%); wrote {out}")
