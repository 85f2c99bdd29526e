"""``accel bench adjoint --cache``: gradients through CG-Taylor against the uncached discrete adjoint.

On top of the sweep of ``bench.py`` (one subprocess per point: exactness of the cached discrete adjoint
against autograd through the same cached forward, peak memory, cosine with the uncached gradient):

- speed: the time per gradient of the uncached discrete adjoint and of the cached one, their runs interleaved
  in one process (discrete, cached, cached, discrete, ...), median of ``rounds`` each, per N;
- fidelity: the cosine between the cached and the uncached gradient per threshold (noise, condition, weights).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import adjoint as _adjoint
from .adjoint import BenchConfig, _compare, _load, gradient_fn
from .adjoint_report import TARGETS


def time_interleaved(pipe: Any, cfg: BenchConfig, steps: int, rounds: int) -> dict[str, Any]:
    """Seconds per gradient (forward + backward) of ``discrete`` and ``cached`` at ``steps``, interleaved; the
    row records the cached setting (``adjoint.cache_config``, looked up through the module as gradient_fn does)."""
    fns = {"discrete": gradient_fn(pipe, cfg, "discrete"), "cached": gradient_fn(pipe, cfg, "cached")}
    for fn in fns.values():
        fn(1)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    forecast = 0.0
    for r in range(rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            _, fraction = fns[name](steps)
            times[name].append(time.perf_counter() - t0)
            forecast = fraction if name == "cached" else forecast
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"steps": steps, "rounds": rounds, "discrete_s": med["discrete"], "cached_s": med["cached"],
            "speedup": med["discrete"] / med["cached"], "forecast_fraction": forecast,
            "bound": 1 / (1 - forecast) if forecast < 1 else None, "cache": _adjoint.cache_config(pipe, cfg, steps).to_dict(), "times": times}


def fidelity(pipe: Any, cfg: BenchConfig, steps: int, thresholds: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per threshold: the cached gradient's cosine (and relative difference) with the uncached one at ``steps``."""
    ref, _ = gradient_fn(pipe, cfg, "discrete")(steps)
    rows = []
    for th in thresholds:
        grads, fraction = gradient_fn(pipe, dataclasses.replace(cfg, cache_threshold=th), "cached")(steps)
        row: dict[str, Any] = {"threshold": th, "steps": steps, "forecast_fraction": fraction}
        for target, g, r in zip(TARGETS, grads, ref):
            if g.numel():
                rel, cos = _compare(g.detach().double(), r.detach().double())
                row[f"cos_{target}"], row[f"rel_{target}"] = cos, rel
        rows.append(row)
    return rows


def run_cache_extras(cfg: BenchConfig, rounds: int, thresholds: tuple[float, ...],
                     progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Interleaved timing at each N of ``cfg.steps`` and the fidelity sweep at the largest N (in this process)."""
    pipe = _load(cfg)
    total = len(cfg.steps) + len(thresholds)
    timing = []
    for k, n in enumerate(cfg.steps):
        if progress is not None:
            progress(k, total, f"timing N={n}")
        timing.append(time_interleaved(pipe, cfg, n, rounds))
    if progress is not None:
        progress(len(cfg.steps), total, "fidelity")
    fid = fidelity(pipe, cfg, max(cfg.steps), thresholds) if thresholds else []
    if progress is not None:
        progress(total, total, "done")
    return {"model": cfg.model, "cache": _adjoint.cache_config(pipe, cfg, max(cfg.steps)).to_dict(), "threads": torch.get_num_threads(),
            "device": cfg.device, "dtype": cfg.dtype, "batch": cfg.batch, "guidance_scale": cfg.guidance_scale,
            "timing": timing, "fidelity": fid}


def _brief(setting: dict[str, Any]) -> str:
    """A setting's fields that differ from CGTaylorConfig's defaults (the threshold always)."""
    from accel.caching import CGTaylorConfig

    base = CGTaylorConfig().to_dict()
    return ", ".join(f"{k}={v}" for k, v in setting.items() if k == "threshold" or base.get(k) != v)


def _row(values: list[Any]) -> str:
    return "| " + " | ".join(str(v) for v in values) + " |"


def cache_markdown(records: list[dict[str, Any]], extras: dict[str, Any] | None) -> str:
    """Markdown: the cached rows of the sweep (exactness, fidelity, memory against ``discrete``), the
    interleaved timing and the fidelity sweep."""
    by = {(r["method"], r["steps"], r["target"]): r for r in records}
    steps = sorted({r["steps"] for r in records if r["method"] == "cached"})
    out = []
    if steps:
        out += ["Through the cache (reference for the error: autograd through the same cached forward; cosine: with the "
                "uncached gradient; memory: against the uncached discrete adjoint):", "",
                "| N | forecast | rel. error noise / cond / weights | cos vs uncached noise / cond / weights | peak MB cached | peak MB discrete | ratio |",
                "|---|---|---|---|---|---|---|"]
        for n in steps:
            rows = [by.get(("cached", n, t)) for t in TARGETS]
            rows = [r for r in rows if r is not None]
            disc = by.get(("discrete", n, "noise"))
            mb, dmb = rows[0]["peak_mb"], disc["peak_mb"] if disc else None
            ratio = f"{mb / dmb:.2f}x" if mb is not None and dmb else "-"
            out.append(_row([n, f"{rows[0]['forecast_fraction']:.0%}", " / ".join(f"{r['rel_error']:.1e}" for r in rows),
                             " / ".join(f"{r['cos_uncached']:.4f}" for r in rows),
                             "-" if mb is None else f"{mb:.1f}", "-" if dmb is None else f"{dmb:.1f}", ratio]))
    if extras:
        per_n = any(t.get("cache", extras["cache"]) != extras["cache"] for t in extras["timing"])
        setting = "the setting of each row" if per_n else f"setting {extras['cache']}"
        out += ["", f"Time per gradient, interleaved ({extras['threads']} thread(s); {setting}; bound: 1 / (1 - forecast), "
                "the speedup if forecast steps cost nothing):", "",
                "| N | discrete s | cached s | speedup | per round (min-max) | forecast | bound | rounds |" + (" setting |" if per_n else ""),
                "|---|---|---|---|---|---|---|---|" + ("---|" if per_n else "")]
        for t in extras["timing"]:
            f = t["forecast_fraction"]
            ratios = [d / c for d, c in zip(t["times"]["discrete"], t["times"]["cached"])]  # the two runs of one round
            cells = [t["steps"], f"{t['discrete_s']:.3f}", f"{t['cached_s']:.3f}", f"{t['speedup']:.2f}x",
                     f"{min(ratios):.2f}-{max(ratios):.2f}x", f"{f:.0%}", f"{1 / (1 - f):.2f}x" if f < 1 else "-", t["rounds"]]
            out.append(_row(cells + ([_brief(t.get("cache", extras["cache"]))] if per_n else [])))
        if extras["fidelity"]:
            out += ["", "Fidelity: cosine of the cached gradient with the uncached one:", "",
                    "| threshold | N | forecast | cos noise | cos cond | cos weights |", "|---|---|---|---|---|---|"]
            out += [_row([f["threshold"], f["steps"], f"{f['forecast_fraction']:.0%}",
                          *[f"{f[f'cos_{t}']:.4f}" if f"cos_{t}" in f else "-" for t in TARGETS]]) for f in extras["fidelity"]]
    return "\n".join(out) + "\n"


def speed(cfg: BenchConfig, rounds: int, out: Path | None = None, command: str = "") -> dict[str, Any]:
    """``accel bench adjoint-speed``: :func:`time_interleaved` at every N of ``cfg.steps`` without the isolated
    sweep, at the model's shipped setting or ``cfg.cache_preset``; with ``out``, writes ``speed.json`` and
    ``speed.md`` there. Returns the record (``timing`` per N, the setting at the largest N)."""
    pipe = _load(cfg)
    setting = _adjoint.cache_config(pipe, cfg, max(cfg.steps))
    timing = [time_interleaved(pipe, cfg, n, rounds) for n in cfg.steps]
    extras = {"model": cfg.model, "preset": cfg.cache_preset or "shipped", "cache": setting.to_dict(),
              "threads": torch.get_num_threads(), "device": cfg.device, "dtype": cfg.dtype, "batch": cfg.batch,
              "guidance_scale": cfg.guidance_scale, "timing": timing, "fidelity": [], "command": command}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(extras, indent=2))
        (out / "speed.md").write_text(f"Command: `{command}` (preset {extras['preset']})\n\n" + cache_markdown([], extras))
    return extras
