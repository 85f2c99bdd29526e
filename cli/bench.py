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
    shuffled wall-time rounds. Models: dit-digits, flux-shapes, unet-natural, tiny-sd15, or a local folder (class-conditional DiT, FLUX, Wan, U-Net).
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


@app.command("cache-merge")
def cache_merge(
    reports: Annotated[list[Path], typer.Argument(help="bench_cache.json files of runs that split the methods between them.")],
    out_dir: OutDir = Path("bench-cache"),
) -> None:
    """One verdict from `accel bench cache --methods ...` runs on the same target that split the methods (one run
    per core): the same splits, tuner and budget; each run's wall times are against its own uncached baseline."""
    import json

    from accel.benchmarks import report
    from accel.errors import AccelError

    parts = []
    for p in reports:
        try:
            parts.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise AccelError(f"{p}: cannot read a report there ({e})") from None
    rep = report.merge(parts)
    paths = report.write(rep, out_dir)
    typer.echo(report.verdict_markdown(rep))
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command("cache-overhead")
def cache_overhead(
    tokens: Annotated[int, typer.Option(min=1, help="Image tokens, a square number (FLUX.1 at 1024x1024: 4096; text tokens are an eighth).")] = 4096,
    channels: Annotated[int, typer.Option(min=1, help="Hidden channels (FLUX.1: 3072).")] = 3072,
    repeats: Annotated[int, typer.Option(min=1, help="Timed full and cached steps per method (median and quartiles).")] = 15,
    dtypes: Annotated[str, typer.Option(help="Comma-separated float32, bfloat16.")] = "float32,bfloat16",
    out_dir: OutDir = Path("bench-cache-overhead"),
) -> None:
    """Each caching method's own work per step on FLUX.1-sized tensors, with its own code, on one thread: ms per
    cached and full step, the memory it holds, and its arithmetic against one FLUX.1 block's (overhead.json, .md, .png)."""
    import sys
    import time

    from accel.benchmarks import overhead, overhead_report

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    command = _command("cache-overhead", tokens=tokens, channels=channels, repeats=repeats, dtypes=dtypes, out_dir=out_dir)
    rep = overhead.run(overhead.Geometry(tokens=tokens, channels=channels), dtypes=tuple(d.strip() for d in dtypes.split(",") if d.strip()),
                       repeats=repeats, command=command, progress=say)
    paths = overhead_report.write(rep, out_dir)
    typer.echo(overhead_report.markdown(rep))
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


def _command(name: str, **options: object) -> str:
    """The command that reproduces a run, every setting spelled out (``None``: left at its default)."""
    words = ["accel bench", name]
    for key, value in options.items():
        for v in value if isinstance(value, list) else [value]:
            if v is not None:
                words += [f"--{key.replace('_', '-')}", str(v)]
    return " ".join(words)


@app.command("adjoint-exactness")
def adjoint_exactness(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Shipped model (repeatable).")] = ["dit-digits"],  # noqa: B006
    steps: Annotated[int, typer.Option(help="Sampler steps N.")] = 20,
    eps: Annotated[Optional[float], typer.Option(help="Finite-difference step (default 1e-4; flux-shapes 1e-2).")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Cache threshold (default: the shipped setting).")] = None,
    out_dir: OutDir = None,
) -> None:
    """Gradients through the cached sampler on shipped weights, float64: the cached adjoint vs autograd through the
    same cache, and vs a 4th-order finite difference with the gate's decisions held (exactness.json, .md)."""
    from accel.benchmarks import adjoint_exactness

    command = _command("adjoint-exactness", model=model, steps=steps, eps=eps, threshold=threshold, out_dir=out_dir)
    recs = adjoint_exactness.run(model, steps, out_dir, command, eps=eps, threshold=threshold, log=typer.echo)
    typer.echo(adjoint_exactness.markdown(recs, command))


@app.command("adjoint-race")
def adjoint_race(
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Folder for race.json, race.md, race.png and samples.")],
    task: Annotated[str, typer.Option(help="effect | style | attack.")] = "effect",
    model: Model = "dit-digits",
    iters: Annotated[int, typer.Option(help="Training iterations of each run.")] = 40,
    batch: Annotated[int, typer.Option(help="Images per iteration.")] = 4,
    steps: Annotated[int, typer.Option(help="Sampler steps N.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of both runs.")] = 0,
    cache: Annotated[str, typer.Option(help="The cached run's setting: shipped, finetune, a preset or a threshold.")] = "shipped",
    chunk: Annotated[int, typer.Option(help="Iterations per interleaved chunk.")] = 5,
    window: Annotated[int, typer.Option(help="Iterations averaged into the final loss.")] = 5,
    work: Annotated[Path, typer.Option(help="Folder for the two runs (emptied first).")] = Path("/tmp/adjoint-cache-race"),
) -> None:
    """Fine-tuning race: one `accel finetune adjoint` task uncached and through the cached sampler, interleaved
    in chunks; when the cached run reaches the uncached final loss, and its result with the uncached sampler."""
    from accel.benchmarks import adjoint_race

    cfg = adjoint_race.RaceConfig(task=task, model=model, iters=iters, batch=batch, steps=steps, seed=seed, cache=cache,
                                  chunk=chunk, window=window, work=str(work))
    command = _command("adjoint-race", task=task, model=model, iters=iters, batch=batch, steps=steps, seed=seed, cache=cache,
                       chunk=chunk, window=window, out_dir=out_dir)
    typer.echo(adjoint_race.markdown(adjoint_race.run(cfg, out_dir, command, log=typer.echo)))


@app.command("adjoint-speed")
def adjoint_speed(
    model: Model = "dit-digits",
    steps: Annotated[str, typer.Option(help="Comma-separated numbers of sampler steps N.")] = "10,20,50",
    preset: Annotated[Optional[str], typer.Option(help="quality | balanced | fast | finetune (default: the shipped setting).")] = None,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds per N (median reported).")] = 3,
    batch: Annotated[int, typer.Option(help="Images per gradient.")] = 2,
    guidance_scale: Annotated[Optional[float], typer.Option(help="Default: 4 for dit-digits, 1 otherwise.")] = None,
    out_dir: OutDir = None,
) -> None:
    """Time per gradient through the cached sampler against the uncached discrete adjoint, interleaved in one
    process (speed.json, .md): the timing of `accel bench adjoint --cache` without its isolated sweep."""
    from accel.benchmarks import adjoint as bench
    from accel.benchmarks.adjoint_cache import cache_markdown, speed

    guidance = guidance_scale if guidance_scale is not None else (4.0 if model == "dit-digits" else 1.0)
    cfg = bench.BenchConfig(model=model, steps=tuple(int(s) for s in steps.split(",")), methods=("cached",), batch=batch,
                            guidance_scale=guidance, isolate=False, cache_preset=preset)
    command = _command("adjoint-speed", model=model, steps=steps, preset=preset, rounds=rounds, batch=batch,
                       guidance_scale=guidance, out_dir=out_dir)
    typer.echo(cache_markdown([], speed(cfg, rounds, out_dir, command)))
