"""CG-Taylor's layer split on U-Nets (``unet_policy="layer"``): the split inside the outer blocks, where DeepCache's
branch 1 puts it. Tiny random U-Nets with two layers per block through their real pipelines (DDIM on UNet2DModel,
StableDiffusionPipeline on UNet2DConditionModel with batched classifier-free guidance)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

import accel
from accel.caching.api import _controller
from accel.caching.hooks import GateHook, LastHook
from accel.errors import AccelError
from conftest import call_counts

STEPS = 6


def _ddim(layers: int = 2) -> tuple[Any, Callable[..., dict[str, Any]]]:
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), layers_per_block=layers,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8).eval()
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe, lambda batch=2: dict(batch_size=batch, generator=[torch.Generator().manual_seed(i) for i in range(batch)],
                                      num_inference_steps=STEPS, output_type="np")


def _sd15() -> tuple[Any, Callable[..., dict[str, Any]]]:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=2, sample_size=16, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4).eval()
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    emb = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(1))
    neg = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(2))
    return pipe, lambda size=32: dict(prompt_embeds=emb, negative_prompt_embeds=neg, height=size, width=size, guidance_scale=7.5,
                                      num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="latent")


BUILDERS = {"ddim": _ddim, "sd15": _sd15}
# (gate, forecast) of the layer split: the last module of down block 0's first layer; the last module of the last up
# block's first layer (its three layers consume layer 1's, layer 0's and conv_in's skips; the last two stay live)
ROLES = {"ddim": ("down_blocks.0.resnets.0", "up_blocks.2.resnets.0"), "sd15": ("down_blocks.0.attentions.0", "up_blocks.1.attentions.0")}
_BUILT: dict[str, Any] = {}
pytestmark = pytest.mark.usefixtures("one_thread")


def _run(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        out = pipe(**kwargs).images
    return torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out).clone()


@pytest.fixture(params=list(BUILDERS))
def fam(request: pytest.FixtureRequest) -> Any:
    if request.param not in _BUILT:
        pipe, kw = BUILDERS[request.param]()
        _BUILT[request.param] = (request.param, pipe, kw, _run(pipe, kw()))
    yield _BUILT[request.param]
    accel.disable(_BUILT[request.param][1])


@pytest.mark.parametrize("fields", [{}, {"residual": True}])
def test_threshold_zero_exact_roles_and_undo(fam: Any, fields: dict[str, Any]) -> None:
    name, pipe, kw, ref = fam
    with accel.cached(pipe, accel.CGTaylorConfig(threshold=0.0, warmup_steps=1, unet_policy="layer", **fields)):
        blocks = _controller(pipe.unet).blocks
        assert (blocks[0].name, blocks[-1].name) == ROLES[name]
        assert isinstance(pipe.unet.get_submodule(ROLES[name][0])._diffusers_hook.get_hook("accel_cg_taylor_gate"), GateHook)
        assert isinstance(pipe.unet.get_submodule(ROLES[name][1])._diffusers_hook.get_hook("accel_cg_taylor_last"), LastHook)
        assert torch.equal(_run(pipe, kw()), ref)
    accel.enable(pipe, accel.CGTaylorConfig(threshold=1e3, warmup_steps=1, unet_policy="layer", **fields))
    forecast = _run(pipe, kw())
    assert accel.disable(pipe)
    assert torch.isfinite(forecast).all() and not torch.equal(forecast, ref)
    assert torch.equal(_run(pipe, kw()), ref)  # bit-identical after disable, nothing left on any module
    assert not any(k in m.__dict__ for m in pipe.unet.modules() for k in ("_accel_pristine", "forward", "_diffusers_hook"))


def test_only_the_shallow_layers_run_on_forecast_steps(fam: Any) -> None:
    name, pipe, kw, ref = fam
    n = len(pipe.unet.up_blocks)
    live = ["conv_in", "down_blocks.0.resnets.0", f"up_blocks.{n - 1}.resnets.1", f"up_blocks.{n - 1}.resnets.2", "conv_out"]
    # inside the hooked modules: a hooked module is still called on skipped steps, its insides are not
    deep = ["down_blocks.0.resnets.1.conv1", "down_blocks.0.downsamplers.0.conv", "mid_block.resnets.0", f"up_blocks.{n - 2}.resnets.0",
            f"up_blocks.{n - 1}.resnets.0.conv1"]
    counts, handles = call_counts(pipe.unet, live + deep)
    try:
        with accel.cached(pipe, accel.CGTaylorConfig(threshold=1e3, warmup_steps=1, unet_policy="layer")):
            out = _run(pipe, kw())
            rec = accel.stats(pipe).steps["default"]
    finally:
        for h in handles:
            h.remove()
    full = sum(r.computed for r in rec)
    assert torch.isfinite(out).all() and out.shape == ref.shape and 0 < full < STEPS
    assert all(counts[m] == STEPS for m in live), counts
    assert all(counts[m] == full for m in deep), counts


def test_new_shapes_between_calls() -> None:
    """Skipped modules whose output a live layer concatenates return zeros of their output's shape in this
    trajectory: a new batch size or resolution on the next call, with the cache left enabled, still runs."""
    pipe, kw = _sd15()
    refs = {s: _run(pipe, kw(s)) for s in (32, 48)}
    with accel.cached(pipe, accel.CGTaylorConfig(threshold=0.0, unet_policy="layer")):
        assert torch.equal(_run(pipe, kw(32)), refs[32]) and torch.equal(_run(pipe, kw(48)), refs[48])
    with accel.cached(pipe, accel.CGTaylorConfig(threshold=1e3, warmup_steps=1, unet_policy="layer")):
        for s in (32, 48, 32):
            out = _run(pipe, kw(s))
            assert out.shape == refs[s].shape and torch.isfinite(out).all()
    ddim, dkw = _ddim()
    with accel.cached(ddim, accel.CGTaylorConfig(threshold=1e3, warmup_steps=1, unet_policy="layer")):
        assert _run(ddim, dkw(2)).shape[0] == 2 and _run(ddim, dkw(3)).shape[0] == 3


def test_refusals_leave_nothing_hooked() -> None:
    one, _ = _ddim(layers=1)  # one layer per down block: no layer of down block 0 can be skipped
    with pytest.raises(AccelError, match="too few layers to split; use unet_policy='shallow'"):
        accel.enable(one, accel.CGTaylorConfig(unet_policy="layer"))
    assert not accel.is_enabled(one)
