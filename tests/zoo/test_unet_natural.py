"""unet-natural: training data (no Set11 look-alikes), reproducible resumable training, diffusers sampling."""

import json

import numpy as np
import pytest
import torch

from accel import photographs
from accel.zoo.unet_natural import recipe as prior
from accel.errors import AccelError
from accel.utils import load_checkpoint

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8, sample_size=16)


def test_training_photographs_exclude_set11_scenes():
    from accel.invertible.data import default_set11

    ims = photographs.natural_images()
    assert len(ims) >= 15
    assert not any("camera" in name for name in ims)
    for name, a in ims.items():
        assert a.dtype == np.float32 and a.ndim == 2 and 0 <= a.min() and a.max() <= 1 and min(a.shape) >= 256, name
    worst = photographs.check_disjoint(ims, default_set11())
    assert set(worst) == set(ims)
    # the check does fire on a copy of a test image
    from accel.invertible.data import read_image

    with pytest.raises(AccelError, match="resembles"):
        photographs.check_disjoint({"copy": read_image(default_set11() / "house.tif")}, default_set11())


def test_patches_are_deterministic():
    ims = [torch.rand(40, 50), torch.rand(70, 33)]
    a = photographs.sample_patches(ims, 5, 32, torch.Generator().manual_seed(3))
    b = photographs.sample_patches(ims, 5, 32, torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, 32, 32) and torch.equal(a, b)


def test_train_resumes_exactly_and_samples_with_diffusers(tmp_path):
    ims = [torch.rand(40, 40, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    cfg = prior.TrainConfig(steps=3, batch_size=2, patch=16, warmup=1, checkpoint_every=1)
    full = prior.train(tmp_path / "a", cfg, unet_overrides=TINY, images=ims)

    class Stop(Exception):
        pass

    def stop(i, n, loss):
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        prior.train(tmp_path / "b", cfg, unet_overrides=TINY, images=ims, progress=stop)
    resumed = prior.train(tmp_path / "b", cfg, unet_overrides=TINY, images=ims)
    a, _ = load_checkpoint(full / ".train" / "checkpoint.safetensors")
    b, _ = load_checkpoint(resumed / ".train" / "checkpoint.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng"))
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(full)
    assert type(pipe).__name__ == "DDPMPipeline"
    img = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (1, 16, 16, 1) and np.isfinite(img).all()
    unet, acp = prior.load_prior(str(full))
    assert unet.config.in_channels == 1 and acp.shape == (1000,)
    stopped = prior.pipeline_from_checkpoint(full / ".train" / "checkpoint.safetensors", tmp_path / "stopped")
    unet2, _ = prior.load_prior(str(stopped))  # a stopped run's EMA as a pipeline: here the finished run's EMA
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in unet2.state_dict().items())
    assert json.loads((stopped / "train_config.json").read_text())["stopped_at_step"] == 3
