"""The caching benchmark's harness: the rule, the intervals, the registries, and a quick run end to end.

Speed is reported by ``accel bench cache``, never asserted here (timings depend on the machine).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from accel.benchmarks import harness, methods, report, targets
from accel.errors import AccelError


def _grid(tmp_path, grids: dict, budget: int = 2) -> str:
    path = tmp_path / "grids.json"
    path.write_text(json.dumps({"budget": budget, "quick": [0], "grids": grids}))
    return path


def test_rule_picks_most_compute_skipped_that_meets_level_and_flip_budget():
    def row(lab, psnr, skipped, flips=0.0):
        return {"label": lab, "selection": {"psnr_median": psnr, "compute_skipped": skipped, "flip_rate": flips}}

    rows = [row("a", 45, 0.3), row("b", 41, 0.6), row("c", 39, 0.9), row("d", 42, 0.8, flips=0.1), {"label": "e", "error": "x"}]
    assert harness.choose(rows, 40, 0.05)["label"] == "b"
    assert harness.choose(rows, 35, 0.05)["label"] == "c"
    assert harness.choose(rows, 35, 0.2)["label"] == "c"
    assert harness.choose(rows, 46, 0.05) is None
    tie = [row("x", 41, 0.5), row("y", 43, 0.5)]
    assert harness.choose(tie, 40, 0.05)["label"] == "y"


def test_summary_intervals_and_speed():
    rng = np.random.default_rng(0)
    m = {"psnr": np.array([30.0, 35, 40, 45, 99]), "compute_skipped": 0.5, "flips": np.array([0, 0, 1, 0, 0], bool),
         "correct": np.array([1, 1, 0, 1, 0], bool)}
    s = harness.summary(m, np.array([1, 1, 1, 0, 0], bool), rng)
    assert s["psnr_median"] == 40 and s["flip_rate"] == 0.2 and s["lost"] == 1 and s["gained"] == 1
    lo, hi = s["ci"]["psnr_median"]
    assert lo <= 40 <= hi and lo >= 30 and hi <= 99
    sp = harness.speed([2.0, 2.2, 1.8], [1.0, 1.1, 0.9], rng)
    assert sp["speedup"] == pytest.approx(2.0) and sp["ci"][0] <= 2.0 <= sp["ci"][1]


def test_psnr_per_item_caps_identical_images():
    a = np.zeros((2, 4, 4, 1), np.uint8)
    b = a.copy()
    b[1, 0, 0, 0] = 255
    p = harness.per_item_psnr(a, b, latents=False)
    assert p[0] == 99.0 and 0 < p[1] < 99


def test_shipped_grids_have_one_budget_for_every_method():
    data = methods.load_grids()
    assert data["budget"] >= 8
    for name, spec in methods.METHODS.items():
        if name == "none":
            continue
        for kind in spec.kinds:
            assert len(methods.grid(name, kind)) == data["budget"], (name, kind)


def test_bad_grid_and_bad_target_are_one_line_errors(tmp_path):
    with pytest.raises(AccelError, match="every grid has 2"):
        methods.load_grids(_grid(tmp_path, {"fbcache": {"dit": [{"threshold": 0.1}]}}))
    with pytest.raises(AccelError, match="unknown method"):
        methods.load_grids(_grid(tmp_path, {"nope": {"dit": [{}, {}]}}))
    with pytest.raises(AccelError, match="unknown benchmark target"):
        targets.get_target("no-such-model")
    with pytest.raises(AccelError, match="does not apply"):
        harness.run("tiny-sd15", methods=["fbcache"])


def test_harness_end_to_end_on_a_tiny_dit(tiny_dit_folder, tmp_path):
    """Threshold 0 is exact and skips nothing; a permissive threshold skips; a broken setting is listed with its
    error; a level no setting reaches has no choice; the outputs are written."""
    grids = {"cg-taylor": {"dit": [{"threshold": 0.0}, {"threshold": 1e3, "warmup_steps": 1}]},
             "fbcache": {"dit": [{"threshold": 0.05}, {"threshold": 0.1, "bogus": 1}]}}
    rep = harness.run(str(tiny_dit_folder), methods=["cg-taylor", "fbcache"], steps=6, grids=_grid(tmp_path, grids),
                      sizes={"selection": 2, "test": 3, "batch": 2, "timing": ((2, 2),), "rounds": 2}, levels=(99.0, -1e9))
    rows = {r["label"]: r for r in rep["sweep"]}
    zero = rows["cg-taylor(threshold=0.0)"]["selection"]
    assert zero["psnr_median"] == 99.0 and zero["compute_skipped"] == 0
    assert rows["cg-taylor(threshold=1000.0, warmup_steps=1)"]["selection"]["compute_skipped"] > 0.3
    assert "bogus" in rows["fbcache(threshold=0.1, bogus=1)"]["error"]
    assert rep["choices"]["99"]["cg-taylor"] == "cg-taylor(threshold=0.0)"
    assert rep["choices"]["-1e+09"]["cg-taylor"] == "cg-taylor(threshold=1000.0, warmup_steps=1)"
    v = rep["verdict"]["-1e+09"]
    ours = next(e for e in v["entries"] if e["method"] == "cg-taylor")
    assert ours["holds_on_test"] and ours["test"]["n"] == 3 and len(ours["speed"]["batch2"]["times"]) == 2
    assert v["leader"]["batch2"]["method"] in ("cg-taylor", "fbcache")
    assert set(rep["config"]["versions"]) >= {"torch", "diffusers", "cache-dit", "DeepCache"}
    paths = report.write(rep, tmp_path / "out")
    md = paths["md"].read_text()
    assert "verdict on the test split" in md and "bogus" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_mode_on_the_shipped_dit_runs_every_peer(tmp_path, digits_pipe):
    """``accel bench cache --quick`` end to end on dit-digits (at 10 steps): every method that applies runs (none fails)."""
    from typer.testing import CliRunner

    from accel.cli.main import app

    r = CliRunner().invoke(app, ["bench", "cache", "--model", "dit-digits", "--quick", "--steps", "10", "--out-dir", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "q" / "bench_cache.json").read_text())
    assert rep["config"]["steps"] == 10  # --steps overrides the quick step count
    import importlib.util

    ran = {row["method"] for row in rep["sweep"] if "error" not in row}
    expected = {n for n, s in methods.METHODS.items() if "dit" in s.kinds and n != "none"}
    if importlib.util.find_spec("cache_dit") is None:  # the bench extra; the test extra does not install it
        expected = {n for n in expected if not n.startswith("dbcache")}
        missing = [row for row in rep["sweep"] if row["method"].startswith("dbcache")]
        assert all("cache_dit" in row.get("error", "") for row in missing), missing
    assert ran == expected, [row for row in rep["sweep"] if "error" in row]
    assert "PSNR median >= 35 dB" in r.output



def test_calibrate_saves_the_rules_choice(tiny_dit_folder, tmp_path):
    """``accel calibrate --save`` writes the rule's CG-Taylor choice and a preset per level; a bad level is one line."""
    from typer.testing import CliRunner

    from accel.cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["calibrate", "--model", str(tiny_dit_folder), "--quick", "--level", "30", "--save",
                            "--out-dir", str(tmp_path / "cal")])
    if "no CG-Taylor setting meets" in r.output:  # a random tiny model may miss 30 dB with both quick settings
        pytest.skip(r.output)
    assert r.exit_code == 0, r.output
    saved = json.loads((tiny_dit_folder / "accel_cache.json").read_text())
    assert saved["threshold"] > 0 and saved["level_db"] == 30 and "fast" in saved["presets"]
    r = runner.invoke(app, ["calibrate", "--model", str(tiny_dit_folder), "--level", "33"])
    assert isinstance(r.exception, AccelError) and "--level must be one of" in str(r.exception)


def test_digit_reader_reads_the_pipelines_uint8_images():
    """The dit-digits reader gets uint8 images as the harness stores them and reads real digits right."""
    import torch

    from accel.zoo.digits import digits_dataset

    x, y = digits_dataset(16)
    u8 = ((x.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    t = targets.get_target("dit-digits")
    assert t.scores(u8, [(int(c), 0) for c in y]).mean() >= 0.95


def test_flux_flip_reader_ignores_specks_and_catches_moves():
    from accel.zoo.shapes import Detection

    a = [Detection("red", "circle", 10, 10, 60, 0.8), Detection("blue", "square", 3, 3, 14, 1.0)]
    assert targets._same_objects(a, a[:1], tol=3.2, min_area=12)  # a speck at the size floor comes and goes
    moved = [Detection("red", "circle", 16, 10, 60, 0.8)]
    assert not targets._same_objects(a, moved, tol=3.2, min_area=12)
    other = [Detection("red", "square", 10, 10, 60, 0.9)]
    assert not targets._same_objects(a, other, tol=3.2, min_area=12)


def test_readme_verdict_is_the_committed_results(tmp_path):
    """The README's verdict block is exactly what the committed benchmark JSONs give (regenerate it with
    ``python -m accel.benchmarks.report README.md docs/bench/cache``), and filling a file rewrites only the block."""
    from pathlib import Path

    from accel.benchmarks.report import VERDICT_END, VERDICT_START, fill_readme, readme_verdict

    root = Path(__file__).resolve().parents[2]
    block = readme_verdict(root / "docs/bench/cache")
    readme = (root / "README.md").read_text()
    assert f"{VERDICT_START}\n{block}{VERDICT_END}" in readme
    for name in ("flux-shapes", "dit-digits", "unet-natural"):
        assert f"**{name}**" in block
    assert "The flip reader's floor (test split" in block  # flux-shapes' committed flip-floor run
    f = tmp_path / "R.md"
    f.write_text(f"intro\n{VERDICT_START}\nold\n{VERDICT_END}\noutro\n")
    fill_readme(f, root / "docs/bench/cache")
    assert f.read_text() == f"intro\n{VERDICT_START}\n{block}{VERDICT_END}\noutro\n"
    f.write_text("no markers")
    with pytest.raises(AccelError, match="no <!-- CACHE-VERDICT -->"):
        fill_readme(f, root / "docs/bench/cache")


def test_lever_adoption_rule():
    """``levers.adopt`` keeps a lever only if it is never below the paper's CG-Taylor at the quartile shares and
    above it at one; of several, the largest mean gain; none passing leaves the paper's."""
    from accel.benchmarks import levers

    def rows(lever, pts):
        return [{"lever": lever, "params": {"threshold": 0.1 * i}, "selection": {"compute_skipped": c, "psnr_median": p, "psnr_p10": p - 3}}
                for i, (c, p) in enumerate(pts)]

    base = [(0.5, 40.0), (0.6, 36.0), (0.7, 32.0), (0.8, 28.0)]
    rep = {"model": "m", "items": 4, "steps": 10, "levers": {"baseline": {}, "better": {"residual": True}, "mixed": {"live_tail": 1}, "best": {"gate": "cumulative"}},
           "rows": rows("baseline", base) + rows("better", [(0.5, 40.5), (0.6, 36.0), (0.7, 33.0), (0.8, 28.0)])
           + rows("mixed", [(0.5, 45.0), (0.6, 35.0), (0.7, 31.0), (0.8, 27.0)])
           + rows("best", [(0.5, 41.0), (0.6, 38.0), (0.7, 34.0), (0.8, 29.0)])}
    a = levers.adopt(rep)
    assert a["lever"] == "best" and a["fields"] == {"gate": "cumulative"} and min(a["gains_db"]) > 0
    rep["rows"] = [r for r in rep["rows"] if r["lever"] in ("baseline", "mixed")]
    assert levers.adopt(rep)["lever"] == "baseline"  # a lever that loses at one share is not kept
    assert "**Adopted by the rule**" in levers.markdown(rep) and levers.psnr_at(rows("x", base), 0.65) == 32.0
    assert levers.psnr_at(rows("x", base), 0.85) is None
    assert [p["threshold"] for p in levers.settings("cumulative", "flux")] == list(levers.THRESHOLDS["cumulative"]["flux"])
