"""The handwritten digits that scikit-learn ships, as diffusion training data, and a digit classifier."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NUM_CLASSES = 10


def digits_dataset(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, size, size) float32 in [-1, 1], and their labels (N,) int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1) * 2 - 1, torch.from_numpy(d.target.astype(np.int64))


def to_classifier_input(images: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) in [-1, 1] -> (B, 64) in scikit-learn's 0..16 scale, area-downsampled to 8x8."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    x = F.adaptive_avg_pool2d(x, (8, 8))
    return (x.reshape(x.shape[0], -1) * 16).numpy()


class DigitClassifier:
    """An RBF SVM on scikit-learn's 8x8 digits (about 99% held-out accuracy); judges generated digits."""

    def __init__(self, seed: int = 0) -> None:
        from sklearn.datasets import load_digits
        from sklearn.svm import SVC

        d = load_digits()
        # Train on the digits after the same 8->16->8 resampling that generated images go through.
        x16, _ = digits_dataset(16)
        self.svm = SVC(gamma=0.001, C=10.0, random_state=seed).fit(to_classifier_input(x16), d.target)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Predicted class per image, (B,) int."""
        return self.svm.predict(to_classifier_input(images))

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor | np.ndarray | list[int]) -> float:
        """Fraction of images recognised as their requested class."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))
