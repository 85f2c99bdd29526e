"""CG-Taylor's forecast variants (its levers): ``residual``, ``live_tail`` and ``gate="cumulative"``.

Each keeps threshold 0 exact; the residual forecast takes the same decisions as the plain one and lands
closer to the uncached output; a live tail really runs; settings that cannot apply are refused in one line
with nothing left hooked.
"""

from __future__ import annotations

import pytest
import torch
from conftest import hook_snapshot, run_pipe

import accel
from accel import AccelError, CGTaylorConfig

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = [{"residual": True}, {"live_tail": 2}, {"gate": "cumulative"}, {"residual": True, "live_tail": 1, "gate": "cumulative"},
            {"damping": 0.7}, {"forecaster": "horizon"}, {"forecaster": "select", "last_order": 2},
            {"forecaster": "exp", "last_order": 2}]


@pytest.mark.parametrize("fields", VARIANTS, ids=str)
def test_threshold_zero_stays_exact(tiny_dit_pipe, fields):
    ref = run_pipe(tiny_dit_pipe)
    with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.0, **fields)):
        assert torch.equal(run_pipe(tiny_dit_pipe), ref)
    assert torch.equal(run_pipe(tiny_dit_pipe), ref)


def _decisions(pipe) -> list[bool]:
    return [r.computed for rows in accel.stats(pipe).steps.values() for r in rows]


def test_residual_forecast_is_closer_at_the_same_decisions(tiny_dit_pipe):
    """The gate is the same, so the same steps are forecast; starting from block 0's fresh output, the residual
    forecast lands much closer to the uncached images (on this model about 17x in max error)."""
    ref = run_pipe(tiny_dit_pipe)
    errors, decisions = {}, {}
    for residual in (False, True):
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.3, residual=residual)):
            errors[residual] = float((run_pipe(tiny_dit_pipe) - ref).abs().max())
            decisions[residual] = _decisions(tiny_dit_pipe)
    assert decisions[True] == decisions[False] and not all(decisions[True])
    assert errors[True] < 0.5 * errors[False], errors


def test_live_tail_runs_on_forecast_steps(tiny_dit_pipe):
    blocks = tiny_dit_pipe.transformer.transformer_blocks
    calls = {"last": 0, "before": 0}
    # counted inside the blocks (their attention), which runs only when the block's own forward does
    hooks = [blocks[-1].attn1.register_forward_hook(lambda *a: calls.__setitem__("last", calls["last"] + 1)),
             blocks[-2].attn1.register_forward_hook(lambda *a: calls.__setitem__("before", calls["before"] + 1))]
    try:
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.3, live_tail=1)):
            run_pipe(tiny_dit_pipe, steps=12)
            full = sum(_decisions(tiny_dit_pipe))
        # the forecast block (the one before the tail) only runs on full steps; the tail on every call
        assert calls["last"] == 12 and calls["before"] == full < 12
    finally:
        for h in hooks:
            h.remove()


def test_damping_scales_each_order_by_its_power(tiny_dit_pipe):
    """The damped forecast is the Taylor series at ``damping * offset``: with a first-order last-block forecast
    its outputs on forecast steps lie between the plain forecast and the last full step's output."""
    from accel.caching.api import _controller
    from accel.caching.taylor import forecast

    with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=1e3, warmup_steps=2, full_last_step=False, damping=0.5)):
        run_pipe(tiny_dit_pipe, steps=6)
        ctrl = _controller(tiny_dit_pipe.transformer)
        gate = ctrl.blocks[0].module._diffusers_hook.get_hook("accel_cg_taylor_gate")
        st = ctrl.states.get_state()
        plain, damped = forecast(st.fl, 2.0, st.nl), gate._forecast(st, 4.0, st.fl[0])
        assert torch.allclose(damped, plain, atol=1e-6)
        assert st.nl == 2 and not torch.allclose(gate._forecast(st, 2.0, st.fl[0]), plain)
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(AccelError, match="damping must be a number in"):
            CGTaylorConfig(damping=bad)


def test_horizon_blends_back_to_the_last_full_step_beyond_three_steps():
    from accel.caching import forecasters
    from accel.caching.taylor import forecast

    torch.manual_seed(0)
    f = torch.randn(3, 2, 5)
    for off in (1.0, 3.0):
        assert torch.allclose(forecasters.evaluate(f, forecasters.terms("horizon", off, 3)), forecast(f, off, 3))
    w = 3.0 / 6.0
    want = w * forecast(f, 3.0, 3) + (1 - w) * f[0]
    assert torch.allclose(forecasters.evaluate(f, forecasters.terms("horizon", 6.0, 3)), want, atol=1e-6)
    assert torch.allclose(forecasters.evaluate_differentiable(f, forecasters.terms("horizon", 6.0, 3)), want, atol=1e-6)
    err, ref = forecasters.forecast_error(f, forecasters.terms("horizon", 6.0, 3), f[1])
    assert torch.allclose(err, (want - f[1]).abs().sum(-1), rtol=1e-5) and torch.allclose(ref, f[1].abs().sum(-1))


def test_exp_levels_off_where_the_factors_decay():
    """Per element: a decaying trajectory (D_2 of opposite sign to D_1) levels off, as e^(l o) with l = D_2 / D_1;
    a growing one (same signs) gets the first-order series; the rate is clamped; gradients flow."""
    from accel.caching import forecasters

    f = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [-0.5, 0.5, -100.0]], dtype=torch.float64, requires_grad=True)
    got = forecasters.evaluate_differentiable(f, forecasters.terms("exp", 2.0, 3))
    rate = torch.tensor([-0.5, 0.0, -forecasters.EXP_MAX_RATE], dtype=torch.float64)
    want = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) + f.detach()[1] * torch.where(rate < 0, torch.expm1(2 * rate) / rate, torch.tensor(2.0, dtype=torch.float64))
    assert torch.allclose(got, want) and torch.allclose(forecasters.evaluate(f.detach(), forecasters.terms("exp", 2.0, 3)), want)
    got.sum().backward()
    assert torch.isfinite(f.grad).all()
    assert forecasters.terms("exp", 2.0, 2) == [(1.0, 2.0, 2)]  # too few factors: the Taylor series
    with pytest.raises(AccelError, match="forecaster='exp' takes its rates from second-order factors"):
        CGTaylorConfig(forecaster="exp")


def test_select_gates_on_the_best_candidate_and_forecasts_with_it(tiny_dit_pipe):
    """Block 0's error under ``select`` is the smallest of the candidates' (never above the plain forecast's), the
    records name the candidate, and the forecast block's forecast is that candidate's series."""
    from accel.caching import forecasters
    from accel.caching.api import _controller

    cfg = CGTaylorConfig(threshold=1e3, warmup_steps=3, full_last_step=False, last_order=2, forecaster="select")
    with accel.cached(tiny_dit_pipe, cfg):
        run_pipe(tiny_dit_pipe, steps=6)
        rows = [r for v in accel.stats(tiny_dit_pipe).steps.values() for r in v]
        assert [r.choice is not None for r in rows] == [not r.computed for r in rows] and not rows[-1].computed
        ctrl = _controller(tiny_dit_pipe.transformer)
        gate = ctrl.blocks[0].module._diffusers_hook.get_hook("accel_cg_taylor_gate")
        st = ctrl.states.get_state()
        h = st.f0[0] + 0.01 * torch.randn_like(st.f0[0])
        errs = [gate._judge(*forecasters.forecast_error(st.f0, forecasters.terms("select", 2.0, st.n0, c), h))
                for c in range(len(forecasters.CANDIDATES))]
        assert gate._error(st, 2.0, h) == min(errs) and st.choice == errs.index(min(errs))
        order, damping = forecasters.CANDIDATES[st.choice]
        assert torch.equal(gate._forecast(st, 2.0, h), forecasters.evaluate(st.fl, [(1.0, 2.0 * damping, min(st.nl, order + 1))]))
    with pytest.raises(AccelError, match="forecaster must be one of"):
        CGTaylorConfig(forecaster="hermite")


def test_cumulative_gate_forecasts_no_more_than_the_step_gate(tiny_dit_pipe):
    fractions = {}
    for gate in ("step", "cumulative"):
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.3, gate=gate)):
            run_pipe(tiny_dit_pipe, steps=12)
            fractions[gate] = accel.stats(tiny_dit_pipe).forecast_fraction
    assert 0 < fractions["cumulative"] <= fractions["step"], fractions


def _no_hooks(model, before) -> bool:
    """As before enable, but for the empty hook registry diffusers' own ``cache_context`` leaves on the model."""
    regs = [m.__dict__.get("_diffusers_hook") for m in model.modules()]
    now = hook_snapshot(model)
    now[""] = (before[""][0], now[""][1]) if not model.__dict__.get("_diffusers_hook", None) or not regs[0].hooks else now[""]
    return now == before and all(r is None or not r.hooks for r in regs)


def test_variants_that_cannot_apply_are_refused(tiny_dit_pipe):
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    before = hook_snapshot(tiny_dit_pipe.transformer)
    accel.enable(tiny_dit_pipe, CGTaylorConfig(threshold=0.3, live_tail=5))  # 6 blocks: no block left to forecast
    with pytest.raises(AccelError, match="live_tail=5 leaves no block to forecast"):
        run_pipe(tiny_dit_pipe)
    assert not accel.is_enabled(tiny_dit_pipe) and _no_hooks(tiny_dit_pipe.transformer, before)

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(AccelError, match="live_tail applies to transformer blocks"):
        accel.enable(pipe, CGTaylorConfig(live_tail=1))
    assert not accel.is_enabled(pipe)
    accel.enable(pipe, CGTaylorConfig(threshold=0.3, residual=True, warmup_steps=1))
    with pytest.raises(AccelError, match="residual=True needs block 0 and the forecast block to output the same shape"):
        pipe(batch_size=1, num_inference_steps=4, output_type="np")
    assert not accel.is_enabled(pipe)
    for bad, msg in (({"live_tail": -1}, "live_tail must be"), ({"gate": "sum"}, "gate must be one of"), ({"residual": 1}, "residual must be")):
        with pytest.raises(AccelError, match=msg):
            CGTaylorConfig(**bad)
