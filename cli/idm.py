"""CLI for IDM: ``accel finetune idm``, ``accel reconstruct``, ``accel bench idm`` (commands only parse and call)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from accel.errors import AccelError
from accel.utils import atomic_write_bytes

from ._outputs import JsonFile, MdFile, OutDir, PngFile, output_files

app = typer.Typer(no_args_is_help=True, help="Invertible diffusion models for compressed sensing (IDM).")

Ratio = Annotated[float, typer.Option("--ratio", help="CS sampling ratio in (0, 1], e.g. 0.1 for 10%.")]


@contextmanager
def _bar(description: str, enabled: bool = True) -> Iterator:
    """The shared rich bar (stderr); yields ``update(done, total, info)`` where info is a loss or a note."""
    from ._progress import progress_bar

    with progress_bar(description, 0, enabled) as update:
        yield lambda done, total, info="": update(done, total, f"loss {info:.4f}" if isinstance(info, float) else str(info))


def _image_tensors(folder: Optional[Path]) -> Optional[list]:
    if folder is None:
        return None
    import torch

    from accel.invertible.data import list_images, read_image

    return [torch.from_numpy(read_image(p)) for p in list_images(folder)]


@app.command()
def finetune_idm(
    ratio: Ratio = 0.1,
    steps: Annotated[int, typer.Option("--steps", help="T: sampling steps of the reversible chain (IDM uses 3).")] = 3,
    iters: Annotated[int, typer.Option(help="Optimiser steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Crops per process and step.")] = 4,
    crop: Annotated[int, typer.Option(help="Crop side (multiple of 32).")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine decay).")] = 5e-4,
    seed: Annotated[int, typer.Option(help="Seed of the crops and the initialisation.")] = 0,
    mode: Annotated[str, typer.Option(help="Memory mode: plain, checkpoint or reversible (same gradients; plain is fastest, reversible smallest).")] = "reversible",
    prior: Annotated[str, typer.Option(help="Pretrained prior: a shipped name or a DDPM pipeline folder.")] = "unet-natural",
    images: Annotated[Optional[Path], typer.Option(help="Folder of training images (default: unet-natural's photographs).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Weights file to write (default: the package's file for this ratio).")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="Where the resumable checkpoint lives (default: next to --out).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint period in steps.")] = 50,
    v_init: Annotated[float, typer.Option(help="Initial coupling weight v of the reversible units (IDM: 0.5).")] = 0.5,
    init: Annotated[Optional[Path], typer.Option(help="Start from these IDM weights (same ratio and T) instead of the prior, e.g. to train the shipped ones longer.")] = None,
    init_transfer: Annotated[bool, typer.Option(help="With --init: its U-Net may differ from the prior's (e.g. had attention); copy what they share.")] = False,
    mixed_precision: Annotated[str, typer.Option(help="no or bf16: run the U-Net in bfloat16 under autocast (for GPUs with bf16 tensor cores).")] = "no",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune IDM end to end for one sampling ratio (L1 loss, random crops; resumes after an interruption)."""
    from accel.invertible.finetune import FinetuneConfig, finetune
    from accel.invertible.operator import check_ratio
    from accel.invertible.weights import shipped_path

    cfg = FinetuneConfig(ratio=check_ratio(ratio), T=steps, iters=iters, batch_size=batch_size, crop=crop, lr=lr, seed=seed,
                         mode=mode, checkpoint_every=checkpoint_every, v_init=v_init, mixed_precision=mixed_precision)
    target = out or shipped_path(cfg.ratio)
    with _bar(f"IDM {100 * cfg.ratio:g}% T={steps}", progress) as update:
        path = finetune(target, cfg, prior=prior, work_dir=work_dir, progress=update, images=_image_tensors(images), init=init,
                        init_transfer=init_transfer)
    typer.echo(f"wrote {path}")


@app.command()
def reconstruct(
    image: Annotated[Optional[Path], typer.Argument(help="Original image: grey is measured as it is, colour channel by channel (or its Y with --channel y).")] = None,
    ratio: Annotated[Optional[float], typer.Option("--ratio", help="CS sampling ratio in (0, 1] (default 0.1, or the measurement file's).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where to write the reconstruction (PNG; grey, or colour for RGB).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="IDM weights (default: the shipped file for --ratio).")] = None,
    measurements: Annotated[Optional[Path], typer.Option(help="Reconstruct from this measurement file instead of measuring IMAGE.")] = None,
    save_measurements: Annotated[Optional[Path], typer.Option(help="Also write the measurements to this file (all channels in one file).")] = None,
    method: Annotated[str, typer.Option(help="idm, atb (A^T y), tv (TV-FISTA) or ddnm (zero-shot).")] = "idm",
    channel: Annotated[str, typer.Option(help="auto: grey as grey, colour as R, G, B (each at --ratio); y: colour as the Y of BT.601 YCbCr, the CS literature's protocol.")] = "auto",
    prior: Annotated[str, typer.Option(help="Prior for --method ddnm.")] = "unet-natural",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Measure IMAGE at --ratio (or read --measurements), reconstruct it, print PSNR / SSIM against the original."""
    from accel.invertible.data import SPACES, write_image
    from accel.invertible.reconstruct import reconstruct as run, save_measurements as save_y

    if image is None and measurements is None:
        raise AccelError("give an IMAGE to measure, or --measurements FILE")
    res = run(image, ratio, weights=weights, measurements=measurements, method=method, prior=prior, device=device,
              channel=channel, warn=lambda m: typer.echo(f"warning: {m}", err=True))
    if out is not None:
        write_image(out, res.image, bits=res.bits if res.image.ndim == 2 and out.suffix.lower() in (".png", ".tif", ".tiff") else 8)
    if save_measurements is not None:
        save_y(save_measurements, res.y, res.cs, res.image.shape[:2], res.space)
    quality = f"PSNR {res.psnr:.2f} dB  SSIM {res.ssim:.4f}  " if res.psnr is not None else ""
    typer.echo(f"{method} {100 * res.ratio:g}% on {SPACES[res.space]}: {quality}({res.seconds:.2f} s)" + (f" -> {out}" if out else ""))


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise AccelError(f"{what} must be comma-separated numbers, got {text!r}") from None


@app.command()
def bench_idm(
    out_dir: OutDir = None,
    json_path: JsonFile = None,
    md_path: MdFile = None,
    png_path: PngFile = None,
    what: Annotated[str, typer.Option(help="memory, recon or all.")] = "all",
    T: Annotated[str, typer.Option("--T", help="Sampling steps for the memory benchmark.")] = "1,3,5,10",
    modes: Annotated[str, typer.Option(help="Memory modes.")] = "plain,checkpoint,reversible",
    size: Annotated[int, typer.Option(help="Input side for the memory benchmark (multiple of 32).")] = 256,
    batch: Annotated[int, typer.Option(help="Batch for the memory benchmark.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed steps after the measured one.")] = 1,
    ratios: Annotated[str, typer.Option(help="Sampling ratios for the reconstruction benchmark.")] = "0.1,0.3,0.5",
    methods: Annotated[str, typer.Option(help="Reconstruction methods.")] = "atb,tv,ddnm,idm",
    images: Annotated[Optional[Path], typer.Option(help="Test images (default: Set11).")] = None,
    limit: Annotated[int, typer.Option(help="Use only the first N images (0: all).")] = 0,
    weights: Annotated[Optional[list[str]], typer.Option(help="RATIO=FILE IDM weights (default: the shipped ones).")] = None,
    prior: Annotated[str, typer.Option(help="Prior for DDNM.")] = "unet-natural",
    ddnm_steps: Annotated[int, typer.Option(help="DDNM sampling steps.")] = 100,
    tv_iters: Annotated[int, typer.Option(help="TV-FISTA iterations.")] = 300,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Keep each reconstruction here and reuse it on the next run (resumes an interrupted benchmark).")] = None,
    memory_from: Annotated[Optional[Path], typer.Option(help="With --what recon: report the memory records of this earlier --json report (they do not depend on the test images).")] = None,
    unet_config: Annotated[Optional[str], typer.Option(hidden=True, help="JSON overrides of the U-Net config (tests).")] = None,
) -> None:
    """Benchmark IDM: training memory/time per mode and T; Set11 PSNR/SSIM/time against A^T y, TV, DDNM; prints Markdown
    (with --out-dir, also bench_idm.json (all records), .md and .png (the reconstructions side by side))."""
    from accel.benchmarks import idm as bench, idm_report as report
    from accel.invertible.data import default_set11, list_images, read_image

    if what not in ("memory", "recon", "all"):
        raise AccelError(f"--what must be memory, recon or all, got {what!r}")
    if memory_from is not None and what != "recon":
        raise AccelError(f"--memory-from replaces the memory benchmark: use it with --what recon, not --what {what}")
    outputs = output_files(out_dir, "bench_idm", json=json_path, md=md_path, png=png_path)
    json_out = outputs["json"]
    memory, recon, originals, recs = [], [], None, None
    settings = {"size": size, "batch": batch, "device": device, "ddnm_steps": ddnm_steps, "tv_iters": tv_iters, "prior": prior}
    if what in ("recon", "all"):
        files = list_images(images or default_set11())[: limit or None]
        wmap = {}
        for item in weights or []:
            r, _, f = item.partition("=")
            if not f:
                raise AccelError(f"--weights takes RATIO=FILE, got {item!r}")
            wmap[_floats(r, "--weights ratio")[0]] = f
        mths = tuple(m.strip() for m in methods.split(",") if m.strip())
        if cache_dir is not None:  # before the memory benchmark, so that a resumed run says so first
            bench.announce_cached(files, _floats(ratios, "--ratios"), mths, wmap, prior, ddnm_steps, tv_iters, device, cache_dir)
    if memory_from is not None:
        memory = report.read_memory(memory_from)
        settings["memory_from"] = memory_from.name
    if what in ("memory", "all"):
        Ts = tuple(int(t) for t in _floats(T, "--T"))
        mlist = tuple(m.strip() for m in modes.split(",") if m.strip())
        def keep(records: list[dict]) -> None:  # a run stopped by a time limit keeps what it measured
            if json_out is not None:
                partial = {"settings": settings, "memory": records, "reconstruction": [], "partial": "the run stopped before its end"}
                atomic_write_bytes(json_out, json.dumps(partial, indent=2).encode())

        with _bar("memory") as update:
            memory = bench.bench_memory(Ts, mlist, size, batch, device, repeats, json.loads(unet_config) if unet_config else None, update, keep)
    if what in ("recon", "all"):
        with _bar("reconstruction") as update:
            recon, recs = bench.bench_reconstruction(files, _floats(ratios, "--ratios"), mths, wmap, prior, ddnm_steps, tv_iters, device, update, cache_dir)
        originals = [read_image(p, "y") for p in files]
        settings["images"] = [p.name for p in files]
    checks = bench.targets(memory, recon)
    typer.echo(report.write(json_out, outputs["md"], outputs["png"], memory, recon, checks, settings, originals, recs))


if __name__ == "__main__":  # lets `accelerate launch -m accel.cli.idm finetune-idm ...` run without the main CLI
    from ._progress import show_notes

    show_notes()
    app()
