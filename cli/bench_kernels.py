"""``accel bench kernels``: time the cache ops (eager chain, PyTorch reference, Triton) and their bandwidth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._outputs import JsonFile, MdFile, OutDir, PngFile, output_files
from ._progress import progress_bar

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Benchmarks (JSON, Markdown, PNG)."""


def _check_writable(path: Optional[Path], flag: str) -> None:
    from accel.errors import AccelError

    if path is None:
        return
    if path.is_dir():
        raise AccelError(f"{flag} {str(path)!r} is a directory; give a file name")
    if not path.expanduser().resolve().parent.is_dir():
        raise AccelError(f"cannot write {flag} {str(path)!r}: its folder does not exist")


@app.command("kernels")
def kernels(
    sizes: Annotated[Optional[str], typer.Option(help="Comma-separated presets (dit-digits, dit-xl-256, sd3-1024, flux-b1, flux-b2, flux-b4) or shapes like 2x4096x3072. Default: all presets on CUDA, up to flux-b1 on CPU.")] = None,
    dtypes: Annotated[str, typer.Option(help="Comma-separated subset of fp32, fp16, bf16.")] = "fp32,fp16,bf16",
    repeats: Annotated[Optional[int], typer.Option(help="Timed calls per case (median reported). Default: 20 on CUDA, 5 on CPU.")] = None,
    order: Annotated[int, typer.Option(help="Highest Taylor order K (the buffer holds K+1 orders, all valid).")] = 2,
    ops: Annotated[str, typer.Option(help="Comma-separated subset of forecast, update, error.")] = "forecast,update,error",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (auto: cuda when available).")] = "auto",
    peak_gbps: Annotated[Optional[float], typer.Option("--peak-gbps", help="Peak memory bandwidth in GB/s (default: from the table of known GPUs by name).")] = None,
    out_dir: OutDir = None,
    json_path: JsonFile = None,
    md_path: MdFile = None,
    png_path: PngFile = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on stderr).")] = True,
) -> None:
    """Time forecast / update / error for each size and dtype: eager chain vs fused, GB/s and % of peak; prints Markdown
    (with --out-dir, also bench_kernels.json, .md and the bandwidth chart .png, which needs matplotlib)."""
    import torch

    from accel.errors import AccelError
    from accel.benchmarks import kernels as bench
    from accel.kernels import KernelError

    if device not in ("auto", "cpu", "cuda"):
        raise AccelError(f"--device must be auto, cpu or cuda, got {device!r}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    op_list = tuple(o.strip() for o in ops.split(",") if o.strip())
    if not op_list or any(o not in bench.OPS for o in op_list):
        raise AccelError(f"--ops {ops!r}: use a comma-separated subset of {', '.join(bench.OPS)}")
    if peak_gbps is not None and peak_gbps <= 0:
        raise AccelError(f"--peak-gbps must be positive, got {peak_gbps}")
    for path, flag in ((json_path, "--json"), (md_path, "--markdown"), (png_path, "--png")):
        _check_writable(path, flag)
    files = output_files(out_dir, "bench_kernels", json=json_path, md=md_path, png=png_path)
    default_sizes = bench.DEFAULT_SIZES if dev == "cuda" else "dit-digits,dit-xl-256,sd3-1024,flux-b1"
    try:  # the kernels are a leaf of the package with an error of their own: the CLI reports AccelError
        size_map = bench.parse_sizes(sizes or default_sizes)
        dtype_map = bench.parse_dtypes(dtypes)
        reps = repeats if repeats is not None else (20 if dev == "cuda" else 5)
        total = len(size_map) * len(dtype_map) * len(op_list)
        with progress_bar("bench kernels", total, enabled=progress) as update:
            result = bench.run_benchmark(size_map, dtype_map, order=order, repeats=reps, device=dev, peak_gbps=peak_gbps,
                                         ops=op_list, callback=lambda done, tot, info: update(done, tot, info=info))
        markdown = bench.to_markdown(result)
        typer.echo(markdown)
        if files["json"] is not None:
            files["json"].write_text(json.dumps(result, indent=2) + "\n")
        if files["md"] is not None:
            files["md"].write_text(markdown)
        if files["png"] is not None:
            bench.plot_png(result, files["png"])
    except KernelError as e:
        raise AccelError(str(e)) from None
