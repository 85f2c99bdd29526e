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
    from accel.zoo._registry import WEIGHTS

    for name, info in sorted(MODELS.items()):
        present = (WEIGHTS / name / "model_index.json").is_file()
        typer.echo(f"{name:14s} {'ready ' if present else 'absent'}  {info.description}")


@app.command("train")
def train(
    name: Annotated[str, typer.Argument(help="Model to train, e.g. dit-digits.")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: the package's weights folder).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Override the number of training steps.")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    work_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints go; training resumes from here.")] = None,
) -> None:
    """Train a shipped model from scratch, reproducibly (resumes from the last checkpoint in --work-dir)."""
    from accel.errors import AccelError
    from accel.zoo import MODELS
    from accel.zoo._registry import WEIGHTS

    if name not in MODELS:
        raise AccelError(f"unknown model {name!r}; trainable models: {', '.join(sorted(MODELS))}")
    target = out or (WEIGHTS / name)
    if name == "dit-digits":
        from accel.zoo.dit_digits import TrainConfig, train as train_fn

        cfg = TrainConfig(seed=seed, **({"steps": steps} if steps else {}))
        with progress_bar(f"training {name}", cfg.steps) as bar:
            train_fn(target, cfg, work_dir=work_dir, progress=lambda s, n, loss: bar(s, n, info=f"loss {loss:.4f}"))
    elif name == "unet-natural":
        from accel.invertible.prior import PriorTrainConfig, train as train_prior

        cfg = PriorTrainConfig(seed=seed, **({"steps": steps} if steps else {}))
        with progress_bar(f"training {name}", cfg.steps) as bar:
            train_prior(target, cfg, work_dir=work_dir, progress=lambda s, n, loss: bar(s, n, info=f"loss {loss:.4f}"))
    elif name == "flux-shapes":
        from accel.zoo.flux_shapes import TrainConfig as FluxConfig, train as train_flux

        fcfg = FluxConfig(seed=seed, **({"steps": steps} if steps else {}))
        stages = {"vae": fcfg.vae_steps, "flux": fcfg.total_steps}
        with progress_bar(f"training {name} (vae, then transformer + text encoders)", sum(stages.values())) as bar:
            train_flux(target, fcfg, work_dir=work_dir,
                       progress=lambda stage, s, n, loss: bar(s + (fcfg.vae_steps if stage == "flux" else 0), sum(stages.values()),
                                                              info=f"{stage} loss {loss:.4f}"))
    else:
        raise AccelError(f"no training recipe for {name!r}")
    typer.echo(f"saved {name} to {target}")
