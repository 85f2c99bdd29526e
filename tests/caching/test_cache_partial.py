"""X-Slim's early-warning tier under the gate (``partial_ratio``): partial refreshes reuse the residuals of the middle
blocks that changed least, on real diffusers blocks driven by a real pipeline."""

from __future__ import annotations

import pytest
import torch
from conftest import run_pipe

import accel
from accel import AccelError, CGTaylorConfig
from accel.caching.hooks import controller_of

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 12
# The gate never passes (no forecast step); every refused step under the critical line is a partial refresh.
ALWAYS_PARTIAL = dict(threshold=1e-9, partial_ratio=1e15, warmup_steps=1, full_last_step=False)


def _middle_runs(pipe, config):
    """Per denoiser call: how many middle blocks actually ran (their attention was called), and the records."""
    blocks = pipe.transformer.transformer_blocks
    runs, per_call = [], []
    hooks = [b.attn1.register_forward_pre_hook(lambda *_: runs.append(1)) for b in blocks[1:-1]]
    hooks.append(pipe.transformer.register_forward_pre_hook(lambda *_: per_call.append(len(runs))))
    try:
        with accel.cached(pipe, config):
            out = run_pipe(pipe, STEPS)
            records = accel.stats(pipe).steps["cond_uncond"]
    finally:
        for h in hooks:
            h.remove()
    per_call.append(len(runs))
    return out, [b - a for a, b in zip(per_call, per_call[1:])], records


@pytest.mark.parametrize("share, reused", [(1.0, 4), (0.5, 2), (0.2, 0)])
def test_partial_refresh_runs_only_the_blocks_it_does_not_reuse(tiny_dit_pipe, share, reused):
    ref = run_pipe(tiny_dit_pipe, STEPS)
    out, ran, records = _middle_runs(tiny_dit_pipe, CGTaylorConfig(**ALWAYS_PARTIAL, partial_share=share))
    reasons = [r.reason for r in records]
    assert all(r.computed for r in records)  # a partial refresh counts as computed: the streams refresh from it
    if reused == 0:  # int(0.2 * 4) = 0 blocks to reuse: no partial tier, the uncached output
        assert "partial" not in reasons and torch.equal(out, ref)
        return
    # The first two full steps measure how the residuals change; from the third on every step is partial.
    assert reasons[:3] == ["warmup", "gate", "gate"] and set(reasons[3:]) == {"partial"}, reasons
    assert ran == [4, 4, 4] + [4 - reused] * (STEPS - 3)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert (out - ref).abs().mean() < 0.2 * ref.abs().mean()
    assert not accel.is_enabled(tiny_dit_pipe.transformer) and torch.equal(run_pipe(tiny_dit_pipe, STEPS), ref)


def test_reused_blocks_add_their_stored_residuals(tiny_dit_pipe):
    """With every middle block reused, the last block's input on a partial step is block 0's output plus the middle
    blocks' residuals of the last full step, in order."""
    blocks = tiny_dit_pipe.transformer.transformer_blocks
    seen = {}
    hooks = [blocks[0].register_forward_hook(lambda m, a, o: seen.__setitem__("b0", o)),
             blocks[-1].register_forward_pre_hook(lambda m, a, k: seen.__setitem__("in", k.get("hidden_states", a[0] if a else None)),
                                                  with_kwargs=True)]
    checked = []
    try:
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(**ALWAYS_PARTIAL, partial_share=1.0)):
            def check(*_):
                st = controller_of(tiny_dit_pipe.transformer).states.get_state()
                if st.partial:
                    want = seen["b0"] + sum(st.residuals.stored[i][0] for i in range(4))
                    checked.append(torch.allclose(seen["in"], want, atol=1e-6))
            hooks.append(blocks[-1].register_forward_pre_hook(check))
            run_pipe(tiny_dit_pipe, STEPS)
    finally:
        for h in hooks:
            h.remove()
    assert len(checked) == STEPS - 3 and all(checked)


def test_threshold_zero_stays_exact_with_a_partial_tier(tiny_dit_pipe):
    ref = run_pipe(tiny_dit_pipe, STEPS)
    with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.0, partial_ratio=3.0)):
        assert torch.equal(run_pipe(tiny_dit_pipe, STEPS), ref)


def test_partial_tier_between_forecast_and_full(tiny_dit_pipe):
    """At a threshold that forecasts some steps, a critical line puts some of the refused steps on the partial tier:
    the three tiers all occur, and the compute lies between the gate alone and its partial steps made forecasts."""
    base = dict(threshold=0.05, warmup_steps=1, full_last_step=False)
    _, ran_gate, rec_gate = _middle_runs(tiny_dit_pipe, CGTaylorConfig(**base))
    _, ran_tier, rec_tier = _middle_runs(tiny_dit_pipe, CGTaylorConfig(**base, partial_ratio=4.0))
    reasons = {r.reason for r in rec_tier}
    assert {"forecast", "partial"} <= reasons, [r.reason for r in rec_tier]
    assert sum(ran_tier) < sum(ran_gate)


@pytest.mark.parametrize("bad, match", [({"partial_ratio": 0.5}, "partial_ratio must be 0"), ({"partial_ratio": -1.0}, "partial_ratio"),
                                        ({"partial_share": 0.0}, "partial_share"), ({"partial_share": 1.5}, "partial_share")])
def test_bad_partial_settings_are_one_line_errors(bad, match):
    with pytest.raises(AccelError, match=match):
        CGTaylorConfig(**bad)
