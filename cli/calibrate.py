"""``accel calibrate``: CG-Taylor's settings for a model, chosen by the benchmark's rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._outputs import OutDir


def calibrate(
    model: Annotated[str, typer.Option("--model", "-m", help="Shipped model name or local pipeline folder.")] = "dit-digits",
    level: Annotated[str, typer.Option(help="Quality level of the default setting: per-image PSNR median >= 40, 35 or 30 dB.")] = "35",
    selection: Annotated[Optional[int], typer.Option(help="Items in the selection split (default: the target's).")] = None,
    test: Annotated[Optional[int], typer.Option(help="Items in the test split (default: the target's).")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Timing rounds (default: the target's).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Sampling steps to calibrate for (default: the target's; with --save "
                                                 "the choice is kept for that step count: accel.enable(pipe, steps=N)).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Three evaluations, a few items: a fast check.")] = False,
    save: Annotated[bool, typer.Option(help="Write the choice into the model folder (accel_cache.json).")] = False,
    from_report: Annotated[Optional[Path], typer.Option("--from-report", help="An earlier run's bench_cache.json: "
                                                        "choose from it instead of sweeping again; with --save, a report "
                                                        "at another step count than the target's goes under that step count.")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="A text file of your own prompts, one per line (a text-to-image "
                                                    "pipeline): the first half chooses the setting, the second half tests it.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Your own class labels, comma-separated (a class-conditional "
                                                  "pipeline): the first half chooses the setting, the second half tests it.")] = None,
    out_dir: OutDir = Path("calibration"),
) -> None:
    """Tune CG-Taylor on the selection split with the benchmark's tuner, pick a setting per level by its rule,
    report it on the test split; with --save, the choice at --level (and a preset per level that holds on test)
    goes to accel_cache.json. Works on a local pipeline folder too (a class-conditional DiT, FLUX, any text-to-image
    pipeline with --prompts, or a U-Net), on the conditioning you give (--prompts, --labels) or the target's own."""
    import sys
    import time

    from accel.benchmarks import harness, report, verdict
    from accel.benchmarks.calibrate import cg_taylor_choices, ship
    from accel.benchmarks.targets import get_target
    from accel.errors import AccelError

    if level not in {f"{lv:g}" for lv in verdict.LEVELS}:
        raise AccelError(f"--level must be one of {', '.join(f'{lv:g}' for lv in verdict.LEVELS)}, got {level!r}")
    t0 = time.perf_counter()
    if from_report is not None:
        given = [f"--{k}" for k, v in (("quick", quick), ("selection", selection), ("test", test), ("rounds", rounds),
                                         ("prompts", prompts), ("labels", labels)) if v]
        if given:
            raise AccelError(f"{', '.join(given)} set how a sweep runs; --from-report reads one that ran already, drop them")
        rep = _read_report(from_report, model, steps)
        if steps is None and int(rep["config"]["steps"]) != get_target(model).steps:
            steps = int(rep["config"]["steps"])  # a step count's choice, not the default's
    else:
        sizes = {k: v for k, v in (("selection", selection), ("test", test), ("rounds", rounds)) if v is not None}
        rep = harness.run(model, methods=["cg-taylor"], quick=quick, sizes=sizes or None, steps=steps,
                          prompts=_prompts(prompts), labels=_labels(labels),
                          progress=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}", file=sys.stderr, flush=True),
                          journal=Path(out_dir) / "journal.jsonl")
        report.write(rep, out_dir)
    for lv, c in cg_taylor_choices(rep).items():
        typer.echo(f">= {lv} dB: {c['params']} (selection {c['selection_psnr_median']:.1f} dB, test {c['test_psnr_median']:.1f} dB, "
                   f"compute speedup {c['compute_speedup']:.2f}x)")
    if save:
        from accel.zoo import resolve

        rec = ship(rep, resolve(model), level, "accel calibrate " + " ".join(sys.argv[2:]), steps=steps)
        typer.echo(f"saved to {rec['saved_to']}")


def _prompts(path: Optional[Path]) -> list[str] | None:
    """The prompts of ``--prompts``: one per non-empty line."""
    from accel.errors import AccelError

    if path is None:
        return None
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise AccelError(f"--prompts {path}: cannot read it ({e}); give a text file with one prompt per line") from None
    return [ln for ln in lines if ln]


def _labels(text: Optional[str]) -> list[int] | None:
    """The class labels of ``--labels``: comma-separated integers >= 0."""
    from accel.errors import AccelError

    if text is None:
        return None
    try:
        labels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AccelError(f"--labels must be comma-separated class indices such as 3,5,7; got {text!r}") from None
    if any(v < 0 for v in labels):
        raise AccelError(f"--labels must be class indices >= 0; got {text!r}")
    return labels


def _read_report(path: Path, model: str, steps: int | None) -> dict:
    """An earlier ``accel calibrate`` / ``accel bench cache`` report, checked against ``--model`` and ``--steps``."""
    import json

    from accel.benchmarks.targets import get_target
    from accel.errors import AccelError

    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AccelError(f"--from-report {path}: cannot read a report there ({e})") from None
    cfg = rep.get("config") if isinstance(rep, dict) else None
    if not isinstance(cfg, dict) or not {"verdict", "sweep"} <= set(rep) or "steps" not in cfg:
        raise AccelError(f"--from-report {path}: not a bench_cache.json written by accel calibrate or accel bench cache")
    measured = str(cfg.get("model"))
    if not (_same_model(measured, model) or measured == get_target(model).name):
        raise AccelError(f"--from-report {path} was measured on {cfg.get('model')!r}, not {model!r}")
    if steps is not None and int(cfg["steps"]) != steps:
        raise AccelError(f"--from-report {path} was measured at {cfg['steps']} steps, not --steps {steps}")
    return rep


def _same_model(a: str, b: str) -> bool:
    """Two ``--model`` values name the same model: equal names, or the same local folder however spelled."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.resolve() == pb.resolve() if pa.is_dir() and pb.is_dir() else a == b
