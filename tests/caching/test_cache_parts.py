"""CG-Taylor's parts: every registered gate and forecaster, and the residual forecast.

Each keeps threshold 0 exact; every forecaster's forward path (in place, fused kernels) and its gradient path (out of
place) give the same streams and forecasts; no gate passes at threshold 0; the residual forecast takes the same
decisions as the plain one and lands closer to the uncached output; settings that cannot apply are refused in one line
with nothing left hooked.
"""

from __future__ import annotations

import pytest
import torch
from conftest import run_pipe

import accel
from accel import AccelError, CGTaylorConfig
from accel.caching import forecasters, gates
from accel.caching.forecasters import Stream

pytestmark = pytest.mark.usefixtures("one_thread")

PARTS = [{"gate": g, "forecaster": f, "residual": r} for g in gates.REGISTRY for f in forecasters.REGISTRY for r in (False, True)]


@pytest.mark.parametrize("fields", PARTS, ids=str)
def test_threshold_zero_stays_exact(tiny_dit_pipe, fields):
    ref = run_pipe(tiny_dit_pipe)
    with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.0, **fields)):
        assert torch.equal(run_pipe(tiny_dit_pipe), ref)
    assert torch.equal(run_pipe(tiny_dit_pipe), ref)


@pytest.mark.parametrize("name", list(forecasters.REGISTRY))
@pytest.mark.parametrize("role", ["block0", "last"])
def test_forward_and_gradient_paths_agree(name, role):
    """The in-place update (and advance) and fused forecast equal the out-of-place ones the gradient path
    differentiates, on an uneven schedule of full and forecast steps; the stream rebuilt the way the gradient path
    does it (from the last ``rows`` outputs, or by replaying every step for a forecaster that advances) is the same."""
    fc = forecasters.build(name, None, role)
    g = torch.Generator().manual_seed(0)
    full = {0, 1, 2, 4, 7, 8, 11}
    inplace, functional, outputs = Stream(), Stream(), []
    for step in range(12):
        if step not in full:  # a forecast step: its forecast is what an advancing stream takes in
            want = fc.predict_differentiable(functional, step)
            assert torch.allclose(fc.predict(inplace, step), want, rtol=1e-12, atol=1e-12)
            fc.advance(inplace, fc.predict(inplace, step), step)
            functional = fc.advanced(functional, want, step)
            assert torch.allclose(inplace.data, functional.data, rtol=1e-12, atol=1e-12)
            continue
        h = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
        if outputs:
            err, ref = fc.error(inplace, step, h)
            want = fc.predict_differentiable(functional, step)
            assert torch.allclose(err.double(), (want - h).abs().sum((1, 2)), rtol=1e-5)
            assert torch.allclose(ref.double(), h.abs().sum((1, 2)), rtol=1e-5)
        fc.update(inplace, h, step)
        functional = fc.updated(functional, h, step)
        outputs.append((step, h))
        assert torch.equal(fc.latest(inplace), h) and torch.equal(fc.latest(functional), h)
        assert (inplace.valid, inplace.last, inplace.extra) == (functional.valid, functional.last, functional.extra)
        assert torch.allclose(inplace.data, functional.data, rtol=1e-12, atol=1e-12)
    rebuilt, rows = Stream(), dict(outputs)
    if fc.advances:
        for step in range(12):
            rebuilt = fc.updated(rebuilt, rows[step], step) if step in full else fc.advanced(rebuilt, fc.predict_differentiable(rebuilt, step), step)
    else:
        for step, h in outputs[-fc.rows if fc.rows is not None else 0:]:
            rebuilt = fc.updated(rebuilt, h, step)
    assert (rebuilt.valid, rebuilt.last, rebuilt.extra) == (functional.valid, functional.last, functional.extra)
    assert torch.equal(rebuilt.data, functional.data)


@pytest.mark.parametrize("name", list(gates.REGISTRY))
def test_no_gate_passes_at_threshold_zero(name):
    gate = gates.build(name, 0.0, None)
    state = gate.new_state()
    for error in (0.0, 1e-12, 0.5):
        assert not gate.passes(state, error)
        gate.forecasted(state, error)


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


def test_cumulative_gate_forecasts_no_more_than_the_step_gate(tiny_dit_pipe):
    fractions = {}
    for gate in ("step", "cumulative"):
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.3, gate=gate)):
            run_pipe(tiny_dit_pipe, steps=12)
            fractions[gate] = accel.stats(tiny_dit_pipe).forecast_fraction
    assert 0 < fractions["cumulative"] <= fractions["step"], fractions


def test_lookahead_gate_skips_block_0_after_a_very_good_forecast(tiny_dit_pipe):
    """With the same threshold, the lookahead gate forecasts the step gate's steps and takes some of them blind: block 0
    runs on fewer calls, every blind step follows a gated forecast (max_blind 1), and a ratio no error reaches takes
    none (then its decisions and outputs are the step gate's, bit for bit)."""
    from conftest import call_counts

    probe = "transformer_blocks.0.attn1.to_q"  # runs only when block 0 really computes
    runs, recs, outs = {}, {}, {}
    for gate, opts in (("step", {}), ("lookahead", {"ratio": 1.0}), ("lookahead", {"ratio": 1e-9})):
        key = gate + str(opts)
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.3, warmup_steps=2, gate=gate, gate_options=opts)):
            counts, handles = call_counts(tiny_dit_pipe.transformer, [probe])
            outs[key] = run_pipe(tiny_dit_pipe, steps=12)
            for h in handles:
                h.remove()
            runs[key] = counts[probe]
            recs[key] = [r.reason for rows in accel.stats(tiny_dit_pipe).steps.values() for r in rows]
    blind = recs["lookahead{'ratio': 1.0}"]
    assert "blind" in blind and runs["lookahead{'ratio': 1.0}"] == len(blind) - blind.count("blind") < runs["step{}"]
    assert all(blind[i - 1] == "forecast" for i, r in enumerate(blind) if r == "blind")
    assert recs["lookahead{'ratio': 1e-09}"] == recs["step{}"] and torch.equal(outs["lookahead{'ratio': 1e-09}"], outs["step{}"])
    with pytest.raises(AccelError, match="ratio must be in"):
        CGTaylorConfig(gate="lookahead", gate_options={"ratio": 0})


def test_l2p_fits_a_linear_recurrence_and_forecasts_it():
    """On trajectories that follow x_s = 1.5 x_{s-1} - 0.5 x_{s-2} the fitted rows are that recurrence (a tiny ridge
    aside), and the forecaster, fed the entries, forecasts the next output; rows are validated in one line."""
    from accel.caching.forecasters.l2p import fit

    gen = torch.Generator().manual_seed(0)
    trajs = []
    for _ in range(3):
        x = [torch.randn(4, 6, generator=gen, dtype=torch.float64), torch.randn(4, 6, generator=gen, dtype=torch.float64)]
        for _ in range(8):
            x.append(1.5 * x[-1] - 0.5 * x[-2])
        trajs.append(torch.stack(x))
    rows = fit(trajs, history=2, ridge=1e-9)
    assert rows[0] == [] and len(rows[1]) == 1 and len(rows[5]) == 2
    assert rows[5] == pytest.approx([1.5, -0.5], abs=1e-3)
    fc = forecasters.build("l2p", {"history": 2, "last": rows}, "last")
    stream, t = Stream(), trajs[0]
    for step in range(5):
        fc.update(stream, t[step], step) if step % 2 == 0 else fc.advance(stream, t[step], step)
    assert torch.allclose(fc.predict(stream, 5), t[5], atol=1e-3 * float(t[5].abs().max()))
    with pytest.raises(AccelError, match="each row of last must be at most 3 finite numbers"):
        CGTaylorConfig(forecaster="l2p", forecaster_options={"history": 3, "last": [[1.0, 0.0, 0.0, 0.0]]})


def test_l2p_rows_fitted_for_another_step_count_are_named(tiny_dit_pipe):
    """Rows fitted per step of N-step sampling fall on the wrong steps at another count: the call says so, once per
    count, and names the fix; at N it is silent."""
    import warnings

    rows = [[]] + [[2.0, -1.0]] * 5  # fitted for 6 steps
    accel.enable(tiny_dit_pipe, CGTaylorConfig(threshold=0.1, forecaster="l2p", forecaster_options={"history": 2, "last": rows, "block0": rows}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_pipe(tiny_dit_pipe, steps=6)
    with pytest.warns(UserWarning, match="fitted per step of 6-step sampling, and this call samples 8 steps.*--steps 8"):
        run_pipe(tiny_dit_pipe, steps=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_pipe(tiny_dit_pipe, steps=8)  # said once
    accel.disable(tiny_dit_pipe)


def test_variants_that_cannot_apply_are_refused(tiny_dit_pipe):
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    accel.enable(pipe, CGTaylorConfig(threshold=0.3, residual=True, warmup_steps=1))
    with pytest.raises(AccelError, match="residual=True needs block 0 and the forecast block to output the same shape"):
        pipe(batch_size=1, num_inference_steps=4, output_type="np")
    assert not accel.is_enabled(pipe)
    with pytest.raises(AccelError, match="lookahead gate forecasts block 0 too, which needs transformer blocks"):
        accel.enable(pipe, CGTaylorConfig(threshold=0.3, gate="lookahead"))
    assert not accel.is_enabled(pipe)
    for bad, msg in (({"gate": "sum"}, "gate must be one of"), ({"residual": 1}, "residual must be"),
                     ({"forecaster": "hermite"}, "forecaster must be one of"), ({"forecaster_options": {"ordr": 2}}, "has no option ordr"),
                     ({"gate_options": {"x": 1}}, "it takes no options"), ({"forecaster_options": {"order": 9}}, "order must be an int from 0 to 4"),
                     ({"gate_options": [1]}, "gate_options must be a dict")):
        with pytest.raises(AccelError, match=msg):
            CGTaylorConfig(**bad)
