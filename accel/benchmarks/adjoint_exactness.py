"""``accel bench adjoint-exactness``: exactness of gradients through the CG-Taylor-cached sampler on a shipped
model, in float64.

- the cached discrete adjoint against autograd through the same cached forward: relative error for the
  initial noise, the differentiable condition and the denoiser's weights;
- a fourth-order central finite difference of the loss along one random direction per target, against the
  adjoint's directional derivative, with the gate's decisions checked unchanged at every perturbed point.

The model, inputs and loss are those of ``accel bench adjoint`` (:mod:`accel.benchmarks.adjoint`). The tiny-model
versions of both checks are tests (tests/adjoint/test_adjoint_cache.py); this runs them on shipped weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch


def check(model: str, steps: int, guidance: float, eps: float, seed: int = 0, batch: int = 2,
          threshold: float | None = None) -> dict[str, Any]:
    """One model's record: the cached discrete adjoint against autograd through the same cached forward (relative
    error per target) and against a 4th-order central finite difference along one random direction per target
    (step ``eps``; the gate's decisions checked unchanged at every perturbed point)."""
    from accel.adjoint import sample_with_grad
    from accel.caching.blocks import find_denoiser

    from .adjoint import BenchConfig, _inputs, _load, cache_config

    cfg = BenchConfig(model=model, steps=(steps,), methods=("cached",), batch=batch, guidance_scale=guidance,
                      dtype="float64", seed=seed, cache_threshold=threshold)
    pipe = _load(cfg)
    cache = cache_config(pipe, cfg, steps)
    noise, emb, target, extra = _inputs(pipe, cfg)
    noise, target = noise.double(), target.double()
    emb = emb.double() if emb is not None else None
    extra = tuple(t.double() for t in extra)
    params = [p for p in find_denoiser(pipe).parameters() if p.requires_grad]

    def run(x: torch.Tensor, c: torch.Tensor | None, method: str = "discrete") -> tuple[torch.Tensor, list[bool]]:
        seen: list[bool] = []
        out = sample_with_grad(pipe, x, (c, *extra) if extra else c, steps=steps, guidance_scale=guidance, method=method,
                               options={"cache": cache}, callback=lambda info: seen.append(bool(info.get("computed", True))))
        return ((out - target) ** 2).mean(), seen

    def grads(method: str) -> tuple[dict[str, torch.Tensor], list[bool], float]:
        for p in params:
            p.grad = None
        x = noise.clone().requires_grad_()
        c = emb.clone().requires_grad_() if emb is not None else None
        t0 = time.perf_counter()
        loss, seen = run(x, c, method)
        loss.backward()
        g = {"noise": x.grad, "weights": torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])}
        if c is not None:
            g["cond"] = c.grad
        return g, seen, time.perf_counter() - t0

    disc, decisions, t_disc = grads("discrete")
    ref, decisions_ref, t_ref = grads("autograd")
    rec: dict[str, Any] = {"model": model, "steps": steps, "dtype": "float64", "batch": batch, "guidance_scale": guidance,
                           "cache": cache.to_dict(), "decisions": decisions, "forecast_fraction": 1 - sum(decisions) / len(decisions),
                           "same_decisions_autograd": decisions == decisions_ref, "seconds": {"discrete": t_disc, "autograd": t_ref},
                           "rel_error": {k: float((disc[k] - ref[k]).norm() / ref[k].norm()) for k in disc},
                           "finite_difference": {}}
    gen = torch.Generator().manual_seed(seed + 11)
    for name, g in disc.items():
        rec["finite_difference"][name] = _finite_difference(name, g, run, noise, emb, params, decisions, eps, gen)
    return rec


def _finite_difference(name: str, g: torch.Tensor, run: Callable, noise: torch.Tensor, emb: torch.Tensor | None,
                       params: list[torch.Tensor], decisions: list[bool], eps: float, gen: torch.Generator) -> dict[str, Any]:
    """4th-order central difference of the loss along one random direction of target ``name`` against the
    adjoint's directional derivative ``g . v``; whether the gate decided as in the unperturbed run at every point."""
    if name == "weights":  # each weight moves in proportion to its own size
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * p.detach().abs().mean().clamp_min(1e-3) for p in params]
        directional = float(torch.dot(g, torch.cat([d.reshape(-1) for d in v])))
    else:
        base = noise if name == "noise" else emb
        v = torch.randn(base.shape, generator=gen, dtype=base.dtype)
        directional = float((g * v).sum())
    losses, unchanged = [], True
    for sign in (2, 1, -1, -2):
        x, c = noise, emb
        with torch.no_grad():
            if name == "weights":
                for p, d in zip(params, v):
                    p.add_(sign * eps * d)
            elif name == "noise":
                x = noise + sign * eps * v
            else:
                c = emb + sign * eps * v
            loss, seen = run(x, c)
            if name == "weights":
                for p, d in zip(params, v):
                    p.sub_(sign * eps * d)
        losses.append(float(loss))
        unchanged &= seen == decisions
    fd = (-losses[0] + 8 * losses[1] - 8 * losses[2] + losses[3]) / (12 * eps)
    return {"eps": eps, "fd": fd, "adjoint": directional, "rel_diff": abs(fd - directional) / max(abs(directional), 1e-300),
            "decisions_unchanged": unchanged}


def markdown(recs: list[dict[str, Any]], command: str) -> str:
    lines = ["Exactness through the cache, float64, shipped weights (discrete adjoint vs autograd through the same cached "
             "forward; 4th-order central finite difference along one random direction, gate decisions checked unchanged):", "",
             f"Command: `{command}`", "",
             "| model | N | setting | forecast | rel. error noise / cond / weights | FD rel. diff noise / cond / weights (eps) | decisions unchanged |",
             "|---|---|---|---|---|---|---|"]
    for r in recs:
        keys = [k for k in ("noise", "cond", "weights") if k in r["rel_error"]]
        fd = r["finite_difference"]
        lines.append(f"| {r['model']} | {r['steps']} | threshold {r['cache']['threshold']} | {r['forecast_fraction']:.0%} | "
                     + " / ".join(f"{r['rel_error'][k]:.1e}" for k in keys) + " | "
                     + " / ".join(f"{fd[k]['rel_diff']:.1e}" for k in keys) + f" ({fd[keys[0]]['eps']:g}) | "
                     + ("yes" if all(fd[k]["decisions_unchanged"] for k in keys) and r["same_decisions_autograd"] else "NO") + " |")
    return "\n".join(lines) + "\n"


def default_eps(model: str) -> float:
    """The finite-difference step: 1e-4, except flux-shapes (1e-2: its rotary embedding rounds in float32)."""
    return 1e-2 if model == "flux-shapes" else 1e-4


def run(models: list[str], steps: int, out: Path | None, command: str, eps: float | None = None, threshold: float | None = None,
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """:func:`check` for each model (guidance 4 for dit-digits, else 1: no unconditional input); with ``out``,
    writes ``exactness.json`` and ``exactness.md`` there."""
    recs = []
    for model in models:
        guidance = 4.0 if model == "dit-digits" else 1.0
        recs.append(check(model, steps, guidance, eps if eps is not None else default_eps(model), threshold=threshold))
        if log is not None:
            log(json.dumps({k: v for k, v in recs[-1].items() if k != "decisions"}, indent=1))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "exactness.json").write_text(json.dumps({"command": command, "records": recs}, indent=2))
        (out / "exactness.md").write_text(markdown(recs, command))
    return recs
