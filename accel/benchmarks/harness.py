"""``accel bench cache``: one protocol for every caching method on every target.

1. **Select.** Every method's grid (``grids.json``: the same number of settings for every method, ours
   included) runs on the target's selection split. For each quality level the committed rule
   (:func:`choose`) picks one setting per method from the selection figures alone.
2. **Test.** Only the chosen settings run on the test split (disjoint prompts / labels / noise seeds);
   every figure of the verdict comes from there: per-image PSNR (median and 10th percentile) and SSIM
   against the uncached image, the items whose content flipped, the share of the denoiser's compute not
   executed (multiply-accumulates of every Linear and Conv layer, counted the same way for every method),
   and bootstrap 95% intervals.
3. **Time.** Every chosen setting and the uncached pipeline, each on its own copy of the model, generate
   the same test subset once per round in an order rotated every round, at each timing batch size; the
   speedup is the ratio of medians with an interval from resampling rounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import AccelError
from .methods import GRIDS, METHODS, Context, calibrate_magcache, grid, label
from .targets import Target, get_target

LEVELS = (40.0, 35.0, 30.0)  # per-image PSNR median (dB) against the uncached image
FLIP_BUDGET = 0.05  # at most this share of items may flip (change objects / digit) at any level
BOOTSTRAP = 2000
Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------- measuring


class MacCounter:
    """Multiply-accumulates executed by every Linear and Conv layer of a denoiser (forward hooks)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.macs = 0
        self._handles = [m.register_forward_hook(self._hit) for m in model.modules()
                         if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]

    def _hit(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(module, torch.nn.Linear):
            self.macs += out.numel() * module.in_features
        else:
            k = math.prod(module.kernel_size)
            self.macs += out.numel() * (module.in_channels // module.groups) * k

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _denoiser(pipe: Any) -> torch.nn.Module:
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


def per_item_psnr(ref: np.ndarray, out: np.ndarray, latents: bool) -> np.ndarray:
    r, o = ref.astype(np.float64).reshape(len(ref), -1), out.astype(np.float64).reshape(len(out), -1)
    mse = ((r - o) ** 2).mean(1)
    peak = np.abs(r).max(1) if latents else np.full(len(r), 255.0)
    with np.errstate(divide="ignore"):
        p = 10 * np.log10(peak**2 / mse)
    return np.minimum(p, 99.0)  # identical images: reported as 99 dB


def per_item_ssim(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    from ..metrics import ssim

    return np.array([ssim(a[None], b[None]) if a.shape[-1] != 1 else ssim(a[None, ..., 0], b[None, ..., 0]) for a, b in zip(ref, out)])


class Runner:
    """One method setting on its own fresh pipeline."""

    def __init__(self, target: Target, method: str, params: dict[str, Any], ctx: Context) -> None:
        self.method, self.params, self.label = method, params, label(method, params)
        self.target, self.pipe = target, target.load()
        self.reset = METHODS[method].apply(self.pipe, params, ctx)

    def generate(self, items: list[Any], batch: int, count_macs: bool = False) -> tuple[np.ndarray, int]:
        counter = MacCounter(_denoiser(self.pipe)) if count_macs else None
        outs = []
        try:
            for i in range(0, len(items), batch):
                outs.append(self.target.generate(self.pipe, items[i:i + batch]))
                self.reset()
        finally:
            if counter is not None:
                counter.remove()
        return np.concatenate(outs), counter.macs if counter else 0


def measure(target: Target, ref: np.ndarray, ref_macs: int, out: np.ndarray, macs: int, items: list[Any]) -> dict[str, Any]:
    """Per-item figures of one setting against the uncached reference."""
    m: dict[str, Any] = {"psnr": per_item_psnr(ref, out, target.latents), "compute_skipped": 1 - macs / ref_macs if ref_macs else 0.0}
    if not target.latents:
        m["ssim"] = per_item_ssim(ref, out)
    if target.flips is not None:
        m["flips"] = target.flips(ref, out, items).astype(bool)
    if target.scores is not None:
        m["correct"] = target.scores(out, items).astype(bool)
    return m


def summary(m: dict[str, Any], ref_correct: np.ndarray | None, rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Point figures (and, with ``rng``, bootstrap 95% intervals over items) of one setting's per-item figures."""
    stats: dict[str, Callable[[np.ndarray], Any]] = {
        "psnr_median": lambda idx: np.median(m["psnr"][idx], axis=-1),
        "psnr_p10": lambda idx: np.percentile(m["psnr"][idx], 10, axis=-1),
    }
    if "ssim" in m:
        stats["ssim"] = lambda idx: m["ssim"][idx].mean(-1)
    if "flips" in m:
        stats["flip_rate"] = lambda idx: m["flips"][idx].mean(-1)
    if "correct" in m:
        stats["accuracy"] = lambda idx: m["correct"][idx].mean(-1)
    n = len(m["psnr"])
    out: dict[str, Any] = {k: float(f(np.arange(n))) for k, f in stats.items()}
    out["compute_skipped"] = float(m["compute_skipped"])
    out["n"] = n
    if "correct" in m and ref_correct is not None:
        out["lost"] = int((ref_correct & ~m["correct"]).sum())  # correct uncached, wrong cached
        out["gained"] = int((~ref_correct & m["correct"]).sum())
    if "flips" in m:
        out["flipped"] = int(m["flips"].sum())
    if rng is not None:
        idx = rng.integers(0, n, (BOOTSTRAP, n))
        out["ci"] = {k: [float(v) for v in np.percentile(f(idx), [2.5, 97.5])] for k, f in stats.items()}
    return out


def qualifies(s: dict[str, Any], level: float, flip_budget: float) -> bool:
    return s["psnr_median"] >= level and s.get("flip_rate", 0.0) <= flip_budget


def choose(rows: list[dict[str, Any]], level: float, flip_budget: float) -> dict[str, Any] | None:
    """The committed rule: of one method's settings measured on the selection split, those whose per-image
    PSNR median is >= ``level`` and whose flip rate is <= ``flip_budget``; of these, the one skipping the
    largest share of compute (ties: the higher PSNR median). None when no setting qualifies."""
    ok = [r for r in rows if "selection" in r and qualifies(r["selection"], level, flip_budget)]
    return max(ok, key=lambda r: (round(r["selection"]["compute_skipped"], 4), r["selection"]["psnr_median"]), default=None)


def speed(base: list[float], times: list[float], rng: np.random.Generator) -> dict[str, Any]:
    b, t = np.array(base), np.array(times)
    idx = rng.integers(0, len(b), (BOOTSTRAP, len(b)))
    boot = np.median(b[idx], 1) / np.median(t[idx], 1)
    q1, q3 = np.percentile(t, [25, 75])
    return {"speedup": float(np.median(b) / np.median(t)), "ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
            "seconds_median": float(np.median(t)), "seconds_iqr": [float(q1), float(q3)], "times": [float(x) for x in t]}


# --------------------------------------------------------------------------------------------- the run


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "diffusers", "cache-dit", "DeepCache", "accel-diffusion"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run(
    model: str,
    methods: list[str] | None = None,
    quick: bool = False,
    levels: tuple[float, ...] = LEVELS,
    flip_budget: float = FLIP_BUDGET,
    sizes: dict[str, Any] | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    steps: int | None = None,
    grids: Path = GRIDS,
) -> dict[str, Any]:
    """The whole protocol on one target; returns the report (JSON-ready). ``sizes`` overrides fields of the
    target's :class:`~accel.benchmarks.targets.Sizes`; ``grids`` is the JSON file of sweep grids."""
    target = get_target(model)
    size = target.quick if quick else target.full
    if sizes:
        size = replace(size, **sizes)
    if quick and target.quick_steps:
        target.steps = target.quick_steps
    if steps is not None:
        target.steps = steps
    say = progress or (lambda s: None)
    names = methods or [n for n, spec in METHODS.items() if target.kind in spec.kinds and n != "none"]
    for n in names:
        if n not in METHODS:
            raise AccelError(f"unknown method {n!r}; known: {', '.join(METHODS)}")
        if target.kind not in METHODS[n].kinds:
            raise AccelError(f"{n} does not apply to {target.name} ({target.kind} denoiser); it applies to: {', '.join(METHODS[n].kinds)}")
    rng = np.random.default_rng(seed)
    ctx = Context(steps=target.steps)
    t_start = time.perf_counter()

    # 1. selection
    sel_items = target.items("selection", size.selection)
    say(f"selection: {len(sel_items)} items, uncached reference")
    ref_runner = Runner(target, "none", {}, ctx)
    sel_ref, sel_ref_macs = ref_runner.generate(sel_items, size.batch, count_macs=True)
    sel_ref_correct = target.scores(sel_ref, sel_items) if target.scores else None
    if "magcache" in names:  # calibrated on the first selection batch (never on test items)
        cal = target.load()
        ctx.mag_ratios = calibrate_magcache(cal, lambda p: target.generate(p, sel_items[: size.batch]), target.steps)
        del cal
    rows: list[dict[str, Any]] = []
    settings = [(n, p) for n in names for p in grid(n, target.kind, quick, grids)]
    for i, (n, p) in enumerate(settings):
        say(f"selection {i + 1}/{len(settings)}: {label(n, p)}")
        row: dict[str, Any] = {"method": n, "params": p, "label": label(n, p)}
        try:
            r = Runner(target, n, p, ctx)
            out, macs = r.generate(sel_items, size.batch, count_macs=True)
            row["selection"] = summary(measure(target, sel_ref, sel_ref_macs, out, macs, sel_items), sel_ref_correct)
        except Exception as e:  # a peer that cannot run on this model is listed with its error, not fatal
            msg = str(e).splitlines()[0] if str(e) else ""
            row["error"] = f"{type(e).__name__}: {msg}"[:300]
        rows.append(row)

    chosen: dict[str, dict[str, Any]] = {}  # label -> row, for every (method, level) choice
    choices: dict[str, dict[str, str | None]] = {}
    for lv in levels:
        key = f"{lv:g}"
        choices[key] = {}
        for n in names:
            c = choose([r for r in rows if r["method"] == n], lv, flip_budget)
            choices[key][n] = c["label"] if c else None
            if c:
                chosen[c["label"]] = c

    # 2. test
    test_items = target.items("test", size.test)
    say(f"test: {len(test_items)} items, uncached reference")
    test_ref, test_ref_macs = ref_runner.generate(test_items, size.batch, count_macs=True)
    test_ref_correct = target.scores(test_ref, test_items) if target.scores else None
    runners: dict[str, Runner] = {"none": ref_runner}
    for i, (lab, row) in enumerate(chosen.items()):
        say(f"test {i + 1}/{len(chosen)}: {lab}")
        r = Runner(target, row["method"], row["params"], ctx)
        out, macs = r.generate(test_items, size.batch, count_macs=True)
        row["test"] = summary(measure(target, test_ref, test_ref_macs, out, macs, test_items), test_ref_correct, rng)
        runners[lab] = r

    # 3. timing: same items for all, order rotated every round
    timing: dict[str, dict[str, Any]] = {}
    live = list(runners.items())
    for batch, n_items in size.timing:
        its = test_items[:n_items]
        times: dict[str, list[float]] = {lab: [] for lab, _ in live}
        for rnd in range(size.rounds):
            order = live[rnd % len(live):] + live[: rnd % len(live)]
            for lab, r in order:
                say(f"timing batch {batch}, round {rnd + 1}/{size.rounds}: {lab}")
                t0 = time.perf_counter()
                r.generate(its, batch)
                times[lab].append(time.perf_counter() - t0)
        timing[f"batch{batch}"] = {lab: speed(times["none"], t, rng) for lab, t in times.items()}

    for row in chosen.values():
        row["speed"] = {b: timing[b][row["label"]] for b in timing}
    verdict = make_verdict(rows, choices, levels, flip_budget, list(timing))
    cfg = {"model": target.name, "kind": target.kind, "steps": target.steps, "quick": quick, "sizes": size.__dict__,
           "levels": list(levels), "flip_budget": flip_budget, "flip_reader": target.flip_reader, "split_note": target.split_note,
           "rule": choose.__doc__.split("\n\n")[0].replace("\n    ", " ") if choose.__doc__ else "",
           "compute_count": "multiply-accumulates of every Linear/Conv layer of the denoiser, relative to the uncached run",
           "torch_threads": torch.get_num_threads(), "versions": _versions(), "mag_ratios": ctx.mag_ratios,
           "methods": {n: METHODS[n].source for n in names}, "seconds_total": time.perf_counter() - t_start}
    return {"config": cfg, "reference": {"selection_accuracy": None if sel_ref_correct is None else float(sel_ref_correct.mean()),
                                         "test_accuracy": None if test_ref_correct is None else float(test_ref_correct.mean())},
            "sweep": rows, "choices": choices, "timing": timing, "verdict": verdict}


def make_verdict(rows: list[dict[str, Any]], choices: dict[str, dict[str, str | None]], levels: tuple[float, ...],
                 flip_budget: float, batches: list[str]) -> dict[str, Any]:
    """Per level: each method's chosen setting with its test figures; who leads at each timing batch size
    among the settings that also hold the level on the test split, and whether the lead is outside the intervals."""
    by_label: dict[str, dict[str, Any]] = {}
    for r in rows:  # a label listed twice in a grid: the row that ran on the test split
        if "test" in r or r["label"] not in by_label:
            by_label[r["label"]] = r
    out: dict[str, Any] = {}
    for lv in levels:
        key = f"{lv:g}"
        entries = []
        for n, lab in choices[key].items():
            if lab is None:
                entries.append({"method": n, "setting": None})
                continue
            r = by_label[lab]
            holds = qualifies(r["test"], lv, flip_budget)
            entries.append({"method": n, "setting": lab, "holds_on_test": holds, "test": r["test"], "selection": r["selection"],
                            "speed": r.get("speed", {})})
        leads = {}
        for b in batches:
            ok = sorted((e for e in entries if e.get("holds_on_test")), key=lambda e: -e["speed"][b]["speedup"])
            if not ok:
                leads[b] = None
                continue
            first = ok[0]
            second = ok[1] if len(ok) > 1 else None
            leads[b] = {"method": first["method"], "speedup": first["speed"][b]["speedup"],
                        "runner_up": second["method"] if second else None,
                        "runner_up_speedup": second["speed"][b]["speedup"] if second else None,
                        "clear": bool(second is None or first["speed"][b]["ci"][0] > second["speed"][b]["ci"][1])}
        out[key] = {"entries": entries, "leader": leads}
    return out
