"""The caching benchmark's figures and its committed rule.

Quality per item against the uncached output (PSNR, SSIM, flips, the task reader's correctness), the harm
criterion, the rule that picks one setting per method and level, the compute speedup and the wall-time
statistics, each with bootstrap intervals over items (quality, compute) or rounds (wall time).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

LEVELS = (40.0, 35.0, 30.0)  # per-image PSNR median (dB) against the uncached image
MAX_ACCURACY_DROP = 0.02  # harm: the task reader's accuracy may drop by at most 2 points against uncached (paired)
P10_MARGIN = 5.0  # harm without a task reader: the 10th-percentile PSNR at most 5 dB below the level
BOOTSTRAP = 2000


def is_video(x: np.ndarray) -> bool:
    """Videos come as uint8 (N, F, H, W, C); images as (N, H, W, C)."""
    return x.ndim == 5 and x.dtype == np.uint8


def _psnr(r: np.ndarray, o: np.ndarray, latents: bool) -> np.ndarray:
    r, o = r.astype(np.float64).reshape(len(r), -1), o.astype(np.float64).reshape(len(o), -1)
    mse = ((r - o) ** 2).mean(1)
    peak = np.abs(r).max(1) if latents else np.full(len(r), 255.0)
    with np.errstate(divide="ignore"):
        p = 10 * np.log10(peak**2 / mse)
    return np.minimum(p, 99.0)  # identical images: reported as 99 dB


def per_item_psnr(ref: np.ndarray, out: np.ndarray, latents: bool) -> np.ndarray:
    """PSNR per image; per video, the median over its frames of the per-frame PSNR."""
    if is_video(ref):
        return np.array([np.median(_psnr(a, b, False)) for a, b in zip(ref, out)])
    return _psnr(ref, out, latents)


def per_item_temporal_psnr(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Temporal consistency per video: the PSNR (peak 255) of the cached video's frame-to-frame changes against
    the uncached video's. Flicker or motion a cache adds or removes lowers it even where single frames look close."""
    d = lambda v: np.diff(v.astype(np.float64), axis=1)  # noqa: E731
    return _psnr(d(ref), d(out), False)


def per_item_ssim(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """SSIM per image; per video, the mean over its frames."""
    from ..metrics import ssim

    if is_video(ref):
        return np.array([ssim(a, b) for a, b in zip(ref, out)])
    return np.array([ssim(a[None], b[None]) if a.shape[-1] != 1 else ssim(a[None, ..., 0], b[None, ..., 0]) for a, b in zip(ref, out)])


def summary(m: dict[str, np.ndarray], ref: dict[str, np.ndarray], rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Point figures (with ``rng``, also bootstrap 95% intervals over items) of one setting's per-item figures
    ``m`` (``psnr``, ``macs``, optional ``ssim``, ``temporal_psnr``, ``flips``, ``correct``) against the reference's (``macs``,
    optional ``correct``)."""
    stats: dict[str, Callable[[np.ndarray], Any]] = {
        "psnr_median": lambda idx: np.median(m["psnr"][idx], axis=-1),
        "psnr_p10": lambda idx: np.percentile(m["psnr"][idx], 10, axis=-1),
        "compute_speedup": lambda idx: ref["macs"][idx].sum(-1) / np.maximum(m["macs"][idx].sum(-1), 1),
    }
    if "ssim" in m:
        stats["ssim"] = lambda idx: m["ssim"][idx].mean(-1)
    if "temporal_psnr" in m:
        stats["temporal_psnr_median"] = lambda idx: np.median(m["temporal_psnr"][idx], axis=-1)
    if "flips" in m:
        stats["flip_rate"] = lambda idx: m["flips"][idx].mean(-1)
    if "correct" in m:
        stats["accuracy"] = lambda idx: m["correct"][idx].mean(-1)
        stats["accuracy_drop"] = lambda idx: (ref["correct"][idx].astype(float) - m["correct"][idx]).mean(-1)
    n = len(m["psnr"])
    out: dict[str, Any] = {k: float(f(np.arange(n))) for k, f in stats.items()}
    out["compute_skipped"] = 1 - 1 / out["compute_speedup"]
    out["n"] = n
    if "correct" in m:
        out["lost"] = int((ref["correct"] & ~m["correct"]).sum())  # correct uncached, wrong cached
        out["gained"] = int((~ref["correct"] & m["correct"]).sum())
    if "flips" in m:
        out["flipped"] = int(m["flips"].sum())
    if rng is not None:
        idx = rng.integers(0, n, (BOOTSTRAP, n))
        out["ci"] = {k: [float(v) for v in np.percentile(f(idx), [2.5, 97.5])] for k, f in stats.items()}
    return out


def harmless(s: dict[str, Any], level: float) -> bool:
    """The harm criterion: with a task reader, accuracy drops by at most 2 points (paired point estimate);
    without one, the worst images stay near the level (10th percentile at most 5 dB below it)."""
    if "accuracy_drop" in s:
        return s["accuracy_drop"] <= MAX_ACCURACY_DROP + 1e-12
    return s["psnr_p10"] >= level - P10_MARGIN


def holds(s: dict[str, Any], level: float) -> bool:
    """A setting holds a level when its per-image PSNR median reaches it and it does no harm."""
    return s["psnr_median"] >= level and harmless(s, level)


def choose(rows: list[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The committed rule: of one method's settings evaluated on the selection split, those that hold the
    level (per-image PSNR median >= level, and no harm); of these, the one with the highest compute speedup
    (ties: the higher PSNR median). None when no setting holds."""
    ok = [r for r in rows if "selection" in r and holds(r["selection"], level)]
    return max(ok, key=lambda r: (round(r["selection"]["compute_speedup"], 4), r["selection"]["psnr_median"]), default=None)


def wall(base: list[float], times: list[float], rng: np.random.Generator) -> dict[str, Any]:
    """Wall-clock speedup of ``times`` against ``base`` (paired rounds): ratio of medians, a bootstrap interval
    over rounds, and the method's median and interquartile range in seconds."""
    b, t = np.array(base), np.array(times)
    idx = rng.integers(0, len(b), (BOOTSTRAP, len(b)))
    boot = np.median(b[idx], 1) / np.median(t[idx], 1)
    q1, q3 = np.percentile(t, [25, 75])
    return {"speedup": float(np.median(b) / np.median(t)), "ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
            "seconds_median": float(np.median(t)), "seconds_iqr": [float(q1), float(q3)], "rounds": len(t)}


def above_bound(wall_speed: dict[str, Any], compute: dict[str, Any]) -> bool:
    """A wall speedup whose whole interval lies above the compute speedup's interval: overhead or noise, not a lead."""
    hi = compute.get("ci", {}).get("compute_speedup", [compute["compute_speedup"]] * 2)[1]
    return wall_speed["ci"][0] > hi


def leader(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Who leads among the entries that hold the level on test, by compute speedup; "clear" when the leader's
    interval lies above the runner-up's. A method holding the level alone is the sole holder, named only when
    its interval lies above 1."""
    ok = sorted((e for e in entries if e.get("holds_on_test")), key=lambda e: -e["test"]["compute_speedup"])
    if not ok:
        return None
    first, ci = ok[0], ok[0]["test"]["ci"]["compute_speedup"]
    if len(ok) == 1:
        return {"method": first["method"], "speedup": first["test"]["compute_speedup"], "runner_up": None,
                "runner_up_speedup": None, "clear": ci[0] > 1, "sole": True}
    second = ok[1]
    return {"method": first["method"], "speedup": first["test"]["compute_speedup"], "runner_up": second["method"],
            "runner_up_speedup": second["test"]["compute_speedup"], "sole": False,
            "clear": bool(ci[0] > second["test"]["ci"]["compute_speedup"][1])}
