"""``wan22-shapes``: wan-shapes as a Wan 2.2-style pair of experts.

Wan 2.2 runs one transformer on the high-noise steps and a second, ``transformer_2``, on the low-noise steps: the
pipeline switches at ``boundary_ratio * 1000`` (0.875 in Wan2.2-T2V-A14B). Here the high-noise expert is wan-shapes'
transformer as shipped, and the low-noise expert is a short fine-tune of it on timesteps below the boundary only,
text encoder and autoencoder shared and frozen. The folder is a stock ``WanPipeline`` with both experts.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import AccelError
from ...training import ProgressFn, TrainLoop, numpy_rng, save_trained, warmup_cosine_lr, with_ema
from ..wan_shapes import recipe as base

describe_vocabulary = base.describe_vocabulary


@dataclass
class TrainConfig:
    """Settings of ``accel zoo train wan22-shapes`` (the base model is wan-shapes' shipped pipeline)."""

    boundary_ratio: float = 0.875
    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 30
    ema_decay: float = 0.995
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.boundary_ratio < 1:
            raise AccelError(f"boundary_ratio must be in (0, 1), got {self.boundary_ratio}")


def low_noise_sigma(u: torch.Tensor, boundary_ratio: float) -> torch.Tensor:
    """Wan's shifted flow sigmas, restricted to the low-noise expert's range (timestep 1000 sigma below the boundary)."""
    return boundary_ratio * base.SHIFT * u / (1 + (base.SHIFT - 1) * u)


def train(out_dir: str | Path, config: TrainConfig | None = None, work_dir: str | Path | None = None,
          progress: ProgressFn | None = None, base_model: str = "wan-shapes") -> Path:
    """Fine-tune the low-noise expert from ``base_model`` (resumes from ``work_dir``) and save the two-expert pipeline."""
    from diffusers import WanPipeline

    from .. import load

    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    work.mkdir(parents=True, exist_ok=True)
    src = load(base_model)
    vae, text = src.vae.eval().requires_grad_(False), src.text_encoder.eval().requires_grad_(False)

    torch.manual_seed(cfg.seed)
    model, ema = with_ema(lambda: copy.deepcopy(src.transformer).train().requires_grad_(True))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    tok = base.build_tokenizer()

    def loss_at(step: int) -> torch.Tensor:
        rng = numpy_rng(gen)
        x, prompts = base.batch(rng, cfg.batch_size)
        prompts = ["" if rng.random() < 0.1 else p for p in prompts]
        with torch.no_grad():
            x0 = base.normalise(vae, vae.encode(x).latent_dist.mode())
            ctx = base.encode_prompts(text, tok, prompts)
        sigma = low_noise_sigma(torch.sigmoid(torch.randn(cfg.batch_size, generator=gen)), cfg.boundary_ratio)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        pred = model(hidden_states=(1 - s) * x0 + s * noise, timestep=1000 * sigma, encoder_hidden_states=ctx, return_dict=False)[0]
        return F.mse_loss(pred, noise - x0)

    loop = TrainLoop(work / "expert.safetensors", asdict(cfg), model, ema, opt, gen, total=cfg.steps,
                     lr_at=lambda step: warmup_cosine_lr(step, cfg.lr, min(cfg.warmup, cfg.steps // 4), cfg.steps),
                     ema_decay=cfg.ema_decay, checkpoint_every=cfg.checkpoint_every, progress=progress)
    loss_ema = loop.run(loss_at)
    pipe = WanPipeline(tokenizer=src.tokenizer, text_encoder=text, vae=vae, scheduler=src.scheduler,
                       transformer=src.transformer.eval(), transformer_2=ema.eval().requires_grad_(False),
                       boundary_ratio=cfg.boundary_ratio)
    out = save_trained(out_dir, pipe, asdict(cfg), loss_ema, half=(*base.HALF, "transformer_2"))
    from .._registry import CALL_DEFAULTS

    (Path(out) / CALL_DEFAULTS).write_text(json.dumps(getattr(src, "accel_call_defaults", base.CALL), indent=2) + "\n")
    return out

