"""``accel zoo``: list and train the shipped models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._progress import progress_bar

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """List the shipped models and whether their weights are present."""
    from accel.zoo import MODELS

    for name, info in sorted(MODELS.items()):
        present = (info.weights / "model_index.json").is_file()
        typer.echo(f"{name:14s} {'ready ' if present else 'absent'}  {info.description}")


@app.command("train")
def train(
    name: Annotated[str, typer.Argument(help="Model to train, e.g. dit-digits.")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: ./NAME in the working directory).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Override the number of training steps.")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    work_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints go (default: OUT/.train); training resumes from here.")] = None,
) -> None:
    """Train a shipped model's recipe from scratch, reproducibly, into ./NAME (resumes from the last checkpoint)."""
    from accel.errors import AccelError
    from accel.zoo import MODELS

    if name not in MODELS:
        raise AccelError(f"unknown model {name!r}; trainable models: {', '.join(sorted(MODELS))}")
    info = MODELS[name]
    target = out if out is not None else default_out(name)
    cfg = info.train_config(seed=seed, **({"steps": steps} if steps is not None else {}))
    with progress_bar(f"training {name}", 0) as bar:
        info.train_model(target, cfg, work_dir=work_dir, progress=lambda s, n, loss: bar(s, n, info=f"loss {loss:.4f}"))
    typer.echo(f"saved {name} to {target}; sample it with `accel sample --model {target}` or accel.zoo.load({str(target)!r})")


def default_out(name: str) -> Path:
    """Where ``accel zoo train NAME`` writes without ``--out``: ``./NAME`` in the working directory, never the package."""
    return Path.cwd() / name
