"""``dit-digits``: a 12-block class-conditional DiT trained on scikit-learn's digits (16x16, 1 channel)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..training import ema_update, load_train_state, optimizer_step, running_loss, save_train_state, warmup_cosine_lr
from ..utils import AccelError
from .digits import NUM_CLASSES, digits_dataset

TRANSFORMER_CONFIG = dict(
    num_attention_heads=4,
    attention_head_dim=16,
    in_channels=1,
    out_channels=1,
    num_layers=12,
    sample_size=16,
    patch_size=2,
    num_embeds_ada_norm=NUM_CLASSES,  # label table gets NUM_CLASSES + 1 rows: the last is the null class
    norm_type="ada_norm_zero",
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", clip_sample=False)


@dataclass
class TrainConfig:
    """Settings of ``accel zoo train dit-digits``; the defaults reproduce the shipped weights."""

    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    class_dropout: float = 0.1  # fraction of labels replaced by the null class, for classifier-free guidance
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.class_dropout < 1:
            raise AccelError(f"class_dropout must be in [0, 1), got {self.class_dropout}")


def build_transformer() -> "torch.nn.Module":
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(**TRANSFORMER_CONFIG)


def build_pipeline(transformer: torch.nn.Module | None = None):
    from diffusers import DDIMScheduler

    from ..pipelines import ClassConditionalPipeline

    transformer = (transformer if transformer is not None else build_transformer()).eval()
    return ClassConditionalPipeline(transformer=transformer, scheduler=DDIMScheduler(**SCHEDULER_CONFIG))


def train(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    work_dir: str | Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Train dit-digits from scratch (or resume from ``work_dir/checkpoint.safetensors``) and save the pipeline.

    Deterministic for a given config on a given machine; resumes exactly after an interruption.
    """
    from diffusers import DDPMScheduler

    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    ckpt_path = work / "checkpoint.safetensors"
    torch.manual_seed(cfg.seed)
    data, labels = digits_dataset(16)
    model = build_transformer().train()
    ema = build_transformer().eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    noise_sched = DDPMScheduler(**SCHEDULER_CONFIG)
    acp = noise_sched.alphas_cumprod
    gen = torch.Generator().manual_seed(cfg.seed)
    start, loss_ema = load_train_state(ckpt_path, asdict(cfg), model, ema, opt, gen)

    for step in range(start, cfg.steps):
        idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)
        x0, y = data[idx], labels[idx].clone()
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.class_dropout
        y[drop] = NUM_CLASSES
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)
        pred = model(xt, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred, noise)
        optimizer_step(model, opt, loss)
        ema_update(ema, model, step, cfg.ema_decay)
        loss_ema = running_loss(loss_ema, loss)
        if progress is not None:
            progress(step + 1, cfg.steps, loss_ema)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_train_state(ckpt_path, step + 1, asdict(cfg), model, ema, opt, gen, loss_ema)

    pipe = build_pipeline(ema)
    out = Path(out_dir)
    pipe.save_pretrained(out)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg) | {"final_loss_ema": loss_ema, "finished": time.strftime("%Y-%m-%d")}, indent=2))
    return out
