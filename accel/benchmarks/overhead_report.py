"""``accel bench cache-overhead``'s outputs: overhead.json, overhead.md and overhead.png (bars per method and dtype)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ms(q: dict[str, float]) -> str:
    fmt = (lambda v: f"{v:.3g}") if q["median"] < 10 else (lambda v: f"{v:.0f}")
    return f"{fmt(q['median'])} [{fmt(q['q1'])}, {fmt(q['q3'])}]"


def _si(x: float) -> str:
    return next((f"{x / 10**k:.4g} {u}" for k, u in ((12, "T"), (9, "G"), (6, "M"), (3, "k")) if x >= 10**k), f"{x:.4g} ")


def _pct(x: float) -> str:
    v = 100 * x
    return "0" if v == 0 else "<0.001" if v < 1e-3 else f"{v:.2g}" if v < 10 else f"{v:.0f}"


def _mb(n: int) -> str:
    mb = n / 2**20
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.3g}"


def table(rep: dict[str, Any], dtype: str) -> str:
    """One dtype's rows as a Markdown table."""
    macs, rate = rep["block_macs"], rep["gemm_macs_per_s"][dtype]
    block_ms = 1e3 * macs / rate
    lines = ["| method | cached step, ms | full step, ms | held, MiB | ops, cached / full (% of a block's MACs) "
             "| time, cached / full (% of a block's) | what it computes per FLUX.1 step |", "|---|---|---|---|---|---|---|"]
    for r in (r for r in rep["rows"] if r["dtype"] == dtype):
        ops = f"{_pct(r['cached_ops'] / macs)} / {_pct(r['full_ops'] / macs)}"
        share = f"{_pct(r['cached_ms']['median'] / block_ms)} / {_pct(r['full_ms']['median'] / block_ms)}"
        lines.append(f"| {r['row']} | {_ms(r['cached_ms'])} | {_ms(r['full_ms'])} | {_mb(r['held_bytes'])} | {ops} | {share} | {r['what']} |")
    return "\n".join(lines)


def markdown(rep: dict[str, Any]) -> str:
    g, v = rep["geometry"], rep["versions"]
    n = g["tokens"] + g["text"]
    head = [
        "# Cache overhead on FLUX.1-sized tensors", "",
        f"Command: `{rep['command']}`", "",
        f"What each caching method computes per FLUX.1 step besides the blocks, with its own code: batch 1, {g['tokens']} image "
        f"and {g['text']} text tokens, {g['channels']} channels, {g['double']} double and {g['single']} single blocks, "
        f"{rep['threads']} thread on {rep['cpu']} (torch {v['torch']}, diffusers {v['diffusers']}, cache-dit {v['cache-dit']}). "
        f"Steps alternate full and cached; milliseconds are CPU time of the thread, median [quartiles] of {rep['repeats']} "
        "of each after a warm-up, a cached step being the first after a full one (wall time is in the JSON). Held: the tensors the method "
        "keeps between steps. Ops: element operations per step (a matrix product counts its multiply-accumulates; "
        f"copies and casts count nothing) as a share of one FLUX.1 double block's {_si(rep['block_macs'])}"
        f" multiply-accumulates at N = {n} tokens, C = {g['channels']}, r = {g['mlp_ratio']}: {rep['block_formula']}. "
        "Time: the milliseconds as a share of that block's time at this core's matrix-multiply rate "
        f"({', '.join(f'{d} {r / 1e9:.1f} GMAC/s' for d, r in rep['gemm_macs_per_s'].items())}).",
    ]
    if rep["missing"]:
        head += ["", f"Not measured (registered for FLUX, no probe): {', '.join(rep['missing'])}."]
    body = [f"\n## {dtype}\n\n{table(rep, dtype)}" for dtype in rep["gemm_macs_per_s"]]
    return "\n".join(head) + "\n" + "\n".join(body) + "\n"


def plot(rep: dict[str, Any], path: Path) -> None:
    """Horizontal bars: milliseconds per cached and full step, per method, one panel per dtype (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(rep["gemm_macs_per_s"])
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 6.2), sharey=True, squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in rep["rows"] if r["dtype"] == dtype]
        ys = range(len(rows))
        for offset, (key, color) in ((-0.2, ("cached_ms", "tab:blue")), (0.2, ("full_ms", "tab:orange"))):
            med = [max(r[key]["median"], 1e-3) for r in rows]
            err = [[m - max(r[key]["q1"], 1e-3) for m, r in zip(med, rows)], [r[key]["q3"] - m for m, r in zip(med, rows)]]
            ax.barh([y + offset for y in ys], med, height=0.4, xerr=err, color=color, label=key.split("_")[0] + " step")
        block_ms = 1e3 * rep["block_macs"] / rep["gemm_macs_per_s"][dtype]
        ax.axvline(block_ms, color="black", linestyle="--", label="one FLUX.1 block at this core's matrix-multiply rate")
        ax.set_xscale("log")
        ax.set_yticks(list(ys), [r["row"] for r in rows])
        ax.set_xlabel("CPU ms per FLUX.1 step (median, quartiles)")
        ax.set_title(f"{dtype}, {rep['geometry']['tokens']} x {rep['geometry']['channels']}, one thread (a block: {block_ms / 1e3:.3g} s)")
    axes[0][0].invert_yaxis()  # (the panels share it) the registry's order from the top
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rep: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """overhead.json, overhead.md and overhead.png in ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"overhead.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(rep, indent=2) + "\n")
    paths["md"].write_text(markdown(rep))
    plot(rep, paths["png"])
    return paths
