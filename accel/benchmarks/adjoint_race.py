"""``accel bench adjoint-race``: one ``accel finetune adjoint`` task run uncached and through the CG-Taylor-cached
sampler, from the same seed (same initialisation, same noise at every iteration).

The two runs are interleaved in chunks of ``chunk`` iterations within this one process (uncached chunk,
cached chunk, ...; each chunk resumes its run from its checkpoint, and the run's clock resumes with it), so
background load on a shared core hits both alike. Each run's clock counts training only (sampling with
gradients, adjoint, update); loading and the before/after samples are outside it.

Questions answered (``race.json``, ``race.md``, ``race.png``):

- does the cached run reach the uncached run's final loss (within 5%) in at most 60% of the uncached run's
  wall time? The training loss of one iteration is noisy (a new batch of noise each iteration, the same in
  both runs), so "final loss" is the mean of the last ``window`` iterations and the cached run's loss is
  its running mean over the same window; the single-iteration reading is reported too;
- is its result as good, evaluated with the uncached sampler? The task's loss on the same evaluation noise
  (``eval_count`` samples, uncached sampler) after training, for both runs (and before training).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


def _running_mean(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i + 1 - window): i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(values))]


def _first_reach(losses: list[float], seconds: list[float], target: float) -> dict[str, Any] | None:
    for i, (loss, s) in enumerate(zip(losses, seconds)):
        if loss <= target:
            return {"iteration": i + 1, "seconds": s, "loss": loss}
    return None


@dataclass
class RaceConfig:
    """Settings of ``accel bench adjoint-race``.

    Attributes:
        task, model, iters, batch, steps, guidance_scale, seed, eval_count: the ``accel finetune adjoint`` run.
        cache: the cached run's setting as ``accel finetune --cache`` takes it: ``"shipped"`` (the model's
            ``finetune`` entry, else its quality preset), ``"finetune"``, a preset name, or a threshold.
        chunk: iterations per interleaved chunk. window: iterations averaged into the final loss.
        work: folder for the two runs (checkpoints, summaries); emptied first.
    """

    task: str = "effect"
    model: str = "dit-digits"
    iters: int = 40
    batch: int = 4
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0
    eval_count: int = 16
    cache: str = "shipped"
    chunk: int = 5
    window: int = 5
    work: str = "/tmp/adjoint-cache-race"


def _interleaved(cfg: RaceConfig, runs: dict[str, dict[str, Any]], log: Callable[[str], None] | None) -> dict[str, dict[str, Any]]:
    """Both runs, ``cfg.chunk`` iterations at a time in turn, each resuming from its checkpoint: their summaries."""
    from accel.adjoint.finetune import FinetuneConfig, run_finetune

    out = Path(cfg.work)
    for name in runs:
        shutil.rmtree(out / name, ignore_errors=True)  # a race starts from scratch
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    while len(results) < len(runs):
        for name, kw in runs.items():
            if name in results:
                continue
            summary = run_finetune(FinetuneConfig(out_dir=str(out / name), stop_after=cfg.chunk, **kw))
            if log is not None:
                log(f"[{time.perf_counter() - t0:7.1f}s] {name}: {summary['iterations']}/{cfg.iters} iterations, "
                    f"loss {summary['losses'][-1]:.4f}, clock {summary['seconds'][-1]:.1f}s")
            if summary["finished"]:
                results[name] = summary
    return results


def race(cfg: RaceConfig, command: str = "", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the race and read it: the record ``race.json`` holds (runs, verdict, the cached setting)."""
    from accel.adjoint.finetune import FinetuneConfig

    common = dict(task=cfg.task, model=cfg.model, iters=cfg.iters, batch=cfg.batch, steps=cfg.steps, seed=cfg.seed,
                  eval_count=cfg.eval_count, checkpoint_every=cfg.chunk, guidance_scale=cfg.guidance_scale)
    runs = {"uncached": dict(common, cache=None), "cached": dict(common, cache=cfg.cache)}  # as `accel finetune --cache` takes it
    results = _interleaved(cfg, runs, log)
    un, ca = results["uncached"], results["cached"]
    w = cfg.window
    target = sum(un["losses"][-w:]) / w
    smooth = {k: _running_mean(r["losses"], w) for k, r in results.items()}
    reach = _first_reach(smooth["cached"], ca["seconds"], 1.05 * target)
    reach_raw = _first_reach(ca["losses"], ca["seconds"], 1.05 * un["losses"][-1])
    total = un["seconds"][-1]
    ev = {k: {"before": r["before_after_loss"][0], "after": r["before_after_loss"][1]} for k, r in results.items()}
    fraction = reach["seconds"] / total if reach else None
    fraction_raw = reach_raw["seconds"] / total if reach_raw else None
    verdict = {
        "target_loss": target, "target_window": w, "within": 0.05,
        "cached_reaches_at": reach, "fraction_of_uncached_time": fraction,
        "reaches_in_60pct": fraction is not None and fraction <= 0.6,
        "single_iteration": {"target_loss": un["losses"][-1], "cached_reaches_at": reach_raw, "fraction_of_uncached_time": fraction_raw},
        "time_ratio_whole_runs": ca["seconds"][-1] / total,
        "eval_uncached_sampler": ev,
        "eval_as_good": ev["cached"]["after"] <= 1.05 * ev["uncached"]["after"],
    }
    cfg_cached = FinetuneConfig(out_dir=str(Path(cfg.work) / "cached"), **runs["cached"])
    from accel.adjoint._tasks import _cache_config
    from accel.sampling import load_pipeline

    setting = _cache_config(load_pipeline(cfg.model), cfg_cached.cache, cfg_cached.steps).to_dict()
    return {
        "command": command, "threads": torch.get_num_threads(), "interleaved_chunk": cfg.chunk,
        "config": common, "cache_arg": cfg.cache, "cache_setting": setting,
        "runs": {k: {"losses": r["losses"], "seconds": r["seconds"], "running_mean": smooth[k]} for k, r in results.items()},
        "verdict": verdict,
    }


def plot(rec: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = rec["verdict"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, color in (("uncached", "tab:blue"), ("cached", "tab:orange")):
        r = rec["runs"][name]
        ax.plot(r["seconds"], r["losses"], ".", color=color, alpha=0.35)
        ax.plot(r["seconds"], r["running_mean"], "-", color=color, label=f"{name} (running mean of {v['target_window']})")
    ax.axhline(1.05 * v["target_loss"], color="gray", ls="--", lw=1, label="uncached final loss + 5%")
    ax.axvline(0.6 * rec["runs"]["uncached"]["seconds"][-1], color="gray", ls=":", lw=1, label="60% of uncached time")
    c = rec["config"]
    ax.set(xlabel="training wall-clock seconds (one core)", ylabel="training loss",
           title=f"finetune adjoint {c['task']}, {c['model']}, N={c['steps']}, batch {c['batch']}")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rec: dict[str, Any]) -> str:
    v, c, runs = rec["verdict"], rec["config"], rec["runs"]
    reach = v["cached_reaches_at"]
    raw = v["single_iteration"]
    ev = v["eval_uncached_sampler"]
    fmt = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
    lines = [
        f"Fine-tuning race: `accel finetune adjoint {c['task']}` on {c['model']}, N={c['steps']}, batch {c['batch']}, "
        f"{c['iters']} iterations, seed {c['seed']}; cached setting {rec['cache_setting']}; the two runs interleaved in "
        f"chunks of {rec['interleaved_chunk']} iterations in one process ({rec['threads']} thread).", "",
        f"Command: `{rec['command']}`", "",
        "| run | training seconds | final loss (mean of last %d) | loss after, uncached sampler (before: %.4f) |" % (v["target_window"], ev["uncached"]["before"]),
        "|---|---|---|---|",
    ]
    for name in ("uncached", "cached"):
        r = runs[name]
        lines.append(f"| {name} | {r['seconds'][-1]:.1f} | {sum(r['losses'][-v['target_window']:]) / v['target_window']:.4f} | {ev[name]['after']:.4f} |")
    lines += [
        "",
        f"- Cached run reaches the uncached final loss + 5% ({1.05 * v['target_loss']:.4f}, running mean): "
        + (f"at iteration {reach['iteration']}, {reach['seconds']:.1f} s = **{fmt(v['fraction_of_uncached_time'])}** of the uncached run's time"
           if reach else "**never**")
        + f" (target <= 60%: {'met' if v['reaches_in_60pct'] else 'missed'}).",
        f"- Single-iteration reading (target {1.05 * raw['target_loss']:.4f}): "
        + (f"iteration {raw['cached_reaches_at']['iteration']}, {fmt(raw['fraction_of_uncached_time'])} of the uncached time." if raw["cached_reaches_at"] else "never reached."),
        f"- Whole runs: the cached run took {v['time_ratio_whole_runs']:.1%} of the uncached run's training time.",
        f"- Evaluated with the uncached sampler (same evaluation noise): {ev['cached']['after']:.4f} cached vs "
        f"{ev['uncached']['after']:.4f} uncached: {'as good (within 5%)' if v['eval_as_good'] else 'worse'}.",
    ]
    return "\n".join(lines) + "\n"


def run(cfg: RaceConfig, out: Path, command: str, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """:func:`race`, then ``race.json``, ``race.md``, ``race.png`` and the samples of the same evaluation noise with
    the uncached sampler (``before.png``, ``after_uncached.png``, ``after_cached.png``) into ``out``."""
    rec = race(cfg, command, log)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("uncached", "cached"):
        shutil.copy(Path(cfg.work) / name / "after.png", out / f"after_{name}.png")
    shutil.copy(Path(cfg.work) / "uncached" / "before.png", out / "before.png")
    (out / "race.json").write_text(json.dumps(rec, indent=2))
    (out / "race.md").write_text(markdown(rec))
    plot(rec, out / "race.png")
    return rec
