"""Which diffusers denoisers CG-Taylor supports: every ``*Transformer*Model`` / ``UNet*Model`` class the installed
diffusers exports, each built from its tiny random configuration in the family table (``families/``) and driven
through its own forward in a sampling loop with two calls per step (cond, uncond; no cache context, so the
branches are told apart by call order).

Per class, "supported" means: threshold 0 gives bit-exactly the uncached outputs; a permissive threshold
forecasts in every branch with finite outputs; after ``disable`` the outputs are bit-exactly the uncached
ones again. Otherwise the status says why (enable refused, a check failed, or no tiny configuration yet).
``accel coverage`` writes the table to docs/coverage.md; a test regenerates it and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .families import FAMILIES, GAPS, NOT_DENOISERS
from .spec import STEPS, Family, build_model

CALLS = 2  # cond and uncond, in that order, without a cache context

def denoiser_classes() -> list[str]:
    """Every denoiser-like class the installed diffusers exports: ``*Transformer*Model``, ``*DiT*Model``, ``UNet*Model``."""
    import diffusers

    names = [n for n in dir(diffusers) if n.endswith("Model") and ("Transformer" in n or "DiT" in n or n.startswith("UNet"))]
    return sorted(names)


@dataclass
class Result:
    cls: str
    status: str  # "supported" | "refused: ..." | "failed: ..." | "no tiny config" | "not a denoiser: ..."
    blocks: str = "-"
    calls_per_step: int | None = None
    fractions: dict[str, float] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        return self.status == "supported"


def _sample(model: torch.nn.Module, fam: Family) -> list[torch.Tensor]:
    x, outs = fam.x0(), []
    with torch.no_grad():
        for k in range(STEPS):
            t = torch.tensor([fam.t_scale * (1 - k / STEPS)])
            ys = []
            for b in range(CALLS):
                xin = fam.pack(x) if fam.pack else x
                tin = fam.t_pack(t) if fam.t_pack else t
                out = model(**{fam.x_name: xin, fam.t_name: tin, **fam.cond(b)}, return_dict=False)
                out = out[0] if isinstance(out, (tuple, list)) else out  # Kandinsky 5 returns the tensor itself
                ys.append(torch.stack(list(out)) if isinstance(out, (list, tuple)) else out)
            outs += ys
            y = ys[0] + 0.5 * (ys[0] - ys[1])
            if y.shape != x.shape and y.dim() == x.dim():  # learned sigma, or conditioning channels in the input
                c = min(x.shape[1], y.shape[1])
                x = torch.cat([x[:, :c] - 0.1 * y[:, :c], x[:, c:]], 1)
            else:
                x = x - 0.1 * y.reshape(x.shape)
    return outs


def _chain(model: torch.nn.Module) -> str:
    from ..caching.api import _controller

    ctrl = _controller(model)
    names = [s.name for s in ctrl.blocks] if ctrl is not None else []
    groups: list[list[Any]] = []
    for n in names:
        head = n.rsplit(".", 1)[0]
        if groups and groups[-1][0] == head:
            groups[-1][1] += 1
        else:
            groups.append([head, 1])
    return " > ".join(f"{h} x{c}" for h, c in groups) or "-"


def check(cls_name: str, gate: str = "step") -> Result:
    """Run the four checks on one class (see the module docstring), forecasting under ``gate``."""
    from ..caching import CGTaylorConfig, disable, enable, stats
    from ..errors import AccelError

    if cls_name in NOT_DENOISERS:
        return Result(cls_name, f"not a denoiser: {NOT_DENOISERS[cls_name]}")
    fam = FAMILIES.get(cls_name)
    if fam is None:
        return Result(cls_name, f"no tiny config: {GAPS.get(cls_name, 'not in the family table (accel/coverage/families/) yet')}")
    try:
        model = build_model(cls_name, fam.config)
        ref = _sample(model, fam)
    except Exception as e:  # the tiny configuration itself does not run: nothing to say about caching
        return Result(cls_name, f"no tiny config: the one in the family table does not run uncached ({type(e).__name__}: {_first_line(e)})")
    try:
        enable(model, CGTaylorConfig(threshold=0.0, warmup_steps=1))
    except AccelError as e:
        return Result(cls_name, f"refused: {e}")
    try:
        exact = _sample(model, fam)
        blocks = _chain(model)
    finally:
        disable(model)
    if not all(torch.equal(a, b) for a, b in zip(exact, ref)):
        return Result(cls_name, "failed: threshold 0 is not bit-exact", blocks)
    try:
        enable(model, CGTaylorConfig(threshold=1e3, warmup_steps=1, gate=gate))
    except AccelError as e:
        return Result(cls_name, f"refused: {e}", blocks)
    try:
        outs = _sample(model, fam)
        st = stats(model)
    finally:
        disable(model)
    res = Result(cls_name, "supported", blocks, len(st.steps), {k: round(v, 2) for k, v in st.fractions().items()})
    if not all(torch.isfinite(o).all() for o in outs):
        res.status = "failed: non-finite output with forecasts"
    elif len(st.steps) != CALLS or not all(f > 0 for f in st.fractions().values()):
        res.status = "failed: not every branch forecasts"
    elif not all(torch.equal(a, b) for a, b in zip(_sample(model, fam), ref)):
        res.status = "failed: output after disable differs from uncached"
    return res


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:100] if str(e) else ""


def run_coverage(progress: Callable[[int, int, str], None] | None = None, gate: str = "step") -> list[Result]:
    names = denoiser_classes()
    results = []
    for i, n in enumerate(names):
        if progress:
            progress(i, len(names), n)
        try:
            results.append(check(n, gate))
        except Exception as e:  # an error with caching enabled is reported, not fatal
            results.append(Result(n, f"failed: {type(e).__name__}: {_first_line(e)}"))
    return results


def markdown(results: list[Result], gate: str = "step") -> str:
    import diffusers

    dens = [r for r in results if not r.status.startswith("not a denoiser")]
    sup = sum(r.supported for r in dens)
    lines = [
        "# CG-Taylor coverage of diffusers denoisers",
        "",
        f"Generated by `accel coverage{'' if gate == 'step' else ' --gate ' + gate}` on diffusers {diffusers.__version__} from the family table accel/coverage/families/",
        "(checked by tests/caching/test_cache_coverage.py; the pipelines are run by tests/caching/test_cache_models.py).",
        f"Each class: a tiny random configuration, {STEPS} steps, {CALLS} calls per step (cond, uncond) without a cache",
        "context. Supported = threshold 0 bit-exact, a permissive threshold forecasts in every branch with finite",
        "outputs, disable bit-exact.",
        "",
        f"Supported: {sup} of {len(dens)} denoisers ({100 * sup / max(len(dens), 1):.0f}%).",
        "",
        "| class | pipeline | blocks (execution order) | calls/step | forecast fraction per branch | status |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        fr = ", ".join(f"{k} {v:.2f}" for k, v in r.fractions.items()) or "-"
        calls = "-" if r.calls_per_step is None else str(r.calls_per_step)
        fam = FAMILIES.get(r.cls)
        pipes = ", ".join(p.label() for p in fam.pipelines) if fam is not None and fam.pipelines else "-"
        lines.append(f"| {r.cls} | {pipes} | {r.blocks} | {calls} | {fr} | {r.status.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write(path: Path, progress: Callable[[int, int, str], None] | None = None, gate: str = "step") -> list[Result]:
    results = run_coverage(progress, gate)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(results, gate))
    return results


__all__ = ["Result", "check", "denoiser_classes", "markdown", "run_coverage", "write"]
