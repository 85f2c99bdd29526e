"""Measure and reconstruct one image with IDM (or a baseline); measurement files; PSNR / SSIM."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from accel.errors import AccelError
from accel.utils import load_checkpoint, save_checkpoint

from .data import CHANNELS, SPACES, bit_depth, canonical, load_image, psnr, ssim, to_tensor
from .operator import BlockCS, CSConfig, check_ratio
from .weights import load_idm, shipped_path

MEASUREMENT_FORMAT = "accel-cs-measurements/2"
_READABLE_FORMATS = ("accel-cs-measurements/1", MEASUREMENT_FORMAT)  # /1: one grey channel, no "space"


def save_measurements(path: str | Path, y: torch.Tensor, cs: CSConfig, size: tuple[int, int], space: str = "grey") -> None:
    """Write measurements (C, L, q) -- one row per measured channel: 1 grey or Y, 3 for RGB -- with the
    operator config, the original image size and what was measured (``space``), as one safetensors file."""
    if space not in SPACES or y.shape[0] != (3 if space == "rgb" else 1):
        raise AccelError(f"measurements of shape {tuple(y.shape)} do not fit space {space!r} (grey / y: 1 channel, rgb: 3)")
    meta = {"format": MEASUREMENT_FORMAT, "cs": cs.to_dict(), "height": size[0], "width": size[1], "space": space}
    save_checkpoint(path, {"y": y}, meta)


def load_measurements(path: str | Path) -> tuple[torch.Tensor, CSConfig, tuple[int, int], str]:
    """Read a file written by :func:`save_measurements`: (y (C, L, q), CS config, (height, width), space)."""
    try:
        tensors, meta = load_checkpoint(path)
    except AccelError:
        raise
    except Exception as e:
        raise AccelError(f"{str(path)!r} is not a measurement file ({type(e).__name__}: {e})") from None
    if meta.get("format") not in _READABLE_FORMATS or "y" not in tensors:
        raise AccelError(f"{str(path)!r} is not a measurement file written by `accel reconstruct --save-measurements`")
    return tensors["y"], CSConfig(**meta["cs"]), (int(meta["height"]), int(meta["width"])), meta.get("space", "grey")


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`: the image in [0, 1], (h, w) grey / Y or (h, w, 3) RGB as ``space``
    says; quality against the original when known; ``bits`` of the original file (8 or 16)."""

    image: np.ndarray
    ratio: float
    seconds: float
    psnr: float | None = None
    ssim: float | None = None
    y: torch.Tensor | None = None
    cs: CSConfig | None = None
    space: str = "grey"
    bits: int = 8


def _original(image: str | Path | np.ndarray | None, channel: str, want: str | None,
              warn: Callable[[str], None] | None) -> tuple[np.ndarray | None, str | None, int]:
    """The original as measured (pixels, space, bits); ``want``: the space of given measurements."""
    if image is None:
        return None, want, 8
    if isinstance(image, (str, Path)):
        if want == "rgb" and channel == "y":
            raise AccelError("the measurements are of the RGB channels; drop --channel y")
        ref, space = load_image(image, "y" if want == "y" else channel, warn)
        bits = bit_depth(image)
    else:
        (ref, space), bits = canonical(image, "y" if want == "y" else channel), 8
    if want is not None and space != want:
        raise AccelError(f"the measurements are of {SPACES[want]} channels, but the original image reads as {SPACES[space]}")
    return ref, space, bits


def reconstruct(image: str | Path | np.ndarray | None = None, ratio: float | None = 0.1, weights: str | Path | None = None,
                measurements: str | Path | None = None, method: str = "idm", prior: str = "unet-natural",
                device: str = "cpu", channel: str = "auto", warn: Callable[[str], None] | None = None,
                **method_kw: Any) -> Reconstruction:
    """Measure ``image`` at ``ratio`` (or read ``measurements``) and reconstruct it.

    method: ``idm`` (``weights`` or the shipped file for the ratio), ``atb`` (A^T y), ``tv`` (TV-FISTA) or
    ``ddnm`` (zero-shot, with ``prior``).  channel: ``auto`` measures grey images as they are and colour
    ones channel by channel (R, G, B, each at ``ratio``, each reconstructed as a grey image); ``y`` measures
    colour as the Y of BT.601 YCbCr (the CS literature's protocol).  PSNR / SSIM are computed, in the
    measured space, when the original image is given; ``warn`` hears about a dropped alpha channel.
    """
    if method not in ("idm", "atb", "tv", "ddnm"):
        raise AccelError(f"unknown method {method!r}; choose idm, atb, tv or ddnm")
    if channel not in CHANNELS:
        raise AccelError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    y = file_cs = want = None
    if measurements is not None:
        y, file_cs, size, want = load_measurements(measurements)
        if ratio is not None and abs(file_cs.ratio - check_ratio(ratio)) > 1e-9:
            raise AccelError(f"the measurements were taken at ratio {file_cs.ratio:g}, not {ratio:g}; drop --ratio or pass {file_cs.ratio:g}")
        ratio = file_cs.ratio
    ref, space, bits = _original(image, channel, want, warn)
    if measurements is None:
        if ref is None:
            raise AccelError("give an image to measure or --measurements FILE")
        ratio, size = check_ratio(ratio if ratio is not None else 0.1), ref.shape[:2]
    solve, trained_cs = _solver(method, ratio, weights, prior, device, method_kw)
    if file_cs is not None and trained_cs is not None and file_cs != trained_cs:
        raise AccelError(f"the measurements were taken with {file_cs}, but the IDM weights expect {trained_cs}")
    cs = trained_cs or file_cs or CSConfig(ratio)
    op = BlockCS.for_image(cs, *size, device=device)
    if y is None:  # each channel measured on its own, exactly as a grey image would be
        planes = [ref] if ref.ndim == 2 else [ref[..., c] for c in range(3)]
        y = torch.cat([op.measure(to_tensor(p).to(device)) for p in planes])
    y = y.to(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        outs = [op.crop(solve(y[c : c + 1], op)).clamp(0, 1)[0, 0].cpu().numpy() for c in range(y.shape[0])]
    seconds = time.perf_counter() - t0
    rec = outs[0] if len(outs) == 1 else np.stack(outs, axis=-1)
    res = Reconstruction(rec, cs.ratio, seconds, y=y.cpu(), cs=cs, space=space or "grey", bits=bits)
    if ref is not None:
        if ref.shape != rec.shape:
            raise AccelError(f"the original image is {ref.shape[1]}x{ref.shape[0]}, the measurements are of a {rec.shape[1]}x{rec.shape[0]} image")
        res.psnr, res.ssim = psnr(rec, ref), ssim(rec, ref)
    return res


def _solver(method: str, ratio: float, weights: str | Path | None, prior: str, device: str,
            kw: dict[str, Any]) -> tuple[Callable[[torch.Tensor, BlockCS], torch.Tensor], CSConfig | None]:
    """The method, loaded once: ``solve(y (1, L, q), op) -> (1, 1, H, W)``, and the operator IDM was trained for."""
    from . import baselines

    if method == "idm":
        model, trained_cs, _ = load_idm(Path(weights) if weights is not None else shipped_path(ratio), ratio=ratio)
        model.to(device)
        return (lambda y, op: model(y, op)), trained_cs
    if method == "atb":
        return baselines.back_projection, None
    if method == "tv":
        return (lambda y, op: baselines.tv_fista(y, op, **kw)), None
    from accel.zoo.unet_natural.recipe import load_prior

    unet, acp = load_prior(prior)
    unet = unet.to(device).eval()
    return (lambda y, op: baselines.ddnm(y, op, unet, acp, **kw)), None
