"""``unet-natural``: the small pretrained grayscale diffusion prior that IDM fine-tunes.

A diffusers ``UNet2DModel`` trained as an unconditional epsilon-prediction denoiser (DDPM objective) on
random 64x64 grayscale patches of the training photographs of :mod:`accel.photographs` (BSD400 and the
photographs shipped inside scikit-image, scikit-learn and PyWavelets, kept apart from Set11 by content).  The
result is an ordinary ``DDPMPipeline`` (``save_pretrained`` layout), so it samples with plain diffusers too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AccelError
from ...photographs import sample_patches, training_images
from ...training import ProgressFn, TrainLoop, copy_matching, save_trained, unet_tensors, warmup_cosine_lr, with_ema

UNET_CONFIG = dict(
    sample_size=64,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 96),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    add_attention=False,  # no attention anywhere (not even in the mid block): cost linear in the pixel count
    norm_num_groups=8,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=True)


@dataclass
class TrainConfig:
    """Settings of ``accel zoo train unet-natural``.  The defaults reproduced the shipped weights with the
    earlier U-Net (attention at a quarter resolution, the wheels' photographs only); the shipped weights are
    still those until an attention-free run beats them on Set11 (docs/idm.md).

    steps: optimiser steps; batch_size x patch: the crops.  Sizing: one step (batch 16, 64x64, default
    U-Net, 2.6M parameters) took 2.15 s on one core of the 2-core development machine (torch 2.13 CPU,
    1 thread, the other core busy); with 2 threads about 1.3-1.4 s, so 1800 steps take about 40-45 minutes.
    """

    steps: int = 1800
    batch_size: int = 16
    patch: int = 64
    lr: float = 5e-4
    warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "patch", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if self.patch % 8:
            raise AccelError(f"patch must be a multiple of 8 (the U-Net downsamples 4x), got {self.patch}")


def build_unet(**overrides: object) -> torch.nn.Module:
    """A fresh (random) unet-natural ``UNet2DModel``; ``overrides`` change the config (tests use tiny ones)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**(UNET_CONFIG | overrides))


def build_pipeline(unet: torch.nn.Module):
    """The ordinary diffusers ``DDPMPipeline`` around ``unet``."""
    from diffusers import DDPMPipeline, DDPMScheduler

    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER_CONFIG))


def train(out_dir: str | Path, config: TrainConfig | None = None, work_dir: str | Path | None = None,
          progress: ProgressFn | None = None, unet_overrides: dict | None = None,
          images: list[torch.Tensor] | None = None, init: str | Path | None = None) -> Path:
    """Train unet-natural (or resume from ``work_dir/checkpoint.safetensors``) and save the DDPM pipeline.

    Deterministic for a given config on a given machine; an interrupted run resumes exactly.
    ``progress(step, total, loss_ema)`` is called after every step.  ``unet_overrides`` and ``images``
    ((H, W) tensors in [0, 1]) replace the architecture and the photographs (tests use tiny ones).
    ``init``: warm start from another prior's U-Net (pipeline folder or safetensors file): every tensor whose
    name and shape match is copied (the shipped prior started from the earlier one with attention).
    """
    from diffusers import DDPMScheduler

    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    torch.manual_seed(cfg.seed)
    images = training_images(cfg.patch) if images is None else [im for im in images if min(im.shape) >= cfg.patch]
    if not images:
        raise AccelError(f"no training image is at least {cfg.patch}x{cfg.patch}")
    def build() -> torch.nn.Module:
        unet = build_unet(**(unet_overrides or {}))
        if init is not None:
            copy_matching(unet, unet_tensors(init))
        return unet

    model, ema = with_ema(build)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    acp = DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod
    gen = torch.Generator().manual_seed(cfg.seed)
    settings = asdict(cfg) | {"unet_overrides": unet_overrides or {}} | ({"init": str(init)} if init is not None else {})

    def loss_at(step: int) -> torch.Tensor:
        x0 = sample_patches(images, cfg.batch_size, cfg.patch, gen) * 2 - 1
        t = torch.randint(0, len(acp), (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample, noise)

    loop = TrainLoop(work / "checkpoint.safetensors", settings, model, ema, opt, gen, total=cfg.steps,
                     lr_at=lambda step: warmup_cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps), ema_decay=cfg.ema_decay,
                     checkpoint_every=cfg.checkpoint_every, progress=progress)
    loss_ema = loop.run(loss_at)
    return save_trained(out_dir, build_pipeline(ema), settings, loss_ema)


def pipeline_from_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Save the EMA weights of a (stopped) training run's ``checkpoint.safetensors`` as a DDPM pipeline folder, with
    its settings, the step it stopped at and the loss EMA in ``train_config.json``; returns ``out_dir``."""
    import json

    from ...utils import load_checkpoint

    tensors, meta = load_checkpoint(checkpoint)
    cfg = meta["train_config"]
    unet = build_unet(**cfg.get("unet_overrides", {}))
    unet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    out = Path(out_dir)
    build_pipeline(unet.eval()).save_pretrained(out)
    (out / "train_config.json").write_text(json.dumps(cfg | {"stopped_at_step": meta["step"], "loss_ema": meta["loss_ema"]}, indent=2))
    return out


def load_prior(name_or_path: str = "unet-natural") -> tuple[torch.nn.Module, torch.Tensor]:
    """(UNet2DModel, alphas_cumprod) of a shipped prior name or a local DDPM pipeline folder."""
    from .. import load

    pipe = load(name_or_path)
    unet = getattr(pipe, "unet", None)
    if unet is None:
        raise AccelError(f"{name_or_path!r} is not a UNet2DModel pipeline (it has no .unet); IDM needs one such as unet-natural")
    return unet, pipe.scheduler.alphas_cumprod


def sample_grid(name_or_path: str = "unet-natural", n: int = 16, steps: int = 100, seed: int = 0):
    """Sample ``n`` images with the ordinary diffusers pipeline (its own DDPM scheduler, ``steps`` steps): a PIL grid."""
    from ...utils import make_grid
    from .. import load

    pipe = load(name_or_path)
    out = pipe(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), output_type="np").images
    return make_grid((np.clip(out, 0, 1) * 255).round().astype(np.uint8), scale=2)
