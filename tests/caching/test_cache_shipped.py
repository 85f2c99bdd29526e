"""``accel.enable(pipe)`` without a config: the model folder's shipped setting (``accel_cache.json``) and presets."""

import json

import pytest
import torch

import accel
from accel import AccelError, CGTaylorConfig
from accel.caching import PRESETS, shipped_settings

from conftest import run_pipe

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = {"threshold": 0.2, "config": {"warmup_steps": 2}, "level_db": 35.0,
           "presets": {"quality": {"threshold": 0.05}, "balanced": {"threshold": 0.2, "warmup_steps": 2},
                       "fast": {"threshold": 0.4, "full_last_step": False}}}


@pytest.fixture
def shipped_folder(tiny_dit_folder):
    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps(SHIPPED))
    return tiny_dit_folder


def _load(folder):
    from accel.pipelines import ClassConditionalPipeline

    pipe = ClassConditionalPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_enable_without_config_uses_the_folders_setting(shipped_folder):
    pipe = _load(shipped_folder)
    cfg = accel.enable(pipe)
    try:
        assert cfg == CGTaylorConfig(threshold=0.2, warmup_steps=2)
        run_pipe(pipe, steps=12)
        assert accel.stats(pipe).forecast_fraction > 0
    finally:
        accel.disable(pipe)
    for name in PRESETS:
        with accel.cached(pipe, preset=name) as cfg:
            assert cfg == CGTaylorConfig(**SHIPPED["presets"][name])
    # the denoiser alone (loaded from the folder's subfolder) finds the folder too
    assert accel.enable(pipe.transformer) == CGTaylorConfig(threshold=0.2, warmup_steps=2)
    accel.disable(pipe.transformer)


def test_presets_are_the_same_output_as_their_config(shipped_folder):
    """A preset is only a name for a config: the same images as passing that config."""
    pipe = _load(shipped_folder)
    with accel.cached(pipe, preset="fast"):
        a = run_pipe(pipe, steps=12)
    with accel.cached(pipe, CGTaylorConfig(threshold=0.4, full_last_step=False)):
        b = run_pipe(pipe, steps=12)
    assert torch.equal(a, b)


def test_without_a_shipped_file_the_default_config(tiny_dit_folder, tiny_dit_pipe):
    pipe = _load(tiny_dit_folder)
    with accel.cached(pipe) as cfg:
        assert cfg == CGTaylorConfig()
    with pytest.raises(AccelError, match="ships none"):
        accel.enable(pipe, preset="fast")
    with accel.cached(tiny_dit_pipe) as cfg:  # built in memory: no folder at all
        assert cfg == CGTaylorConfig()
    assert not accel.is_enabled(pipe)


def test_bad_preset_requests_are_one_clear_error(shipped_folder):
    pipe = _load(shipped_folder)
    with pytest.raises(AccelError, match="one of quality, balanced, fast"):
        accel.enable(pipe, preset="turbo")
    with pytest.raises(AccelError, match="either a config or a preset"):
        accel.enable(pipe, CGTaylorConfig(), preset="fast")
    bad = dict(SHIPPED, presets={"quality": {"threshold": 0.05, "warmup": 1}})
    (shipped_folder / "accel_cache.json").write_text(json.dumps(bad))
    with pytest.raises(AccelError, match="no preset 'fast'"):
        accel.enable(pipe, preset="fast")
    with pytest.raises(AccelError, match="unknown CGTaylorConfig fields warmup"):
        accel.enable(pipe, preset="quality")
    (shipped_folder / "accel_cache.json").write_text("{not json")
    with pytest.raises(AccelError, match="not valid JSON"):
        accel.enable(pipe)
    assert not accel.is_enabled(pipe)


def test_shipped_models_presets_are_valid_configs():
    """Every shipped model's accel_cache.json has its default and its presets, each a valid config, and its
    step counts' entries (``by_steps``) only choices that held on the test split."""
    from accel.zoo import MODELS

    for name, info in MODELS.items():
        if not (info.weights / "accel_cache.json").is_file():
            continue
        holder = type("P", (), {"_accel_source": str(info.weights)})()
        record = json.loads((info.weights / "accel_cache.json").read_text())
        if "threshold" not in record:  # settings per step count only; the file says why there is no default
            assert record["default"] and "presets" not in record and shipped_settings(holder) == {}, name
        else:
            assert shipped_settings(holder)["threshold"] >= 0
            assert set(record["presets"]) <= set(PRESETS)
            for preset in record["presets"]:
                CGTaylorConfig(**shipped_settings(holder, preset))
        for n, entry in record.get("by_steps", {}).items():  # a step count's choices: valid, and each held on test
            assert entry["steps"] == int(n) and CGTaylorConfig(**shipped_settings(holder, steps=int(n)))
            assert entry["figures"] and all(f["holds_on_test"] for f in entry["figures"].values()), (name, n)
            for preset in entry["presets"]:
                CGTaylorConfig(**shipped_settings(holder, preset, steps=int(n)))


def test_shipped_settings_are_the_benchmark_rules_choice():
    """Shipped = rule: where a model's benchmark report is committed (docs/bench/cache/<model>/bench_cache.json),
    its accel_cache.json default is CG-Taylor's choice at the shipped level, and its presets are the choices at
    their levels that held on the test split, none other."""
    from pathlib import Path

    from accel.benchmarks.calibrate import PRESETS as LEVEL_OF, cg_taylor_choices
    from accel.benchmarks.methods import with_l2p_rows

    def shipped_choices(report):  # a setting with the fitted l2p forecaster ships the report's rows with it
        choices = cg_taylor_choices(report)
        for c in choices.values():
            c["params"] = with_l2p_rows(c["params"], report["config"].get("l2p"))
        return choices
    from accel.benchmarks.targets import TEST_SEEDS
    from accel.zoo import MODELS

    root = Path(__file__).resolve().parents[2] / "docs" / "bench" / "cache"
    checked = 0
    for name, info in MODELS.items():
        report_path = root / name / "bench_cache.json"
        if not report_path.is_file() or not (info.weights / "accel_cache.json").is_file():
            continue
        choices = shipped_choices(json.loads(report_path.read_text()))
        record = json.loads((info.weights / "accel_cache.json").read_text())
        if "threshold" not in record:  # no default: none of the report's choices held on test
            assert not any(c["holds_on_test"] for c in choices.values()) and "presets" not in record, name
        else:
            level = f"{record['level_db']:g}"
            assert {"threshold": record["threshold"], **record["config"]} == choices[level]["params"], name
            assert choices[level]["holds_on_test"], name
            held = {preset: choices[lv]["params"] for preset, lv in LEVEL_OF.items() if lv in choices and choices[lv]["holds_on_test"]}
            assert record["presets"] == held, name
        checked += 1
        for n, entry in record.get("by_steps", {}).items():  # each step count's entry: the rule's choice on its own report
            step_report = json.loads((root / name / f"steps-{n}" / "bench_cache.json").read_text())
            assert step_report["config"].get("test_generation") in TEST_SEEDS and step_report["config"]["steps"] == int(n), (name, n)
            choices = shipped_choices(step_report)
            level = f"{entry['level_db']:g}"
            assert {"threshold": entry["threshold"], **entry["config"]} == choices[level]["params"] and choices[level]["holds_on_test"], (name, n)
            held = {preset: choices[lv]["params"] for preset, lv in LEVEL_OF.items() if lv in choices and choices[lv]["holds_on_test"]}
            assert entry["presets"] == held, (name, n)
        for step_dir in (root / name).glob("steps-*"):  # a current report whose choices hold ships them, one that holds none ships none
            step_report = json.loads((step_dir / "bench_cache.json").read_text())
            if step_report["config"].get("test_generation") not in TEST_SEEDS:  # generation 1's reports ship nothing
                continue
            holding = [c for c in cg_taylor_choices(step_report).values() if c["holds_on_test"]]
            assert bool(holding) == (step_dir.name[len("steps-"):] in record.get("by_steps", {})), (name, step_dir.name)
    assert checked >= 2  # dit-digits and unet-natural have committed reports


def test_sample_cli_takes_a_preset(shipped_folder, tmp_path):
    from typer.testing import CliRunner

    from accel.cli.main import app

    runner = CliRunner()
    args = ["sample", "--model", str(shipped_folder), "--class", "3", "-n", "2", "--steps", "8", "--no-progress",
            "--out", str(tmp_path / "g.png")]
    r = runner.invoke(app, [*args, "--cache", "cg-taylor", "--preset", "fast", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["preset"] == "fast" and report["threshold"] == 0.4
    r = runner.invoke(app, [*args, "--preset", "fast"])
    assert r.exit_code != 0 and "--preset fast applies to --cache cg-taylor" in str(r.exception)
    r = runner.invoke(app, [*args, "--cache", "cg-taylor", "--preset", "turbo"])
    assert r.exit_code != 0 and isinstance(r.exception, AccelError) and "preset must be one of" in str(r.exception)


def test_ship_rewrites_its_entries_and_keeps_the_others(tmp_path):
    """``accel bench cache --ship`` replaces the benchmark's entries of ``accel_cache.json`` and keeps what it does
    not write (the fine-tuning entry ``finetune``, chosen by the race of docs/adjoint.md)."""
    from accel.benchmarks.calibrate import ship

    (tmp_path / "accel_cache.json").write_text(json.dumps({**SHIPPED, "finetune": {"threshold": 0.05}}))
    entry = {"method": "cg-taylor", "setting": "cg-taylor(threshold=0.3)", "selection": {"psnr_median": 36.0},
             "test": {"psnr_median": 35.5, "compute_skipped": 0.6, "compute_speedup": 2.5}, "holds_on_test": True, "speed": {"batch4": {"speedup": 2.0}}}
    report = {"verdict": {"35": {"entries": [entry]}}, "sweep": [{"label": "cg-taylor(threshold=0.3)", "params": {"threshold": 0.3}}],
              "config": {"rule": "the rule"}}
    ship(report, tmp_path, "35", "accel bench cache ...")
    rec = json.loads((tmp_path / "accel_cache.json").read_text())
    assert rec["threshold"] == 0.3 and rec["config"] == {} and rec["presets"] == {"balanced": {"threshold": 0.3}}
    assert rec["finetune"] == {"threshold": 0.05} and rec["source"] == "accel bench cache ..."


def test_calibrated_scheduler_is_swapped_in(shipped_folder):
    """``"scheduler"`` in accel_cache.json names the sampler the setting was calibrated with; ``accel sample --cache``
    swaps it in from the pipeline's own scheduler config (unet-natural ships DDPM and was calibrated on DDIM)."""
    from accel.caching.shipped import shipped_scheduler, use_calibrated_scheduler

    pipe = _load(shipped_folder)
    assert shipped_scheduler(pipe) is None and use_calibrated_scheduler(pipe) is None
    other = "DDPMScheduler" if type(pipe.scheduler).__name__ != "DDPMScheduler" else "DDIMScheduler"
    (shipped_folder / "accel_cache.json").write_text(json.dumps({**SHIPPED, "scheduler": other}))
    config = dict(pipe.scheduler.config)
    assert use_calibrated_scheduler(pipe) == other and type(pipe.scheduler).__name__ == other
    assert pipe.scheduler.config["num_train_timesteps"] == config["num_train_timesteps"]
    assert use_calibrated_scheduler(pipe) is None  # already the calibrated one
    (shipped_folder / "accel_cache.json").write_text(json.dumps({**SHIPPED, "scheduler": "NoSuchScheduler"}))
    with pytest.raises(AccelError, match="names scheduler 'NoSuchScheduler'"):
        use_calibrated_scheduler(pipe)


def test_unet_natural_names_its_calibration_scheduler():
    from accel.caching.shipped import shipped_scheduler
    from accel.zoo import load

    assert shipped_scheduler(load("unet-natural")) == "DDIMScheduler"


def test_enable_warns_when_the_shipped_setting_expects_another_scheduler(shipped_folder):
    pipe = _load(shipped_folder)
    other = "DDPMScheduler" if type(pipe.scheduler).__name__ != "DDPMScheduler" else "DDIMScheduler"
    (shipped_folder / "accel_cache.json").write_text(json.dumps({**SHIPPED, "scheduler": other}))
    with pytest.warns(UserWarning, match=f"calibrated with {other}"):
        accel.enable(pipe)
    accel.disable(pipe)


def test_enable_and_accel_sample_resolve_the_shipped_setting_in_one_place(shipped_folder, monkeypatch):
    """``accel.enable`` and ``accel sample`` both take the setting from ``shipped.resolve``, which warns on a
    scheduler mismatch whoever calls it; a threshold replaces the shipped one."""
    import accel.caching.api as api
    from accel.caching import shipped
    from accel.sampling import sample_to_file

    pipe = _load(shipped_folder)
    chosen = shipped.resolve(pipe, "fast", threshold=0.5)
    assert chosen.config == CGTaylorConfig(threshold=0.5, full_last_step=False) and chosen.shipped
    assert shipped.resolve(pipe).config == CGTaylorConfig(threshold=0.2, warmup_steps=2)
    calls = []
    monkeypatch.setattr(shipped, "resolve", lambda *a, **k: calls.append(k) or chosen)
    monkeypatch.setattr(api, "resolve", shipped.resolve)
    assert accel.enable(pipe) == chosen.config
    accel.disable(pipe)
    sample_to_file(str(shipped_folder), shipped_folder / "out.png", num_images=1, steps=3, class_labels=[1],
                   cache="cg-taylor", compare=False)
    assert len(calls) == 2


def _report(steps, holds=True):
    """A one-level calibration report as ``harness.run`` writes it (CG-Taylor's 35 dB choice only)."""
    entry = {"method": "cg-taylor", "setting": "cg-taylor(threshold=0.12)", "selection": {"psnr_median": 38.0},
             "test": {"psnr_median": 37.0 if holds else 33.0, "compute_skipped": 0.55, "compute_speedup": 2.2}, "holds_on_test": holds,
             "speed": {"batch4": {"speedup": 2.0}}}
    return {"verdict": {"35": {"entries": [entry]}}, "sweep": [{"label": entry["setting"], "params": {"threshold": 0.12}}],
            "config": {"rule": "the rule", "steps": steps, "model": "tiny"}}


def test_a_choice_per_step_count_replaces_the_default_where_the_caller_names_it(shipped_folder):
    """``accel calibrate --steps N --save`` keeps its choice under ``by_steps``: ``enable(pipe, steps=N)``, the
    presets at N, ``accel sample --steps N`` and the gradient path take it; other step counts keep the default."""
    from accel.adjoint._tasks import _cache_config
    from accel.benchmarks.calibrate import ship

    rec = ship(_report(10), shipped_folder, "35", "accel calibrate --steps 10 --save", steps=10)
    assert rec["steps"] == 10 and rec["threshold"] == 0.12
    saved = json.loads((shipped_folder / "accel_cache.json").read_text())
    assert saved["threshold"] == SHIPPED["threshold"] and saved["presets"] == SHIPPED["presets"]  # the default is kept
    assert saved["by_steps"]["10"]["presets"] == {"balanced": {"threshold": 0.12}}
    pipe = _load(shipped_folder)
    with accel.cached(pipe, steps=10) as cfg:
        assert cfg == CGTaylorConfig(threshold=0.12)
    with accel.cached(pipe, steps=12) as cfg:  # no choice for 12 steps: the default
        assert cfg == CGTaylorConfig(threshold=0.2, warmup_steps=2)
    assert shipped_settings(pipe, "balanced", steps=10) == {"threshold": 0.12}
    with pytest.raises(AccelError, match=r"by_steps 10\) has no preset 'fast': at 10 steps no setting held"):
        shipped_settings(pipe, "fast", steps=10)
    assert _cache_config(pipe, 0.3, 10) == CGTaylorConfig(threshold=0.3)  # a threshold keeps the step count's other fields
    assert _cache_config(pipe, 0.3, 12) == CGTaylorConfig(threshold=0.3, warmup_steps=2)
    with pytest.raises(AccelError, match="preset / steps"):
        accel.enable(pipe, CGTaylorConfig(), steps=10)
    ship(_report(20), shipped_folder, "35", "accel calibrate --steps 20 --save", steps=20)  # another step count joins
    assert list(json.loads((shipped_folder / "accel_cache.json").read_text())["by_steps"]) == ["10", "20"]


def test_a_step_count_choice_must_hold_on_test(shipped_folder):
    """A per-step-count entry silently replaces the default, so a choice that misses its level on the test split
    is refused with the levels that do hold; a report from another step count is refused."""
    from accel.benchmarks.calibrate import ship

    with pytest.raises(AccelError, match="does not hold on the test split.*holding: none"):
        ship(_report(10, holds=False), shipped_folder, "35", "c", steps=10)
    with pytest.raises(AccelError, match="measured at 10 steps, not 20"):
        ship(_report(10), shipped_folder, "35", "c", steps=20)
    assert "by_steps" not in json.loads((shipped_folder / "accel_cache.json").read_text())  # nothing written


def test_sample_takes_the_step_counts_choice(shipped_folder, tmp_path):
    from typer.testing import CliRunner

    from accel.benchmarks.calibrate import ship
    from accel.cli.main import app

    ship(_report(8), shipped_folder, "35", "c", steps=8)
    r = CliRunner().invoke(app, ["sample", "--model", str(shipped_folder), "--class", "3", "-n", "2", "--steps", "8",
                                 "--no-progress", "--out", str(tmp_path / "g.png"), "--cache", "cg-taylor",
                                 "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["threshold"] == 0.12 and report["calibrated_steps"] == 8
    assert "the model's setting chosen at 8 steps" in r.output


def test_calibrate_from_report_checks_what_it_reads(shipped_folder, tmp_path):
    """``accel calibrate --from-report`` ships from an earlier run without sweeping; a file that is not such a report,
    or one from another step count, is one clear error."""
    from typer.testing import CliRunner

    from accel.cli.main import app

    runner = CliRunner()
    rep = _report(10)
    rep["config"]["model"] = str(shipped_folder)
    (tmp_path / "rep.json").write_text(json.dumps(rep))
    base = ["calibrate", "--model", str(shipped_folder), "--from-report", str(tmp_path / "rep.json")]
    r = runner.invoke(app, [*base, "--steps", "20", "--save"])
    assert isinstance(r.exception, AccelError) and "measured at 10 steps, not --steps 20" in str(r.exception)
    r = runner.invoke(app, [*base, "--save"])  # a report at another step count than the target's: kept under it
    assert r.exit_code == 0, r.output
    saved = json.loads((shipped_folder / "accel_cache.json").read_text())
    assert saved["by_steps"]["10"]["threshold"] == 0.12 and saved["threshold"] == SHIPPED["threshold"]
    (tmp_path / "rep.json").write_text("{}")
    r = runner.invoke(app, [*base])
    assert isinstance(r.exception, AccelError) and "not a bench_cache.json" in str(r.exception)
    rep["config"]["model"] = "flux-shapes"
    (tmp_path / "rep.json").write_text(json.dumps(rep))
    r = runner.invoke(app, [*base, "--save"])
    assert isinstance(r.exception, AccelError) and "measured on 'flux-shapes'" in str(r.exception)
    r = runner.invoke(app, [*base, "--quick"])
    assert isinstance(r.exception, AccelError) and "--quick set how a sweep runs" in str(r.exception)


def test_a_malformed_by_steps_is_one_clear_error(shipped_folder):
    (shipped_folder / "accel_cache.json").write_text(json.dumps({**SHIPPED, "by_steps": {"ten": {"threshold": 0.1}}}))
    with pytest.raises(AccelError, match="must map step counts"):
        shipped_settings(_load(shipped_folder), steps=10)


def test_enable_without_steps_says_when_the_step_count_has_its_own_setting(shipped_folder):
    """``accel.enable(pipe)`` takes the default; sampling at a step count with a setting of its own says so once
    (and how to use it); with ``steps=`` or at other step counts it is silent."""
    import warnings

    from accel.benchmarks.calibrate import ship

    ship(_report(8), shipped_folder, "35", "c", steps=8)
    pipe = _load(shipped_folder)
    with accel.cached(pipe):
        with pytest.warns(UserWarning, match=r"chosen for 8 sampling steps.*accel.enable\(pipe, steps=8\)"):
            run_pipe(pipe, steps=8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run_pipe(pipe, steps=8)  # once
            run_pipe(pipe, steps=6)
    with accel.cached(pipe, steps=8), warnings.catch_warnings():
        warnings.simplefilter("error")
        run_pipe(pipe, steps=8)


def test_the_default_config_holds_the_top_level_on_every_target():
    """``CGTaylorConfig()``, what ``accel.enable(pipe)`` uses where a model ships no setting, is the tuner's verbatim
    "recommended" evaluation in every benchmark run: on every current report (each target, each step count) it holds
    the 40 dB level with no harm on the selection split. Faster settings are model-specific and ship per model."""
    from pathlib import Path

    from accel.benchmarks import verdict
    from accel.benchmarks.targets import TEST_SEEDS
    from accel.benchmarks.tuner import load_spaces

    assert load_spaces()["methods"]["cg-taylor"]["all"]["recommended"] == {}  # the tuner evaluates the default as is
    root = Path(__file__).resolve().parents[2] / "docs" / "bench" / "cache"
    seen = 0
    for path in sorted(root.glob("*/bench_cache.json")) + sorted(root.glob("*/steps-*/bench_cache.json")):
        rep = json.loads(path.read_text())
        if rep["config"].get("test_generation") not in TEST_SEEDS:
            continue
        (row,) = [r for r in rep["sweep"] if r["method"] == "cg-taylor" and r["params"] == {}]
        assert verdict.holds(row["selection"], 40.0), (path, row["selection"])
        seen += 1
    assert seen >= 6
