"""The caching benchmark's outputs: JSON (everything), Markdown (verdict tables, the sweep) and a Pareto PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AccelError

OURS = "cg-taylor"


def _ci(v: float, ci: list[float] | None, fmt: str) -> str:
    return format(v, fmt) + (f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]" if ci else "")


def verdict_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    batches = list(report["timing"])
    lines = [f"## {cfg['model']}: verdict on the test split", "",
             f"{cfg['steps']} steps; selection {cfg['sizes']['selection']} items, test {cfg['sizes']['test']} items "
             f"({cfg['split_note']}). Timing: {cfg['sizes']['rounds']} rounds, order rotated each round, "
             + ", ".join(f"batch {b} on {n} items" for b, n in cfg["sizes"]["timing"])
             + f"; {cfg['torch_threads']} torch thread(s). Rule: {cfg['rule']} Flip budget {cfg['flip_budget']:.0%} "
             f"({cfg['flip_reader']}). Intervals: bootstrap 95% (items for quality, rounds for speed).", ""]
    ref = report["reference"]
    if ref.get("test_accuracy") is not None:
        lines += [f"Uncached accuracy on the test split: {ref['test_accuracy']:.3f}.", ""]
    for lv, v in report["verdict"].items():
        lines += [f"### per-image PSNR median >= {lv} dB", ""]
        head = ["method", "chosen on selection"] + [f"speedup {b}" for b in batches] + ["PSNR median", "PSNR p10", "SSIM", "flips", "compute skipped", "holds"]
        if ref.get("test_accuracy") is not None:
            head.insert(-1, "accuracy (lost/gained)")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for e in sorted(v["entries"], key=lambda e: -(e.get("speed", {}).get(batches[0], {}).get("speedup", 0) if e.get("setting") else -1)):
            if not e.get("setting"):
                lines.append(f"| {e['method']} | no setting qualifies | " + " | ".join("-" for _ in head[2:]) + " |")
                continue
            t, ci = e["test"], e["test"].get("ci", {})
            cells = [f"**{e['method']}**" if e["method"] == OURS else e["method"], e["setting"]]
            cells += [_ci(e["speed"][b]["speedup"], e["speed"][b]["ci"], ".2f") for b in batches]
            cells += [_ci(t["psnr_median"], ci.get("psnr_median"), ".1f"), _ci(t["psnr_p10"], ci.get("psnr_p10"), ".1f"),
                      _ci(t["ssim"], ci.get("ssim"), ".4f") if "ssim" in t else "-",
                      f"{t['flipped']}/{t['n']} ({t['flip_rate']:.1%})" if "flipped" in t else "-", f"{t['compute_skipped']:.0%}"]
            if ref.get("test_accuracy") is not None:
                cells.append(f"{t['accuracy']:.3f} ({t.get('lost', 0)}/{t.get('gained', 0)})")
            cells.append("yes" if e["holds_on_test"] else "**no**")
            lines.append("| " + " | ".join(cells) + " |")
        for b, lead in v["leader"].items():
            if lead is None:
                lines.append(f"\nLeader at {b}: none holds the level on the test split.")
            else:
                sure = "outside the intervals" if lead["clear"] else "within the intervals (not a clear lead)"
                ru = f" ahead of {lead['runner_up']} ({lead['runner_up_speedup']:.2f}x), {sure}" if lead["runner_up"] else ""
                lines.append(f"\nLeader at {b}: **{lead['method']}** {lead['speedup']:.2f}x{ru}.")
        lines.append("")
    return "\n".join(lines)


def sweep_markdown(report: dict[str, Any]) -> str:
    rows = report["sweep"]
    acc = report["reference"].get("selection_accuracy") is not None
    head = ["setting", "PSNR median", "PSNR p10", "flips", "compute skipped"] + (["accuracy"] if acc else [])
    lines = ["## Selection sweep (every setting of every grid)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            continue
        s = r["selection"]
        cells = [r["label"], f"{s['psnr_median']:.1f}", f"{s['psnr_p10']:.1f}", f"{s.get('flipped', '-')}", f"{s['compute_skipped']:.0%}"]
        if acc:
            cells.append(f"{s['accuracy']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    errs = [r for r in rows if "error" in r]
    if errs:
        lines += ["", "Settings that failed (listed with their error):"] + [f"- {r['label']}: {r['error']}" for r in errs]
    versions = ", ".join(f"{k} {v}" for k, v in report["config"]["versions"].items() if v)
    lines += ["", f"Versions: {versions}. Total time {report['config']['seconds_total'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def pareto_plot(report: dict[str, Any], path: Path) -> None:
    """Left: test speedup (first timing batch) against test PSNR median, chosen settings, with interval bars.
    Right: the compute-equal view: selection PSNR median against the share of compute skipped, every setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    batch = next(iter(report["timing"]))
    methods = sorted({r["method"] for r in report["sweep"]})
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    seen = set()
    for r in report["sweep"]:
        if "test" not in r:
            continue
        t, s = r["test"], r["speed"][batch]
        y, x = s["speedup"], min(t["psnr_median"], 60)
        ci = t.get("ci", {}).get("psnr_median", [x, x])
        a1.errorbar(x, y, xerr=[[max(0, x - min(ci[0], 60))], [max(0, min(ci[1], 60) - x)]], yerr=[[y - s["ci"][0]], [s["ci"][1] - y]],
                    fmt="o" if r["method"] == OURS else "s", color=colours[r["method"]], ms=8 if r["method"] == OURS else 5,
                    label=r["method"] if r["method"] not in seen else None, capsize=2)
        seen.add(r["method"])
    for lv in report["config"]["levels"]:
        a1.axvline(lv, color="gray", lw=0.7, ls=":")
    a1.axhline(1, color="gray", lw=0.7, ls=":")
    a1.set_xlabel("test: per-image PSNR median vs uncached (dB, capped at 60)")
    a1.set_ylabel(f"test: wall-clock speedup ({batch})")
    a1.legend(fontsize=7)
    for m in methods:
        pts = sorted((r["selection"]["compute_skipped"], min(r["selection"]["psnr_median"], 60)) for r in report["sweep"]
                     if r["method"] == m and "selection" in r)
        if pts:
            a2.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if m == OURS else "o--", color=colours[m], label=m,
                    lw=2 if m == OURS else 1, alpha=0.85)
    a2.set_xlabel("selection: share of denoiser compute not executed")
    a2.set_ylabel("selection: per-image PSNR median (dB, capped at 60)")
    a2.legend(fontsize=7)
    fig.suptitle(f"{report['config']['model']}: caching methods, chosen on the selection split, measured on the test split")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench_cache.json", "md": out_dir / "bench_cache.md", "png": out_dir / "bench_cache_pareto.png"}
    paths["json"].write_text(json.dumps(report, indent=1, default=float))
    paths["md"].write_text(verdict_markdown(report) + "\n" + sweep_markdown(report))
    pareto_plot(report, paths["png"])
    return paths


def headline_markdown(report: dict[str, Any]) -> str:
    """One row per level: CG-Taylor's test figures beside the fastest peer that holds the level (first timing batch)."""
    batch = next(iter(report["timing"]))
    lines = [f"| level | CG-Taylor (rule's setting) | speedup {batch} | PSNR median | flips | fastest peer holding the level | its speedup | its PSNR | leader |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lv, v in report["verdict"].items():
        ours = next((e for e in v["entries"] if e["method"] == OURS and e.get("setting")), None)
        peers = sorted((e for e in v["entries"] if e["method"] != OURS and e.get("holds_on_test")), key=lambda e: -e["speed"][batch]["speedup"])
        lead = v["leader"].get(batch)

        def fig(e: dict[str, Any] | None) -> list[str]:
            if e is None:
                return ["no setting qualifies", "-", "-", "-"]
            t, s = e["test"], e["speed"][batch]
            flips = f"{t['flip_rate']:.1%}" if "flip_rate" in t else "-"
            held = "" if e["holds_on_test"] else (" (misses the level on test)" if t["psnr_median"] < float(lv)
                                                  else " (holds the PSNR level; too many flips on test)")
            return [e["setting"].replace("cg-taylor", "") or "-", _ci(s["speedup"], s["ci"], ".2f"), f"{t['psnr_median']:.1f}{held}", flips]

        p = peers[0] if peers else None
        cells = [f">= {lv} dB", *fig(ours), p["method"] if p else "none", _ci(p["speed"][batch]["speedup"], p["speed"][batch]["ci"], ".2f") if p else "-",
                 f"{p['test']['psnr_median']:.1f}" if p else "-",
                 "-" if lead is None else f"{lead['method']}" + ("" if lead["clear"] else " (within intervals)")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


VERDICT_START, VERDICT_END = "<!-- CACHE-VERDICT -->", "<!-- /CACHE-VERDICT -->"
TARGET_ORDER = ("flux-shapes", "dit-digits", "unet-natural", "tiny-sd15")


def readme_verdict(root: Path) -> str:
    """The README's verdict block: :func:`headline_markdown` of every ``root/<target>/bench_cache.json``."""
    reports = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(root).glob("*/bench_cache.json"))}
    names = [n for n in TARGET_ORDER if n in reports] + [n for n in reports if n not in TARGET_ORDER]
    out = ["Verdict on each model's test split (speedup with its 95% interval; the fastest peer that holds the level on "
           "the test split; \"within intervals\" means the lead is not outside the speed intervals). Full tables, every "
           "peer's chosen setting, the sweep and the Pareto plots: [docs/bench/cache/](docs/bench/cache/); protocol and "
           "limits: [docs/caching-benchmark.md](docs/caching-benchmark.md).", ""]
    for n in names:
        cfg = reports[n]["config"]
        reader = cfg.get("flip_reader") or "none"
        flips = "no flip reader" if reader == "none" else "flip = " + reader.split(":")[0]
        out += [f"**{n}** ({cfg['kind']} denoiser, {cfg['steps']} steps, {cfg['sizes']['test']} test items, {flips}; "
                f"command: `accel bench cache --model {n}`)", "", headline_markdown(reports[n])]
        floor = Path(root) / n / "flip-floor" / "flip_floor.json"
        if floor.exists():
            out += [floor_line(json.loads(floor.read_text()), f"docs/bench/cache/{n}/flip-floor/flip_floor.md"), ""]
    return "\n".join(out)


def floor_line(floor: dict[str, Any], link: str) -> str:
    """One sentence on the flip reader's floor (``tools/flip_floor.py``): how often it fires on the uncached
    sampler with its initial noise nudged, at each nudge's PSNR median."""
    parts = [f"{r['psnr_median']:.1f} dB: {r['flip_rate']:.1%}" for r in floor["rows"]]
    return (f"The flip reader's floor ({floor['split']} split, nothing cached, the initial noise nudged; flips at each "
            f"nudge's PSNR median): {', '.join(parts)} ([flip floor]({link}); `python tools/flip_floor.py`).")


def fill_readme(readme: Path, root: Path) -> None:
    """Replace the text between the README's verdict markers with :func:`readme_verdict` of ``root``."""
    text = Path(readme).read_text()
    if VERDICT_START not in text or VERDICT_END not in text:
        raise AccelError(f"{readme} has no {VERDICT_START} ... {VERDICT_END} block to fill")
    head, rest = text.split(VERDICT_START, 1)
    _, tail = rest.split(VERDICT_END, 1)
    Path(readme).write_text(f"{head}{VERDICT_START}\n{readme_verdict(root)}{VERDICT_END}{tail}")


if __name__ == "__main__":  # python -m accel.benchmarks.report README.md docs/bench/cache
    import sys

    fill_readme(Path(sys.argv[1]), Path(sys.argv[2]))
