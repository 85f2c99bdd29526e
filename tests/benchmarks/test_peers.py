"""Every peer adapter of the caching benchmark, at a setting that caches nothing, reproduces the uncached output
bit for bit on the shipped dit-digits pipeline (batched guidance), through the harness's own runner. A peer that
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
