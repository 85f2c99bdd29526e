"""``accel bench adjoint --cache`` and ``accel finetune adjoint ... --cache`` on a tiny random DiT pipeline."""

from __future__ import annotations

import json

import pytest

from accel.errors import AccelError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bare_cache_flag_means_the_shipped_setting():
    from accel.cli.adjoint import bare_cache_flags

    assert bare_cache_flags(["bench", "adjoint", "--cache"]) == ["bench", "adjoint", "--cache", "shipped"]
    assert bare_cache_flags(["--cache", "--steps", "4"]) == ["--cache", "shipped", "--steps", "4"]
    assert bare_cache_flags(["--cache", "0.1", "--steps", "4"]) == ["--cache", "0.1", "--steps", "4"]
    assert bare_cache_flags(["--cache", "-1"]) == ["--cache", "-1"]  # a number, refused later with its reason


def test_bench_through_the_cache(tiny_dit_folder):
    from accel.benchmarks.adjoint import BenchConfig, run_bench
    from accel.benchmarks.adjoint_cache import cache_markdown, run_cache_extras

    cfg = BenchConfig(model=str(tiny_dit_folder), steps=(8,), methods=("discrete", "cached"), isolate=False, batch=1,
                      repeats=1, cache_threshold=0.5)
    recs = run_bench(cfg)
    assert {r["method"] for r in recs} == {"autograd", "cached-autograd", "discrete", "cached"}
    cached = [r for r in recs if r["method"] == "cached"]
    assert len(cached) == 3 and all(r["reference"] == "cached-autograd" and r["rel_error"] < 1e-4 for r in cached)
    assert all(0 < r["forecast_fraction"] < 1 and -1 <= r["cos_uncached"] <= 1 for r in cached)
    extras = run_cache_extras(cfg, rounds=1, thresholds=(0.0, 0.5))
    (timing,) = extras["timing"]
    assert timing["steps"] == 8 and timing["discrete_s"] > 0 and timing["cached_s"] > 0
    assert timing["bound"] == 1 / (1 - timing["forecast_fraction"]) and timing["cache"]["threshold"] == 0.5
    exact, loose = extras["fidelity"]
    assert exact["forecast_fraction"] == 0 and all(exact[f"cos_{t}"] > 1 - 1e-9 for t in ("noise", "cond", "weights"))
    assert loose["forecast_fraction"] > 0
    md = cache_markdown(recs, extras)
    assert "| 8 |" in md and "interleaved" in md and "| 0.5 | 8 |" in md and f"| {timing['bound']:.2f}x |" in md


def test_cli_bench_and_finetune_with_cache(tiny_dit_folder, tmp_path):
    from accel.cli.main import main

    out = tmp_path / "bench"
    main(["bench", "adjoint", "--model", str(tiny_dit_folder), "--steps", "6", "--methods", "discrete", "--no-isolate",
          "--batch", "1", "--repeats", "1", "--no-progress", "--cache", "-o", str(out)])
    extras = json.loads((out / "bench_adjoint_cache.json").read_text())
    assert extras["cache"]["threshold"] == 0.03  # no accel_cache.json beside this model: the default setting
    assert {r["method"] for r in extras["records"]} >= {"cached", "cached-autograd"} and (out / "bench_adjoint_cache.md").is_file()
    ft = tmp_path / "ft"
    main(["finetune", "adjoint", "effect", "--model", str(tiny_dit_folder), "--out", str(ft), "--iters", "2", "--batch", "2",
          "--steps", "6", "--no-progress", "--cache", "0.5"])
    summary = json.loads((ft / "summary.json").read_text())
    assert summary["config"]["cache"] == 0.5 and len(summary["seconds"]) == 2 and summary["seconds"][1] > summary["seconds"][0]


def test_finetune_cache_settings_are_checked(tiny_dit_folder, tmp_path):
    from accel.adjoint.finetune import FinetuneConfig

    with pytest.raises(AccelError, match="threshold >= 0"):
        FinetuneConfig(task="effect", out_dir=str(tmp_path), cache="turbo")
    assert FinetuneConfig(task="effect", out_dir=str(tmp_path), cache="fast").cache == "fast"
    with pytest.raises(AccelError, match="method discrete or autograd"):
        FinetuneConfig(task="effect", out_dir=str(tmp_path), cache="shipped", method="continuous")
    assert FinetuneConfig(task="effect", out_dir=str(tmp_path), cache="0.2").cache == 0.2
    assert FinetuneConfig(task="effect", out_dir=str(tmp_path), cache="finetune").cache == "finetune"


def test_finetune_shipped_cache_is_the_quality_preset(tiny_dit_folder):
    """Bare ``--cache`` on fine-tuning takes the model's quality preset (training needs the tight setting); a
    preset by name, a threshold on the default, and a folder without presets falls back to its default."""
    import json

    from accel.adjoint._tasks import _cache_config
    from accel.caching import CGTaylorConfig
    from accel.sampling import load_pipeline

    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps({
        "threshold": 0.2, "config": {"warmup_steps": 2},
        "presets": {"quality": {"threshold": 0.05}, "balanced": {"threshold": 0.2}, "fast": {"threshold": 0.4}}}))
    pipe = load_pipeline(str(tiny_dit_folder))
    assert _cache_config(pipe, "shipped") == CGTaylorConfig(threshold=0.05)
    assert _cache_config(pipe, "fast") == CGTaylorConfig(threshold=0.4)
    assert _cache_config(pipe, 0.1) == CGTaylorConfig(threshold=0.1, warmup_steps=2)
    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps({"threshold": 0.2}))
    assert _cache_config(pipe, "shipped") == CGTaylorConfig(threshold=0.2)


def test_finetune_bare_cache_is_the_finetune_entry(tiny_dit_folder):
    """Bare ``--cache`` on ``accel finetune`` (``"shipped"`` after :func:`bare_cache_flags`) takes the model's
    ``finetune`` entry of accel_cache.json when it has one (all its fields), also by name; a threshold still keeps
    the shipped setting's other fields; a malformed entry is a one-line error; without one, bare ``--cache`` falls
    back to the quality preset and ``"finetune"`` by name is refused."""
    from accel.adjoint._tasks import _cache_config
    from accel.adjoint.finetune import FinetuneConfig
    from accel.cli.adjoint import bare_cache_flags

    from accel.caching import CGTaylorConfig
    from accel.sampling import load_pipeline

    finetune = CGTaylorConfig(threshold=0.05).to_dict()  # the paper's ends: 3 warm-up steps, last step full, no residual
    shipped = {"threshold": 0.1, "config": {"residual": True, "warmup_steps": 1, "full_last_step": False},
               "presets": {"quality": {"threshold": 0.07, "residual": True, "warmup_steps": 1, "full_last_step": False}}}
    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps(shipped | {"finetune": finetune}))
    pipe = load_pipeline(str(tiny_dit_folder))
    args = bare_cache_flags(["finetune", "adjoint", "effect", "--cache"])
    bare = FinetuneConfig(task="effect", out_dir="unused", cache=args[-1]).cache
    assert _cache_config(pipe, bare) == CGTaylorConfig(**finetune) == _cache_config(pipe, "finetune")
    assert _cache_config(pipe, "quality") == CGTaylorConfig(**shipped["presets"]["quality"])
    assert _cache_config(pipe, 0.03) == CGTaylorConfig(threshold=0.03, **shipped["config"])
    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps(shipped | {"finetune": {"threshold": 0.05, "warmup": 3}}))
    with pytest.raises(AccelError, match="entry 'finetune': unknown CGTaylorConfig fields warmup") as e:
        _cache_config(pipe, "shipped")
    assert "\n" not in str(e.value)
    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps(shipped))
    assert _cache_config(pipe, "shipped") == CGTaylorConfig(**shipped["presets"]["quality"])  # no entry: the quality preset
    with pytest.raises(AccelError, match="needs a 'finetune' entry"):
        _cache_config(pipe, "finetune")


def test_dit_digits_ships_the_race_setting_for_finetuning():
    """dit-digits' accel_cache.json ships the fine-tuning race's choice (threshold 0.05 with the paper's ends, the
    CGTaylorConfig fields of that run written out; fields added since keep their defaults) as its ``finetune`` entry,
    beside its sampling setting and presets (the benchmark rule's, checked in tests/caching/test_cache_shipped.py)."""
    from accel.caching import CGTaylorConfig
    from accel.zoo._registry import MODELS

    rec = json.loads((MODELS["dit-digits"].weights / "accel_cache.json").read_text())
    assert CGTaylorConfig(**rec["finetune"]) == CGTaylorConfig(threshold=0.05)
    assert rec["threshold"] > 0 and rec["config"]["residual"] and set(rec["presets"]) <= {"quality", "balanced", "fast"}
    assert rec["presets"]  # the levels whose choice held on test


def test_sample_with_grad_takes_the_shipped_setting_for_its_step_count(tiny_dit_folder, tiny_dit_pipe):
    """``cache="shipped"``: the folder's setting for the call's step count (``by_steps``), else its default; the
    same gradient as passing that config; a model without the file, or another string, is one clear error."""
    import json

    import torch

    from accel.adjoint import sample_with_grad
    from accel.caching import CGTaylorConfig
    from accel.sampling import load_pipeline

    (tiny_dit_folder / "accel_cache.json").write_text(json.dumps({
        "threshold": 0.2, "by_steps": {"6": {"threshold": 0.5, "config": {"warmup_steps": 1}}}}))
    pipe = load_pipeline(str(tiny_dit_folder))
    c = pipe.transformer.config

    def grad(cache, steps=6):
        x = torch.randn(1, c.in_channels, c.sample_size, c.sample_size, generator=torch.Generator().manual_seed(0)).requires_grad_()
        seen = []
        sample_with_grad(pipe, x, torch.tensor([3]), steps=steps, options={"cache": cache},
                         callback=lambda info: seen.append(info["computed"])).square().mean().backward()
        return x.grad, seen

    g, seen = grad("shipped")
    ref, ref_seen = grad(CGTaylorConfig(threshold=0.5, warmup_steps=1))
    assert torch.equal(g, ref) and seen == ref_seen and not all(seen)
    assert torch.equal(grad("shipped", 5)[0], grad(CGTaylorConfig(threshold=0.2), 5)[0])  # no entry for 5: the default
    with pytest.raises(AccelError, match="'shipped', got 'fast'"):
        grad("fast")
    with pytest.raises(AccelError, match="ships none"):
        sample_with_grad(tiny_dit_pipe, torch.randn(1, c.in_channels, c.sample_size, c.sample_size), torch.tensor([3]),
                         steps=4, options={"cache": "shipped"})


def test_cli_bench_adjoint_exactness_speed_and_race(tiny_dit_folder, tmp_path):
    """``accel bench adjoint-exactness | adjoint-speed | adjoint-race`` end to end on a tiny random DiT."""
    import json as _json

    from accel.cli.main import main

    model = str(tiny_dit_folder)
    main(["bench", "adjoint-exactness", "--model", model, "--steps", "6", "--threshold", "0.5", "-o", str(tmp_path / "ex")])
    (rec,) = _json.loads((tmp_path / "ex" / "exactness.json").read_text())["records"]
    assert 0 < rec["forecast_fraction"] < 1 and rec["same_decisions_autograd"]
    assert all(e < 1e-8 for e in rec["rel_error"].values())  # float64: the adjoint of the cached sampler is exact
    assert all(fd["decisions_unchanged"] and fd["rel_diff"] < 1e-4 for fd in rec["finite_difference"].values())
    assert "| threshold 0.5 |" in (tmp_path / "ex" / "exactness.md").read_text()

    main(["bench", "adjoint-speed", "--model", model, "--steps", "4,6", "--rounds", "1", "--batch", "1", "-o", str(tmp_path / "speed")])
    speed = _json.loads((tmp_path / "speed" / "speed.json").read_text())
    assert [t["steps"] for t in speed["timing"]] == [4, 6] and speed["preset"] == "shipped"
    assert speed["command"].startswith("accel bench adjoint-speed")

    main(["bench", "adjoint-race", "-o", str(tmp_path / "race"), "--model", model, "--iters", "2", "--batch", "1", "--steps", "4",
          "--cache", "0.5", "--chunk", "1", "--window", "1", "--work", str(tmp_path / "work")])
    race = _json.loads((tmp_path / "race" / "race.json").read_text())
    assert [len(race["runs"][k]["losses"]) for k in ("uncached", "cached")] == [2, 2] and race["cache_setting"]["threshold"] == 0.5
    assert {p.name for p in (tmp_path / "race").iterdir()} >= {"race.md", "race.png", "before.png", "after_cached.png"}
