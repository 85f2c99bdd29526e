"""Images in and out for IDM: reading (grey as grey, colour as RGB or its Y channel), Set11, PSNR / SSIM."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from accel.errors import AccelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".webp")
CHANNELS = ("auto", "y")
SPACES = {"grey": "grey", "rgb": "RGB", "y": "Y of BT.601 YCbCr"}  # what was measured -> how to say it
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (H, W) luminance Y of ITU-R BT.601 YCbCr, rescaled to [0, 1] as Y/255."""
    return (16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def canonical(pixels: np.ndarray, channel: str = "auto") -> tuple[np.ndarray, str]:
    """(H, W) or (H, W, 3) in [0, 1] -> (pixels to measure, space) with space ``grey``, ``rgb`` or ``y``.

    Grey stays grey at full range whatever its storage (an RGB image whose three channels are equal is
    grey).  Colour is kept as RGB with ``channel="auto"``, or reduced to the Y channel of BT.601 YCbCr
    (16..235 of 255) with ``channel="y"``, the protocol of the CS literature.
    """
    if channel not in CHANNELS:
        raise AccelError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    a = np.asarray(pixels, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return a, "grey"
    if a.ndim != 3 or a.shape[-1] != 3:
        raise AccelError(f"an image is (H, W) grey or (H, W, 3) RGB, got shape {a.shape}")
    if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]):
        return np.ascontiguousarray(a[..., 0]), "grey"
    if channel == "y":
        return np.clip(rgb_to_y(a), 0, 1).astype(np.float32), "y"
    return np.ascontiguousarray(a), "rgb"


def _decode(im: "Image.Image", name: str, warn: Callable[[str], None]) -> np.ndarray:  # noqa: F821
    """A PIL image -> float32 (H, W) or (H, W, 3) in [0, 1] at its stored precision; alpha dropped (warned)."""
    if im.mode in _ALPHA or "transparency" in im.info:
        warn(f"{name} has an alpha channel (transparency); it is ignored and the colour channels are measured as stored")
    if im.mode in _SIXTEEN_BIT:  # 16-bit grey: keep every level (float32 holds 0..65535 exactly)
        arr = np.asarray(im).astype(np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise AccelError(f"{name} holds integers in {arr.min():g}..{arr.max():g}; 16-bit images hold 0..65535")
        return (arr / 65535.0).astype(np.float32)
    if im.mode in ("L", "LA", "La", "1"):
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if im.mode == "F":
        raise AccelError(f"{name} is a floating-point image; convert it to 8- or 16-bit integers first")
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # RGB(A), P(A), CMYK, YCbCr, LAB, HSV


def load_image(path: str | Path, channel: str = "y", warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, str]:
    """Read an image file for measuring: ``(pixels, space)`` as in :func:`canonical`, float32 in [0, 1].

    8-bit files give levels k/255, 16-bit grey files k/65535.  ``warn(message)`` is called once if an alpha
    channel is dropped (default: :func:`warnings.warn`).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise AccelError(f"image {str(path)!r} does not exist")
    if channel not in CHANNELS:
        raise AccelError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    try:
        with Image.open(path) as im:
            im.load()
            pixels = _decode(im, repr(str(path)), warn or (lambda m: warnings.warn(m, stacklevel=3)))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise AccelError(f"cannot read {str(path)!r} as an image ({type(e).__name__}: {e}); give a PNG, JPEG, TIFF or BMP file") from None
    return canonical(pixels, channel)


def read_image(path: str | Path, channel: str = "y", warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Read an image file as float32 in [0, 1]: grey (H, W) at full range; colour as its Y (``channel="y"``,
    the default: the CS literature's protocol) or as (H, W, 3) RGB (``channel="auto"``)."""
    return load_image(path, channel, warn)[0]


def bit_depth(path: str | Path) -> int:
    """16 for a 16-bit grey file, else 8 (what :func:`write_image` should write back)."""
    from PIL import Image

    with Image.open(path) as im:
        return 16 if im.mode in _SIXTEEN_BIT else 8


def write_image(path: str | Path, img: np.ndarray | torch.Tensor, bits: int = 8) -> None:
    """Write a (H, W) grey or (H, W, 3) RGB image in [0, 1] (format from the suffix); ``bits=16``: a 16-bit grey PNG/TIFF."""
    from PIL import Image

    if torch.is_tensor(img):
        img = img.detach().cpu().float().squeeze().numpy()
    img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    if bits not in (8, 16) or (bits == 16 and img.ndim != 2):
        raise AccelError(f"write_image writes 8-bit grey or RGB, or 16-bit grey; got bits={bits} for shape {img.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W) -> (1, 1, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]


def psnr(x: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB on the 0-255 scale of two [0, 1] images (clipped, not rounded); RGB: the MSE over all channels."""
    x, ref = _np(x), _np(ref)
    mse = float(np.mean((np.clip(x, 0, 1) * 255.0 - ref * 255.0) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(x: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """SSIM (scikit-image, Gaussian-free default 7x7 window, data range 255) of two [0, 1] images; RGB: mean over channels."""
    from skimage.metrics import structural_similarity

    x, ref = np.clip(_np(x), 0, 1) * 255.0, _np(ref) * 255.0
    return float(structural_similarity(x, ref, data_range=255.0, channel_axis=-1 if x.ndim == 3 else None))


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().double().squeeze().numpy()
    return np.asarray(x, dtype=np.float64).squeeze()


def list_images(folder: str | Path) -> list[Path]:
    """Image files in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AccelError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AccelError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    return files


SET11 = Path(__file__).resolve().parent / "set11"  # shipped as package data; see set11/SOURCE.md


def default_set11() -> Path:
    """The Set11 folder shipped with the package (``accel/invertible/set11``: evaluation data, never training)."""
    if not any(SET11.glob("*.tif")):
        raise AccelError(f"Set11 is missing from this install ({SET11}); reinstall accel-diffusion, or pass --images FOLDER")
    return SET11
