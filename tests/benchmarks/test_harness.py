"""The caching benchmark's harness: the rule and the harm criterion, the intervals, the compute count, the splits,
the registries, and runs end to end whose leader could have been another method.

Speed is reported by ``accel bench cache``, never asserted here (timings depend on the machine).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from accel.benchmarks import harness, methods, report, targets, tuner, verdict
from accel.errors import AccelError


def _spaces(tmp_path, entries: dict, budget: int = 4):
    path = tmp_path / "spaces.json"
    path.write_text(json.dumps({"budget": budget, "methods": entries}))
    return path


def _row(lab, psnr, speedup, drop=None, p10=None):
    s = {"psnr_median": psnr, "psnr_p10": psnr - 3 if p10 is None else p10, "compute_speedup": speedup}
    if drop is not None:
        s["accuracy_drop"] = drop
    return {"label": lab, "selection": s}


def test_rule_picks_the_fastest_setting_that_holds_the_level_without_harm():
    rows = [_row("a", 45, 1.4, 0.0), _row("b", 41, 2.5, 0.01), _row("c", 39, 6.0, 0.0), _row("d", 42, 4.0, 0.05), {"label": "e", "error": "x"}]
    assert verdict.choose(rows, 40)["label"] == "b"  # d is faster but costs 5 points of accuracy
    assert verdict.choose(rows, 35)["label"] == "c"
    assert verdict.choose(rows, 46) is None
    assert verdict.choose([_row("x", 41, 2.0, 0.0), _row("y", 43, 2.0, 0.0)], 40)["label"] == "y"  # ties: higher PSNR
    # without a task reader, the worst images decide: p10 at most 5 dB under the level
    assert verdict.holds(_row("u", 36, 2.0, p10=30.5)["selection"], 35)
    assert not verdict.holds(_row("v", 36, 2.0, p10=29.5)["selection"], 35)


def test_intervals_on_data_with_a_known_spread():
    """Bootstrap intervals cover the truth at the rate they claim: PSNR normal(40, 4) over 200 items gives a median
    interval about 2 x 1.96 x 1.25 x 4 / sqrt(200) = 1.4 dB wide; a per-item compute ratio drawn around 2.5 gives an
    interval around the pooled ratio; accuracy drops are paired."""
    rng = np.random.default_rng(0)
    widths, covered = [], 0
    for k in range(40):
        psnr = rng.normal(40, 4, 200)
        macs_ref = np.full(200, 100.0)
        macs = 100.0 / rng.uniform(2, 3, 200)
        s = verdict.summary({"psnr": psnr, "macs": macs}, {"macs": macs_ref}, np.random.default_rng(k))
        lo, hi = s["ci"]["psnr_median"]
        widths.append(hi - lo)
        covered += lo <= 40 <= hi
        clo, chi = s["ci"]["compute_speedup"]
        assert clo <= s["compute_speedup"] <= chi and 2.2 < clo and chi < 2.8
    assert 1.0 < np.mean(widths) < 1.9
    assert covered >= 34  # 95% nominal: at least 85% of 40 runs
    ref = np.array([1, 1, 1, 0, 0] * 20, bool)
    out = np.array([1, 0, 1, 1, 0] * 20, bool)  # 20 lost, 20 gained: no net drop
    s = verdict.summary({"psnr": np.full(100, 40.0), "macs": np.ones(100), "correct": out}, {"macs": np.ones(100), "correct": ref},
                        np.random.default_rng(0))
    assert s["accuracy_drop"] == 0 and s["lost"] == 20 and s["gained"] == 20
    assert s["ci"]["accuracy_drop"][0] < -0.03 and s["ci"]["accuracy_drop"][1] > 0.03


def test_wall_time_and_its_compute_bound():
    rng = np.random.default_rng(0)
    w = verdict.wall([2.0, 2.2, 1.8] * 5, [1.0, 1.1, 0.9] * 5, rng)
    assert w["speedup"] == pytest.approx(2.0) and w["ci"][0] <= 2.0 <= w["ci"][1] and w["rounds"] == 15
    assert verdict.above_bound(w, {"compute_speedup": 1.5, "ci": {"compute_speedup": [1.4, 1.6]}})
    assert not verdict.above_bound(w, {"compute_speedup": 2.1, "ci": {"compute_speedup": [1.9, 2.3]}})


def test_leader_is_clear_only_when_intervals_part():
    def e(m, sp, ci, ok=True):
        return {"method": m, "holds_on_test": ok, "test": {"compute_speedup": sp, "ci": {"compute_speedup": ci}}}

    lead = verdict.leader([e("a", 3.0, [2.8, 3.2]), e("b", 2.0, [1.9, 2.1]), e("c", 9.0, [8, 10], ok=False)])
    assert lead["method"] == "a" and lead["clear"] and lead["runner_up"] == "b"
    assert not verdict.leader([e("a", 3.0, [2.0, 3.2]), e("b", 2.5, [2.2, 2.9])])["clear"]
    sole = verdict.leader([e("a", 1.2, [0.9, 1.4])])
    assert sole["sole"] and not sole["clear"]
    assert verdict.leader([e("a", 3.0, [2, 4], ok=False)]) is None


def test_compute_counter_counts_linear_conv_and_attention_inside_the_model_only():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.conv = torch.nn.Linear(8, 16), torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x, img):
            q = self.lin(x).view(2, 2, 5, 8)  # (batch, heads, tokens, dim)
            a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return a.sum() + self.conv(img).sum()

    net, x, img = Net(), torch.randn(2, 5, 8), torch.randn(1, 3, 6, 6)
    with harness.ComputeCounter(net) as c:
        net(x, img)
        torch.nn.functional.linear(x, torch.randn(4, 8))  # outside the model's forward: not counted
    linear = 2 * 5 * 16 * 8
    attention = 2 * 2 * 5 * 5 * (8 + 8)
    conv = 4 * 6 * 6 * 3 * 9
    assert c.macs == linear + attention + conv
    other = Net()  # two denoisers (Wan 2.2's experts): both counted
    with harness.ComputeCounter(net, other) as c:
        net(x, img)
        other(x, img)
    assert c.macs == 2 * (linear + attention + conv)


def test_video_quality_is_per_frame_and_temporal_consistency_catches_flicker():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (2, 6, 8, 8, 3)).astype(np.uint8)
    out = ref.copy()
    out[0, 0] = np.clip(ref[0, 0].astype(int) + 40, 0, 255)  # one bad frame of six: the per-frame median ignores it
    psnr = verdict.per_item_psnr(ref, out, latents=False)
    assert psnr[0] == 99.0 and psnr[1] == 99.0
    assert verdict.per_item_psnr(ref[:, :1], out[:, :1], latents=False)[0] < 30
    steady = np.clip(ref.astype(int) + 6, 0, 255).astype(np.uint8)  # the same change on every frame: no flicker
    flicker = ref.astype(int)
    flicker[:, ::2] += 6
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)  # the same size of change on every other frame
    t_steady, t_flicker = verdict.per_item_temporal_psnr(ref, steady), verdict.per_item_temporal_psnr(ref, flicker)
    assert (t_steady > t_flicker + 10).all()
    assert verdict.per_item_ssim(ref, ref)[0] == pytest.approx(1.0)


def test_tuner_brackets_each_level_and_spends_its_budget():
    """On a smooth, monotone quality curve the tuner lands next to each level's crossing; a level beyond the knob's
    maximum is reached by pushing the bracket up; an unreachable level is reported, never chosen at a grid's end."""
    def psnr(thr: float) -> float:
        return 50 - 20 * np.log10(thr / 0.01)  # 40 dB at 0.0316, 30 dB at 0.1

    sp = tuner.Space("threshold", False, lo=0.02, hi=0.05, min=0.001, max=10.0, secondary={"x": [0, 1]}, recommended={"threshold": 0.5})
    seen = []

    def evaluate(p):
        seen.append(p)
        return {"psnr_median": psnr(p["threshold"]) - 3 * p.get("x", 0), "psnr_p10": 0, "compute_speedup": 1 + 10 * p["threshold"],
                "accuracy_drop": 0.0}

    rows = tuner.Tuner(sp, evaluate, verdict.holds, (40.0, 30.0, 80.0), budget=24).run()
    assert len(rows) == 24 == len(seen) and seen[0] == {"threshold": 0.5}
    assert len({json.dumps(p, sort_keys=True) for p in seen}) == 24
    labelled = [{"label": json.dumps(p), "selection": s} for p, s in rows]
    for level, crossing in ((40.0, 10 ** -1.5), (30.0, 0.1)):
        best = json.loads(verdict.choose(labelled, level)["label"])
        assert best["x"] == 0 and 0.9 * crossing < best["threshold"] <= crossing  # within 10% of the crossing
    assert verdict.choose(labelled, 80.0) is None  # 70 dB at the knob's minimum: out of the method's reach
    assert {"x": 0, "threshold": 0.001} in seen  # ... which the tuner checked, down at the minimum
    sp_int = tuner.Space("interval", True, lo=2, hi=3, min=2, max=40)
    rows = tuner.Tuner(sp_int, lambda p: {"psnr_median": 60 - p["interval"], "psnr_p10": 0, "compute_speedup": p["interval"],
                                          "accuracy_drop": 0.0}, verdict.holds, (40.0,), budget=24).run()
    assert max(p["interval"] for p, _ in rows) >= 20  # pushed past the coarse points to the crossing at 20
    assert len(rows) < 24  # an integer knob's bracket closes: the space is exhausted before the budget


def test_secondary_values_as_a_union_of_products_and_excluded_values():
    sp = tuner.Space("threshold", False, 0.1, 0.2, 0.01, 1.0,
                     secondary=[{"gate": ["a", "b"], "f": ["x", "y"]}, {"gate": ["a", "c"], "f": ["z"]}, {"gate": ["a"], "f": ["x"]}])
    assert sp.combos() == [{"gate": "a", "f": "x"}, {"gate": "a", "f": "y"}, {"gate": "b", "f": "x"}, {"gate": "b", "f": "y"},
                           {"gate": "a", "f": "z"}, {"gate": "c", "f": "z"}]  # in order, the repeat once
    sp.excluded = (("f", "z"),)
    assert [c["f"] for c in sp.combos()] == ["x", "y", "x", "y"]
    cg = tuner.space("cg-taylor", "flux", 28)
    assert {c["forecaster"] for c in cg.combos()} == {"taylor", "l2p"}


def test_l2p_rows_are_fitted_on_selection_and_ship_with_the_setting(tiny_dit_folder, tmp_path):
    """CG-Taylor's l2p forecaster in the space: the harness fits its rows on the selection split (one row per step),
    the settings run with them, and ``--ship`` writes them beside the model; without rows the method refuses to run."""
    from accel.benchmarks.calibrate import ship

    entry = _fixed_space("threshold", 0.05, warmup_steps=1, full_last_step=False, residual=True)
    entry["all"]["secondary"] = {"forecaster": ["l2p"]}
    rep = harness.run(str(tiny_dit_folder), methods=["cg-taylor"], steps=6, spaces=_spaces(tmp_path, {"cg-taylor": entry}, budget=1),
                      sizes={"selection": 2, "test": 2, "batch": 2, "rounds": 0}, levels=(-1e9,))
    rows = rep["config"]["l2p"]
    assert rows["history"] == 2 and len(rows["block0"]) == len(rows["last"]) == 6 and rows["last"][0] == []
    assert all(len(r) == min(s, 2) for s, r in enumerate(rows["last"]))
    (row,) = rep["sweep"]
    assert "error" not in row and row["params"]["forecaster"] == "l2p" and "forecaster_options" not in row["params"]
    folder = tmp_path / "model"
    folder.mkdir()
    rec = ship(rep, folder, "-1e+09", "test")
    assert rec["config"]["forecaster_options"] == rows
    saved = json.loads((folder / "accel_cache.json").read_text())
    from accel import CGTaylorConfig
    assert CGTaylorConfig(threshold=saved["threshold"], **saved["config"]).forecaster_options["last"] == rows["last"]
    with pytest.raises(AccelError, match="needs its rows fitted"):
        methods.with_l2p_rows({"forecaster": "l2p"}, None)


def test_every_method_has_a_space_that_fits_the_budget_at_every_step_count():
    data = tuner.load_spaces()
    assert data["budget"] >= 24
    for name, spec in methods.METHODS.items():
        if name == "none":
            continue
        for kind in spec.kinds:
            for steps in (10, 20, 28, 50):
                sp = tuner.space(name, kind, steps)
                assert 1 + 2 * len(sp.combos()) <= data["budget"] - len(verdict.LEVELS), (name, kind)
                assert sp.recommended is not None, name  # each method's own setting is evaluated verbatim
    assert tuner.space("taylorseer", "dit", 10).fixed["disable_cache_before_step"] == 1  # step-counting knobs scale
    assert tuner.space("taylorseer", "dit", 50).fixed["disable_cache_before_step"] == 3


def test_splits_are_disjoint():
    for name in ("dit-digits", "unet-natural", "tiny-sd15", "flux-shapes", "wan-shapes"):
        t = targets.get_target(name)
        sel, test = t.items("selection", t.full.selection), t.items("test", t.full.test)
        assert len(sel) == t.full.selection and len(test) == t.full.test
        seed = (lambda it: it[1]) if isinstance(sel[0], tuple) else (lambda it: it)
        assert not {seed(i) for i in sel} & {seed(i) for i in test}, name
        if name in ("flux-shapes", "wan-shapes"):
            assert not {p for p, _ in sel} & {p for p, _ in test}


def test_bad_space_and_bad_target_are_one_line_errors(tmp_path):
    bad = _spaces(tmp_path, {"fbcache": {"all": {"primary": {"name": "threshold", "lo": 0.5, "hi": 0.1, "min": 0.01, "max": 1}}}})
    with pytest.raises(AccelError, match="min <= lo <= hi <= max"):
        tuner.space("fbcache", "dit", 10, bad)
    with pytest.raises(AccelError, match="no knob space"):
        tuner.space("nope", "dit", 10, bad)
    with pytest.raises(AccelError, match="unknown benchmark target"):
        targets.get_target("no-such-model")
    with pytest.raises(AccelError, match="does not apply"):
        harness.run("tiny-sd15", methods=["fbcache"])


def _fixed_space(primary: str, value: float, integer: bool = False, **fixed) -> dict:
    return {"all": {"primary": {"name": primary, "type": "int" if integer else "float", "lo": value, "hi": value, "min": value,
                                "max": value}, "fixed": fixed, "recommended": None}}


@pytest.mark.parametrize("fast", ["cg-taylor", "fbcache"])
def test_harness_end_to_end_leader_could_be_either_method(tiny_dit_folder, tmp_path, fast):
    """Two methods, one confined to a setting that skips nothing and one to a setting that skips a lot: the leader
    at a permissive level is whichever was allowed to skip; the figures, the journal and the outputs are written."""
    spaces = {"cg-taylor": _fixed_space("threshold", 1e3 if fast == "cg-taylor" else 1e-9, warmup_steps=1, full_last_step=False),
              "fbcache": _fixed_space("threshold", 1e3 if fast == "fbcache" else 1e-9)}
    rep = harness.run(str(tiny_dit_folder), methods=["cg-taylor", "fbcache"], steps=6, spaces=_spaces(tmp_path, spaces, budget=2),
                      sizes={"selection": 2, "test": 3, "batch": 2, "rounds": 2}, levels=(99.0, -1e9), journal=tmp_path / "j.jsonl")
    slow = "fbcache" if fast == "cg-taylor" else "cg-taylor"
    rows = {r["method"]: r["selection"] for r in rep["sweep"]}
    assert rows[slow]["psnr_median"] == 99.0 and rows[slow]["compute_speedup"] == pytest.approx(1.0)
    assert rows[fast]["compute_speedup"] > 1.3
    v = rep["verdict"]["-1e+09"]
    assert v["leader"]["method"] == fast and v["leader"]["runner_up"] == slow
    assert rep["choices"]["99"][slow] is not None and rep["choices"]["99"][fast] is None
    entry = next(e for e in v["entries"] if e["method"] == fast)
    assert entry["test"]["n"] == 3 and entry["wall"]["batch2"]["rounds"] == 2 and set(entry["wall"]) == {"batch1", "batch2"}
    assert rep["config"]["test_generation"] == targets.TEST_GENERATION and rep["config"]["budget"] == 2
    assert set(rep["config"]["versions"]) >= {"torch", "diffusers", "cache-dit", "DeepCache"}
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 2 + 2  # 2 selection + 2 test evaluations
    again = harness.run(str(tiny_dit_folder), methods=["cg-taylor", "fbcache"], steps=6, spaces=_spaces(tmp_path, spaces, budget=2),
                        sizes={"selection": 2, "test": 3, "batch": 2, "rounds": 0}, levels=(99.0, -1e9), journal=tmp_path / "j.jsonl")
    assert again["verdict"]["-1e+09"]["leader"] == {**v["leader"]} and len((tmp_path / "j.jsonl").read_text().splitlines()) == 4
    paths = report.write(rep, tmp_path / "out")
    md = paths["md"].read_text()
    assert "verdict on the test split" in md and "Leader: **" + fast in md

    def part(m: str) -> dict:  # the same run as if its methods had been split between two runs
        keep = {lab for lab, w in rep["timing"]["batch2"].items() if lab == "none" or lab.startswith(m)}
        return {**rep, "config": {**rep["config"], "methods": {m: rep["config"]["methods"][m]}},
                "sweep": [r for r in rep["sweep"] if r["method"] == m],
                "choices": {lv: {m: c[m]} for lv, c in rep["choices"].items()},
                "timing": {b: {lab: w for lab, w in t.items() if lab in keep} for b, t in rep["timing"].items()}}

    merged = report.merge([part("cg-taylor"), part("fbcache")])
    assert merged["verdict"] == rep["verdict"] and len(merged["config"]["parts"]) == 2
    with pytest.raises(AccelError, match="methods appear in two reports"):
        report.merge([part("fbcache"), part("fbcache")])
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_mode_on_the_shipped_dit_runs_every_peer(tmp_path, digits_pipe):
    """``accel bench cache --quick`` end to end on dit-digits (at 10 steps): every method that applies runs and
    none fails; cache-dit and DeepCache are part of the test install, so a missing peer library fails here."""
    from typer.testing import CliRunner

    from accel.cli.main import app

    r = CliRunner().invoke(app, ["bench", "cache", "--model", "dit-digits", "--quick", "--steps", "10", "--out-dir", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "q" / "bench_cache.json").read_text())
    assert rep["config"]["steps"] == 10  # --steps overrides the quick step count
    failed = [row for row in rep["sweep"] if "error" in row]
    assert not failed, failed
    expected = {n for n, s in methods.METHODS.items() if "dit" in s.kinds and n != "none"}
    assert {row["method"] for row in rep["sweep"]} == expected
    assert "PSNR median >= 35 dB" in r.output


def test_digit_reader_reads_the_pipelines_uint8_images():
    """The dit-digits reader gets uint8 images as the harness stores them and reads real digits right."""
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
    f = tmp_path / "R.md"
    f.write_text(f"intro\n{VERDICT_START}\nold\n{VERDICT_END}\noutro\n")
    fill_readme(f, root / "docs/bench/cache")
    assert f.read_text() == f"intro\n{VERDICT_START}\n{block}{VERDICT_END}\noutro\n"
    f.write_text("no markers")
    with pytest.raises(AccelError, match="no <!-- CACHE-VERDICT -->"):
        fill_readme(f, root / "docs/bench/cache")


def test_equal_compute_table_takes_each_methods_best_psnr_at_each_share():
    from accel.benchmarks.report import equal_compute, equal_compute_markdown

    def row(method, skipped, psnr):
        return {"method": method, "label": f"{method}({skipped})", "selection": {"compute_skipped": skipped, "psnr_median": psnr}}

    rep = {"sweep": [row("a", 0.55, 40.0), row("a", 0.72, 35.0), row("a", 0.65, 38.0), row("b", 0.81, 30.0), row("b", 0.5, 45.0),
                     {"method": "b", "label": "b(x)", "error": "boom"}]}
    best = equal_compute(rep)
    assert best["a"] == {"0.5": 40.0, "0.6": 38.0, "0.7": 35.0, "0.8": None}
    assert best["b"] == {"0.5": 45.0, "0.6": 30.0, "0.7": 30.0, "0.8": 30.0}
    assert "| a | 40.0 | 38.0 | 35.0 | - |" in equal_compute_markdown(rep)


def test_equal_compute_summary_sets_cg_taylor_beside_the_best_peer(tmp_path):
    from accel.benchmarks.report import equal_compute_summary

    def row(method, skipped, psnr):
        return {"method": method, "label": method, "selection": {"compute_skipped": skipped, "psnr_median": psnr}}

    rep = {"config": {"model": "toy", "steps": 10, "test_generation": 2}, "verdict": {},
           "sweep": [row("cg-taylor", 0.62, 41.0), row("p", 0.55, 44.0), row("q", 0.71, 39.0)]}
    (tmp_path / "toy" / "steps-10").mkdir(parents=True)
    (tmp_path / "toy" / "steps-10" / "bench_cache.json").write_text(json.dumps(rep))
    old = dict(rep, config={"model": "old", "steps": 50})  # an earlier protocol's report (no test generation): left out
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "bench_cache.json").write_text(json.dumps(old))
    table = equal_compute_summary(tmp_path)
    assert "| toy | 10 | 41.0 / 44.0 (p) | 41.0 / 39.0 (q) | - / 39.0 (q) | - / - |" in table and "old" not in table


def test_block0_bound_reads_the_forecast_share_from_the_speedup(tmp_path, monkeypatch):
    """1/S = (1 - f) + f b: at S = 2 with block 0 a tenth of a step, f = 5/9 and the same decisions without block 0
    give 2.25x; U-Net reports are left out (their live path is more than block 0)."""
    from accel.benchmarks import block0

    def rep(kind: str) -> dict:
        entry = {"method": "cg-taylor", "setting": "cg-taylor(threshold=0.1)", "holds_on_test": True, "test": {"compute_speedup": 2.0}}
        return {"config": {"model": f"toy-{kind}", "kind": kind, "steps": 10},
                "verdict": {"40": {"entries": [entry], "leader": {"method": "cg-taylor", "speedup": 2.0}}}}

    for kind in ("dit", "unet"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "bench_cache.json").write_text(json.dumps(rep(kind)))
    monkeypatch.setattr(block0, "block0_share", lambda name: 0.1)
    (row,) = block0.rows(tmp_path)
    assert row["model"] == "toy-dit" and row["forecast_share"] == pytest.approx(5 / 9)
    assert row["without_block0"] == pytest.approx(2.25)
    assert "2.25x" in block0.markdown([row])
