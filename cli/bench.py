"""``accel bench``: benchmark command group; each capability mounts its command here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._outputs import OutDir
from .adjoint import bench_adjoint
from .bench_kernels import kernels as bench_kernels
from .idm import bench_idm

app = typer.Typer(no_args_is_help=True)
app.command("kernels", help="Fused cache kernels vs the eager chain: time, GB/s, % of peak (JSON, Markdown, PNG).")(bench_kernels)
app.command("adjoint", help="Adjoint gradients vs autograd: error, cosine, peak memory, time per method and N.")(bench_adjoint)
app.command("idm", help="IDM: training memory per mode and T, and Set11 reconstruction vs baselines.")(bench_idm)

Model = Annotated[str, typer.Option("--model", "-m", help="Shipped model name or local pipeline folder.")]


@app.command("cache")
def cache(
    model: Model = "dit-digits",
    methods: Annotated[Optional[str], typer.Option(help="Methods, comma-separated (default: every method that applies to the model).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Three evaluations per method, a few items, one timing round: checks the harness end to end.")] = False,
    selection: Annotated[Optional[int], typer.Option(help="Items in the selection split (default: the target's).")] = None,
    test: Annotated[Optional[int], typer.Option(help="Items in the test split (default: the target's).")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Wall-time rounds (default: the target's; 0 skips timing).")] = None,
    budget: Annotated[Optional[int], typer.Option(min=1, help="The tuner's selection evaluations per method (default: spaces.json's budget).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Sampling steps (default: the target's); with --ship the choice is kept for that step count.")] = None,
    ship: Annotated[Optional[str], typer.Option(help="Write CG-Taylor's choice at this PSNR level (40, 35 or 30) into the model folder's accel_cache.json.")] = None,
    out_dir: OutDir = Path("bench-cache"),
) -> None:
    """Every caching method on one model, chosen on a selection split by one rule, measured on a test split.

    One tuner explores every method's knob space (accel/benchmarks/spaces.json) with the same budget of
    selection evaluations; per quality level (per-image PSNR median >= 40 / 35 / 30 dB, and no harm: task
    accuracy down at most 2 points, or without a task reader the 10th-percentile PSNR at most 5 dB under the
    level) the rule picks the setting with the highest compute speedup; only those run on the test split and in
    shuffled wall-time rounds. Models: dit-digits, flux-shapes, unet-natural, tiny-sd15, or a local folder.
    Every evaluation is appended to OUT_DIR/journal.jsonl as it finishes; the same command resumes from it."""
    import sys
    import time

    from accel.benchmarks import harness, report

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    sizes = {k: v for k, v in (("selection", selection), ("test", test), ("rounds", rounds)) if v is not None}
    names = [m.strip() for m in methods.split(",")] if methods else None
    rep = harness.run(model, methods=names, quick=quick, sizes=sizes or None, steps=steps, progress=say, budget=budget,
                      journal=Path(out_dir) / "journal.jsonl")
    paths = report.write(rep, out_dir)
    typer.echo(report.verdict_markdown(rep))
    if ship is not None:
        from accel.benchmarks.calibrate import ship as write_choice
        from accel.zoo import resolve

        folder = resolve(model)
        rec = write_choice(rep, folder, ship, "accel bench cache " + " ".join(sys.argv[3:]), steps=steps)
        typer.echo(f"shipped CG-Taylor {rec['threshold']:g} {rec['config']} at {ship} dB to {rec['saved_to']}")
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command("gate")
def gate(
    model: Model = "dit-digits",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 50,
    num_images: Annotated[int, typer.Option(help="Images per call.")] = 20,
    threshold: Annotated[float, typer.Option(help="Gate threshold whose decisions the factors follow.")] = 0.05,
    out_dir: OutDir = Path("bench-gate"),
) -> None:
    """Per step, block-0 forecast error vs last-block forecast error: scatter PNG and correlation."""
    from accel.benchmarks.gate import run_gate_bench, write_gate_outputs

    report = run_gate_bench(model, steps=steps, num_images=num_images, threshold=threshold)
    paths = write_gate_outputs(report, out_dir)
    r = report.get("pearson")
    typer.echo(f"{report['n']} forecast steps probed; Pearson r = {r if r is None else round(r, 4)}, "
               f"Spearman = {report.get('spearman') and round(report['spearman'], 4)}, log-log r = {report.get('pearson_log') and round(report['pearson_log'], 4)}")
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
