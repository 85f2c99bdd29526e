"""``dit-digits``: a 12-block class-conditional DiT trained on scikit-learn's digits (16x16, 1 channel)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import AccelError
from ...training import ProgressFn, TrainLoop, save_trained, warmup_cosine_lr, with_ema
from ..digits import NUM_CLASSES, digits_dataset

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

    from ...pipelines import ClassConditionalPipeline

    transformer = (transformer if transformer is not None else build_transformer()).eval()
    return ClassConditionalPipeline(transformer=transformer, scheduler=DDIMScheduler(**SCHEDULER_CONFIG))


def train(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    work_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Train dit-digits from scratch (or resume from ``work_dir/checkpoint.safetensors``) and save the pipeline.

    Deterministic for a given config on a given machine; resumes exactly after an interruption.
    ``progress(step, total, loss_ema)`` is called after every step.
    """
    from diffusers import DDPMScheduler

    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    torch.manual_seed(cfg.seed)
    data, labels = digits_dataset(16)
    model, ema = with_ema(build_transformer)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    acp = DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss_at(step: int) -> torch.Tensor:
        idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)
        x0, y = data[idx], labels[idx].clone()
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.class_dropout
        y[drop] = NUM_CLASSES
        t = torch.randint(0, len(acp), (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(model(xt, timestep=t, class_labels=y).sample, noise)

    loop = TrainLoop(work / "checkpoint.safetensors", asdict(cfg), model, ema, opt, gen, total=cfg.steps,
                     lr_at=lambda step: warmup_cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps), ema_decay=cfg.ema_decay,
                     checkpoint_every=cfg.checkpoint_every, progress=progress)
    loss_ema = loop.run(loss_at)
    return save_trained(out_dir, build_pipeline(ema), asdict(cfg), loss_ema)
