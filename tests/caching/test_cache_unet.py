"""CG-Taylor's U-Net policy: the shallow path runs on every step, the deep part is gated and forecast.

Tiny random U-Nets through their real pipelines (DDIM on UNet2DModel, StableDiffusionPipeline and
StableDiffusionXLPipeline on UNet2DConditionModel, prompt embeddings passed directly), plus a quality floor
on the shipped, trained ``unet-natural``. Runs on one CPU core in about a minute.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

import accel
from accel.caching.api import _controller
from accel.caching.hooks import GateHook, LastHook
from accel.caching.unet import deep_split_blocks
from accel.errors import AccelError
from conftest import call_counts

STEPS = 6
PERMISSIVE = accel.CGTaylorConfig(threshold=1e3, warmup_steps=1)
EXACT = accel.CGTaylorConfig(threshold=0.0, warmup_steps=1)


def _gen() -> torch.Generator:
    return torch.Generator("cpu").manual_seed(0)


def _ddim_unet2d() -> tuple[Any, Callable[[], dict[str, Any]]]:
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8).eval()
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe, lambda: dict(batch_size=2, generator=[_gen(), torch.Generator().manual_seed(1)], num_inference_steps=STEPS, output_type="np")


def _sd15() -> tuple[Any, Callable[[], dict[str, Any]]]:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4).eval()
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    emb = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(1))
    neg = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(2))
    # guidance 7.5: cond and uncond go through the U-Net as one batch of 2 (batched CFG).
    return pipe, lambda: dict(prompt_embeds=emb, negative_prompt_embeds=neg, height=32, width=32, guidance_scale=7.5,
                              num_inference_steps=STEPS, generator=_gen(), output_type="latent")


def _sdxl() -> tuple[Any, Callable[[], dict[str, Any]]]:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=6 * 8 + 16, cross_attention_dim=16, norm_num_groups=4).eval()
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
                                     scheduler=EulerDiscreteScheduler(), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    g = lambda s: torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(s))  # noqa: E731
    p = lambda s: torch.randn(1, 16, generator=torch.Generator().manual_seed(s))  # noqa: E731
    return pipe, lambda: dict(prompt_embeds=g(1), negative_prompt_embeds=g(2), pooled_prompt_embeds=p(3),
                              negative_pooled_prompt_embeds=p(4), height=32, width=32, guidance_scale=5.0,
                              num_inference_steps=STEPS, generator=_gen(), output_type="latent")


BUILDERS = {"ddim_unet2d": _ddim_unet2d, "sd15": _sd15, "sdxl": _sdxl}
_BUILT: dict[str, Any] = {}


class Fam:
    def __init__(self, name: str) -> None:
        self.pipe, self.kwargs = BUILDERS[name]()
        self.unet = self.pipe.unet
        self.ref = self.run()

    def run(self) -> torch.Tensor:
        with torch.no_grad():
            out = self.pipe(**self.kwargs()).images
        return torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out).clone()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=list(BUILDERS))
def fam(request: pytest.FixtureRequest) -> Any:
    if request.param not in _BUILT:
        _BUILT[request.param] = Fam(request.param)
    f = _BUILT[request.param]
    yield f
    accel.disable(f.pipe)


def test_default_policy_is_shallow_and_roles(fam: Fam) -> None:
    cfg = accel.CGTaylorConfig()
    assert cfg.unet_policy == "shallow"
    n = len(fam.unet.down_blocks)
    roles = [s.name for s in deep_split_blocks(fam.unet, 1)]
    assert roles[0] == "down_blocks.0" and roles[1:] == [f"down_blocks.{i}" for i in range(1, n)] + ["mid_block"] + [f"up_blocks.{i}" for i in range(n - 1)]
    with accel.cached(fam.pipe, cfg):
        ctrl = _controller(fam.unet)
        assert [s.name for s in ctrl.blocks] == roles
        assert isinstance(fam.unet.down_blocks[0]._diffusers_hook.get_hook("accel_cg_taylor_gate"), GateHook)
        assert isinstance(fam.unet.up_blocks[n - 2]._diffusers_hook.get_hook("accel_cg_taylor_last"), LastHook)
    roles2 = [s.name for s in deep_split_blocks(fam.unet, 2)]
    assert roles2[0] == "down_blocks.1" and roles2[-1] == f"up_blocks.{n - 3}" if n > 2 else roles2[-1] == "mid_block"


def test_threshold_zero_is_exact_and_disable_restores(fam: Fam) -> None:
    with accel.cached(fam.pipe, EXACT):
        out = fam.run()
        st = accel.stats(fam.pipe)
    assert st.forecast_fraction == 0.0 and st.calls == STEPS
    assert torch.equal(out, fam.ref)
    accel.enable(fam.pipe, PERMISSIVE)
    forecast = fam.run()
    assert accel.disable(fam.pipe)
    assert not torch.equal(forecast, fam.ref)
    assert torch.equal(fam.run(), fam.ref)  # bit-identical again after disable
    assert not any(k in m.__dict__ for m in fam.unet.modules() for k in ("_accel_pristine", "forward"))


def test_shallow_path_runs_every_step_deep_part_skipped(fam: Fam) -> None:
    n = len(fam.unet.down_blocks)
    # Sub-modules: a hooked block is still called on skipped steps, its layers are not.
    names = ["conv_in", "down_blocks.0.resnets.0", f"up_blocks.{n - 1}.resnets.0", "conv_out", "mid_block.resnets.0",
             f"down_blocks.{n - 1}.resnets.0", "up_blocks.0.resnets.0"]
    counts, handles = call_counts(fam.unet, names)
    try:
        with accel.cached(fam.pipe, PERMISSIVE):
            out = fam.run()
            st = accel.stats(fam.pipe)
    finally:
        for h in handles:
            h.remove()
    assert torch.isfinite(out).all() and out.shape == fam.ref.shape
    rec = st.steps["default"]
    assert [r.step for r in rec] == list(range(STEPS)) and rec[0].computed and rec[-1].computed
    full = sum(r.computed for r in rec)
    assert 0 < st.forecast_fraction and full < STEPS
    for shallow in names[:4]:
        assert counts[shallow] == STEPS, counts
    for deep in names[4:]:
        assert counts[deep] == full, counts


def test_whole_policy_still_selectable(fam: Fam) -> None:
    n = len(fam.unet.down_blocks)
    counts, handles = call_counts(fam.unet, [f"up_blocks.{n - 1}.resnets.0", "down_blocks.0.resnets.0"])
    try:
        with accel.cached(fam.pipe, accel.CGTaylorConfig(threshold=1e3, warmup_steps=1, unet_policy="whole")):
            fam.run()
            st = accel.stats(fam.pipe)
            assert [s.name for s in _controller(fam.unet).blocks][-1] == f"up_blocks.{n - 1}"
    finally:
        for h in handles:
            h.remove()
    full = sum(r.computed for r in st.steps["default"])
    assert full < STEPS and counts[f"up_blocks.{n - 1}.resnets.0"] == full and counts["down_blocks.0.resnets.0"] == STEPS


def test_bad_policy_is_refused() -> None:
    with pytest.raises(AccelError, match="unet_policy"):
        accel.CGTaylorConfig(unet_policy="deep")


def test_sequential_cfg_keeps_a_state_per_context() -> None:
    """A hand-written CFG loop calling the SD-layout U-Net twice per step under cond/uncond contexts."""
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    f = _BUILT.get("sd15") or Fam("sd15")
    unet, sched = f.unet, f.pipe.scheduler
    emb = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(1))
    neg = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(2))

    def loop() -> torch.Tensor:
        sched.set_timesteps(STEPS)
        x = torch.randn(1, 4, 16, 16, generator=_gen())
        for t in sched.timesteps:
            outs = {}
            for name, e in (("cond", emb), ("uncond", neg)):
                _set_cache_context(unet, CacheContext(name))
                try:
                    with torch.no_grad():
                        outs[name] = unet(x, t, encoder_hidden_states=e).sample
                finally:
                    _set_cache_context(unet, None)
            x = sched.step(outs["uncond"] + 4.0 * (outs["cond"] - outs["uncond"]), t, x).prev_sample
        return x

    ref = loop()
    with accel.cached(f.pipe, EXACT):
        assert torch.equal(loop(), ref)
    with accel.cached(f.pipe, PERMISSIVE):
        out = loop()
        st = accel.stats(f.pipe)
    assert set(st.steps) == {"cond", "uncond"}
    for recs in st.steps.values():
        assert [r.step for r in recs] == list(range(STEPS)) and any(not r.computed for r in recs)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert torch.equal(loop(), ref)


def test_quality_floor_on_unet_natural_at_shipped_setting() -> None:
    """unet-natural ships a setting for 20 DDIM steps only (the rule's 35 dB choice, which held on its test split;
    at 50 steps none of the rule's choices held on test, and the folder says so). On 4 other images (seeds 0-3): within
    3 dB of that level pooled over the batch (34.6 dB measured) while skipping the deep part on most steps (60%)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    import json

    from accel.caching.shipped import shipped_config
    from accel.metrics import psnr
    from accel.sampling import load_pipeline
    from accel.zoo import MODELS

    src = load_pipeline("unet-natural")
    record = json.loads((MODELS["unet-natural"].weights / "accel_cache.json").read_text())
    assert "threshold" not in record and shipped_config(src) is None  # no 50-step default
    cfg, level = shipped_config(src, steps=20), float(record["by_steps"]["20"]["level_db"])
    assert cfg is not None and cfg.threshold > 0
    pipe = DDIMPipeline(unet=src.unet, scheduler=DDIMScheduler.from_config(src.scheduler.config))
    pipe.set_progress_bar_config(disable=True)

    def run() -> np.ndarray:
        gens = [torch.Generator().manual_seed(i) for i in range(4)]
        with torch.no_grad():
            im = pipe(batch_size=4, generator=gens, num_inference_steps=20, output_type="np").images
        return (np.clip(im, 0, 1) * 255).round().astype(np.uint8)

    ref = run()
    with accel.cached(pipe, cfg):
        out = run()
        st = accel.stats(pipe)
    assert st.forecast_fraction >= 0.5, st.to_dict()
    assert psnr(out, ref) >= level - 3.0


def test_unet_bench_on_tiny_sd15(tmp_path: Any) -> None:
    """The benchmark's U-Net mechanics: exact at threshold 0, DeepCache's policies run and skip compute."""
    import json

    from accel.benchmarks import harness

    def fixed(primary: str, value: float, integer: bool = False, **extra: Any) -> dict:
        return {"all": {"primary": {"name": primary, "type": "int" if integer else "float", "lo": value, "hi": value, "min": value,
                                    "max": value}, "fixed": extra, "recommended": None}}

    spaces = {"cg-taylor": {"all": {**fixed("threshold", 1e3, warmup_steps=1)["all"], "recommended": {"threshold": 0.0}}},
              "deepcache-block": {"all": {"primary": {"name": "cache_interval", "type": "int", "lo": 2, "hi": 2, "min": 2, "max": 2},
                                          "secondary": {"split": ["block", "layer"]}, "recommended": {"cache_interval": 1}}},
              "deepcache": {"all": {"primary": {"name": "cache_interval", "type": "int", "lo": 2, "hi": 2, "min": 2, "max": 2},
                                    "fixed": {"cache_branch_id": 0}, "recommended": {"cache_interval": 1, "cache_branch_id": 0}}}}
    (tmp_path / "spaces.json").write_text(json.dumps({"budget": 3, "methods": spaces}))
    rep = harness.run("tiny-sd15", methods=["cg-taylor", "deepcache-block", "deepcache"], steps=4, spaces=tmp_path / "spaces.json",
                      sizes={"selection": 1, "test": 1, "batch": 1, "rounds": 1}, levels=(-1e9,))
    rows = {r["label"]: r for r in rep["sweep"]}
    assert all("error" not in r for r in rows.values()), rows
    for exact in ("cg-taylor(threshold=0.0)", "deepcache-block(cache_interval=1)", "deepcache(cache_interval=1, cache_branch_id=0)"):
        assert rows[exact]["selection"]["psnr_median"] == 99.0, exact  # each method's no-op setting: the uncached output
        assert rows[exact]["selection"]["compute_skipped"] == pytest.approx(0, abs=1e-12), exact
    assert 0 < rows["cg-taylor(warmup_steps=1, threshold=1000.0)"]["selection"]["compute_skipped"] < 1
    block = rows["deepcache-block(split=block, cache_interval=2)"]["selection"]["compute_skipped"]
    layer = rows["deepcache-block(split=layer, cache_interval=2)"]["selection"]["compute_skipped"]
    assert block > 0.1 and layer > block + 0.05  # the layer split keeps a cheaper shallow path than the block split
