"""Images in and out for IDM: reading (Y channel), Set11, PSNR / SSIM as in the CS literature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from accel.utils import AccelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".webp")


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (H, W) luminance Y of ITU-R BT.601 YCbCr, rescaled to [0, 1] as Y/255."""
    return (16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 (H, W) in [0, 1]: grayscale as is, colour as its Y channel."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise AccelError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                return np.clip(rgb_to_y(arr), 0, 1).astype(np.float32)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                return np.clip(arr / (65535.0 if arr.max() > 255 else 255.0), 0, 1)
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise AccelError(f"cannot read {str(path)!r} as an image ({type(e).__name__}: {e}); give a PNG, JPEG, TIFF or BMP file") from None


def write_image(path: str | Path, img: np.ndarray | torch.Tensor) -> None:
    """Write a (H, W) [0, 1] image as an 8-bit grayscale file (format from the suffix)."""
    from PIL import Image

    if torch.is_tensor(img):
        img = img.detach().cpu().float().squeeze().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W) -> (1, 1, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]


def psnr(x: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB on the 0-255 scale of two [0, 1] images (clipped, not rounded)."""
    x, ref = _np(x), _np(ref)
    mse = float(np.mean((np.clip(x, 0, 1) * 255.0 - ref * 255.0) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(x: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """SSIM (scikit-image, Gaussian-free default 7x7 window, data range 255) of two [0, 1] images."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(_np(x), 0, 1) * 255.0, _np(ref) * 255.0, data_range=255.0))


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


def default_set11() -> Path:
    """The Set11 folder of this checkout (``../shared/data/set11`` next to the repository)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "data" / "set11"
        if cand.is_dir():
            return cand
    raise AccelError("Set11 not found (looked for shared/data/set11 above the package); pass --images FOLDER")
