"""Write the IDM benchmark: JSON records, a Markdown table, a PNG of reconstructions side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from accel.errors import AccelError
from accel.utils import atomic_write_bytes

METHOD_NAMES = {"atb": "A^T y", "tv": "TV-FISTA", "ddnm": "DDNM (zero-shot)", "idm": "IDM (fine-tuned)"}


def markdown(memory: list[dict[str, Any]], recon: list[dict[str, Any]], checks: dict[str, Any]) -> str:
    """Tables: memory / time per mode and T; PSNR / SSIM / seconds per method and ratio; target checks."""
    out: list[str] = []
    if memory:
        Ts = sorted({r["T"] for r in memory})
        modes = [m for m in ("plain", "checkpoint", "reversible") if any(r["mode"] == m for r in memory)]
        mem = {(r["mode"], r["T"]): r for r in memory}
        r0 = memory[0]
        out += [f"### Training memory, one forward + backward ({r0['size']}x{r0['size']}, batch {r0['batch']}, {r0['device']}; peak growth MB / seconds)", ""]
        out += ["| mode | " + " | ".join(f"T={t}" for t in Ts) + " |", "|---|" + "---|" * len(Ts)]
        for m in modes:
            cells = []
            for t in Ts:
                r = mem.get((m, t))
                if r is None:
                    cells.append("-")
                    continue
                p = mem.get(("plain", t))
                red = f" ({100 * (r['peak_mb'] / p['peak_mb'] - 1):+.1f}%)" if p and m != "plain" and p["peak_mb"] > 0 else ""
                cells.append(f"{r['peak_mb']:.0f} MB{red}, {r['seconds']:.2f} s")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    if recon:
        ratios = sorted({r["ratio"] for r in recon})
        methods = [m for m in METHOD_NAMES if any(r["method"] == m for r in recon)]
        rec = {(r["method"], r["ratio"]): r for r in recon}
        out += ["### Reconstruction (mean PSNR dB, 0-255 / SSIM / seconds per image; greyscale images as they are, colour ones on Y)", ""]
        out += ["| method | " + " | ".join(f"{100 * q:g}%" for q in ratios) + " |", "|---|" + "---|" * len(ratios)]
        for m in methods:
            cells = [f"{rec[(m, q)]['psnr']:.2f} / {rec[(m, q)]['ssim']:.4f} / {rec[(m, q)]['seconds']:.2f} s" if (m, q) in rec else "-" for q in ratios]
            out.append(f"| {METHOD_NAMES[m]} | " + " | ".join(cells) + " |")
        out.append("")
    if checks:
        out += ["### Targets", ""] + [f"- {k}: {v}" for k, v in checks.items()] + [""]
    return "\n".join(out)


def side_by_side(originals: list[np.ndarray], recs: dict[tuple[str, float], list[np.ndarray]], index: int = 0) -> "Image.Image":  # noqa: F821
    """One row per ratio: the original, then every method's reconstruction of image ``index``."""
    from PIL import Image, ImageDraw

    from accel.utils import make_grid

    ratios = sorted({q for _, q in recs})
    methods = [m for m in METHOD_NAMES if any(k[0] == m for k in recs)]
    ref = originals[index]
    tiles = []
    for q in ratios:
        tiles.append(ref)
        tiles += [recs[(m, q)][index] if (m, q) in recs and recs[(m, q)][index] is not None else np.zeros_like(ref) for m in methods]
    arr = np.stack([np.round(np.clip(t, 0, 1) * 255).astype(np.uint8) for t in tiles])
    grid = make_grid(arr, ncols=len(methods) + 1, pad=4)
    head = Image.new("RGB", (grid.width, 16), "white")
    draw = ImageDraw.Draw(head)
    w = ref.shape[1] + 4
    for i, name in enumerate(["original"] + [METHOD_NAMES[m] for m in methods]):
        draw.text((4 + i * w, 2), name, fill="black")
    for j, q in enumerate(ratios):
        ImageDraw.Draw(grid).text((8, 8 + j * (ref.shape[0] + 4)), f"{100 * q:g}%", fill=(255, 0, 0))
    full = Image.new("RGB", (grid.width, grid.height + 16), "white")
    full.paste(head, (0, 0))
    full.paste(grid, (0, 16))
    return full


def read_memory(path: str | Path) -> list[dict[str, Any]]:
    """The memory records of an earlier report written by :func:`write`."""
    try:
        records = json.loads(Path(path).read_text())["memory"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AccelError(f"cannot read memory records from {str(path)!r} ({type(e).__name__}: {e}); give a report written by `accel bench idm --json`") from None
    if not records:
        raise AccelError(f"{str(path)!r} has no memory records; give a report of `accel bench idm --what all` or `--what memory`")
    return records


def write(json_path: str | Path | None, md_path: str | Path | None, png_path: str | Path | None, memory: list[dict[str, Any]],
          recon: list[dict[str, Any]], checks: dict[str, Any], settings: dict[str, Any],
          originals: list[np.ndarray] | None = None, recs: dict | None = None) -> str:
    """Write whichever outputs are requested; return the Markdown text."""
    md = markdown(memory, recon, checks)
    if json_path:
        data = {"settings": settings, "memory": memory, "reconstruction": recon, "targets": checks}
        atomic_write_bytes(json_path, json.dumps(data, indent=2).encode())
    if md_path:
        atomic_write_bytes(md_path, md.encode())
    if png_path and originals and recs:
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        side_by_side(originals, recs).save(png_path)
    return md
