"""``accel bench adjoint`` and ``accel finetune adjoint``: gradients through sampling (AdjointDPM).

Mount with ``bench_app.command("adjoint")(bench_adjoint)`` and ``finetune_app.command("adjoint")(finetune_adjoint)``;
``app`` here has both as ``bench`` and ``finetune`` for testing.

``--cache [THRESHOLD]`` takes gradients through the CG-Taylor-cached sampler: bare, the model's shipped setting
(for ``finetune``, the ``finetune`` entry of ``accel_cache.json`` when it has one, else the ``quality`` preset);
with a number, that threshold. Click options cannot take an optional value, so :func:`bare_cache_flags` turns a
bare ``--cache`` into ``--cache shipped`` before parsing (``accel`` and ``python -m accel.cli.adjoint`` both do).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._outputs import JsonFile, MdFile, OutDir, output_files
from ._progress import progress_bar, show_notes

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

SHIPPED = "shipped"
Cache = Annotated[Optional[str], typer.Option(
    "--cache", metavar="[THRESHOLD|PRESET]",
    help="Gradients through the CG-Taylor-cached sampler: bare, the model's shipped setting (accel_cache.json; for "
         "finetune its 'finetune' entry, the setting chosen for training, else its 'quality' preset); with a number, "
         "that threshold; finetune also takes 'finetune' or a preset name (quality, balanced, fast).")]


def bare_cache_flags(args: list[str]) -> list[str]:
    """``--cache`` with no value after it (the end, or another option next) becomes ``--cache shipped``."""
    out: list[str] = []
    for k, a in enumerate(args):
        out.append(a)
        nxt = args[k + 1] if k + 1 < len(args) else None
        if a == "--cache" and (nxt is None or (nxt.startswith("-") and not _is_number(nxt))):
            out.append(SHIPPED)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _threshold(cache: Optional[str]) -> Optional[float]:
    """--cache's value as the bench's cache_threshold (None: the shipped setting)."""
    from accel.errors import AccelError

    if cache is None or cache == SHIPPED:
        return None
    if not _is_number(cache) or not float(cache) >= 0:
        raise AccelError(f"--cache {cache!r}: give a threshold >= 0, or no value for the model's shipped setting")
    return float(cache)


def _is_number_list(text: str) -> bool:
    return all(_is_number(t) for t in text.split(",") if t.strip())


def _ints(text: str, flag: str) -> tuple[int, ...]:
    from accel.errors import AccelError

    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AccelError(f"{flag} {text!r}: give comma-separated integers, e.g. 5,10,20,50") from None
    if not vals or min(vals) <= 0:
        raise AccelError(f"{flag} {text!r}: give at least one positive integer")
    return vals


@app.command("bench")
def bench_adjoint(
    model: Annotated[str, typer.Option(help="Shipped model name or local class-conditional pipeline folder.")] = "dit-digits",
    steps: Annotated[str, typer.Option(help="Comma-separated numbers of sampler steps N.")] = "5,10,20,50",
    methods: Annotated[str, typer.Option(help="Comma-separated subset of autograd, checkpoint, discrete, continuous, torchdiffeq, continuous-2.")] = "autograd,checkpoint,discrete,continuous,torchdiffeq,continuous-2",
    batch: Annotated[int, typer.Option(help="Images per run (classifier-free guidance doubles the network batch).")] = 2,
    guidance_scale: Annotated[float, typer.Option("--guidance-scale", help="Classifier-free guidance weight.")] = 4.0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 | float64.")] = "float32",
    isolate: Annotated[bool, typer.Option(help="One subprocess per (method, N) so peak memory is honest.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the noise, labels and loss target.")] = 0,
    repeats: Annotated[int, typer.Option(help="Timed runs per configuration (median reported).")] = 3,
    out_dir: OutDir = None,
    json_path: JsonFile = None,
    md_path: MdFile = None,
    plots: Annotated[Optional[Path], typer.Option(hidden=True, help="Folder for the PNG plots (older spelling; see --out-dir).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on stderr).")] = True,
    cache: Cache = None,
    fidelity_thresholds: Annotated[str, typer.Option("--fidelity-thresholds", help="With --cache: comma-separated thresholds whose gradients are compared with the uncached one (at the largest N).")] = "",
) -> None:
    """Gradient error (vs exact autograd), peak memory and time of each gradient method versus N; prints Markdown
    (with --out-dir, also bench_adjoint.json (the records), .md, and error_vs_steps.png, memory_vs_steps.png, time_vs_steps.png).
    With --cache: the cached discrete adjoint too (vs autograd through the same cache, and vs the uncached gradient),
    interleaved timing against the uncached discrete adjoint, and bench_adjoint_cache.json / .md."""
    import torch

    from accel.benchmarks import adjoint as bench
    from accel.errors import AccelError
    from accel.utils import atomic_write_bytes

    if device not in ("auto", "cpu", "cuda"):
        raise AccelError(f"--device must be auto, cpu or cuda, got {device!r}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    names = tuple(m.strip() for m in methods.split(",") if m.strip())
    if cache is not None and "cached" not in names:
        names += ("cached",)
    if not _is_number_list(fidelity_thresholds) or (fidelity_thresholds.strip() and cache is None):
        raise AccelError(f"--fidelity-thresholds {fidelity_thresholds!r}: give comma-separated numbers, together with --cache")
    thresholds = tuple(float(t) for t in fidelity_thresholds.split(",") if t.strip())
    cfg = bench.BenchConfig(
        model=model, steps=_ints(steps, "--steps"), methods=names, batch=batch, guidance_scale=guidance_scale, device=dev,
        dtype=dtype, isolate=isolate, seed=seed, repeats=repeats, cache_threshold=_threshold(cache),
    )
    files = output_files(out_dir, "bench_adjoint", json=json_path, md=md_path)
    plots = plots or out_dir
    with progress_bar("bench adjoint", len(cfg.runs()) * len(cfg.steps), progress) as update:
        records = bench.run_bench(cfg, progress=lambda done, total, info: update(done, total, info=info))
    table = bench.to_markdown(records)
    if cache is not None:
        from accel.benchmarks import adjoint_cache as bench_cache

        with progress_bar("bench adjoint --cache", len(cfg.steps) + len(thresholds), progress) as update:
            extras = bench_cache.run_cache_extras(cfg, repeats, thresholds, progress=lambda done, total, info: update(done, total, info=info))
        table += "\n" + bench_cache.cache_markdown(records, extras)
        if out_dir is not None:
            atomic_write_bytes(out_dir / "bench_adjoint_cache.json", json.dumps(extras | {"records": records}, indent=2).encode())
            atomic_write_bytes(out_dir / "bench_adjoint_cache.md", bench_cache.cache_markdown(records, extras).encode())
    typer.echo(table)
    if files["json"] is not None:
        atomic_write_bytes(files["json"], json.dumps(records, indent=2).encode())
    if files["md"] is not None:
        atomic_write_bytes(files["md"], table.encode())
    if plots is not None:
        for p in bench.plot(records, plots):
            typer.echo(f"wrote {p}", err=True)


@app.command("finetune")
def finetune_adjoint(
    task: Annotated[str, typer.Argument(help="effect (learn a class embedding), style (LoRA), or attack (adversarial initial noise).")],
    out: Annotated[Path, typer.Option(help="Output folder: before.png, after.png, loss.png, summary.json, checkpoints/.")] = Path("runs/adjoint"),
    model: Annotated[str, typer.Option(help="Shipped model name or local class-conditional pipeline folder.")] = "dit-digits",
    iters: Annotated[int, typer.Option(help="Optimisation iterations.")] = 40,
    batch: Annotated[int, typer.Option(help="Samples per iteration and process.")] = 4,
    steps: Annotated[int, typer.Option(help="Sampler steps N.")] = 10,
    method: Annotated[str, typer.Option(help="Gradient method: discrete, continuous, torchdiffeq, checkpoint, autograd.")] = "discrete",
    lr: Annotated[Optional[float], typer.Option(help="Step size (default per task: effect 0.05, style 2e-3, attack 0.05).")] = None,
    guidance_scale: Annotated[float, typer.Option("--guidance-scale", help="Classifier-free guidance weight.")] = 4.0,
    label: Annotated[int, typer.Option(help="Digit whose embedding (effect) or reference image (effect, style) is used.")] = 3,
    eps: Annotated[float, typer.Option(help="attack: L-infinity radius of the noise perturbation (unit-variance noise).")] = 1.0,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="style: LoRA rank.")] = 4,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Iterations between atomic checkpoints.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of noises and initialisations.")] = 0,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", help="End this run after that many iterations (rerun to resume).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on stderr, main process).")] = True,
    cache: Cache = None,
) -> None:
    """Run one AdjointDPM task (resumes from OUT/checkpoints); works under `accelerate launch`. Prints the summary JSON.
    With --cache, the training gradients go through the CG-Taylor-cached sampler (samples and metrics stay uncached)."""
    from accel.adjoint.finetune import FinetuneConfig, run_finetune

    cfg = FinetuneConfig(
        task=task, out_dir=str(out), model=model, iters=iters, batch=batch, steps=steps, method=method, lr=lr,
        guidance_scale=guidance_scale, label=label, eps=eps, lora_rank=lora_rank, checkpoint_every=checkpoint_every,
        seed=seed, stop_after=stop_after, cache=cache,
    )
    with progress_bar(f"finetune {task}", iters, progress) as update:
        summary = run_finetune(cfg, progress=lambda done, total, loss: update(done, total, info=f"loss {loss:.4f}"))
    for key in ("losses", "seconds", "config"):
        summary.pop(key, None)
    typer.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":  # `accelerate launch -m accel.cli.adjoint finetune ...`
    show_notes()
    app(args=bare_cache_flags(sys.argv[1:]))
