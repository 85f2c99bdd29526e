"""End-to-end fine-tuning of IDM (Chen et al., TPAMI 2025, Sec. 3.5): random crops, L1 loss, accelerate.

Works in one process or across several (``torchrun --nproc_per_node 2 ...`` on CPUs, ``accelerate launch``
on GPUs): every process draws its own crops from a generator seeded by (seed, iteration, rank), so resuming needs no RNG state and
is exact; gradients are averaged by accelerate's DistributedDataParallel.  Checkpoints are atomic
safetensors files written by the main process.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from accel.training import announce_resume
from accel.errors import AccelError
from accel.utils import load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint

from .idm import IDM
from .operator import BlockCS, CSConfig, check_ratio
from .reversible import check_mode
from .weights import save_idm


MIXED_PRECISION = ("no", "bf16")


@dataclass
class FinetuneConfig:
    """Settings of ``accel finetune idm``.

    ratio: CS sampling ratio in (0, 1].  T: sampling steps of the reversible chain (IDM's main setting: 3).
    iters: optimiser steps; batch_size: crops per process and step; crop: crop side (multiple of 32).
    lr: Adam learning rate (cosine decay to 10%).  mode: memory mode (plain | checkpoint | reversible).
    cs_seed / scramble: the CS operator (must match at reconstruction time; stored with the weights).
    v_init: initial coupling weight of the U-Net units and sampling steps (IDM: 0.5; smaller stays closer to
    the pretrained network but amplifies rounding in the reversible backward by 1/v per unit).
    mixed_precision: ``"no"`` or ``"bf16"`` (autocast: the U-Net's convolutions and attention run in
    bfloat16, the parameters, the optimiser and the two level-1 image streams stay in full precision; meant
    for GPUs with bf16 tensor cores, all three memory modes).
    """

    ratio: float = 0.1
    T: int = 3
    iters: int = 1000
    batch_size: int = 4
    crop: int = 64
    lr: float = 5e-4
    seed: int = 0
    cs_seed: int = 0
    scramble: bool = True
    mode: str = "reversible"
    checkpoint_every: int = 50
    v_init: float = 0.5
    mixed_precision: str = "no"

    def __post_init__(self) -> None:
        self.ratio = check_ratio(self.ratio)
        check_mode(self.mode)
        if self.mixed_precision not in MIXED_PRECISION:
            raise AccelError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r} "
                             "(fp16 would need loss scaling; bf16 has fp32's range)")
        for name in ("T", "iters", "batch_size", "crop", "checkpoint_every"):
            if int(getattr(self, name)) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if self.crop % 32:
            raise AccelError(f"crop must be a multiple of 32 (the CS block size), got {self.crop}")

    @property
    def cs(self) -> CSConfig:
        return CSConfig(self.ratio, seed=self.cs_seed, scramble=self.scramble)


def _batch(images: list[torch.Tensor], cfg: FinetuneConfig, it: int, rank: int) -> torch.Tensor:
    from accel.photographs import sample_patches

    gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + it) * 1009 + rank)
    return sample_patches(images, cfg.batch_size, cfg.crop, gen)


def _prior(prior: str | torch.nn.Module, alphas_cumprod: torch.Tensor | None) -> tuple[torch.nn.Module, torch.Tensor, str]:
    if isinstance(prior, str):
        from accel.zoo.unet_natural.recipe import load_prior

        return (*load_prior(prior), prior)
    if alphas_cumprod is None:
        raise AccelError("pass alphas_cumprod together with a UNet2DModel prior")
    return prior, alphas_cumprod, type(prior).__name__


def _resume(ckpt_path: Path, meta_cfg: dict, idm: IDM, opt: torch.optim.Optimizer, main: bool = True) -> tuple[int, float]:
    """Restore a fine-tuning checkpoint if there is one: (next iteration, loss EMA); the main process announces it."""
    if not ckpt_path.exists():
        return 0, float("nan")
    tensors, meta = load_checkpoint(ckpt_path)
    if meta.get("finetune_config") != meta_cfg:
        raise AccelError(f"{ckpt_path} was written with other settings ({meta.get('finetune_config')}); delete it or pass the same settings")
    idm.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer_from_tensors(opt, tensors, meta["optim"])
    if main:
        announce_resume(ckpt_path, int(meta["iteration"]), int(meta_cfg["iters"]))
    return int(meta["iteration"]), float(meta["loss_ema"])


def _start_from(idm: IDM, cfg: FinetuneConfig, init: str | Path, transfer: bool, prior_name: str) -> None:
    """Load the IDM weights ``init`` (same ratio, T and CS operator) into ``idm``; with ``transfer``, copy only what
    the two networks share (:func:`accel.invertible.transfer.transfer_idm`)."""
    from .weights import load_idm

    start_from, init_cs, _ = load_idm(init, ratio=cfg.ratio)
    if init_cs != cfg.cs or start_from.steps != cfg.T:
        raise AccelError(f"--init {str(init)!r} has T={start_from.steps} and {init_cs}; this run needs T={cfg.T} and {cfg.cs}")
    if transfer:
        from .transfer import transfer_idm

        transfer_idm(start_from, idm)
        return
    try:
        idm.load_state_dict(start_from.state_dict())
    except RuntimeError:
        raise AccelError(f"--init {str(init)!r} has another U-Net than the prior {prior_name!r}; "
                         "pass --init-transfer to copy what they share") from None


def finetune(out_path: str | Path, config: FinetuneConfig | None = None, prior: str | torch.nn.Module = "unet-natural",
             alphas_cumprod: torch.Tensor | None = None, work_dir: str | Path | None = None,
             progress: Callable[[int, int, float], None] | None = None, images: list[torch.Tensor] | None = None,
             init: str | Path | None = None, init_transfer: bool = False) -> Path:
    """Fine-tune IDM from a pretrained prior and write the weights (see :mod:`accel.invertible.weights`).

    ``prior``: a shipped name / pipeline folder, or a ``UNet2DModel`` (then ``alphas_cumprod`` is needed).
    ``images``: training images ((H, W) tensors in [0, 1]); default: unet-natural's training photographs.
    ``progress(iteration, total, loss_ema)`` is called on the main process after every step.
    ``init``: start from these IDM weights (same ratio, T and CS operator) instead of the prior: continue a
    finished fine-tuning with more iterations or another learning rate (the optimiser starts afresh).
    ``init_transfer``: ``init``'s U-Net may differ from the prior's (e.g. it had attention blocks): copy what
    the two share (:func:`accel.invertible.transfer.transfer_idm`), leave the rest as initialised.
    """
    from accelerate import Accelerator

    cfg = config or FinetuneConfig()
    acc = Accelerator(cpu=not torch.cuda.is_available())
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir is not None else out_path.parent / f".{out_path.stem}.train"
    ckpt_path = work / "checkpoint.safetensors"
    unet, alphas_cumprod, prior_name = _prior(prior, alphas_cumprod)
    if images is None:
        from accel.photographs import training_images

        images = training_images(cfg.crop)
    images = [im for im in images if min(im.shape[-2:]) >= cfg.crop]
    if not images:
        raise AccelError(f"no training image is at least {cfg.crop}x{cfg.crop}")
    torch.manual_seed(cfg.seed)
    idm = IDM(unet, alphas_cumprod, steps=cfg.T, mode=cfg.mode, v_init=cfg.v_init).train()
    if init is not None:
        _start_from(idm, cfg, init, init_transfer, prior_name)
    opt = torch.optim.Adam([p for p in idm.parameters() if p.requires_grad], lr=cfg.lr)
    extra = {"prior": prior_name, "world_size": acc.num_processes} | ({"init": str(init)} if init is not None else {})
    extra |= {"init_transfer": True} if init_transfer else {}
    settings = asdict(cfg)
    if cfg.mixed_precision == "no":  # recorded only when used, so checkpoints from before the option still resume
        del settings["mixed_precision"]
    meta_cfg = json.loads(json.dumps(settings | extra))
    start, loss_ema = _resume(ckpt_path, meta_cfg, idm, opt, acc.is_main_process)
    model, opt = acc.prepare(idm, opt)
    op = BlockCS(cfg.cs, cfg.crop, cfg.crop, device=acc.device)
    for it in range(start, cfg.iters):
        x = _batch(images, cfg, it, acc.process_index).to(acc.device)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * it / cfg.iters)))
        y = op.A(x)  # measured in full precision (autocast would round the measurements to bf16)
        # autocast here rather than accelerate's mixed_precision, which is fixed once per process
        with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16"):
            loss = (model(y, op) - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        loss_v = acc.reduce(loss.detach(), reduction="mean").item()
        loss_ema = loss_v if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss_v
        if progress is not None and acc.is_main_process:
            progress(it + 1, cfg.iters, loss_ema)
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iters:
            if acc.is_main_process:
                ot, om = optimizer_to_tensors(opt.optimizer if hasattr(opt, "optimizer") else opt)
                tensors = {f"model.{k}": v for k, v in acc.unwrap_model(model).state_dict().items()} | ot
                save_checkpoint(ckpt_path, tensors, {"iteration": it + 1, "optim": om, "finetune_config": meta_cfg, "loss_ema": loss_ema})
            acc.wait_for_everyone()
    if acc.is_main_process:
        save_idm(out_path, acc.unwrap_model(model), cfg.cs, {"finetune_config": meta_cfg, "final_loss_ema": loss_ema})
    acc.wait_for_everyone()
    if acc.num_processes > 1:
        from accel.training import end_distributed

        end_distributed()
    return out_path
