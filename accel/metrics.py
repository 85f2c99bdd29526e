"""Image fidelity metrics against a reference (PSNR here; SSIM through scikit-image)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def as_array(images: list[Image.Image] | np.ndarray) -> np.ndarray:
    """PIL images or an array -> float64 array (B, H, W[, C]) in 0..255."""
    if isinstance(images, np.ndarray):
        return images.astype(np.float64)
    return np.stack([np.asarray(im, dtype=np.float64) for im in images])


def psnr(a: list[Image.Image] | np.ndarray, b: list[Image.Image] | np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over the whole set (one MSE over all pixels); inf when identical."""
    x, y = as_array(a), as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def ssim(a: list[Image.Image] | np.ndarray, b: list[Image.Image] | np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM over the images (scikit-image, gaussian window off, 7x7 or smaller for tiny images)."""
    from skimage.metrics import structural_similarity

    x, y = as_array(a), as_array(b)
    vals = []
    for xi, yi in zip(x, y):
        win = min(7, min(xi.shape[:2]) // 2 * 2 - 1)
        ch = -1 if xi.ndim == 3 else None
        vals.append(structural_similarity(xi, yi, data_range=data_range, win_size=win, channel_axis=ch))
    return float(np.mean(vals))
