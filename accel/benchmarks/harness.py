"""``accel bench cache``: one protocol for every caching method on every target.

1. **Select.** One tuner (:mod:`accel.benchmarks.tuner`), the same code and the same number of evaluations
   for every method, ours included, explores each method's knob space (``spaces.json``) on the target's
   selection split. The committed rule (:func:`accel.benchmarks.verdict.choose`) then picks one setting per
   method and quality level from the selection figures alone.
2. **Test.** Only the chosen settings run on the test split (fresh seeds, disjoint from selection; read once
   per test generation). Every figure of the verdict comes from there: compute speedup (the denoiser's
   multiply-accumulates, :mod:`accel.benchmarks.compute`), per-image PSNR (median and 10th percentile) and
   SSIM against the uncached image, flips, the task reader's accuracy, each with bootstrap 95% intervals over
   items.
3. **Time.** Beside it, wall time: every chosen setting and the uncached pipeline, each on its own copy of the
   model, generate the same test items once per round, in an order shuffled each round (seeded), at batch 1
   and at the target's batch; median and interquartile range, the ratio with an interval over rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import AccelError
from .compute import ComputeCounter
from .methods import METHODS, Context, calibrate_magcache, label
from .targets import Sizes, Target, with_conditioning
from .tuner import SPACES, Tuner, load_spaces, space
from .verdict import LEVELS, choose, holds, is_video, leader, per_item_psnr, per_item_ssim, per_item_temporal_psnr, summary, wall

Progress = Callable[[str], None]
L2P_HISTORY = {"per_step": 0.16, "min": 2}  # the l2p forecaster's entries: 8 at 50 steps, 4 at 28, 2 at 10


def _denoisers(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's denoisers: its transformer (and Wan 2.2's low-noise expert ``transformer_2``) or its U-Net."""
    found = [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]
    return found or [pipe.unet]


class Runner:
    """One method setting on its own fresh pipeline."""

    def __init__(self, target: Target, method: str, params: dict[str, Any], ctx: Context) -> None:
        self.method, self.params, self.label = method, params, label(method, params)
        self.target, self.pipe = target, target.load()
        self.reset = METHODS[method].apply(self.pipe, params, ctx)

    def generate(self, items: list[Any], batch: int, count: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Outputs for ``items`` in batches, and (with ``count``) each item's share of its batch's compute."""
        outs, macs = [], []
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            if count:
                with ComputeCounter(*_denoisers(self.pipe)) as c:
                    outs.append(self.target.generate(self.pipe, chunk))
                macs += [c.macs / len(chunk)] * len(chunk)
            else:
                outs.append(self.target.generate(self.pipe, chunk))
            self.reset()
        return np.concatenate(outs), np.array(macs, dtype=np.float64)


@dataclass
class Split:
    """A split's items and the uncached reference's per-item figures on it."""

    items: list[Any]
    out: np.ndarray
    ref: dict[str, np.ndarray]


def reference(target: Target, runner: Runner, items: list[Any], batch: int) -> Split:
    out, macs = runner.generate(items, batch, count=True)
    ref: dict[str, np.ndarray] = {"macs": macs}
    if target.scores is not None:
        ref["correct"] = target.scores(out, items).astype(bool)
    return Split(items, out, ref)


def measure(target: Target, split: Split, out: np.ndarray, macs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item figures of one setting against the uncached reference."""
    m: dict[str, np.ndarray] = {"psnr": per_item_psnr(split.out, out, target.latents), "macs": macs}
    if not target.latents:
        m["ssim"] = per_item_ssim(split.out, out)
    if is_video(split.out):
        m["temporal_psnr"] = per_item_temporal_psnr(split.out, out)
    if target.flips is not None:
        m["flips"] = target.flips(split.out, out, split.items).astype(bool)
    if target.scores is not None:
        m["correct"] = target.scores(out, split.items).astype(bool)
    return m


class Journal:
    """Every evaluation's figures, appended as one JSON line each as soon as it is measured, so that a run that
    stops resumes where it stopped (same target, steps, test generation and sizes; anything else starts afresh)."""

    def __init__(self, path: Path | None, key: dict[str, Any], say: Progress) -> None:
        self.path, self.key, self.done = path, json.dumps(key, sort_keys=True), {}
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut off by the stop
                    continue
                if rec.get("key") == self.key:
                    self.done[rec["id"]] = rec["figures"]
            if self.done:
                say(f"resuming from {path}: {len(self.done)} evaluations already measured")

    def get(self, ident: str) -> dict[str, Any] | None:
        return self.done.get(ident)

    def put(self, ident: str, figures: dict[str, Any]) -> None:
        self.done[ident] = figures
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": self.key, "id": ident, "figures": figures}) + "\n")


def evaluate(target: Target, split: Split, method: str, params: dict[str, Any], ctx: Context, batch: int,
             journal: Journal, name: str, seed: int | None = None) -> dict[str, Any]:
    """One setting's figures on one split (bootstrap intervals when ``seed`` is given), from the journal if measured."""
    ident = json.dumps([name, method, params], sort_keys=True)
    done = journal.get(ident)
    if done is not None:
        return done
    out, macs = Runner(target, method, params, ctx).generate(split.items, batch, count=True)
    rng = None if seed is None else np.random.default_rng([seed, zlib.crc32(ident.encode())])
    figures = summary(measure(target, split, out, macs), split.ref, rng)
    journal.put(ident, figures)
    return figures


# --------------------------------------------------------------------------------------------- the phases


def select(target: Target, names: list[str], sel: Split, ctx: Context, size: Sizes, budget: int, levels: tuple[float, ...],
           spaces: Path, journal: Journal, say: Progress) -> list[dict[str, Any]]:
    """Phase 1: the tuner's evaluations of every method on the selection split (rows with their figures)."""
    rows: list[dict[str, Any]] = []
    for n in names:
        sp = space(n, target.kind, target.steps, spaces)
        if n == "cg-taylor" and ctx.l2p is None:
            sp.excluded = (("forecaster", "l2p"),)  # a pipeline the rows cannot be fitted on (two experts)

        def run_one(params: dict[str, Any], n: str = n) -> dict[str, Any] | None:
            row: dict[str, Any] = {"method": n, "params": params, "label": label(n, params)}
            say(f"selection {n} {sum(r['method'] == n for r in rows) + 1}/{budget}: {row['label']}")
            try:
                row["selection"] = evaluate(target, sel, n, params, ctx, size.batch, journal, "selection")
            except Exception as e:  # a setting that cannot run is listed with its error and counts as spent
                msg = str(e).splitlines()[0] if str(e) else ""
                row["error"] = f"{type(e).__name__}: {msg}"[:300]
            rows.append(row)
            return row.get("selection")

        Tuner(sp, run_one, holds, levels, budget).run()
    return rows


def fit_l2p(target: Target, pipe: Any, sel: Split, size: Sizes, spaces: Path, say: Progress) -> dict[str, Any] | None:
    """The l2p forecaster's rows for CG-Taylor's space, fitted on the uncached trajectories of the selection split's
    first items (at most 16, never test items) sampled by ``pipe`` (uncached), with ``L2P_HISTORY`` entries; None where
    the space has no l2p or the pipeline switches experts mid-trajectory."""
    from ..caching.forecasters.l2p import fit_pipeline
    from .tuner import steps_value

    sp = space("cg-taylor", target.kind, target.steps, spaces)
    if not any(c.get("forecaster") == "l2p" for c in sp.combos()):
        return None
    if getattr(pipe, "transformer_2", None) is not None:
        return None
    items = sel.items[:16]
    say(f"l2p forecaster: fitting its rows on {len(items)} selection items")
    calls = [lambda p, chunk=items[i:i + size.batch]: target.generate(p, chunk) for i in range(0, len(items), size.batch)]
    return fit_pipeline(pipe, calls, target.steps, min(16, steps_value(L2P_HISTORY, target.steps)),
                        bool(sp.fixed.get("residual", False)))


def choices_of(rows: list[dict[str, Any]], names: list[str], levels: tuple[float, ...]) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for lv in levels:
        out[f"{lv:g}"] = {}
        for n in names:
            c = choose([r for r in rows if r["method"] == n], lv)
            out[f"{lv:g}"][n] = c["label"] if c else None
    return out


def test(target: Target, chosen: dict[str, dict[str, Any]], split: Split, ctx: Context, size: Sizes, journal: Journal,
         seed: int, say: Progress) -> None:
    """Phase 2: the chosen settings on the test split (figures stored in the rows)."""
    for i, (lab, row) in enumerate(chosen.items()):
        say(f"test {i + 1}/{len(chosen)}: {lab}")
        row["test"] = evaluate(target, split, row["method"], row["params"], ctx, size.batch, journal, "test", seed)


def time_settings(runners: dict[str, Runner], items: list[Any], size: Sizes, rng: np.random.Generator,
                  say: Progress) -> dict[str, dict[str, Any]]:
    """Phase 3: wall time per setting, every round in a shuffled order, at batch 1 and the target's batch."""
    out: dict[str, dict[str, Any]] = {}
    labels = list(runners)
    for batch in sorted({1, size.batch}):
        its = items[:batch]
        times: dict[str, list[float]] = {lab: [] for lab in labels}
        for rnd in range(size.rounds):
            for lab in rng.permutation(labels):
                say(f"timing batch {batch}, round {rnd + 1}/{size.rounds}: {lab}")
                t0 = time.perf_counter()
                runners[lab].generate(its, batch)
                times[lab].append(time.perf_counter() - t0)
        out[f"batch{batch}"] = {lab: wall(times["none"], t, rng) for lab, t in times.items()}
    return out


# --------------------------------------------------------------------------------------------- the run


def _provenance() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for pkg in ("torch", "diffusers", "cache-dit", "DeepCache", "accel-diffusion"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "accel"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"versions": versions, "harness_commit": commit or None, "harness_dirty": dirty,
            "load_start": list(os.getloadavg()), "torch_threads": torch.get_num_threads(), "cpus": os.sched_getaffinity(0).__len__()}


def _methods(target: Target, methods: list[str] | None) -> list[str]:
    names = methods or [n for n, spec in METHODS.items() if target.kind in spec.kinds and n != "none"]
    for n in names:
        if n not in METHODS:
            raise AccelError(f"unknown method {n!r}; known: {', '.join(METHODS)}")
        if target.kind not in METHODS[n].kinds:
            raise AccelError(f"{n} does not apply to {target.name} ({target.kind} denoiser); it applies to: {', '.join(METHODS[n].kinds)}")
    return names


def run(model: str, methods: list[str] | None = None, quick: bool = False, levels: tuple[float, ...] = LEVELS,
        sizes: dict[str, Any] | None = None, progress: Progress | None = None, seed: int = 0, steps: int | None = None,
        spaces: Path = SPACES, budget: int | None = None, journal: Path | None = None,
        prompts: list[str] | None = None, labels: list[int] | None = None) -> dict[str, Any]:
    """The whole protocol on one target; returns the report (JSON-ready). ``sizes`` overrides fields of the
    target's :class:`~accel.benchmarks.targets.Sizes`; ``budget`` the tuner's evaluations per method; ``journal``
    a JSON-lines file of measured evaluations, appended as they finish and read back to resume; ``prompts`` or
    ``labels``: the caller's own conditioning, split in two (:func:`~accel.benchmarks.targets.with_conditioning`)."""
    target = with_conditioning(model, prompts, labels)
    size = replace(target.quick if quick else target.full, **(sizes or {}))
    target.steps = steps or (target.quick_steps if quick and target.quick_steps else target.steps)
    budget = budget or (3 if quick else load_spaces(spaces)["budget"])
    say = progress or (lambda s: None)
    names = _methods(target, methods)
    rng, ctx, t_start, prov = np.random.default_rng(seed), Context(steps=target.steps, guidance_batched=target.guidance_batched), time.perf_counter(), _provenance()

    log = Journal(journal, {"model": target.name, "steps": target.steps, "generation": target.test_generation,
                            "sizes": [size.selection, size.test, size.batch], "mag": "magcache" in names,
                            **({"conditioning": prompts if prompts is not None else labels} if prompts is not None or labels is not None else {})}, say)
    ref_runner = Runner(target, "none", {}, ctx)
    say(f"selection: {size.selection} items, uncached reference")
    sel = reference(target, ref_runner, target.items("selection", size.selection), size.batch)
    if "magcache" in names and getattr(ref_runner.pipe, "transformer_2", None) is None:  # calibrated on the first selection batch (never on test items)
        ctx.mag_ratios = calibrate_magcache(target.load(), lambda p: target.generate(p, sel.items[: size.batch]), target.steps)
    if "cg-taylor" in names:
        ctx.l2p = fit_l2p(target, ref_runner.pipe, sel, size, spaces, say)  # its recording hooks come off after
    rows = select(target, names, sel, ctx, size, budget, levels, spaces, log, say)
    choices = choices_of(rows, names, levels)
    by_label = {r["label"]: r for r in rows if "selection" in r}
    chosen = {lab: by_label[lab] for per in choices.values() for lab in per.values() if lab}

    say(f"test: {size.test} items, uncached reference")
    tst = reference(target, ref_runner, target.items("test", size.test), size.batch)
    test(target, chosen, tst, ctx, size, log, seed, say)
    runners = {"none": ref_runner, **{lab: Runner(target, row["method"], row["params"], ctx) for lab, row in chosen.items()}}
    timing = time_settings(runners, tst.items, size, rng, say) if size.rounds else {}
    for row in chosen.values():
        row["wall"] = {b: timing[b][row["label"]] for b in timing}

    cfg = {"model": target.name, "kind": target.kind, "steps": target.steps, "quick": quick, "sizes": size.__dict__,
           "levels": list(levels), "budget": budget, "test_generation": target.test_generation,
           "flip_reader": target.flip_reader, "task_reader": target.task_reader, "split_note": target.split_note,
           "rule": (choose.__doc__ or "").split("\n\n")[0].replace("\n    ", " "),
           "compute_count": "multiply-accumulates of every linear layer and convolution plus the attention products "
                            "(QK^T, AV) inside the denoiser's forward, on the calls that ran",
           "mag_ratios": ctx.mag_ratios, "l2p": ctx.l2p, "methods": {n: METHODS[n].source for n in names},
           **prov, "load_end": list(os.getloadavg()), "seconds_total": time.perf_counter() - t_start}
    reference_figures = {"selection_accuracy": float(sel.ref["correct"].mean()) if "correct" in sel.ref else None,
                         "test_accuracy": float(tst.ref["correct"].mean()) if "correct" in tst.ref else None}
    return {"config": cfg, "reference": reference_figures, "sweep": rows, "choices": choices, "timing": timing,
            "verdict": make_verdict(rows, choices, levels)}


def make_verdict(rows: list[dict[str, Any]], choices: dict[str, dict[str, str | None]], levels: tuple[float, ...]) -> dict[str, Any]:
    """Per level: each method's chosen setting with its test figures, and who leads by compute speedup among
    the settings that also hold the level on the test split."""
    by_label = {r["label"]: r for r in rows if "test" in r}
    out: dict[str, Any] = {}
    for lv in levels:
        key, entries = f"{lv:g}", []
        for n, lab in choices[key].items():
            if lab is None:
                entries.append({"method": n, "setting": None,
                                "evaluations": sum(r["method"] == n for r in rows)})
                continue
            r = by_label[lab]
            entries.append({"method": n, "setting": lab, "holds_on_test": holds(r["test"], lv), "test": r["test"],
                            "selection": r["selection"], "wall": r.get("wall", {})})
        out[key] = {"entries": entries, "leader": leader(entries)}
    return out
