"""Measure and reconstruct one image with IDM (or a baseline); measurement files; PSNR / SSIM."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accel.utils import AccelError, load_checkpoint, save_checkpoint

from .data import psnr, read_image, ssim, to_tensor
from .operator import BlockCS, CSConfig, check_ratio
from .weights import load_idm, shipped_path

MEASUREMENT_FORMAT = "accel-cs-measurements/1"


def save_measurements(path: str | Path, y: torch.Tensor, cs: CSConfig, size: tuple[int, int]) -> None:
    """Write measurements (1, L, q) with the operator config and the original image size (safetensors)."""
    save_checkpoint(path, {"y": y}, {"format": MEASUREMENT_FORMAT, "cs": cs.to_dict(), "height": size[0], "width": size[1]})


def load_measurements(path: str | Path) -> tuple[torch.Tensor, CSConfig, tuple[int, int]]:
    """Read a file written by :func:`save_measurements`: (y, CS config, (height, width))."""
    try:
        tensors, meta = load_checkpoint(path)
    except AccelError:
        raise
    except Exception as e:
        raise AccelError(f"{str(path)!r} is not a measurement file ({type(e).__name__}: {e})") from None
    if meta.get("format") != MEASUREMENT_FORMAT or "y" not in tensors:
        raise AccelError(f"{str(path)!r} is not a measurement file written by `accel reconstruct --save-measurements`")
    return tensors["y"], CSConfig(**meta["cs"]), (int(meta["height"]), int(meta["width"]))


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`: the (h, w) image in [0, 1], quality against the original when known."""

    image: np.ndarray
    ratio: float
    seconds: float
    psnr: float | None = None
    ssim: float | None = None
    y: torch.Tensor | None = None
    cs: CSConfig | None = None


def reconstruct(image: str | Path | np.ndarray | None = None, ratio: float | None = 0.1, weights: str | Path | None = None,
                measurements: str | Path | None = None, method: str = "idm", prior: str = "unet-natural",
                device: str = "cpu", **method_kw: Any) -> Reconstruction:
    """Measure ``image`` at ``ratio`` (or read ``measurements``) and reconstruct it.

    method: ``idm`` (``weights`` or the shipped file for the ratio), ``atb`` (A^T y), ``tv`` (TV-FISTA) or
    ``ddnm`` (zero-shot, with ``prior``).  PSNR / SSIM are computed when the original image is given.
    """
    from . import baselines

    if method not in ("idm", "atb", "tv", "ddnm"):
        raise AccelError(f"unknown method {method!r}; choose idm, atb, tv or ddnm")
    ref = read_image(image) if isinstance(image, (str, Path)) else image
    y = cs = None
    if measurements is not None:
        y, cs, size = load_measurements(measurements)
        if ratio is not None and abs(cs.ratio - check_ratio(ratio)) > 1e-9:
            raise AccelError(f"the measurements were taken at ratio {cs.ratio:g}, not {ratio:g}; drop --ratio or pass {cs.ratio:g}")
        ratio = cs.ratio
    else:
        if ref is None:
            raise AccelError("give an image to measure or --measurements FILE")
        ratio, size = check_ratio(ratio if ratio is not None else 0.1), ref.shape
    if method == "idm":
        model, meta_cs, _ = load_idm(Path(weights) if weights is not None else shipped_path(ratio), ratio=ratio)
        model.to(device)
        if cs is not None and cs != meta_cs:
            raise AccelError(f"the measurements were taken with {cs}, but the IDM weights expect {meta_cs}")
        cs = meta_cs
    cs = cs or CSConfig(ratio)
    op = BlockCS.for_image(cs, *size, device=device)
    if y is None:
        y = op.measure(to_tensor(ref).to(device))
    y = y.to(device)
    if method == "ddnm":
        from .prior import load_prior

        unet, acp = load_prior(prior)
        unet = unet.to(device).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == "idm":
            out = model(y, op)
        elif method == "atb":
            out = baselines.back_projection(y, op)
        elif method == "tv":
            out = baselines.tv_fista(y, op, **method_kw)
        else:
            out = baselines.ddnm(y, op, unet, acp, **method_kw)
    seconds = time.perf_counter() - t0
    rec = op.crop(out).clamp(0, 1)[0, 0].cpu().numpy()
    res = Reconstruction(rec, cs.ratio, seconds, y=y.cpu(), cs=cs)
    if ref is not None:
        if ref.shape != rec.shape:
            raise AccelError(f"the original image is {ref.shape[1]}x{ref.shape[0]}, the measurements are of a {rec.shape[1]}x{rec.shape[0]} image")
        res.psnr, res.ssim = psnr(rec, ref), ssim(rec, ref)
    return res
