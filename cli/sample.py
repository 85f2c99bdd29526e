"""``accel sample``: generate images, optionally with CG-Taylor caching, on one or many processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._progress import progress_bar


def _check_writable(path: Path) -> None:
    from accel.errors import AccelError

    parent = path.expanduser().resolve().parent
    if path.is_dir():
        raise AccelError(f"output path {str(path)!r} is a directory; give a file name such as {str(path / 'out.png')!r}")
    if not parent.is_dir():
        raise AccelError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    import os

    if not os.access(parent, os.W_OK):
        raise AccelError(f"cannot write {str(path)!r}: folder {str(parent)!r} is not writable")


def sample(
    model: Annotated[str, typer.Option("--model", "-m", help="Shipped model name (see `accel zoo list`), local pipeline folder or Hub id.")] = "dit-digits",
    class_: Annotated[Optional[list[int]], typer.Option("--class", "-c", help="Class label(s); repeat for several. Default: cycle 0..9.")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option(help="Prompt, for text-conditional pipelines; repeat it for one prompt per image.")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="How many images.")] = 8,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the model's; 50 for others).")] = None,
    seed: Annotated[int, typer.Option(help="Seed; image i uses seed + i, whatever the process split.")] = 0,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale (model default if unset).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG (a grid when several images); for a video pipeline an animated GIF (.gif) or PNG, with a strip of its frames in <name>-strip.png.")] = Path("samples.png"),
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write a JSON report here.")] = None,
    cache: Annotated[str, typer.Option(help="Block caching: none | cg-taylor.")] = "none",
    threshold: Annotated[Optional[float], typer.Option(help="CG-Taylor gate threshold (model's recommended value if unset).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="With --cache cg-taylor: the model's named setting, quality (>= 40 dB vs uncached), balanced (>= 35 dB) or fast (>= 30 dB), instead of its default.")] = None,
    compare: Annotated[bool, typer.Option(help="With --cache, also run uncached to measure speedup and PSNR.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Sample images and write a PNG grid; prints one summary line (time, steps, cache figures)."""
    from accel.errors import AccelError
    from accel import sampling

    from accel.zoo import MODELS

    steps = steps if steps is not None else (MODELS[model].default_steps if model in MODELS else 50)
    if steps <= 0:
        raise AccelError(f"--steps must be positive, got {steps}")
    if num_images <= 0:
        raise AccelError(f"--num-images must be positive, got {num_images}")
    if cache not in sampling.CACHE_CHOICES:
        raise AccelError(f"--cache must be one of {', '.join(sampling.CACHE_CHOICES)}, got {cache!r}")
    if preset is not None and cache != "cg-taylor":
        raise AccelError(f"--preset {preset} applies to --cache cg-taylor; add --cache cg-taylor or drop --preset")
    _check_writable(out)
    if json_path is not None:
        _check_writable(json_path)
    labels = list(class_) if class_ else None
    if labels is not None and len(labels) not in (1, num_images):
        raise AccelError(f"give one --class or exactly --num-images ({num_images}) of them, got {len(labels)}")
    if labels is not None and len(labels) == 1:
        labels = labels * num_images

    t0 = time.perf_counter()
    with progress_bar("sampling", steps, enabled=progress) as bar:
        report = sampling.sample_to_file(
            model, out=out, num_images=num_images, steps=steps, seed=seed, class_labels=labels, prompt=list(prompt) if prompt else None,
            guidance_scale=guidance, cache=cache, threshold=threshold, preset=preset, compare=compare,
            on_step=lambda i, n: bar(i, n),
        )
    if report is None:  # a non-main process under `accelerate launch`
        return
    report["wall_seconds"] = round(time.perf_counter() - t0, 3)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    typer.echo(sampling.summary_line(report))
