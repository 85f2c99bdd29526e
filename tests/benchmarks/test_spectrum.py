"""Spectrum, the benchmark's peer written here (accel/benchmarks/spectrum.py), on tiny random DiT and FLUX pipelines
of the model-family table: the schedule, the ridge forecast against a direct refit, exactness when every step runs
in full, skipped blocks on forecast steps, an exact undo, and config validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from accel.benchmarks import spectrum
from accel.benchmarks.spectrum import ChebyshevRidge, SpectrumConfig, apply_spectrum
from accel.errors import AccelError

from conftest import PipelineRun, call_counts, hook_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 8
# full at 0, 1, 2, 4, 6; forecast at 3, 5, 7
SKIPPING = SpectrumConfig(warmup_steps=3, window_size=2.0, flex_window=0.0, num_inference_steps=STEPS)
ALL_FULL = SpectrumConfig(warmup_steps=STEPS, num_inference_steps=STEPS)
# attention modules inside the first and last block: they run only when their block's own forward runs
ATTN = {"dit": ("transformer_blocks.0.attn1", "transformer_blocks.2.attn1"),
        "flux": ("transformer_blocks.0.attn", "single_transformer_blocks.1.attn")}
_BUILT: dict[tuple[str, bool], PipelineRun] = {}


def _family(name: str, cfg: bool = False) -> PipelineRun:
    if (name, cfg) not in _BUILT:
        _BUILT[name, cfg] = PipelineRun(name, cfg)
    return _BUILT[name, cfg]


def _run(fam: PipelineRun) -> torch.Tensor:
    kwargs = {**fam.kwargs(), "num_inference_steps": STEPS}
    with torch.no_grad():
        result = fam.pipe(**kwargs)
    return torch.as_tensor(result.images).detach().clone()


@pytest.fixture(params=[("dit", False), ("flux", False), ("flux", True)], ids=["dit-batched-cfg", "flux", "flux-true-cfg"])
def fam(request: pytest.FixtureRequest) -> Any:
    fam = _family(*request.param)
    if not hasattr(fam, "steps_ref"):
        fam.steps_ref = _run(fam)  # the uncached output at STEPS steps
    fam.branches = 2 if "true_cfg_scale" in fam.kwargs() else 1  # FLUX's true CFG: cond and uncond calls per step
    return fam


# --------------------------------------------------------------------------------------------- schedule and maths


def test_schedule_matches_the_reference_lists_at_50_steps() -> None:
    def full(alpha: float) -> list[int]:
        return [s for s, f in enumerate(SpectrumConfig(flex_window=alpha).schedule(50)) if f]

    assert full(0.75) == [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]
    assert full(3.0) == [0, 1, 2, 3, 4, 6, 11, 19, 30, 44]
    assert SpectrumConfig().schedule() == SpectrumConfig().schedule(50)  # default N = 50
    assert [s for s, f in enumerate(SKIPPING.schedule()) if not f] == [3, 5, 7]
    assert all(ALL_FULL.schedule()) and all(SpectrumConfig(window_size=1.0, flex_window=0.0).schedule(20))


@pytest.mark.parametrize("degree,lam,n", [(4, 0.1, 50), (2, 1e-3, 20), (0, 0.5, 8)])
def test_ridge_forecast_equals_a_direct_refit(degree: int, lam: float, n: int) -> None:
    """Fit on the schedule's full steps but its last, forecast the steps the schedule forecasts from that fit. (S is
    fp32, as the notes ask: that bounds the agreement, e.g. 3e-5 with lam 1e-3 six steps past the last full one.)"""
    rng = np.random.default_rng(degree)
    full = [s for s, f in enumerate(SpectrumConfig(num_inference_steps=n).schedule()) if f]
    steps = full[:-1]
    feats = rng.standard_normal((len(steps), 3, 7, 5)).astype(np.float32)
    fc = ChebyshevRidge(degree, lam, w=1.0, num_steps=n)
    for s, h in zip(steps, feats):
        fc.update(s, torch.from_numpy(h))
    x = np.polynomial.chebyshev.chebvander(2.0 * np.array(steps, dtype=np.float64) / n - 1.0, degree)  # (n, P)
    hmat = feats.reshape(len(steps), -1).astype(np.float64)
    coef = np.linalg.solve(x.T @ x + lam * np.eye(degree + 1), x.T @ hmat)  # C = (X^T X + lam I)^-1 X^T H
    for t in range(steps[-1] + 1, full[-1]):
        xs = np.polynomial.chebyshev.chebvander(np.array([2.0 * t / n - 1.0]), degree)
        want = (xs @ coef).reshape(feats.shape[1:])
        np.testing.assert_allclose(fc.chebyshev(t).numpy(), want, rtol=0, atol=1e-5)
        assert fc.predict(t).dtype == torch.float32


def test_blend_with_the_newton_forward_difference() -> None:
    rng = np.random.default_rng(0)
    feats = [torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32)) for _ in range(3)]
    blend, cheb = ChebyshevRidge(4, 0.1, w=0.5, num_steps=50), ChebyshevRidge(4, 0.1, w=1.0, num_steps=50)
    for s, h in zip((0, 4, 6), feats):
        blend.update(s, h)
        cheb.update(s, h)
    lin = feats[2] + (9 - 6) / (6 - 4) * (feats[2] - feats[1])  # r = (t* - t_i) / (t_i - t_{i-1})
    torch.testing.assert_close(blend.predict(9), 0.5 * cheb.predict(9) + 0.5 * lin, rtol=0, atol=1e-5)
    pure_linear = ChebyshevRidge(4, 0.1, w=0.0, num_steps=50)
    pure_linear.update(0, feats[0])
    assert torch.equal(pure_linear.predict(3), feats[0])  # one full step: the linear forecast is that step's feature
    assert torch.equal(pure_linear.last[-1][1], feats[0])  # and forecasting leaves the stored feature alone


# --------------------------------------------------------------------------------------------- on pipelines


def test_every_step_full_is_bit_exact(fam: PipelineRun) -> None:
    handle = apply_spectrum(fam.pipe, ALL_FULL)
    try:
        assert torch.equal(_run(fam), fam.steps_ref)
        assert all(v == {"full": STEPS, "forecast": 0} for v in handle.stats().values()) and handle.stats()
    finally:
        handle.remove()


def test_forecast_steps_skip_every_block(fam: PipelineRun) -> None:
    name = "dit" if fam.name == "dit" else "flux"
    handle = apply_spectrum(fam.pipe, SKIPPING)
    counts, hooks = call_counts(fam.model, ATTN[name])
    reached: list[bool] = []

    def last_block_output(module: torch.nn.Module, args: Any, out: Any) -> None:
        """On forecast steps the last block's hidden output is the forecaster's prediction for this step."""
        c = handle.hook
        if not c.full:
            st = c.states.get_state()
            h = out[1] if isinstance(out, tuple) else out  # FLUX's single-stream block: (encoder, hidden)
            reached.append(torch.equal(h, st.forecaster.predict(st.step)))

    last = ATTN[name][1].rsplit(".", 1)[0]
    hooks.append(fam.model.get_submodule(last).register_forward_hook(last_block_output))
    try:
        out = _run(fam)
    finally:
        for h in hooks:
            h.remove()
        handle.remove()
    # one state per cache context (DiT's pipeline sets none: both CFG branches are one batch, one stream)
    assert set(handle.stats()) == ({"cond", "uncond"} if fam.branches == 2 else {"cond"} if name == "flux" else {"default"})
    assert all(v == {"full": 5, "forecast": 3} for v in handle.stats().values())
    assert counts == {n: 5 * fam.branches for n in ATTN[name]}  # 5 full steps of 8, per branch
    assert reached == [True] * 3 * fam.branches
    assert torch.isfinite(out).all() and not torch.equal(out, fam.steps_ref)


def test_remove_restores_the_exact_output_and_reset_repeats_a_run(fam: PipelineRun) -> None:
    before = hook_snapshot(fam.model)
    handle = apply_spectrum(fam.pipe, SKIPPING)
    first = _run(fam)
    handle.reset()
    assert torch.equal(_run(fam), first)  # state cleared between calls: the same trajectory again
    with pytest.raises(AccelError, match="already applied"):
        apply_spectrum(fam.pipe, SKIPPING)
    handle.remove()
    handle.remove()  # idempotent
    assert hook_snapshot(fam.model) == before
    assert torch.equal(_run(fam), fam.steps_ref)


def test_adapter_builds_the_config_from_the_step_count() -> None:
    fam = _family("dit")
    before = hook_snapshot(fam.model)
    reset = spectrum.apply(fam.pipe, {"warmup_steps": 3, "flex_window": 0.0}, STEPS)
    handle = reset.__self__
    try:
        assert handle.config == SKIPPING
        _run(fam)
        reset()
        assert handle.stats() == {"default": {"full": 5, "forecast": 3}}  # the finished trajectory's counts
    finally:
        handle.remove()
    with pytest.raises(ValueError, match=r"SpectrumConfig\.w="):
        spectrum.apply(fam.pipe, {"w": 2.0}, STEPS)  # refused before hooking anything
    assert hook_snapshot(fam.model) == before


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("field,value", [
    ("warmup_steps", 0), ("warmup_steps", 2.5), ("warmup_steps", True), ("window_size", 0.5), ("window_size", math.inf),
    ("flex_window", -0.1), ("degree", -1), ("degree", 3.0), ("lam", -1e-3), ("lam", math.nan), ("w", 1.5), ("w", -0.5),
    ("num_inference_steps", 0), ("w", "0.5"),
])
def test_bad_config_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"SpectrumConfig\.{field}="):
        SpectrumConfig(**{field: value})
