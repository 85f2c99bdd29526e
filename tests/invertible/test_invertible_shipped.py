"""The shipped IDM prior and fine-tuned weights on a photograph kept out of training (scikit-image's camera)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accel.invertible.weights import shipped_path


def _camera(size: int = 128) -> np.ndarray:
    import skimage.data

    from accel.photographs import gray

    img = gray(skimage.data.camera())  # held out: a re-shoot of Set11's cameraman
    return np.ascontiguousarray(img[100 : 100 + size, 180 : 180 + size])


def test_prior_is_an_ordinary_diffusers_pipeline():
    from diffusers import DDPMPipeline

    from accel.zoo import load

    pipe = load("unet-natural")
    assert isinstance(pipe, DDPMPipeline) and pipe.unet.config.in_channels == 1
    pipe.set_progress_bar_config(disable=True)
    img = pipe(batch_size=4, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (4, 64, 64, 1) and np.isfinite(img).all() and img.std() > 0.02


@pytest.mark.parametrize("ratio,floor", [(0.1, 21.0), (0.3, 29.0), (0.5, 33.5)])  # measured 21.75 / 29.85 / 34.28 dB
def test_shipped_idm_beats_back_projection(ratio, floor):
    """Quality floor of the shipped fine-tuned weights on a held-out photograph."""
    from accel.invertible.reconstruct import reconstruct

    if not shipped_path(ratio).is_file():
        pytest.fail(f"shipped IDM weights for {ratio:g} are missing: {shipped_path(ratio)}")
    img = _camera()
    idm = reconstruct(img, ratio)
    atb = reconstruct(img, ratio, method="atb")
    assert idm.image.shape == img.shape
    assert idm.psnr > floor and idm.psnr > atb.psnr + 5, (idm.psnr, atb.psnr)
