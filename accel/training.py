"""The training loop the shipped models share: optimiser step, EMA, running loss, progress, exact-resume
checkpoints at intervals, the final save. A recipe supplies only its models, its batch and its loss
(:class:`TrainLoop`); see ``accel/zoo/<model>/recipe.py``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .errors import AccelError
from .utils import atomic_write_bytes, load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint

if TYPE_CHECKING:
    import numpy as np

ProgressFn = Callable[[int, int, float], None]  # (steps done, total steps, running loss), after every step

logger = logging.getLogger(__name__)


def announce_resume(path: str | Path, step: int, total: int, what: str = "step") -> None:
    """Say that a run resumes from a checkpoint, and from which step, before any other output of the run:
    "resuming from step 1200 of 6000 (work/checkpoint.safetensors)".

    Every resuming loop calls this once; it logs to the ``accel`` logger at INFO, which the CLI prints on stderr.
    """
    logger.info("resuming from %s %d of %d (%s)", what, step, total, path)


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, clip: float = 1.0) -> None:
    """Backward, clip the gradient norm, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float) -> None:
    """Exponential moving average of the weights, with the usual (1 + step) / (10 + step) warm-up."""
    decay = min(max_decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


def running_loss(avg: float, loss: torch.Tensor) -> float:
    return loss.item() if math.isnan(avg) else 0.98 * avg + 0.02 * loss.item()


def save_train_state(path: Path, step: int, config: dict[str, Any], model: torch.nn.Module, ema: torch.nn.Module,
                     opt: torch.optim.Optimizer, gen: torch.Generator, loss_ema: float) -> None:
    """Everything exact resumption needs (weights, EMA, optimiser, data RNG and torch's global RNG), atomically."""
    ot, om = optimizer_to_tensors(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors |= ot | {"rng.gen": gen.get_state(), "rng.torch": torch.get_rng_state()}
    seen: set[int] = set()
    for k, v in tensors.items():  # tied weights (e.g. T5's shared embedding): safetensors wants one owner each
        if v.data_ptr() in seen:
            tensors[k] = v.clone()
        seen.add(v.data_ptr())
    save_checkpoint(path, tensors, {"step": step, "optim": om, "train_config": config, "loss_ema": loss_ema})


def load_train_state(path: Path, config: dict[str, Any], model: torch.nn.Module, ema: torch.nn.Module,
                     opt: torch.optim.Optimizer, gen: torch.Generator, total: int | None = None,
                     extendable: str | None = None,
                     upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> tuple[int, float]:
    """Restore :func:`save_train_state`'s checkpoint if it exists: (next step, running loss); (0, nan) if not.

    ``total`` (default: ``config["steps"]``) is the run's length, for the "resuming from step N of M" line.
    ``extendable`` names a list-valued setting (a schedule of further cycles) that may have grown since the
    checkpoint was written: the run continues if the checkpoint's list is a prefix of the new one and every
    other setting is the same, so a finished run can be trained further. ``upgrade`` rewrites the settings
    stored in the checkpoint into the current form before they are compared (a checkpoint of an older version).
    """
    if not path.exists():
        return 0, float("nan")
    tensors, meta = load_checkpoint(path)
    old = meta.get("train_config")
    if upgrade is not None and isinstance(old, dict):
        old = json.loads(json.dumps(upgrade(old)))
    if not _same_or_extended(old, json.loads(json.dumps(config)), extendable):
        raise AccelError(f"{path} was written with another config; delete it or pass the same settings")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    optimizer_from_tensors(opt, tensors, meta["optim"])
    gen.set_state(tensors["rng.gen"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])  # e.g. diffusers' label embedding drops labels with it
    announce_resume(path, int(meta["step"]), total if total is not None else int(config.get("steps", meta["step"])))
    return int(meta["step"]), float(meta.get("loss_ema", float("nan")))


def _same_or_extended(old: Any, new: dict[str, Any], extendable: str | None) -> bool:
    if old == new or extendable is None or not isinstance(old, dict) or extendable not in old:
        return old == new
    before, after = old[extendable], new.get(extendable)
    rest_same = {k: v for k, v in old.items() if k != extendable} == {k: v for k, v in new.items() if k != extendable}
    return rest_same and isinstance(after, list) and after[: len(before)] == before


def with_ema(build: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model in training mode, its frozen EMA copy holding the same weights); ``build`` is called twice, model first."""
    model = build().train()
    ema = build().eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    return model, ema


@dataclass
class TrainLoop:
    """The tail every training loop of the shipped models shares, written once.

    :meth:`run` resumes from ``checkpoint`` if it exists (the same ``settings`` required), then for each step
    sets the learning rate, asks the recipe for the step's loss, steps the optimiser, updates the EMA and the
    running loss, checkpoints atomically every ``checkpoint_every`` steps and at the end, and reports progress.
    The recipe draws its batches from ``gen`` (checkpointed with torch's global RNG), so a resumed run is
    bit-identical to an uninterrupted one.
    """

    checkpoint: Path
    settings: dict[str, Any]  # recorded in every checkpoint; resuming needs the same (see load_train_state)
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    total: int
    lr_at: Callable[[int], float]
    ema_decay: float
    checkpoint_every: int
    progress: ProgressFn | None = None
    extendable: str | None = None  # see load_train_state
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # see load_train_state

    def run(self, loss_at: Callable[[int], torch.Tensor]) -> float:
        """Train to ``total`` steps; ``loss_at(step)`` draws the step's batch and returns its loss. Returns the
        final running loss."""
        start, loss_ema = load_train_state(self.checkpoint, self.settings, self.model, self.ema, self.opt, self.gen,
                                           total=self.total, extendable=self.extendable, upgrade=self.upgrade)
        for step in range(start, self.total):
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(step)
            loss = loss_at(step)
            optimizer_step(self.model, self.opt, loss)
            ema_update(self.ema, self.model, step, self.ema_decay)
            loss_ema = running_loss(loss_ema, loss)
            if (step + 1) % self.checkpoint_every == 0 or step + 1 == self.total:
                save_train_state(self.checkpoint, step + 1, self.settings, self.model, self.ema, self.opt, self.gen, loss_ema)
            if self.progress is not None:
                self.progress(step + 1, self.total, loss_ema)
        return loss_ema


def numpy_rng(gen: torch.Generator) -> "np.random.Generator":
    """A numpy generator seeded from the torch one, so the torch state alone makes a recipe's data reproducible."""
    import numpy as np

    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))


def train_autoencoder(checkpoint: Path, settings: dict[str, Any], build: Callable[[], torch.nn.Module],
                      data: Callable[["np.random.Generator", int], torch.Tensor], *, steps: int, batch_size: int, lr: float,
                      warmup: int, seed: int, checkpoint_every: int, progress: ProgressFn | None) -> torch.nn.Module:
    """The autoencoder stage of the text-to-image and text-to-video recipes: reconstruct ``data(rng, batch_size)``
    from a sampled latent (MSE + 0.1 L1, a tiny KL), AdamW, warm-up then cosine, EMA 0.995. Returns the EMA copy."""
    import torch.nn.functional as F

    vae, ema = with_ema(build)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        x = data(numpy_rng(gen), batch_size)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        return F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + 1e-6 * post.kl().mean()

    TrainLoop(checkpoint, settings, vae, ema, opt, gen, total=steps, lr_at=lambda step: warmup_cosine_lr(step, lr, warmup, steps),
              ema_decay=0.995, checkpoint_every=checkpoint_every, progress=progress).run(loss_at)
    return ema


def save_trained(out_dir: str | Path, pipe: Any, settings: dict[str, Any], loss_ema: float,
                 half: tuple[str, ...] = ()) -> Path:
    """Write a trained pipeline (``save_pretrained``) and its ``train_config.json`` (settings, final loss, date).

    The components named in ``half`` store their weights as float16 (half the bytes of the wheel); diffusers loads
    them back into the model's float32 parameters, so sampling still computes in float32."""
    out = Path(out_dir)
    pipe.save_pretrained(out)
    for name in half:
        store_half(out / name)
    record = settings | {"final_loss_ema": loss_ema, "finished": time.strftime("%Y-%m-%d")}
    (out / "train_config.json").write_text(json.dumps(record, indent=2))
    return out


def store_half(folder: str | Path) -> None:
    """Rewrite every safetensors file in ``folder`` with its float32 tensors as float16 (atomically)."""
    from safetensors import safe_open
    from safetensors.torch import save

    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        atomic_write_bytes(path, save(tensors, metadata=meta))


def read_train_config(cls: type, record: str | Path | dict[str, Any]) -> Any:
    """A recipe's config dataclass from a ``train_config.json`` (path or dict): its fields, the run's records
    (final loss, date, ...) left out. Field values go through the class's own checks and conversions."""
    import dataclasses

    data = json.loads(Path(record).read_text()) if not isinstance(record, dict) else record
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def warmup_cosine_lr(step: int, lr: float, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay from ``lr`` to ``floor * lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def cycles_lr(step: int, cycles: list[tuple[int, float, int]]) -> float:
    """Learning rate in a schedule of warm-up + cosine cycles, each ``(steps, peak lr, warm-up steps)`` after the
    previous one; past the end, the last cycle's floor."""
    for n, lr, warmup in cycles:
        if step < n:
            return warmup_cosine_lr(step, lr, warmup, n)
        step -= n
    return 0.1 * cycles[-1][1]


def end_distributed() -> None:
    """Wait for every process, then tear down the process group so that workers exit cleanly.

    Without this, a gloo group destroyed at interpreter exit can abort a worker ("terminate called without
    an active exception"). A no-op in a single process.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def unet_tensors(source: str | Path) -> dict[str, torch.Tensor]:
    """A UNet2DModel's weights from a DDPM pipeline folder, a ``unet`` folder or a ``.safetensors`` file."""
    from safetensors.torch import load_file

    p = Path(source)
    for cand in (p, p / "diffusion_pytorch_model.safetensors", p / "unet" / "diffusion_pytorch_model.safetensors"):
        if cand.is_file():
            return load_file(str(cand))
    raise AccelError(f"no U-Net weights at {str(p)!r} (give a pipeline folder, its unet folder or a .safetensors file)")


def copy_matching(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match into ``model``; returns (tensors copied, names left as they were)."""
    own = model.state_dict()
    use = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not use:
        raise AccelError("no tensor of the source matches the model by name and shape: is it the same kind of network?")
    model.load_state_dict(use, strict=False)
    return len(use), sorted(set(own) - set(use))
