"""CG-Taylor hooks on a tiny DiT: exactness, undo, state handling, policies, config validation."""

from __future__ import annotations

import math

import pytest
import torch

import accel
from accel import AccelError, CGTaylorConfig

from conftest import run_pipe


def test_threshold_zero_is_exact_and_disable_restores(tiny_dit_pipe):
    ref = run_pipe(tiny_dit_pipe)
    model = tiny_dit_pipe.transformer
    accel.enable(tiny_dit_pipe, CGTaylorConfig(threshold=0.0))
    assert torch.equal(run_pipe(tiny_dit_pipe), ref)
    st = accel.stats(tiny_dit_pipe)
    assert st.forecast_fraction == 0 and st.calls == 12
    assert [r.reason for r in st.steps["cond_uncond"][3:-1]] == ["threshold0"] * 8  # never gated, nothing measured
    assert accel.disable(tiny_dit_pipe) is True
    assert torch.equal(run_pipe(tiny_dit_pipe), ref)
    for m in [model, *model.transformer_blocks]:
        assert "_diffusers_hook" not in m.__dict__ and "forward" not in m.__dict__
    assert accel.disable(tiny_dit_pipe) is False


def test_permissive_threshold_forecasts_and_stays_close(tiny_dit_pipe):
    ref = run_pipe(tiny_dit_pipe, steps=20)
    with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=0.2)):
        out = run_pipe(tiny_dit_pipe, steps=20)
        st = accel.stats(tiny_dit_pipe)
    recs = st.steps["cond_uncond"]
    assert 0 < st.forecast_fraction < 1
    assert [r.reason for r in recs[:3]] == ["warmup"] * 3 and recs[-1].reason == "last" and recs[-1].computed
    assert torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.2
    assert not accel.is_enabled(tiny_dit_pipe)


def test_forecast_fraction_grows_with_threshold(tiny_dit_pipe):
    fracs = []
    for tau in (0.01, 0.1, 1.0):
        with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=tau)):
            run_pipe(tiny_dit_pipe, steps=16)
            fracs.append(accel.stats(tiny_dit_pipe).forecast_fraction)
    assert fracs == sorted(fracs) and fracs[-1] > fracs[0]


def test_double_enable_is_idempotent_or_refused(tiny_dit_pipe):
    cfg = CGTaylorConfig(threshold=0.1)
    accel.enable(tiny_dit_pipe, cfg)
    accel.enable(tiny_dit_pipe, CGTaylorConfig(threshold=0.1))  # same config: no-op, not doubled
    assert len(tiny_dit_pipe.transformer._diffusers_hook.hooks) == 1
    assert len(tiny_dit_pipe.transformer.transformer_blocks[0]._diffusers_hook.hooks) == 1
    with pytest.raises(AccelError, match="already enabled"):
        accel.enable(tiny_dit_pipe, CGTaylorConfig(threshold=0.2))
    accel.disable(tiny_dit_pipe)


def test_state_resets_between_calls_and_on_shape_changes(tiny_dit_pipe):
    cfg = CGTaylorConfig(threshold=0.2)
    with accel.cached(tiny_dit_pipe, cfg):
        a1 = run_pipe(tiny_dit_pipe, steps=12)
        a2 = run_pipe(tiny_dit_pipe, steps=12)  # second call must not reuse the first call's factors
        assert torch.equal(a1, a2)
        assert len(accel.stats(tiny_dit_pipe).steps["cond_uncond"]) == 12
        run_pipe(tiny_dit_pipe, steps=7)  # another step count
        assert len(accel.stats(tiny_dit_pipe).steps["cond_uncond"]) == 7
        b3 = run_pipe(tiny_dit_pipe, steps=12, labels=(0, 1, 2))  # another batch size
        assert [r.reason for r in accel.stats(tiny_dit_pipe).steps["cond_uncond"][:3]] == ["warmup"] * 3
    with accel.cached(tiny_dit_pipe, cfg):
        fresh = run_pipe(tiny_dit_pipe, steps=12, labels=(0, 1, 2))
    assert torch.equal(b3, fresh)


def test_nonfinite_forecast_falls_back_to_full_compute(tiny_dit_pipe):
    ref = run_pipe(tiny_dit_pipe, steps=10)
    with accel.cached(tiny_dit_pipe, CGTaylorConfig(threshold=1e6, warmup_steps=2)):
        model = tiny_dit_pipe.transformer
        ctrl = model._diffusers_hook.get_hook("accel_cg_taylor")
        orig = ctrl._begin

        def poisoned(args, kwargs):
            orig(args, kwargs)
            st = ctrl.states.get_state()
            if st.sl.data is not None:
                st.sl.data[0].fill_(float("inf"))  # a corrupted last-block factor must never reach the output

        ctrl._begin = poisoned
        out = run_pipe(tiny_dit_pipe, steps=10)
        recs = accel.stats(tiny_dit_pipe).steps["cond_uncond"]
        del ctrl._begin
    assert torch.isfinite(out).all()
    assert any(r.reason == "nonfinite" for r in recs)
    assert torch.allclose(out, ref, atol=1e-5)


def test_bare_transformer_and_contexts(tiny_dit_pipe):
    model = tiny_dit_pipe.transformer
    accel.enable(model, CGTaylorConfig(threshold=1e6, warmup_steps=1, full_last_step=False))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    with torch.no_grad():
        for t in (900, 800, 700):
            for name in ("cond", "uncond"):
                _set_cache_context(model, CacheContext(name))
                model(x, timestep=torch.full((2,), t), class_labels=labels if name == "cond" else torch.full((2,), 10))
        _set_cache_context(model, None)
    st = accel.stats(model)
    assert set(st.steps) == {"cond", "uncond"}
    for recs in st.steps.values():
        assert [r.step for r in recs] == [0, 1, 2] and not recs[2].computed
    accel.disable(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"forecaster_options": {"block0_order": -1}}, "block0_order"),
        ({"forecaster_options": {"order": 1.5}}, "order"),
        ({"warmup_steps": -2}, "warmup_steps"),
        ({"full_last_step": 1}, "full_last_step"),
        ({"unet_policy": "deep"}, "unet_policy"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(AccelError, match=match):
        CGTaylorConfig(**kwargs)


def test_unsupported_model_points_to_the_supported_ones():
    with pytest.raises(AccelError, match="cannot cache Sequential.*`accel coverage` lists every supported class"):
        accel.enable(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_kernel_backends_agree_in_hooks(tiny_dit_pipe, monkeypatch):
    """Same decisions and outputs with the Triton kernels (CPU interpreter) as with the PyTorch reference."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # run the Triton kernels on the CPU
    cfg = CGTaylorConfig(threshold=0.15, warmup_steps=2)
    results = {}
    for be in ("torch", "triton"):
        monkeypatch.setenv("ACCEL_KERNELS", be)
        with accel.cached(tiny_dit_pipe, cfg):
            out = run_pipe(tiny_dit_pipe, steps=6, labels=(0,))
            results[be] = (out, [r.computed for r in accel.stats(tiny_dit_pipe).steps["cond_uncond"]])
    assert results["torch"][1] == results["triton"][1]
    assert torch.allclose(results["torch"][0], results["triton"][0], atol=1e-4)
