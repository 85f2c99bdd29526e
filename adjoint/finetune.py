"""``accel finetune adjoint``: the three AdjointDPM tasks (Pan et al. 2023, Sec. 5) on a class-conditional DiT.

* ``effect``: optimise a class embedding (B, L, D) so that samples show a visual effect (bold strokes) given
  by a differentiable statistic of one reference image.
* ``style``: fine-tune LoRA adapters (peft) with a Gram-matrix style loss from one reference image (stripes).
* ``attack``: optimise the initial noise inside an L-infinity ball so that a small differentiable digit
  classifier misreads the sample (projected signed-gradient ascent); reports the attack success rate.

The loop runs on accelerate (each process takes its own share of the batch; gradients are averaged across
processes), checkpoints atomically every few iterations (safetensors, one file per process) and resumes
exactly: the noise of iteration k depends only on (seed, k, process), and optimizer state is restored.

With ``cache`` set, every training gradient is taken through the CG-Taylor-cached sampler (the exact adjoint
of what ran: ``sample_with_grad(..., options={"cache": ...})``); before/after samples and metrics use the uncached sampler.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from accel.training import announce_resume
from accel.errors import AccelError
from accel.utils import load_checkpoint, make_grid, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint, to_uint8

from ._tasks import FINETUNE, TASKS, Task, build_task


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run (the batch is per process).

    ``lr`` defaults per task: effect 0.05 (Adam on the embedding), style 2e-3 (Adam on LoRA), attack 0.05
    (signed-gradient step on the noise, radius ``eps``). ``stop_after`` ends this run early after that many
    iterations (to test interruption and resume). ``cache``: None (uncached gradients), ``"shipped"`` (the
    model's ``finetune`` entry of ``accel_cache.json``, else its ``quality`` preset, else its setting),
    ``"finetune"`` or a preset by name (``quality``, ``balanced``, ``fast``), or a threshold (the shipped
    setting's other fields kept); needs ``method`` discrete or autograd.
    """

    task: str
    out_dir: str
    model: str = "dit-digits"
    iters: int = 40
    batch: int = 4
    steps: int = 10
    method: str = "discrete"
    lr: float | None = None
    guidance_scale: float = 4.0
    label: int = 3
    eps: float = 1.0
    lora_rank: int = 4
    checkpoint_every: int = 5
    eval_count: int = 8
    seed: int = 0
    stop_after: int | None = None
    cache: float | str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise AccelError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        for name in ("iters", "batch", "steps", "checkpoint_every", "eval_count", "lora_rank"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.label <= 9:
            raise AccelError(f"label must be a digit 0-9, got {self.label}")
        if self.eps <= 0:
            raise AccelError(f"eps (the attack radius) must be positive, got {self.eps}")
        self.cache = _cache_setting(self.cache)
        if self.cache is not None and self.method not in ("discrete", "autograd"):
            raise AccelError(f"cache needs method discrete or autograd (the gradients of what the cached sampler ran), got {self.method!r}")
        if self.lr is None:
            self.lr = {"effect": 0.05, "style": 2e-3, "attack": 0.05}[self.task]

    def resume_key(self) -> dict[str, Any]:
        """Settings that must match for a checkpoint to be resumed (everything but run-length controls)."""
        return {k: v for k, v in asdict(self).items() if k not in ("iters", "stop_after", "out_dir")}


def _cache_setting(cache: float | str | None) -> float | str | None:
    """None, ``"shipped"``, a preset name or a threshold >= 0 (a number, or its text from the command line)."""
    from accel.caching import PRESETS

    if cache is None or cache in ("shipped", FINETUNE) or cache in PRESETS:
        return cache
    try:
        value = float(cache)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise AccelError(f"cache must be 'shipped' (the model's finetune entry, else its quality preset), "
                         f"'{FINETUNE}', a preset ({', '.join(PRESETS)}) or a threshold >= 0, got {cache!r}")
    return value


def _iteration_noise(cfg: FinetuneConfig, it: int, rank: int, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it * 101 + rank)
    return torch.randn(shape, generator=gen)


def _save(path: Path, task: Task, opt: torch.optim.Optimizer | None, it: int, losses: list[float], seconds: list[float],
          cfg: FinetuneConfig) -> None:
    tensors = {f"state.{k}": v for k, v in task.state().items()}
    meta: dict[str, Any] = {"iteration": it, "losses": losses, "seconds": seconds, "config": cfg.resume_key()}
    if opt is not None:
        ot, om = optimizer_to_tensors(opt)
        tensors |= ot
        meta["optim"] = om
    save_checkpoint(path, tensors, meta)


def _load(path: Path, task: Task, opt: torch.optim.Optimizer | None, cfg: FinetuneConfig) -> tuple[int, list[float], list[float]]:
    tensors, meta = load_checkpoint(path)
    if meta.get("config") != cfg.resume_key():
        raise AccelError(f"{path} was written with other settings; delete {path.parent} or pass the same settings")
    task.load_state({k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
    if opt is not None:
        optimizer_from_tensors(opt, tensors, meta["optim"])
    return int(meta["iteration"]), list(meta["losses"]), list(meta.get("seconds", []))


def _samples(task: Task, noise: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return task.generate(noise, grad=False)


def run_finetune(cfg: FinetuneConfig, progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run (or resume) one task; the main process writes before.png, after.png, loss.png and summary.json."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = acc.process_index, acc.num_processes
    out = Path(cfg.out_dir)
    task = build_task(cfg, acc.device, rank)
    eval_noise = _iteration_noise(cfg, -1, 0, (cfg.eval_count, *task.sample_shape)).to(acc.device)
    before = _samples(task, task.eval_noise(eval_noise))
    opt = torch.optim.Adam(task.trainables(), lr=cfg.lr) if task.uses_optimizer else None
    ckpt = out / "checkpoints" / f"rank{rank}.safetensors"
    start, losses, seconds = _load(ckpt, task, opt, cfg) if ckpt.exists() else (0, [], [])
    if ckpt.exists() and acc.is_main_process:
        announce_resume(ckpt, start, cfg.iters)
    end = cfg.iters if cfg.stop_after is None else min(cfg.iters, start + cfg.stop_after)
    clock = time.perf_counter() - (seconds[-1] if seconds else 0.0)
    for it in range(start, end):
        noise = _iteration_noise(cfg, it, rank, (cfg.batch, *task.sample_shape)).to(acc.device)
        loss = task.loss(task.generate(task.train_noise(noise), grad=True))
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in task.trainables():
            if p.grad is not None and task.average_grads and world > 1:
                p.grad = acc.reduce(p.grad, reduction="mean")
        task.update(opt, cfg.lr)
        losses.append(float(acc.reduce(loss.detach(), reduction="mean")))
        seconds.append(time.perf_counter() - clock)  # training time so far (sampling, gradient, update), resumed runs included
        if progress is not None and acc.is_main_process:
            progress(it + 1, cfg.iters, losses[-1])
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == end:
            _save(ckpt, task, opt, it + 1, losses, seconds, cfg)
            acc.wait_for_everyone()
    done = len(losses) >= cfg.iters
    summary = {"task": cfg.task, "iterations": len(losses), "finished": done, "processes": world, "config": asdict(cfg), "losses": losses,
               "seconds": seconds}
    if done:
        summary |= _finish(cfg, task, acc, eval_noise, before, losses, seconds, out)
    return summary


def _finish(cfg: FinetuneConfig, task: Task, acc: Any, eval_noise: torch.Tensor, before: torch.Tensor, losses: list[float],
            seconds: list[float], out: Path) -> dict[str, Any]:
    after = _samples(task, task.eval_noise(eval_noise))
    metrics = task.metrics(acc)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        ncols = min(8, before.shape[0])
        make_grid(to_uint8(before), ncols=ncols, scale=4).save(out / "before.png")
        make_grid(to_uint8(after), ncols=ncols, scale=4).save(out / "after.png")
        if task.reference is not None:
            make_grid(to_uint8(task.reference[:1].cpu()), ncols=1, scale=4).save(out / "reference.png")
        _plot_losses(losses, out / "loss.png", cfg.task)
        summary = {"task": cfg.task, "iterations": len(losses), "loss_first": losses[0], "loss_last": losses[-1]} | metrics
        (out / "summary.json").write_text(json.dumps(summary | {"losses": losses, "seconds": seconds, "config": asdict(cfg)}, indent=2))
    result = metrics | {"before_after_loss": [task.loss(before).item(), task.loss(after).item()]}
    if acc.num_processes > 1:
        from accel.training import end_distributed

        end_distributed()
    return result


def _plot_losses(losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, marker=".")
    ax.set(xlabel="iteration", ylabel="loss", title=f"accel finetune adjoint: {title}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["FinetuneConfig", "TASKS", "run_finetune"]
