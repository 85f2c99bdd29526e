"""Exactness of gradients through the CG-Taylor-cached sampler on a shipped model, in float64 (issue 23):

- the cached discrete adjoint against autograd through the same cached forward: relative error for the
  initial noise, the differentiable condition and the denoiser's weights;
- a fourth-order central finite difference of the loss along one random direction per target, against the
  adjoint's directional derivative, with the gate's decisions checked unchanged at every perturbed point.

The model, inputs and loss are those of ``accel bench adjoint`` (``accel.benchmarks.adjoint``). The tiny-model
versions of both checks are tests (tests/adjoint/test_adjoint_cache.py); this records them on shipped weights.

    OMP_NUM_THREADS=1 taskset -c 1 python tools/adjoint_cache_exactness.py --model dit-digits --steps 20 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


def check(model: str, steps: int, guidance: float, eps: float, seed: int = 0, batch: int = 2,
          threshold: float | None = None) -> dict[str, Any]:
    from accel.adjoint import sample_with_grad
    from accel.benchmarks.adjoint import BenchConfig, _inputs, _load, cache_config
    from accel.caching.blocks import find_denoiser

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
                               cache=cache, callback=lambda info: seen.append(bool(info.get("computed", True))))
        return ((out - target) ** 2).mean(), seen

    def grads(method: str) -> tuple[dict[str, torch.Tensor], list[bool], float]:
        for p in params:
            p.grad = None
        x = noise.clone().requires_grad_()
        c = emb.clone().requires_grad_() if emb is not None else None
        t0 = time.perf_counter()
        loss, seen = run(x, c, method)
        loss.backward()
        g = {"noise": x.grad, "weights": torch.cat([p.grad.reshape(-1) for p in params])}
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
        rec["finite_difference"][name] = {"eps": eps, "fd": fd, "adjoint": directional,
                                          "rel_diff": abs(fd - directional) / max(abs(directional), 1e-300),
                                          "decisions_unchanged": unchanged}
    return rec


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", help="shipped model (repeatable); default dit-digits")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eps", type=float, default=1e-4, help="finite-difference step (flux-shapes: 1e-2, its rotary embedding rounds in float32)")
    p.add_argument("--threshold", type=float, default=None, help="cache threshold (default: the shipped setting)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    command = "python tools/adjoint_cache_exactness.py " + " ".join(sys.argv[1:])
    recs = []
    for model in args.model or ["dit-digits"]:
        guidance = 4.0 if model == "dit-digits" else 1.0  # flux-shapes and unet-natural: no unconditional input
        eps = 1e-2 if model == "flux-shapes" and args.eps == 1e-4 else args.eps
        recs.append(check(model, args.steps, guidance, eps, threshold=args.threshold))
        print(json.dumps({k: v for k, v in recs[-1].items() if k != "decisions"}, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exactness.json").write_text(json.dumps({"command": command, "records": recs}, indent=2))
    (args.out / "exactness.md").write_text(markdown(recs, command))
    print(markdown(recs, command))


if __name__ == "__main__":
    main()
