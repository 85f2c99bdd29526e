"""``accel bench``: benchmark command group; each capability mounts its command here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._outputs import OutDir
from ._progress import progress_bar
from .adjoint import bench_adjoint
from .bench_kernels import kernels as bench_kernels
from .idm import bench_idm

app = typer.Typer(no_args_is_help=True)
app.command("kernels", help="Fused cache kernels vs the eager chain: time, GB/s, % of peak (JSON, Markdown, PNG).")(bench_kernels)
app.command("adjoint", help="Adjoint gradients vs autograd: error, cosine, peak memory, time per method and N.")(bench_adjoint)
app.command("idm", help="IDM: training memory per mode and T, and Set11 reconstruction vs baselines.")(bench_idm)

Model = Annotated[str, typer.Option("--model", "-m", help="Shipped model name or local pipeline folder.")]


def _floats(text: Optional[str]) -> Optional[tuple[float, ...]]:
    from accel.utils import AccelError

    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise AccelError(f"expected comma-separated numbers, got {text!r}") from None


@app.command("cache")
def cache(
    model: Model = "dit-digits",
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: 28 for flux-shapes, FluxPipeline's own; 50 otherwise).")] = None,
    num_images: Annotated[int, typer.Option(help="Images per pipeline call (same seeds for every method).")] = 20,
    repeats: Annotated[int, typer.Option(help="Timed calls per method (median reported).")] = 5,
    thresholds: Annotated[Optional[str], typer.Option(help="CG-Taylor thresholds, comma-separated.")] = None,
    peers: Annotated[bool, typer.Option(help="Also run diffusers' FirstBlockCache, TaylorSeer, MagCache (and cache-dit if installed).")] = True,
    num_prompts: Annotated[int, typer.Option(help="Text-to-image models: prompts (the same for every method).")] = 64,
    batch_size: Annotated[int, typer.Option(help="Text-to-image models: prompts per pipeline call.")] = 16,
    timing_prompts: Annotated[Optional[int], typer.Option(help="Text-to-image models: prompts per timed repeat (default: all).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="Also torch.compile (inductor): rows for compile alone and cache + compile.")] = False,
    out_dir: OutDir = Path("bench-cache"),
) -> None:
    """CG-Taylor vs no cache and the peers: speedup, steps forecast, PSNR/SSIM vs uncached, accuracy (digit
    classifier on dit-digits, the shape scorer on flux-shapes).

    U-Nets (``unet-natural``, ``tiny-sd15``): CG-Taylor's shallow-path policy vs its whole-U-Net forecast and
    DeepCache, timed in interleaved rounds (``--num-images 4 --repeats 3`` is a good start on a CPU)."""
    from accel.benchmarks.cache import DEFAULT_THRESHOLDS, default_methods, run_cache_bench, write_outputs
    from accel.benchmarks.cache_unet import UNET_THRESHOLDS, default_unet_methods, is_unet_model, run_unet_cache_bench, write_unet_outputs
    from accel.zoo import MODELS

    steps = steps or (MODELS[model].default_steps if model == "flux-shapes" else 50)
    if is_unet_model(model):
        methods = default_unet_methods(_floats(thresholds) or UNET_THRESHOLDS, peers=peers)
        with progress_bar("bench cache (U-Net)", len(methods) * (1 + repeats)) as bar:
            report = run_unet_cache_bench(model, steps=steps, num_images=num_images, repeats=repeats, methods=methods,
                                          progress=lambda i, n, label: bar(i, n, info=label))
        stem = "bench_cache_unet" if model == "unet-natural" else f"bench_cache_{model.replace('-', '_')}"
        paths = write_unet_outputs(report, out_dir, stem)
        typer.echo(paths["md"].read_text())
        typer.echo(f"summary: {report['summary']}")
        typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
        return
    if model == "flux-shapes":
        from accel.benchmarks.cache_text import flux_methods, run_text_cache_bench, write_text_outputs

        fm = flux_methods(peers=peers)
        if thresholds is not None:
            fm = [m for m in fm if m.family != "cg-taylor"] + [m for m in default_methods(_floats(thresholds), peers=False) if m.family == "cg-taylor"]
        with progress_bar("bench cache", 1) as bar:
            report = run_text_cache_bench(model, steps=steps, num_prompts=num_prompts, batch_size=batch_size,
                                          repeats=repeats, methods=fm, timing_prompts=timing_prompts, progress=lambda i, n, label: bar(i, n, info=label))
        paths = write_text_outputs(report, out_dir)
        typer.echo(paths["md"].read_text())
        typer.echo(f"summary: {report['summary']}")
        typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
        return
    methods = default_methods(_floats(thresholds) or DEFAULT_THRESHOLDS, peers=peers, compile=compile)
    with progress_bar("bench cache", len(methods)) as bar:
        report = run_cache_bench(model, steps=steps, num_images=num_images, repeats=repeats, methods=methods,
                                 progress=lambda i, n, label: bar(i, n, info=label))
    paths = write_outputs(report, out_dir)
    typer.echo(paths["md"].read_text())
    typer.echo(f"summary: {report['summary']}")
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
