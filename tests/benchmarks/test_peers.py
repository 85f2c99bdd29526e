"""Every peer adapter of the caching benchmark, at a setting that caches nothing, reproduces the uncached output
bit for bit on the shipped dit-digits pipeline (batched guidance) and on a Wan pipeline (sequential guidance, video;
one expert and Wan 2.2's two), through the harness's own runner. A peer that
is misconfigured (wrong identifiers, a guidance adapter that permutes the batch wrongly) shows up here first.
U-Net peers are checked the same way in tests/caching/test_cache_unet.py, SeaCache in tests/zoo/test_flux_shapes.py."""

from __future__ import annotations

import numpy as np
import pytest

from accel.benchmarks import harness, methods, targets

STEPS = 4

NO_OP = {  # each peer's own knobs set so that nothing is ever reused or forecast
    "fbcache": {"threshold": 0.0},
    "taylorseer": {"cache_interval": 2, "max_order": 1, "disable_cache_before_step": 100},
    "magcache": {"threshold": 0.0, "max_skip_steps": 1, "retention_ratio": 0.2},
    "pab": {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [0, 0]},
    "fastercache": {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [-1, -1],
                    "unconditional_batch_skip_range": 1},
    "dbcache": {"Fn": 1, "Bn": 0, "residual_diff_threshold": 0.0, "max_warmup_steps": 1},
    "dbcache-taylorseer": {"Fn": 1, "Bn": 0, "residual_diff_threshold": 0.0, "max_warmup_steps": 1, "order": 2},
    "dbcache-foca": {"Fn": 1, "Bn": 0, "residual_diff_threshold": 0.0, "max_warmup_steps": 1},
    "dbcache-dmd": {"Fn": 1, "Bn": 0, "residual_diff_threshold": 0.0, "max_warmup_steps": 1},
    "spectrum": {"warmup_steps": 100},
}


def test_every_dit_peer_has_a_no_op_check():
    assert set(NO_OP) == {n for n, s in methods.METHODS.items() if "dit" in s.kinds and n not in ("none", "cg-taylor")}


@pytest.fixture(scope="module")
def dit_target():
    from accel.zoo import MODELS

    if not (MODELS["dit-digits"].weights / "model_index.json").is_file():
        pytest.skip("dit-digits weights are not in this checkout")
    t = targets.get_target("dit-digits")
    t.steps = STEPS
    # MagCache skips while its accumulated error is <= the threshold: ratios off 1 keep threshold 0 from ever skipping
    ctx = methods.Context(steps=STEPS, mag_ratios=[1.0] + [0.9] * (STEPS - 1), guidance_batched=True)
    items = t.items("selection", 2)
    ref, ref_macs = harness.Runner(t, "none", {}, ctx).generate(items, 2, count=True)
    return t, ctx, items, ref, ref_macs


@pytest.mark.parametrize("name", sorted(NO_OP))
def test_peer_no_op_setting_reproduces_the_uncached_output(dit_target, name):
    t, ctx, items, ref, ref_macs = dit_target
    out, macs = harness.Runner(t, name, NO_OP[name], ctx).generate(items, 2, count=True)
    assert np.array_equal(out, ref), f"{name}: max |diff| {np.abs(out.astype(int) - ref).max()}"
    assert macs.sum() >= ref_macs.sum()  # nothing skipped (a cache may add its own small products)


def test_deepcache_policy_splits_are_the_packages_branches():
    """DeepCache's uniform policy re-implemented here on the layer split is the package's branch 1, bit for bit,
    and on the block split its branch 2 (so the benchmark labels them by the branch they equal)."""
    t = targets.get_target("tiny-sd15")
    t.steps = 10
    ctx, items = methods.Context(steps=10), t.items("selection", 1)

    def run(name: str, params: dict) -> np.ndarray:
        return harness.Runner(t, name, params, ctx).generate(items, 1)[0]

    for split, branch in (("layer", 1), ("block", 2)):
        ours = run("deepcache-block", {"cache_interval": 3, "split": split})
        assert np.array_equal(ours, run("deepcache", {"cache_interval": 3, "cache_branch_id": branch})), split
    assert not np.array_equal(run("deepcache-block", {"cache_interval": 3, "split": "layer"}),
                              run("deepcache", {"cache_interval": 3, "cache_branch_id": 0}))


@pytest.fixture(scope="module")
def wan_targets(tmp_path_factory):
    """wan-shapes' architecture (4 blocks) with random weights, as one expert and as Wan 2.2's two (boundary 0.875)."""
    import json

    import torch
    from diffusers import WanPipeline, WanTransformer3DModel

    from accel.zoo.wan_shapes import recipe

    folders = {}
    models = recipe.build_models(0)
    small = {**recipe.TRANSFORMER_CONFIG, "num_layers": 4}  # wan-shapes' blocks, fewer of them: a quicker check
    models["transformer"] = WanTransformer3DModel(**small)
    one = recipe.build_pipeline(models)
    torch.manual_seed(1)
    two = WanPipeline(tokenizer=one.tokenizer, text_encoder=one.text_encoder, vae=one.vae, scheduler=one.scheduler,
                      transformer=one.transformer, transformer_2=WanTransformer3DModel(**small).eval(), boundary_ratio=0.875)
    for name, pipe in (("one", one), ("two", two)):
        folders[name] = tmp_path_factory.mktemp(f"wan-{name}")
        pipe.save_pretrained(folders[name])
        (folders[name] / "accel_call.json").write_text(json.dumps({**recipe.CALL, "guidance_scale": 3.0}))
    out = {}
    for name, folder in folders.items():
        t = targets.get_target(str(folder))
        t.steps = STEPS
        ctx = methods.Context(steps=STEPS, mag_ratios=[1.0] + [0.9] * (STEPS - 1))
        items = t.items("selection", 2)
        out[name] = (t, ctx, items, *harness.Runner(t, "none", {}, ctx).generate(items, 2, count=True))
    return out


def test_every_wan_peer_has_a_no_op_check():
    assert set(NO_OP) == {n for n, s in methods.METHODS.items() if "wan" in s.kinds and n not in ("none", "cg-taylor", "seacache")}


@pytest.mark.parametrize("name", sorted(NO_OP))
def test_wan_peer_no_op_setting_reproduces_the_uncached_video(wan_targets, name):
    """On Wan (sequential guidance, video latents) and on Wan 2.2's two experts, where every peer but MagCache is
    applied to both; MagCache's calibration covers one denoiser, and it says so on two."""
    from accel.errors import AccelError

    for kind in ("one", "two"):
        t, ctx, items, ref, ref_macs = wan_targets[kind]
        if name == "magcache" and kind == "two":
            with pytest.raises(AccelError, match="two-expert"):
                harness.Runner(t, name, NO_OP[name], ctx)
            continue
        out, macs = harness.Runner(t, name, NO_OP[name], ctx).generate(items, 2, count=True)
        assert out.shape == ref.shape and out.ndim == 5
        assert np.array_equal(out, ref), f"{name} ({kind}): max |diff| {np.abs(out.astype(int) - ref).max()}"
        assert macs.sum() >= ref_macs.sum()


@pytest.mark.parametrize("name, params", [
    ("fbcache", {"threshold": 1e3}),
    ("taylorseer", {"cache_interval": 3, "max_order": 1, "disable_cache_before_step": 1}),
    ("pab", {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [-1, 1001]}),
    ("dbcache", {"Fn": 1, "Bn": 0, "residual_diff_threshold": 1e3, "max_warmup_steps": 0}),
    ("spectrum", {"warmup_steps": 1, "flex_window": 3.0}),
    ("cg-taylor", {"threshold": 1e3, "warmup_steps": 1, "full_last_step": False}),
])
def test_wan_peers_cache_the_second_expert_too(wan_targets, name, params):
    """At a setting that skips, the low-noise expert's own compute drops too: the method was applied to it."""
    from accel.benchmarks.compute import ComputeCounter

    t, ctx, items, _, _ = wan_targets["two"]
    counts = {}
    for method, p in (("none", {}), (name, params)):
        runner = harness.Runner(t, method, p, ctx)
        with ComputeCounter(runner.pipe.transformer_2) as c:
            runner.generate(items, 2)
        counts[method] = c.macs
    assert 0 < counts[name] < 0.9 * counts["none"], counts


def test_l2p_rows_fit_on_wan_per_guidance_branch_and_refuse_two_experts(wan_targets):
    """Wan runs its guidance branches as separate calls: every step's two calls are two trajectories, one row per step;
    a pipeline that hands over to a second expert mid-trajectory is refused (the harness leaves l2p out there)."""
    from accel.caching.forecasters.l2p import fit_pipeline, record
    from accel.errors import AccelError

    t, _, items, _, _ = wan_targets["one"]
    pipe = t.load()
    assert len(record(pipe, lambda p: t.generate(p, items))) == 2 * STEPS  # conditional and unconditional calls
    rows = fit_pipeline(pipe, [lambda p: t.generate(p, items)], STEPS, history=3)
    assert len(rows["block0"]) == len(rows["last"]) == STEPS and all(len(r) == min(s, 3) for s, r in enumerate(rows["block0"]))
    with pytest.raises(AccelError, match="multiple of"):
        fit_pipeline(pipe, [lambda p: t.generate(p, items)], STEPS + 1)
    two, _, items2, _, _ = wan_targets["two"]
    with pytest.raises(AccelError, match="second expert"):
        fit_pipeline(two.load(), [lambda p: two.generate(p, items2)], STEPS)
