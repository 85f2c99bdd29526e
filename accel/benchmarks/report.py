"""The caching benchmark's outputs: JSON (everything), Markdown (verdict tables, the sweep) and a Pareto PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AccelError
from .verdict import MAX_ACCURACY_DROP, P10_MARGIN, above_bound

OURS = "cg-taylor"


def _ci(v: float, ci: list[float] | None, fmt: str) -> str:
    return format(v, fmt) + (f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]" if ci else "")


def _setting(e: dict[str, Any]) -> str:
    return e["setting"][len(e["method"]):].strip("()") or "(its defaults)"


def _wall(e: dict[str, Any], batch: str) -> str:
    w = e.get("wall", {}).get(batch)
    if not w:
        return "-"
    flag = " (above its compute bound: overhead or noise)" if above_bound(w, e["test"]) else ""
    return f"{w['speedup']:.2f} [{w['ci'][0]:.2f}, {w['ci'][1]:.2f}]{flag}"


def verdict_markdown(report: dict[str, Any]) -> str:
    cfg, ref = report["config"], report["reference"]
    batches = list(report["timing"])
    harm = (f"task accuracy ({cfg['task_reader']}) at most {MAX_ACCURACY_DROP:.0%} points below uncached, paired"
            if ref.get("test_accuracy") is not None else f"10th-percentile PSNR at most {P10_MARGIN:g} dB below the level")
    quality = ("per-video: the median over frames of the per-frame PSNR against the uncached video; temporal PSNR: the "
               "PSNR of the frame-to-frame changes against the uncached video's (flicker a cache adds lowers it). "
               if any("temporal_psnr_median" in e.get("test", {}) for v in report["verdict"].values() for e in v["entries"]) else "")
    lines = [f"## {cfg['model']}: verdict on the test split", "",
             f"{cfg['steps']} steps; selection {cfg['sizes']['selection']} items, test {cfg['sizes']['test']} items, test generation "
             f"{cfg['test_generation']} ({cfg['split_note']}). Each method: {cfg['budget']} selection evaluations by the one tuner. "
             f"Rule: {cfg['rule']} {quality}Harm: {harm}. Speed: compute speedup ({cfg['compute_count']}), bootstrap 95% intervals over items; "
             f"wall time beside it: {cfg['sizes']['rounds']} rounds in a shuffled order, ratio of medians with an interval over rounds, "
             f"{cfg['torch_threads']} torch thread(s), load {cfg['load_start'][0]:.1f} at start. Harness commit "
             f"{(cfg.get('harness_commit') or 'unknown')[:10]}{' (with local changes)' if cfg.get('harness_dirty') else ''}.", ""]
    if ref.get("test_accuracy") is not None:
        lines += [f"Uncached task accuracy on the test split: {ref['test_accuracy']:.3f}.", ""]
    for lv, v in report["verdict"].items():
        lines += [f"### per-image PSNR median >= {lv} dB", ""]
        head = ["method", "chosen on selection", "compute speedup"] + [f"wall {b}" for b in batches]
        video = any("temporal_psnr_median" in e.get("test", {}) for e in v["entries"])
        head += ["PSNR median", "PSNR p10"] + (["temporal PSNR"] if video else []) + ["SSIM", "flips", "accuracy drop (lost/gained)", "holds"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for e in sorted(v["entries"], key=lambda e: -(e["test"]["compute_speedup"] if e.get("setting") else 0)):
            if not e.get("setting"):
                lines.append(f"| {e['method']} | none of its {e.get('evaluations', '?')} evaluations holds the level | "
                             + " | ".join("-" for _ in head[2:]) + " |")
                continue
            t, ci = e["test"], e["test"].get("ci", {})
            cells = [f"**{e['method']}**" if e["method"] == OURS else e["method"], _setting(e),
                     _ci(t["compute_speedup"], ci.get("compute_speedup"), ".2f")] + [_wall(e, b) for b in batches]
            cells += [_ci(t["psnr_median"], ci.get("psnr_median"), ".1f"), _ci(t["psnr_p10"], ci.get("psnr_p10"), ".1f")]
            cells += [_ci(t["temporal_psnr_median"], ci.get("temporal_psnr_median"), ".1f")] if video else []
            cells += [f"{t['ssim']:.4f}" if "ssim" in t else "-",
                      f"{t['flipped']}/{t['n']} ({t['flip_rate']:.1%})" if "flipped" in t else "-",
                      f"{100 * t['accuracy_drop']:+.1f} pts [{100 * ci['accuracy_drop'][0]:+.1f}, {100 * ci['accuracy_drop'][1]:+.1f}] "
                      f"({t['lost']}/{t['gained']})" if "accuracy_drop" in t else "-",
                      "yes" if e["holds_on_test"] else "**no**"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", leader_sentence(v["leader"]), ""]
    return "\n".join(lines)


def leader_sentence(lead: dict[str, Any] | None) -> str:
    if lead is None:
        return "Leader: none holds the level on the test split."
    if lead["sole"]:
        return (f"Sole holder: **{lead['method']}** {lead['speedup']:.2f}x"
                + ("" if lead["clear"] else " (its interval reaches 1: no speedup established)") + ".")
    sure = "a clear lead (intervals apart)" if lead["clear"] else "within the intervals (not a clear lead)"
    return f"Leader: **{lead['method']}** {lead['speedup']:.2f}x ahead of {lead['runner_up']} ({lead['runner_up_speedup']:.2f}x), {sure}."


def sweep_markdown(report: dict[str, Any]) -> str:
    rows = report["sweep"]
    acc = report["reference"].get("selection_accuracy") is not None
    head = ["setting", "compute speedup", "PSNR median", "PSNR p10", "flips"] + (["accuracy drop"] if acc else [])
    lines = ["## Selection: every evaluation the tuner made", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            continue
        s = r["selection"]
        cells = [r["label"], f"{s['compute_speedup']:.2f}", f"{s['psnr_median']:.1f}", f"{s['psnr_p10']:.1f}", f"{s.get('flipped', '-')}"]
        if acc:
            cells.append(f"{100 * s['accuracy_drop']:+.1f} pts")
        lines.append("| " + " | ".join(cells) + " |")
    errs = [r for r in rows if "error" in r]
    if errs:
        lines += ["", "Settings that failed (listed with their error; each counts as an evaluation):"] + [f"- {r['label']}: {r['error']}" for r in errs]
    versions = ", ".join(f"{k} {v}" for k, v in report["config"]["versions"].items() if v)
    lines += ["", f"Versions: {versions}. Total time {report['config']['seconds_total'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def pareto_plot(report: dict[str, Any], path: Path) -> None:
    """Left: test compute speedup against test PSNR median, chosen settings, with interval bars.
    Right: selection PSNR median against compute speedup, every evaluation of the tuner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    methods = sorted({r["method"] for r in report["sweep"]})
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    seen = set()
    for r in report["sweep"]:
        if "test" not in r:
            continue
        t = r["test"]
        y, x = t["compute_speedup"], min(t["psnr_median"], 60)
        ci, sci = t.get("ci", {}).get("psnr_median", [x, x]), t.get("ci", {}).get("compute_speedup", [y, y])
        a1.errorbar(x, y, xerr=[[max(0, x - min(ci[0], 60))], [max(0, min(ci[1], 60) - x)]], yerr=[[y - sci[0]], [sci[1] - y]],
                    fmt="o" if r["method"] == OURS else "s", color=colours[r["method"]], ms=8 if r["method"] == OURS else 5,
                    label=r["method"] if r["method"] not in seen else None, capsize=2)
        seen.add(r["method"])
    for lv in report["config"]["levels"]:
        a1.axvline(lv, color="gray", lw=0.7, ls=":")
    a1.axhline(1, color="gray", lw=0.7, ls=":")
    a1.set_xlabel("test: per-image PSNR median vs uncached (dB, capped at 60)")
    a1.set_ylabel("test: compute speedup")
    a1.legend(fontsize=7)
    for m in methods:
        pts = [(r["selection"]["compute_speedup"], min(r["selection"]["psnr_median"], 60)) for r in report["sweep"]
               if r["method"] == m and "selection" in r]
        if pts:
            a2.plot([p[0] for p in pts], [p[1] for p in pts], "o" if m == OURS else ".", color=colours[m], label=m,
                    ms=6 if m == OURS else 5, alpha=0.85)
    a2.set_xscale("log")
    a2.set_xlabel("selection: compute speedup (log scale)")
    a2.set_ylabel("selection: per-image PSNR median (dB, capped at 60)")
    a2.legend(fontsize=7)
    fig.suptitle(f"{report['config']['model']}: caching methods, chosen on the selection split, measured on the test split")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SHARES = (0.5, 0.6, 0.7, 0.8)  # compute skipped at which methods are compared on equal terms


def equal_compute(report: dict[str, Any], shares: tuple[float, ...] = SHARES) -> dict[str, dict[str, float | None]]:
    """Per method, per share: the best selection PSNR median among its evaluations that skip at least that share
    of the denoiser's compute (None: none skips that much). Selection split only: a study, not the verdict."""
    best: dict[str, dict[str, float | None]] = {}
    for r in report["sweep"]:
        if "error" in r:
            continue
        s = r["selection"]
        row = best.setdefault(r["method"], {f"{sh:g}": None for sh in shares})
        for sh in shares:
            k = f"{sh:g}"
            if s["compute_skipped"] >= sh - 1e-9 and (row[k] is None or s["psnr_median"] > row[k]):
                row[k] = float(s["psnr_median"])
    return best


def equal_compute_markdown(report: dict[str, Any]) -> str:
    best = equal_compute(report)
    head = ["method"] + [f">= {100 * sh:.0f}% skipped" for sh in SHARES]
    lines = ["## Selection: PSNR median at equal compute skipped", "",
             "Best selection PSNR median (dB) among each method's evaluations skipping at least this share of the denoiser's "
             "compute (-: none skips that much); the tuner's evaluations, selection split only.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, row in best.items():
        lines.append("| " + " | ".join([m] + [f"{v:.1f}" if v is not None else "-" for v in row.values()]) + " |")
    return "\n".join(lines + [""])


def equal_compute_summary(root: Path) -> str:
    """One row per committed report under ``root`` (``<target>[/steps-N]/bench_cache.json``): at each share of compute
    skipped, CG-Taylor's best selection PSNR median beside the best peer's (selection split only)."""
    lines = ["| target | steps | " + " | ".join(f">= {100 * sh:.0f}% skipped: CG-Taylor / best peer" for sh in SHARES) + " |",
             "|---|---|" + "---|" * len(SHARES)]
    for path in sorted(Path(root).glob("*/bench_cache.json")) + sorted(Path(root).glob("*/steps-*/bench_cache.json")):
        rep = json.loads(path.read_text())
        if "verdict" not in rep or rep["config"].get("test_generation") is None:
            continue
        best = equal_compute(rep)
        cells = []
        for sh in SHARES:
            k = f"{sh:g}"
            ours = best.get(OURS, {}).get(k)
            peers = [(v[k], m) for m, v in best.items() if m != OURS and v[k] is not None]
            top = max(peers) if peers else None
            cells.append(f"{ours:.1f}" if ours is not None else "-")
            cells[-1] += f" / {top[0]:.1f} ({top[1]})" if top else " / -"
        lines.append(f"| {rep['config']['model']} | {rep['config']['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench_cache.json", "md": out_dir / "bench_cache.md", "png": out_dir / "bench_cache_pareto.png"}
    paths["json"].write_text(json.dumps(report, indent=1, default=float))
    paths["md"].write_text(verdict_markdown(report) + "\n" + equal_compute_markdown(report) + "\n" + sweep_markdown(report))
    pareto_plot(report, paths["png"])
    return paths


def headline_markdown(report: dict[str, Any]) -> str:
    """One row per level: CG-Taylor's test figures beside the fastest peer that holds the level, and the leader."""
    batches = list(report["timing"])
    wb = batches[-1] if batches else None  # the target's batch (batch 1 is in the full tables)
    lines = ["| level | CG-Taylor (tuner's choice) | compute speedup | wall " + (wb or "-") + " | PSNR median | fastest peer holding "
             "the level | its compute speedup | its PSNR | leader |", "|---|---|---|---|---|---|---|---|---|"]
    for lv, v in report["verdict"].items():
        ours = next((e for e in v["entries"] if e["method"] == OURS and e.get("setting")), None)
        peers = sorted((e for e in v["entries"] if e["method"] != OURS and e.get("holds_on_test")), key=lambda e: -e["test"]["compute_speedup"])

        def fig(e: dict[str, Any] | None) -> list[str]:
            if e is None:
                return ["none of its evaluations holds the level", "-", "-", "-"]
            t = e["test"]
            held = "" if e["holds_on_test"] else (" (misses the level on test)" if t["psnr_median"] < float(lv) else " (harm on test)")
            return [_setting(e), _ci(t["compute_speedup"], t["ci"]["compute_speedup"], ".2f"), _wall(e, wb) if wb else "-",
                    f"{t['psnr_median']:.1f}{held}"]

        p, lead = (peers[0] if peers else None), v["leader"]
        who = "-" if lead is None else lead["method"] + (" (sole holder)" if lead["sole"] else "" if lead["clear"] else " (within intervals)")
        cells = [f">= {lv} dB", *fig(ours), p["method"] if p else "none",
                 _ci(p["test"]["compute_speedup"], p["test"]["ci"]["compute_speedup"], ".2f") if p else "-",
                 f"{p['test']['psnr_median']:.1f}" if p else "-", who]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


VERDICT_START, VERDICT_END = "<!-- CACHE-VERDICT -->", "<!-- /CACHE-VERDICT -->"
TARGET_ORDER = ("flux-shapes", "wan-shapes", "wan22-shapes", "dit-digits", "unet-natural", "tiny-sd15")


def readme_verdict(root: Path) -> str:
    """The README's verdict block: :func:`headline_markdown` of every ``root/<target>/bench_cache.json``."""
    reports = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(root).glob("*/bench_cache.json"))}
    names = [n for n in TARGET_ORDER if n in reports] + [n for n in reports if n not in TARGET_ORDER]
    out = ["Verdict on each model's test split: compute speedup (the denoiser's multiply-accumulates, uncached over cached) "
           "with its 95% interval over items, wall time beside it; every method tuned by the same tuner with the same budget "
           "on a selection split; \"within intervals\" means the lead is not outside the compute intervals. Full tables, every "
           "method's chosen setting, the tuner's evaluations and the plots: [docs/bench/cache/](docs/bench/cache/); protocol "
           "and limits: [docs/caching-benchmark.md](docs/caching-benchmark.md).", ""]
    for n in names:
        cfg = reports[n]["config"]
        harm = "harm = task accuracy down > 2 pts" if reports[n]["reference"].get("test_accuracy") is not None else "harm = p10 PSNR > 5 dB under the level"
        out += [f"**{n}** ({cfg['kind']} denoiser, {cfg['steps']} steps, {cfg['sizes']['test']} test items, {harm}; "
                f"test generation {cfg['test_generation']}, {cfg['budget']} evaluations per method; command: `accel bench cache --model {n}`)", "", headline_markdown(reports[n])]
    return "\n".join(out)


def fill_readme(readme: Path, root: Path) -> None:
    """Replace the text between the README's verdict markers with :func:`readme_verdict` of ``root``."""
    text = Path(readme).read_text()
    if VERDICT_START not in text or VERDICT_END not in text:
        raise AccelError(f"{readme} has no {VERDICT_START} ... {VERDICT_END} block to fill")
    head, rest = text.split(VERDICT_START, 1)
    _, tail = rest.split(VERDICT_END, 1)
    Path(readme).write_text(f"{head}{VERDICT_START}\n{readme_verdict(root)}{VERDICT_END}{tail}")


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs of the same protocol on the same target that split the methods between them (one run
    per core). Each run's wall times are ratios against its own uncached baseline, timed in its own rounds; the
    selection and test figures do not depend on the split."""
    from .harness import make_verdict

    if len(parts) < 2:
        raise AccelError("merge needs at least two reports")
    first = parts[0]["config"]
    for p in parts[1:]:
        c = p["config"]
        same = ("model", "steps", "sizes", "levels", "budget", "test_generation")
        if any(c[k] != first[k] for k in same) or p["reference"] != parts[0]["reference"]:
            raise AccelError(f"reports differ in {[k for k in same if c[k] != first[k]] or 'their references'}: not one protocol run")
        if set(c["methods"]) & set(first["methods"]):
            raise AccelError(f"methods appear in two reports: {sorted(set(c['methods']) & set(first['methods']))}")
    levels = tuple(first["levels"])
    rows = [r for p in parts for r in p["sweep"]]
    choices = {lv: {n: lab for p in parts for n, lab in p["choices"][lv].items()} for lv in parts[0]["choices"]}
    timing = {b: {lab: w for p in parts for lab, w in p["timing"].get(b, {}).items()} for b in parts[0]["timing"]}
    cfg = {**first, "methods": {n: src for p in parts for n, src in p["config"]["methods"].items()},
           "seconds_total": max(p["config"]["seconds_total"] for p in parts),
           "parts": [{k: p["config"].get(k) for k in ("methods", "harness_commit", "harness_dirty", "load_start", "load_end",
                                                        "seconds_total")} for p in parts]}
    return {"config": cfg, "reference": parts[0]["reference"], "sweep": rows, "choices": choices, "timing": timing,
            "verdict": make_verdict(rows, choices, levels)}


def rewrite(json_path: Path) -> dict[str, Path]:
    """Re-render a committed ``bench_cache.json`` (Markdown and PNG) without running anything."""
    rep = json.loads(Path(json_path).read_text())
    return write(rep, Path(json_path).parent)


if __name__ == "__main__":  # python -m accel.benchmarks.report README.md docs/bench/cache | --equal-compute docs/bench/cache
    import sys

    if sys.argv[1] == "--equal-compute":
        print(equal_compute_summary(Path(sys.argv[2])), end="")
    else:
        fill_readme(Path(sys.argv[1]), Path(sys.argv[2]))
