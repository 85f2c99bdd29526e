"""CG-Taylor hooks across diffusers model families, each a tiny random model driven by its real pipeline.

Every family is built by a small helper returning ``(pipeline, call_kwargs_factory)``: no text encoders
(prompt embeddings are passed directly), no VAE where the pipeline can return latents, a fresh seeded
generator per call so that every call is deterministic. For every family:

1. ``threshold=0`` never forecasts and gives exactly (``torch.equal``) the uncached output;
2. a permissive threshold forecasts some steps (``forecast_fraction > 0``) and gives a finite output;
3. after ``accel.disable`` the output is exactly the uncached one again and no hook is left behind.

Plus: sequential CFG keeps a state per context, batched CFG, unsupported models, torch.compile.
Runs on one CPU core in 20-60 s (the torch.compile test takes most of it).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import accel
from accel.caching import TESTED_MODELS
from accel.caching.blocks import find_blocks, find_denoiser

STEPS = 5
PERMISSIVE = accel.CGTaylorConfig(threshold=1e3, warmup_steps=1)
EXACT = accel.CGTaylorConfig(threshold=0.0, warmup_steps=1)

Build = tuple[Any, Callable[[], dict[str, Any]]]


def _gen() -> torch.Generator:
    return torch.Generator("cpu").manual_seed(0)


def _embeds(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator("cpu").manual_seed(seed))


def _mask(n: int) -> torch.Tensor:
    return torch.ones(1, n, dtype=torch.long)


def _flow_scheduler(**kw: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**kw)


# --------------------------------------------------------------------------------------------- families


def build_dit() -> Build:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2, in_channels=4,
        out_channels=8, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,), layers_per_block=1, latent_channels=4, norm_num_groups=2, sample_size=8,
    )
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    # guidance_scale > 1: the pipeline batches cond and uncond through one transformer call (batched CFG).
    return pipe, lambda: dict(class_labels=[1], guidance_scale=2.0, num_inference_steps=STEPS, generator=_gen(), output_type="pt")


def _pixart(sigma: bool) -> Build:
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=16,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    cls = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = cls(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=DDIMScheduler())
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6), height=64, width=64, guidance_scale=4.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent", use_resolution_binning=False,
    )


def build_pixart_alpha() -> Build:
    return _pixart(sigma=False)


def build_pixart_sigma() -> Build:
    return _pixart(sigma=True)


def build_sd3() -> Build:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
        caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    pooled, npooled = _embeds(1, 16, seed=3), _embeds(1, 16, seed=4)
    return pipe, lambda: dict(
        prompt_embeds=emb, negative_prompt_embeds=neg, pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=npooled, height=64, width=64, guidance_scale=3.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def _flux_transformer() -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4],
    )


def build_flux(true_cfg: float = 1.0) -> Build:
    from diffusers import FluxPipeline

    pipe = FluxPipeline(
        scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, transformer=_flux_transformer(),
    )
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    pooled, npooled = _embeds(1, 16, seed=3), _embeds(1, 16, seed=4)

    def kwargs() -> dict[str, Any]:
        kw = dict(
            prompt_embeds=emb, pooled_prompt_embeds=pooled, height=32, width=32, num_inference_steps=STEPS,
            generator=_gen(), output_type="latent",
        )
        if true_cfg > 1:  # sequential CFG: cond and uncond calls in cache_context("cond") / ("uncond")
            kw.update(true_cfg_scale=true_cfg, negative_prompt_embeds=neg, negative_pooled_prompt_embeds=npooled)
        return kw

    return pipe, kwargs


def build_sana() -> Build:
    from diffusers import SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=3, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8, sample_size=8,
    )
    pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=_flow_scheduler())
    emb, neg = _embeds(1, 6, 8, seed=1), _embeds(1, 6, 8, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6), height=128, width=128, guidance_scale=4.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent", use_resolution_binning=False,
    )


def build_wan(guidance: float = 1.0) -> Build:
    from diffusers import WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
        freq_dim=32, ffn_dim=16, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=_flow_scheduler(shift=3.0), transformer=transformer)
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, negative_prompt_embeds=neg, height=32, width=32, num_frames=5, guidance_scale=guidance,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_cogvideox() -> Build:
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=4, text_embed_dim=16,
        num_layers=3, sample_width=4, sample_height=4, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=6,
    )
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=CogVideoXDDIMScheduler())
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, negative_prompt_embeds=neg, height=32, width=32, num_frames=5, guidance_scale=6.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_hunyuan_video() -> Build:
    from diffusers import HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    )
    pipe = HunyuanVideoPipeline(
        text_encoder=None, tokenizer=None, transformer=transformer, vae=None, scheduler=_flow_scheduler(shift=7.0),
        text_encoder_2=None, tokenizer_2=None,
    )
    emb, pooled = _embeds(1, 6, 16, seed=1), _embeds(1, 8, seed=3)
    return pipe, lambda: dict(
        prompt_embeds=emb, pooled_prompt_embeds=pooled, prompt_attention_mask=_mask(6), height=32, width=32,
        num_frames=5, guidance_scale=6.0, num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_ltx() -> Build:
    from diffusers import LTXPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=3, caption_channels=16,
    )
    pipe = LTXPipeline(scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None, transformer=transformer)
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6), height=64, width=64, num_frames=9, guidance_scale=3.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_qwen_image(true_cfg: float = 1.0) -> Build:
    from diffusers import QwenImagePipeline, QwenImageTransformer2DModel

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )
    pipe = QwenImagePipeline(scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None, transformer=transformer)
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)

    def kwargs() -> dict[str, Any]:
        kw = dict(
            prompt_embeds=emb, prompt_embeds_mask=_mask(6), height=32, width=32, num_inference_steps=STEPS,
            generator=_gen(), output_type="latent",
        )
        if true_cfg > 1:
            kw.update(true_cfg_scale=true_cfg, negative_prompt_embeds=neg, negative_prompt_embeds_mask=_mask(6))
        return kw

    return pipe, kwargs


def build_aura_flow() -> Build:
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel

    torch.manual_seed(0)
    transformer = AuraFlowTransformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2, attention_head_dim=8,
        num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, out_channels=4, pos_embed_max_size=64,
    )
    pipe = AuraFlowPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=_flow_scheduler())
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6), height=64, width=64, guidance_scale=3.5,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_lumina_next() -> Build:
    from diffusers import LuminaNextDiT2DModel, LuminaPipeline

    torch.manual_seed(0)
    transformer = LuminaNextDiT2DModel(
        sample_size=4, patch_size=2, in_channels=4, hidden_size=16, num_layers=3, num_attention_heads=2,
        num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5, learn_sigma=True, qk_norm=True,
        cross_attention_dim=16, scaling_factor=1.0,
    )
    pipe = LuminaPipeline(transformer=transformer, scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None)
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6), height=32, width=32, guidance_scale=4.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_cogview4() -> Build:
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel

    torch.manual_seed(0)
    transformer = CogView4Transformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=4, num_attention_heads=4,
        text_embed_dim=16, time_embed_dim=8, condition_dim=4,
    )
    pipe = CogView4Pipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=_flow_scheduler())
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    # CogView4 runs cond and uncond sequentially in cache_context("cond") / ("uncond").
    return pipe, lambda: dict(
        prompt_embeds=emb, negative_prompt=None, negative_prompt_embeds=neg, height=64, width=64, guidance_scale=5.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_chroma() -> Build:
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(2, 2, 4), approximator_num_channels=8, approximator_hidden_dim=16,
        approximator_layers=1,
    )
    pipe = ChromaPipeline(scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None, transformer=transformer)
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6).bool(), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6).bool().bool(), height=32, width=32, guidance_scale=4.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_mochi() -> Build:
    from diffusers import MochiPipeline, MochiTransformer3DModel

    torch.manual_seed(0)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=3, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=6,
    )
    pipe = MochiPipeline(scheduler=_flow_scheduler(), vae=None, text_encoder=None, tokenizer=None, transformer=transformer)
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, prompt_attention_mask=_mask(6), negative_prompt=None, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=_mask(6), height=32, width=32, num_frames=7, guidance_scale=4.5,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_sd15() -> Build:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=2, attention_head_dim=2,
    )
    pipe = StableDiffusionPipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    return pipe, lambda: dict(
        prompt_embeds=emb, negative_prompt_embeds=neg, height=64, width=64, guidance_scale=7.5,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_sdxl() -> Build:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=16, norm_num_groups=2,
    )
    pipe = StableDiffusionXLPipeline(
        vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
        scheduler=EulerDiscreteScheduler(), add_watermarker=False,
    )
    emb, neg = _embeds(1, 6, 16, seed=1), _embeds(1, 6, 16, seed=2)
    pooled, npooled = _embeds(1, 16, seed=3), _embeds(1, 16, seed=4)
    return pipe, lambda: dict(
        prompt_embeds=emb, negative_prompt_embeds=neg, pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=npooled, height=64, width=64, guidance_scale=5.0,
        num_inference_steps=STEPS, generator=_gen(), output_type="latent",
    )


def build_ddpm() -> Build:
    from diffusers import DDIMScheduler, DDIMPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=2, attention_head_dim=4,
    )
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler())
    return pipe, lambda: dict(batch_size=1, generator=_gen(), num_inference_steps=STEPS, output_type="np")


# family -> (builder, denoiser class, block gated on (block 0), block whose output is forecast (last block))
FAMILIES: dict[str, tuple[Callable[[], Build], str, str, str]] = {
    "dit": (build_dit, "DiTTransformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "pixart_alpha": (build_pixart_alpha, "PixArtTransformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "pixart_sigma": (build_pixart_sigma, "PixArtTransformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "sd3": (build_sd3, "SD3Transformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "flux": (build_flux, "FluxTransformer2DModel", "transformer_blocks.0", "single_transformer_blocks.1"),
    "sana": (build_sana, "SanaTransformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "wan": (build_wan, "WanTransformer3DModel", "blocks.0", "blocks.2"),
    "cogvideox": (build_cogvideox, "CogVideoXTransformer3DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "hunyuan_video": (build_hunyuan_video, "HunyuanVideoTransformer3DModel", "transformer_blocks.0", "single_transformer_blocks.1"),
    "ltx": (build_ltx, "LTXVideoTransformer3DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "qwen_image": (build_qwen_image, "QwenImageTransformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "aura_flow": (build_aura_flow, "AuraFlowTransformer2DModel", "joint_transformer_blocks.0", "single_transformer_blocks.1"),
    "lumina_next": (build_lumina_next, "LuminaNextDiT2DModel", "layers.0", "layers.2"),
    "cogview4": (build_cogview4, "CogView4Transformer2DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "chroma": (build_chroma, "ChromaTransformer2DModel", "transformer_blocks.0", "single_transformer_blocks.1"),
    "mochi": (build_mochi, "MochiTransformer3DModel", "transformer_blocks.0", "transformer_blocks.2"),
    "sd15": (build_sd15, "UNet2DConditionModel", "down_blocks.0", "up_blocks.1"),
    "sdxl": (build_sdxl, "UNet2DConditionModel", "down_blocks.0", "up_blocks.1"),
    "ddim_unet2d": (build_ddpm, "UNet2DModel", "down_blocks.0", "up_blocks.1"),
}


# --------------------------------------------------------------------------------------------- helpers


def _output(result: Any) -> torch.Tensor:
    for name in ("images", "frames", "latents"):
        value = getattr(result, name, None)
        if value is not None:
            return torch.as_tensor(value).detach().clone()
    raise AssertionError(f"no output tensor in {type(result).__name__}")


def _hook_snapshot(model: torch.nn.Module) -> dict[str, tuple[bool, bool]]:
    return {n: ("_diffusers_hook" in m.__dict__, "forward" in m.__dict__) for n, m in model.named_modules()}


class Family:
    """A built pipeline, its call arguments and its uncached reference output."""

    def __init__(self, name: str, builder: Callable[[], Build] | None = None) -> None:
        self.name = name
        self.pipe, self.kwargs = (builder or FAMILIES[name][0])()
        for component in self.pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()  # e.g. DiT's class-label dropout is random in training mode
        self.model = find_denoiser(self.pipe)
        self.ref = self.run()
        # Taken after the reference run: a pipeline's own cache_context() creates an (empty) hook registry.
        self.before = _hook_snapshot(self.model)

    def run(self) -> torch.Tensor:
        with torch.no_grad():
            return _output(self.pipe(**self.kwargs()))

    def assert_clean(self) -> None:
        assert not accel.is_enabled(self.pipe)
        now = _hook_snapshot(self.model)
        left = sorted(n for n in now if now[n] != self.before[n])
        assert not left, f"hooks or forward overrides left behind after disable on {left}"
        assert not any("_accel_pristine" in m.__dict__ for m in self.model.modules())


_BUILT: dict[str, Family] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and the machine has one core to spare)
    yield
    torch.set_num_threads(n)


def _family(name: str, builder: Callable[[], Build] | None = None) -> Family:
    if name not in _BUILT:
        _BUILT[name] = Family(name, builder)
    return _BUILT[name]


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> Any:
    fam = _family(request.param)
    yield fam
    accel.disable(fam.pipe)  # a failed test must not leave hooks for the next one


# --------------------------------------------------------------------------------------------- per family


def test_blocks_found_in_execution_order(family: Family) -> None:
    _, cls, first, last = FAMILIES[family.name]
    assert type(family.model).__name__ == cls and cls in TESTED_MODELS
    specs = find_blocks(family.model)
    assert (specs[0].name, specs[-1].name) == (first, last)
    order: list[str] = []
    handles = [s.module.register_forward_pre_hook(lambda *_, n=s.name: order.append(n)) for s in specs]
    try:
        family.run()
    finally:
        for h in handles:
            h.remove()
    names = [s.name for s in specs]
    assert order == names * (len(order) // len(names)) and len(order) >= STEPS * len(names)


def test_threshold_zero_is_exact(family: Family) -> None:
    assert torch.isfinite(family.ref).all()
    with accel.cached(family.pipe, EXACT):
        out = family.run()
        st = accel.stats(family.pipe)
    assert st.calls >= STEPS and st.forecast_fraction == 0.0
    assert all(r.computed for v in st.steps.values() for r in v)
    assert torch.equal(out, family.ref)
    family.assert_clean()


def test_permissive_threshold_forecasts(family: Family) -> None:
    accel.enable(family.pipe, PERMISSIVE)
    try:
        out = family.run()
        st = accel.stats(family.pipe)
        # A second call is a new trajectory: the state of the first one is not carried over.
        again = family.run()
        assert torch.equal(again, out)
        assert accel.stats(family.pipe).to_dict() == st.to_dict()
    finally:
        assert accel.disable(family.pipe)
    assert st.forecast_fraction > 0, st.to_dict()
    # Every step counted once per branch (Chroma calls cond and uncond without a cache_context: the second call of
    # a step is branch "default/1", with its own state).
    assert all(sorted({r.step for r in records}) == list(range(STEPS)) for records in st.steps.values()), st.to_dict()
    assert torch.isfinite(out).all()
    assert out.shape == family.ref.shape
    assert not torch.equal(out, family.ref), "forecast steps did not change the output: blocks were not skipped"
    for records in st.steps.values():  # first and last steps always run in full
        assert records[0].computed and records[-1].computed
    family.assert_clean()


def test_disable_restores_exact_output(family: Family) -> None:
    accel.enable(family.pipe, PERMISSIVE)
    family.run()
    assert accel.disable(family.pipe)
    assert not accel.disable(family.pipe)
    family.assert_clean()
    assert torch.equal(family.run(), family.ref)
    # Enabling again after a disable starts cleanly and forecasts again.
    with accel.cached(family.pipe, PERMISSIVE):
        family.run()
        assert accel.stats(family.pipe).forecast_fraction > 0
    family.assert_clean()
    assert torch.equal(family.run(), family.ref)


@pytest.mark.parametrize("name", ["flux", "sd15"])
def test_enable_before_first_call_leaves_nothing(name: str) -> None:
    """Enabled on a fresh pipeline (no hook registry yet), disabled after a run: no registry, no override left."""
    pipe, kwargs = FAMILIES[name][0]()
    model = find_denoiser(pipe)
    assert not any("_diffusers_hook" in m.__dict__ for m in model.modules())
    with accel.cached(pipe, PERMISSIVE), torch.no_grad():
        pipe(**kwargs())
        assert accel.stats(pipe).forecast_fraction > 0
    assert not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


def test_tested_models_in_sync() -> None:
    """blocks.TESTED_MODELS lists exactly the denoiser classes this module drives through their pipelines."""
    assert sorted(TESTED_MODELS) == sorted({cls for _, cls, _, _ in FAMILIES.values()})


# --------------------------------------------------------------------------------------------- CFG


SEQUENTIAL_CFG: dict[str, Callable[[], Build]] = {
    "wan_cfg": lambda: build_wan(guidance=5.0),
    "flux_true_cfg": lambda: build_flux(true_cfg=4.0),
    "qwen_image_true_cfg": lambda: build_qwen_image(true_cfg=4.0),
}


@pytest.mark.parametrize("name", list(SEQUENTIAL_CFG))
def test_sequential_cfg_keeps_a_state_per_context(name: str) -> None:
    fam = _family(name, SEQUENTIAL_CFG[name])
    with accel.cached(fam.pipe, EXACT):
        assert torch.equal(fam.run(), fam.ref)
    with accel.cached(fam.pipe, PERMISSIVE):
        out = fam.run()
        st = accel.stats(fam.pipe)
    fam.assert_clean()
    assert torch.isfinite(out).all() and not torch.equal(out, fam.ref)
    assert set(st.steps) == {"cond", "uncond"}, st.to_dict()
    for ctx, records in st.steps.items():
        # One record per step in each context: the uncond call is not mistaken for a repeat of the cond call.
        assert [r.step for r in records] == list(range(STEPS)), (ctx, records)
        assert any(not r.computed for r in records), (ctx, records)
    # Each context gates on its own block-0 trajectory: the measured errors differ.
    errs = {ctx: [r.error for r in recs if r.error is not None] for ctx, recs in st.steps.items()}
    assert errs["cond"] and errs["uncond"] and errs["cond"] != errs["uncond"]
    assert torch.equal(fam.run(), fam.ref)


def test_batched_cfg() -> None:
    """DiT with guidance > 1 runs cond and uncond as one batch of 2 through each transformer call."""
    fam = _family("dit")
    batches: list[int] = []
    handle = fam.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        with accel.cached(fam.pipe, PERMISSIVE):
            out = fam.run()
            st = accel.stats(fam.pipe)
    finally:
        handle.remove()
    assert batches == [2] * STEPS
    assert list(st.steps) == ["default"] and st.calls == STEPS
    assert st.forecast_fraction > 0 and torch.isfinite(out).all()
    # The gate sees the two CFG halves as separate samples: the default "any" policy takes the worst half's
    # error, "mean" the error of the whole batch; same decisions here, so the same steps are measured.
    with accel.cached(fam.pipe, accel.CGTaylorConfig(threshold=1e3, warmup_steps=1, batch_policy="mean")):
        fam.run()
        mean = accel.stats(fam.pipe)
    pairs = [(a.error, m.error) for a, m in zip(st.steps["default"], mean.steps["default"]) if a.error is not None]
    assert pairs and all(m is not None and a >= m * (1 - 1e-6) for a, m in pairs)
    assert any(a > m * (1 + 1e-6) for a, m in pairs), pairs
    fam.assert_clean()
    assert torch.equal(fam.run(), fam.ref)


# --------------------------------------------------------------------------------------------- errors


class _NoBlocks(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        self.stages = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@pytest.mark.parametrize("make", [lambda: torch.nn.Linear(4, 4), _NoBlocks], ids=["linear", "no_block_lists"])
def test_unsupported_model_raises_listing_supported_models(make: Callable[[], torch.nn.Module]) -> None:
    model = make()
    before = _hook_snapshot(model)
    with pytest.raises(accel.AccelError) as err:
        accel.enable(model, PERMISSIVE)
    msg = str(err.value)
    assert type(model).__name__ in msg
    for cls in TESTED_MODELS:
        assert cls in msg
    assert _hook_snapshot(model) == before and not accel.is_enabled(model)


# --------------------------------------------------------------------------------------------- torch.compile


def test_torch_compile_with_caching_matches_eager() -> None:
    fam = Family("flux_compile", build_flux)  # FLUX: double- and single-stream blocks
    with accel.cached(fam.pipe, PERMISSIVE):
        eager = fam.run()
        eager_stats = accel.stats(fam.pipe).to_dict()
    graphs: list[torch.fx.GraphModule] = []

    def eager_backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        graphs.append(gm)  # dynamo's "eager" backend, counting the graphs it is handed
        return gm.forward

    torch._dynamo.reset()
    fam.model.compile(backend=eager_backend)
    try:
        with accel.cached(fam.pipe, PERMISSIVE):
            compiled = fam.run()
            compiled_stats = accel.stats(fam.pipe).to_dict()
        assert graphs, "torch.compile captured no graph"
        assert compiled_stats == eager_stats and compiled_stats["forecast_fraction"] > 0
        assert torch.equal(compiled, eager)
        fam.assert_clean()
        assert torch.equal(fam.run(), fam.ref)
    finally:
        torch._dynamo.reset()
