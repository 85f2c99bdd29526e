"""CG-Taylor on partial and irregular trajectories, driven by real diffusers pipelines with tiny random models.

img2img and inpainting start part-way through the schedule; ControlNet adds residuals between blocks; a
4-step schedule is shorter than the warm-up; a run cut short by an interrupt or an exception is followed by
a normal one; Wan 2.2 hands over from one transformer to another mid-trajectory; one transformer serves two
pipelines. Every case: ``threshold=0`` is bit-exact, a permissive threshold forecasts and stays finite, plus
the case's own property.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import accel
from accel import CGTaylorConfig

from accel.coverage import tiny_model
from accel.coverage.spec import randn, scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

EXACT = CGTaylorConfig(threshold=0.0, warmup_steps=1)
PERMISSIVE = CGTaylorConfig(threshold=1e3, warmup_steps=1)
SIZE = 16  # pixels; the tiny VAE does not downsample, FLUX packs 2x2 latents into one token: 8x8 tokens


def _gen() -> torch.Generator:
    return torch.Generator("cpu").manual_seed(0)


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        sample_size=SIZE, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1, latent_channels=1,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    ).eval()


def _flux(cls_name: str = "FluxPipeline", **extra: Any) -> Any:
    import diffusers

    pipe = getattr(diffusers, cls_name)(
        scheduler=scheduler()(), vae=_tiny_vae(), text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, transformer=tiny_model("FluxTransformer2DModel"), **extra,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def _flux_kwargs(steps: int = 6, **extra: Any) -> dict[str, Any]:
    return dict(
        prompt_embeds=randn(1, 6, 16, seed=1), pooled_prompt_embeds=randn(1, 16, seed=3), height=SIZE, width=SIZE,
        num_inference_steps=steps, generator=_gen(), output_type="latent", **extra,
    )


def _run(pipe: Any, kwargs: Callable[[], dict[str, Any]]) -> torch.Tensor:
    with torch.no_grad():
        return pipe(**kwargs()).images.detach().clone()


def _cached(pipe: Any, kwargs: Callable[[], dict[str, Any]], config: CGTaylorConfig, model: Any = None) -> tuple[torch.Tensor, Any]:
    with accel.cached(pipe, config):
        out = _run(pipe, kwargs)
        return out, accel.stats(model if model is not None else pipe)


def _check_exact_and_forecasts(pipe: Any, kwargs: Callable[[], dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The shared assertions; returns (uncached, permissive output, permissive stats)."""
    ref = _run(pipe, kwargs)
    exact, st0 = _cached(pipe, kwargs, EXACT)
    assert torch.equal(exact, ref) and st0.forecast_fraction == 0
    out, st = _cached(pipe, kwargs, PERMISSIVE)
    assert st.forecast_fraction > 0, st.to_dict()
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert torch.equal(_run(pipe, kwargs), ref)  # disabled again: untouched
    return ref, out, st


# --------------------------------------------------------------------------------------------- part-way starts


def _starts_part_way(st: Any, steps: int, strength: float) -> None:
    (recs,) = st.steps.values()  # one branch ("default": the img2img pipelines name no cache context)
    # Only int(steps * strength) steps run; the first is warm-up and the schedule's last one runs in full,
    # although the call count never reaches num_inference_steps.
    assert len(recs) == int(steps * strength), st.to_dict()
    assert recs[0].reason == "warmup" and recs[-1].reason == "last" and recs[-1].computed, st.to_dict()


def test_img2img_strength_below_one() -> None:
    pipe = _flux("FluxImg2ImgPipeline")
    _, _, st = _check_exact_and_forecasts(pipe, lambda: _flux_kwargs(steps=10, image=_image(), strength=0.6))
    _starts_part_way(st, 10, 0.6)


def test_inpainting_changes_only_the_masked_region() -> None:
    pipe = _flux("FluxInpaintPipeline")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:, SIZE // 2:] = 255  # repaint the right half, keep the left half
    kwargs = lambda: _flux_kwargs(steps=10, image=_image(), mask_image=Image.fromarray(mask), strength=0.6)  # noqa: E731
    ref, out, st = _check_exact_and_forecasts(pipe, kwargs)
    _starts_part_way(st, 10, 0.6)
    # Packed latents (1, 8*8 tokens, 4): token (row, col) covers pixels 2row..2row+1, 2col..2col+1. The kept
    # half is pasted back from the image at the last step, so forecasts can only change the repainted half.
    diff = (out - ref).abs().reshape(8, 8, -1)
    assert diff[:, :4].max() == 0 and diff[:, 4:].max() > 0


def test_controlnet_residuals_still_apply_on_forecast_steps() -> None:
    from diffusers import FluxControlNetModel

    torch.manual_seed(1)
    controlnet = FluxControlNetModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4],
    ).eval()
    with torch.no_grad():  # the residual projections start at zero: give the control something to add
        for p in [*controlnet.controlnet_blocks.parameters(), *controlnet.controlnet_single_blocks.parameters(),
                  *controlnet.controlnet_x_embedder.parameters()]:
            p.normal_(0, 0.2)
    pipe = _flux("FluxControlNetPipeline", controlnet=controlnet)
    calls: list[int] = []
    handle = controlnet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        kwargs = lambda scale=1.0: _flux_kwargs(steps=6, control_image=_image(5), controlnet_conditioning_scale=scale)  # noqa: E731
        _, out, st = _check_exact_and_forecasts(pipe, kwargs)
        calls.clear()
        no_control, _ = _cached(pipe, lambda: kwargs(0.0), PERMISSIVE)
    finally:
        handle.remove()
    assert not accel.is_enabled(controlnet)  # the ControlNet is not cached: it runs on every step
    assert len(calls) == 6
    assert not torch.equal(out, no_control)  # the control still acts with forecasting on


# --------------------------------------------------------------------------------------------- few steps


def test_four_steps_default_warmup_forecasts_nothing() -> None:
    """With 4 steps the default warm-up (3) and the full last step cover every step: caching is a no-op,
    bit-exact even at a permissive threshold. A 1-step warm-up may forecast the two middle steps only."""
    pipe = _flux()
    kwargs = lambda: _flux_kwargs(steps=4)  # noqa: E731
    ref = _run(pipe, kwargs)
    out, st = _cached(pipe, kwargs, CGTaylorConfig(threshold=1e3))
    assert torch.equal(out, ref)
    assert [r.reason for r in st.steps["cond"]] == ["warmup"] * 3 + ["last"]
    _, out1, st1 = _check_exact_and_forecasts(pipe, kwargs)
    assert [r.computed for r in st1.steps["cond"]] == [True, False, False, True]


# --------------------------------------------------------------------------------------------- cut-short runs


class _Stop(Exception):
    pass


@pytest.mark.parametrize("after", [0, 2])
def test_exception_mid_run_then_a_fresh_call(after: int) -> None:
    """A callback raises after step ``after``: the pipeline never resets its hooks. The next call must still
    start a new trajectory (even when it starts at the timestep the broken run stopped at)."""
    pipe = _flux()
    kwargs = lambda: _flux_kwargs(steps=6)  # noqa: E731

    def boom(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if i == after:
            raise _Stop
        return kw

    for config in (EXACT, PERMISSIVE):
        fresh, fresh_st = _cached(pipe, kwargs, config)
        with accel.cached(pipe, config):
            with pytest.raises(_Stop), torch.no_grad():
                pipe(**kwargs(), callback_on_step_end=boom)
            assert len(accel.stats(pipe).steps["cond"]) == after + 1  # the broken run's state is still there
            again = _run(pipe, kwargs)
            st = accel.stats(pipe)
        assert torch.equal(again, fresh)
        assert st.to_dict() == fresh_st.to_dict()  # same branches, steps and decisions as a fresh call
    assert torch.equal(_run(pipe, kwargs), _cached(pipe, kwargs, EXACT)[0])
    assert fresh_st.forecast_fraction > 0


def test_interrupt_mid_run_then_a_fresh_call() -> None:
    pipe = _flux()
    kwargs = lambda: _flux_kwargs(steps=6)  # noqa: E731

    def stop(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if i == 1:
            p._interrupt = True
        return kw

    ref = _run(pipe, kwargs)
    for config in (EXACT, PERMISSIVE):
        fresh, fresh_st = _cached(pipe, kwargs, config)
        with accel.cached(pipe, config):
            with torch.no_grad():
                pipe(**kwargs(), callback_on_step_end=stop)
            assert accel.stats(pipe).calls == 2  # the last (interrupted) run
            again = _run(pipe, kwargs)
            st = accel.stats(pipe)
        assert torch.equal(again, fresh) and st.to_dict() == fresh_st.to_dict()
        assert torch.equal(fresh, ref) == (config is EXACT)
    assert fresh_st.forecast_fraction > 0


# --------------------------------------------------------------------------------------------- two denoisers


def test_wan22_two_transformers_hand_over() -> None:
    from diffusers import WanPipeline

    experts = [tiny_model("WanTransformer3DModel", seed=s) for s in (0, 1)]  # high- and low-noise experts
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=scheduler(shift=3.0)(),
                       transformer=experts[0], transformer_2=experts[1], boundary_ratio=0.75)
    pipe.set_progress_bar_config(disable=True)
    boundary = 0.75 * pipe.scheduler.config.num_train_timesteps

    def kwargs() -> dict[str, Any]:
        return dict(prompt_embeds=randn(1, 6, 16, seed=1), height=32, width=32, num_frames=5, guidance_scale=1.0,
                    num_inference_steps=8, generator=_gen(), output_type="latent")

    with torch.no_grad():
        ref = pipe(**kwargs()).frames
    for config in (EXACT, PERMISSIVE):
        with accel.cached(pipe, config), torch.no_grad():
            assert accel.is_enabled(pipe.transformer) and accel.is_enabled(pipe.transformer_2)
            out = pipe(**kwargs()).frames
            high, low = accel.stats(pipe.transformer), accel.stats(pipe.transformer_2)
        assert not accel.is_enabled(pipe.transformer) and not accel.is_enabled(pipe.transformer_2)
        h, lo = high.steps["cond"], low.steps["cond"]
        assert len(h) + len(lo) == 8 and len(h) >= 3 and len(lo) >= 3, (high.to_dict(), low.to_dict())
        assert all(r.timestep >= boundary for r in h) and all(r.timestep < boundary for r in lo)
        # Each transformer warms up on its own first step; the schedule's last step (the second's) runs in full.
        assert h[0].reason == lo[0].reason == "warmup" and lo[-1].reason == "last"
        if config is EXACT:
            assert torch.equal(out, ref)
        else:
            assert high.forecast_fraction > 0 and low.forecast_fraction > 0
            assert torch.isfinite(out).all() and not torch.equal(out, ref)
    with torch.no_grad():
        assert torch.equal(pipe(**kwargs()).frames, ref)


def test_one_transformer_shared_by_two_pipelines() -> None:
    from diffusers import FluxImg2ImgPipeline

    txt = _flux()
    img = FluxImg2ImgPipeline(**txt.components)  # same transformer, VAE and scheduler objects
    img.set_progress_bar_config(disable=True)
    kw_txt = lambda: _flux_kwargs(steps=6)  # noqa: E731
    kw_img = lambda: _flux_kwargs(steps=8, image=_image(), strength=0.75)  # noqa: E731
    ref_txt, ref_img = _run(txt, kw_txt), _run(img, kw_img)
    fresh_img, fresh_img_st = _cached(img, kw_img, PERMISSIVE)  # enabled through the img2img pipeline alone
    for config in (EXACT, PERMISSIVE):
        with accel.cached(txt, config):  # enabled through the text-to-image pipeline
            assert accel.is_enabled(img)
            a = _run(txt, kw_txt)
            b = _run(img, kw_img)
            b_st = accel.stats(img)
            a2 = _run(txt, kw_txt)
        assert torch.equal(a2, a)
        if config is EXACT:
            assert torch.equal(a, ref_txt) and torch.equal(b, ref_img)
        else:
            assert torch.equal(b, fresh_img) and b_st.to_dict() == fresh_img_st.to_dict()
            assert b_st.forecast_fraction > 0 and torch.isfinite(b).all() and not torch.equal(b, ref_img)
    assert torch.equal(_run(img, kw_img), ref_img)
