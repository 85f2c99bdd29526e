"""The family table, image denoisers (2-D latents or packed image tokens): one :class:`Family` per diffusers class.

A new image family is one entry in ``IMAGE`` here (see ``accel/coverage/families/__init__.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..spec import Family, Pipeline, ids, prompts, randn, scheduler, text

_FLUX_IDS = {"img_ids": ids(16), "txt_ids": torch.zeros(6, 3)}
# FLUX's layout at toy size (FluxTransformer2DModel and Bria, which keeps FLUX's signature)
_FLUX_LAYOUT = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
                    joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4])


def _pixart_call() -> dict[str, Any]:
    return dict(**prompts(16, "prompt_attention_mask"), height=64, width=64, guidance_scale=4.0, use_resolution_binning=False)


def _dit_vae() -> Any:
    """DiTPipeline decodes its latents: a one-level VAE at toy size."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         block_out_channels=(4,), layers_per_block=1, latent_channels=4, norm_num_groups=2, sample_size=8)


IMAGE: dict[str, Family] = {
    "DiTTransformer2DModel": Family(
        dict(sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2, in_channels=4,
             out_channels=8, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_elementwise_affine=False),
        lambda: randn(1, 4, 8, 8, seed=0), lambda b: {"class_labels": torch.tensor([1 if b == 0 else 1000])},
        pipelines=(
            # guidance > 1: the pipeline batches cond and uncond through one transformer call (batched CFG)
            Pipeline("dit", "DiTPipeline", lambda: dict(class_labels=[1], guidance_scale=2.0),
                     ("transformer_blocks.0", "transformer_blocks.2"), scheduler("DDIMScheduler"), components=dict(vae=_dit_vae),
                     output_type="pt"),
        )),
    "PixArtTransformer2DModel": Family(
        dict(sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=16,
             in_channels=4, cross_attention_dim=16, out_channels=8, num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False),
        lambda: randn(1, 4, 8, 8, seed=0), text(16, added_cond_kwargs={"resolution": None, "aspect_ratio": None}),
        pipelines=(
            Pipeline("pixart_alpha", "PixArtAlphaPipeline", _pixart_call, ("transformer_blocks.0", "transformer_blocks.2"),
                     scheduler("DDIMScheduler")),
            Pipeline("pixart_sigma", "PixArtSigmaPipeline", _pixart_call, ("transformer_blocks.0", "transformer_blocks.2"),
                     scheduler("DDIMScheduler")),
        )),
    "SD3Transformer2DModel": Family(
        dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
             caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16),
        lambda: randn(1, 4, 8, 8, seed=0), text(16, pooled_projections=lambda b: randn(1, 16, seed=3 + b)),
        pipelines=(
            Pipeline("sd3", "StableDiffusion3Pipeline", lambda: dict(**prompts(16, pooled=16), height=64, width=64, guidance_scale=3.0),
                     ("transformer_blocks.0", "transformer_blocks.2")),
        )),
    "FluxTransformer2DModel": Family(
        dict(_FLUX_LAYOUT), lambda: randn(1, 16, 4, seed=0),
        text(16, pooled_projections=lambda b: randn(1, 16, seed=3 + b), **_FLUX_IDS), t_scale=1.0,
        pipelines=(
            Pipeline("flux", "FluxPipeline", lambda: dict(**prompts(16, pooled=16, negative=False), height=32, width=32),
                     ("transformer_blocks.0", "single_transformer_blocks.1"),
                     cfg=lambda: dict(true_cfg_scale=4.0, **prompts(16, pooled=16, positive=False))),
        )),
    "ChromaTransformer2DModel": Family(
        dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, axes_dims_rope=(2, 2, 4), approximator_num_channels=8, approximator_hidden_dim=16,
             approximator_layers=1),
        lambda: randn(1, 16, 4, seed=0), text(16, **_FLUX_IDS), t_scale=1.0,
        pipelines=(
            Pipeline("chroma", "ChromaPipeline",  # cond and uncond without a cache context: told apart by call order
                     lambda: dict(**prompts(16, "prompt_attention_mask", mask_dtype=torch.bool), height=32, width=32, guidance_scale=4.0),
                     ("transformer_blocks.0", "single_transformer_blocks.1")),
        )),
    "SanaTransformer2DModel": Family(
        dict(patch_size=1, in_channels=4, out_channels=4, num_layers=3, num_attention_heads=2, attention_head_dim=4,
             num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8, sample_size=8),
        lambda: randn(1, 4, 8, 8, seed=0), text(8),
        pipelines=(
            Pipeline("sana", "SanaPipeline", lambda: dict(**prompts(8, "prompt_attention_mask"), height=128, width=128, guidance_scale=4.0,
                                                         use_resolution_binning=False), ("transformer_blocks.0", "transformer_blocks.2")),
        )),
    "QwenImageTransformer2DModel": Family(
        dict(patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16, num_attention_heads=2,
             joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4)),
        lambda: randn(1, 16, 16, seed=0), text(16, "encoder_hidden_states_mask", img_shapes=[[(1, 4, 4)]]), t_scale=1.0,
        pipelines=(
            Pipeline("qwen_image", "QwenImagePipeline", lambda: dict(**prompts(16, "prompt_embeds_mask", negative=False), height=32, width=32),
                     ("transformer_blocks.0", "transformer_blocks.2"),
                     cfg=lambda: dict(true_cfg_scale=4.0, **prompts(16, "prompt_embeds_mask", positive=False))),
        )),
    "AuraFlowTransformer2DModel": Family(
        dict(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2, attention_head_dim=8,
             num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, out_channels=4, pos_embed_max_size=64),
        lambda: randn(1, 4, 8, 8, seed=0), text(16), t_scale=1.0,
        pipelines=(
            Pipeline("aura_flow", "AuraFlowPipeline", lambda: dict(**prompts(16, "prompt_attention_mask"), height=64, width=64, guidance_scale=3.5),
                     ("joint_transformer_blocks.0", "single_transformer_blocks.1")),
        )),
    "CogView4Transformer2DModel": Family(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=4, num_attention_heads=4,
             text_embed_dim=16, time_embed_dim=8, condition_dim=4),
        lambda: randn(1, 4, 8, 8, seed=0),
        text(16, original_size=torch.tensor([[64.0, 64.0]]), target_size=torch.tensor([[64.0, 64.0]]),
              crop_coords=torch.tensor([[0.0, 0.0]])),
        pipelines=(
            Pipeline("cogview4", "CogView4Pipeline", lambda: dict(**prompts(16), height=64, width=64, guidance_scale=5.0),
                     ("transformer_blocks.0", "transformer_blocks.2")),  # cond, uncond in cache_context("cond") / ("uncond")
        )),
    "UNet2DConditionModel": Family(
        dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
             cross_attention_dim=16, norm_num_groups=2, attention_head_dim=2),
        lambda: randn(1, 4, 8, 8, seed=0), text(16), x_name="sample",
        pipelines=(
            Pipeline("sd15", "StableDiffusionPipeline", lambda: dict(**prompts(16), height=64, width=64, guidance_scale=7.5),
                     ("down_blocks.0", "up_blocks.1"), scheduler("DDIMScheduler", steps_offset=1, clip_sample=False),
                     components=dict(requires_safety_checker=False)),
            Pipeline("sdxl", "StableDiffusionXLPipeline", lambda: dict(**prompts(16, pooled=16), height=64, width=64, guidance_scale=5.0),
                     ("down_blocks.0", "up_blocks.1"), scheduler("EulerDiscreteScheduler"), components=dict(add_watermarker=False),
                     config=dict(attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                                 addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                                 projection_class_embeddings_input_dim=6 * 8 + 16)),
        )),
    "UNet2DModel": Family(
        dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
             down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
             norm_num_groups=2, attention_head_dim=4),
        lambda: randn(1, 3, 8, 8, seed=0), lambda b: {}, x_name="sample",
        pipelines=(
            Pipeline("ddim_unet2d", "DDIMPipeline", lambda: dict(batch_size=1), ("down_blocks.0", "up_blocks.1"),
                     scheduler("DDIMScheduler"), output_type="np"),
        )),
    "Lumina2Transformer2DModel": Family(
        dict(sample_size=4, patch_size=2, in_channels=4, hidden_size=16, num_layers=2, num_refiner_layers=1,
             num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 2, 2), axes_lens=(16, 16, 16),
             cap_feat_dim=16),
        lambda: randn(1, 4, 8, 8, seed=0), text(16, "encoder_attention_mask"), t_scale=1.0),
    "CogView3PlusTransformer2DModel": Family(
        dict(patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=4, out_channels=4,
             text_embed_dim=16, time_embed_dim=8, condition_dim=4, pos_embed_max_size=8, sample_size=8),
        lambda: randn(1, 4, 8, 8, seed=0),
        text(16, original_size=torch.tensor([[64.0, 64.0]]), target_size=torch.tensor([[64.0, 64.0]]),
              crop_coords=torch.tensor([[0.0, 0.0]]))),
    "HunyuanDiT2DModel": Family(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8, hidden_size=16,
             num_layers=2, cross_attention_dim=16, cross_attention_dim_t5=16, pooled_projection_dim=16, text_len=6,
             text_len_t5=6, use_style_cond_and_image_meta_size=False),
        lambda: randn(1, 4, 8, 8, seed=0),
        text(16, "text_embedding_mask", encoder_hidden_states_t5=lambda b: randn(1, 6, 16, seed=5 + b),
              text_embedding_mask_t5=torch.ones(1, 6, dtype=torch.long),
              image_rotary_emb=(torch.ones(16, 8), torch.zeros(16, 8)))),
    "BriaTransformer2DModel": Family(
        dict(_FLUX_LAYOUT), lambda: randn(1, 16, 4, seed=0),
        text(16, pooled_projections=lambda b: randn(1, 16, seed=3 + b), **_FLUX_IDS), t_scale=1.0),
    "LongCatImageTransformer2DModel": Family(
        dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4]),
        lambda: randn(1, 16, 4, seed=0), text(16, **_FLUX_IDS), t_scale=1.0),
    "OvisImageTransformer2DModel": Family(
        dict(patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8,
             num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(2, 2, 4)),
        lambda: randn(1, 16, 4, seed=0), text(16, **_FLUX_IDS), t_scale=1.0),
    "Flux2Transformer2DModel": Family(
        dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, timestep_guidance_channels=8, axes_dims_rope=(2, 2, 2, 2)),
        lambda: randn(1, 16, 4, seed=0),
        text(16, img_ids=torch.cat([torch.zeros(16, 1), ids(16)], -1), txt_ids=torch.zeros(6, 4),
              guidance=torch.tensor([4.0])), t_scale=1.0),
    "LuminaNextDiT2DModel": Family(
        dict(sample_size=4, patch_size=2, in_channels=4, hidden_size=16, num_layers=3, num_attention_heads=2,
             num_kv_heads=1, multiple_of=16, learn_sigma=True, qk_norm=True, cross_attention_dim=16),
        lambda: randn(1, 4, 8, 8, seed=0), text(16, "encoder_mask", image_rotary_emb=lambda b: _lumina_rope(), cross_attention_kwargs={}),
        t_scale=1.0,
        pipelines=(
            Pipeline("lumina_next", "LuminaPipeline", lambda: dict(**prompts(16, "prompt_attention_mask"), height=32, width=32, guidance_scale=4.0),
                     ("layers.0", "layers.2")),
        )),
    "PRXTransformer2DModel": Family(
        dict(in_channels=4, patch_size=2, context_in_dim=16, hidden_size=16, num_heads=2, depth=2, axes_dim=[4, 4]),
        lambda: randn(1, 4, 8, 8, seed=0), text(16)),
    "ErnieImageTransformer2DModel": Family(
        dict(hidden_size=16, num_attention_heads=2, num_layers=2, ffn_hidden_size=32, in_channels=4, out_channels=4,
             patch_size=1, text_in_dim=16, rope_axes_dim=(2, 2, 4)),
        lambda: randn(1, 4, 4, 4, seed=0), text(16, key="text_bth", text_lens=torch.tensor([6]))),
    "HunyuanImageTransformer2DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
             num_refiner_layers=1, patch_size=(1, 1), text_embed_dim=16, rope_axes_dim=(4, 4)),
        lambda: randn(1, 4, 4, 4, seed=0), text(16, "encoder_attention_mask")),
    "QwenImage21Transformer2DModel": Family(
        dict(patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             context_in_dim=16, axes_dims_rope=(2, 2, 4)),
        lambda: randn(1, 16, 4, seed=0),
        text(16, "encoder_hidden_states_mask", img_shapes=[[(1, 4, 4)]],
              img_mask=torch.cat([torch.zeros(1, 6), torch.ones(1, 4)], 1).bool()), t_scale=1.0),
    "NucleusMoEImageTransformer2DModel": Family(
        dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
             joint_attention_dim=16, axes_dims_rope=(8, 4, 4), moe_enabled=False, capacity_factors=[8.0, 8.0]),
        lambda: randn(1, 16, 16, seed=0), text(16, "encoder_hidden_states_mask", img_shapes=[(1, 4, 4)]), t_scale=1.0),
    "GlmImageTransformer2DModel": Family(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             text_embed_dim=16, time_embed_dim=16, condition_dim=8, prior_vq_quantizer_codebook_size=64),
        lambda: randn(1, 4, 8, 8, seed=0),
        text(16, prior_token_id=torch.tensor([3]), prior_token_drop=lambda b: torch.tensor([b == 1]),
              target_size=torch.tensor([[8.0, 8.0]]), crop_coords=torch.tensor([[0.0, 0.0]]))),
    "HiDreamImageTransformer2DModel": Family(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
             num_attention_heads=2, caption_channels=[8, 4], text_emb_dim=8, num_routed_experts=2, num_activated_experts=2,
             axes_dims_rope=(4, 2, 2), max_resolution=(8, 8), llama_layers=(0, 1), force_inference_output=True),
        lambda: randn(1, 4, 8, 8, seed=0),
        text(8, key="encoder_hidden_states_t5", encoder_hidden_states_llama3=lambda b: randn(2, 1, 6, 4, seed=5 + b),
              pooled_embeds=lambda b: randn(1, 8, seed=3 + b)), t_name="timesteps"),
    "Krea2Transformer2DModel": Family(
        dict(in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=16, timestep_embed_dim=8, text_hidden_dim=16, num_text_layers=2, text_num_attention_heads=2,
             text_num_key_value_heads=1, text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
             axes_dims_rope=(4, 2, 2)),
        lambda: randn(1, 4, 16, seed=0),
        lambda b: {"encoder_hidden_states": randn(1, 4, 2, 16, seed=1 + b), "position_ids": _krea2_positions(4, 2),
                   "encoder_attention_mask": torch.ones(1, 4, dtype=torch.bool)}, t_scale=1.0),
    "ZImageTransformer2DModel": Family(
        dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=16, n_layers=2, n_refiner_layers=1, n_heads=1,
             n_kv_heads=2, cap_feat_dim=16, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]),
        lambda: randn(1, 16, 1, 8, 8, seed=0), lambda b: {"cap_feats": [randn(6, 16, seed=1 + b)]},
        x_name="x", t_name="t", t_scale=1.0, pack=list),
    "OmniGenTransformer2DModel": Family(
        dict(hidden_size=16, num_attention_heads=4, num_key_value_heads=4, intermediate_size=32, num_layers=2, pad_token_id=0,
             vocab_size=1000, in_channels=4, time_step_dim=4, rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]}),
        lambda: randn(1, 4, 8, 8, seed=0),
        lambda b: {"input_ids": torch.arange(24).reshape(1, 24) % (10 - b), "input_img_latents": [randn(1, 4, 8, 8, seed=9)],
                   "input_image_sizes": {0: [[0, 16]]}, "attention_mask": torch.ones(1, 41, 41),
                   "position_ids": torch.arange(41).reshape(1, 41)}, t_scale=1.0),
    "BriaFiboTransformer2DModel": Family(
        dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=32, text_encoder_dim=16, pooled_projection_dim=None, axes_dims_rope=[0, 4, 4]),
        lambda: randn(1, 16, 16, seed=0),
        lambda b: {"encoder_hidden_states": randn(1, 6, 32, seed=1 + b), "text_encoder_layers": [randn(1, 6, 16, seed=3 + b)] * 2,
                   "img_ids": ids(16), "txt_ids": torch.zeros(6, 3)}, t_scale=1.0),
    "Ideogram4Transformer2DModel": Family(
        dict(in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2, intermediate_size=32, adaln_dim=16,
             llm_features_dim=24, mrope_section=(2, 1, 1)),
        lambda: torch.cat([torch.zeros(1, 4, 16), randn(1, 4, 16, seed=0)], 1), lambda b: _ideogram4_inputs(4, 4, 24, seed=1 + b),
        t_scale=1.0),
    "Flux3Transformer2DModel": Family(
        dict(in_channels=4, cond_in_channels=4, num_layers=1, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, timestep_channels=16, axes_dims_rope=(2, 2, 2, 2)),
        lambda: randn(1, 16, 4, seed=0),
        text(16, img_ids=torch.cat([torch.zeros(16, 1), ids(16)], -1), txt_ids=torch.zeros(6, 4)), t_scale=1.0),
}


def _krea2_positions(n_text: int, side: int) -> torch.Tensor:
    """Text tokens at the origin, then a side x side image grid in (0, row, column)."""
    pos = torch.zeros(n_text + side * side, 3)
    pos[n_text:, 1] = torch.arange(side).repeat_interleave(side)
    pos[n_text:, 2] = torch.arange(side).repeat(side)
    return pos


def _ideogram4_inputs(n_text: int, n_img: int, d: int, seed: int) -> dict[str, torch.Tensor]:
    """Ideogram4's packed sequence: text tokens (LLM features) then a 2x2 image grid (offset positions)."""
    from diffusers.models.transformers import transformer_ideogram4 as m

    n = n_text + n_img
    enc = torch.zeros(1, n, d)
    enc[:, :n_text] = randn(1, n_text, d, seed=seed)
    pos = torch.zeros(1, n, 3, dtype=torch.long)
    pos[:, :n_text] = torch.arange(n_text)[:, None]
    pos[:, n_text:, 0] = m.IMAGE_POSITION_OFFSET
    pos[:, n_text:, 1] = torch.tensor([0, 0, 1, 1]) + m.IMAGE_POSITION_OFFSET
    pos[:, n_text:, 2] = torch.tensor([0, 1, 0, 1]) + m.IMAGE_POSITION_OFFSET
    ind = torch.full((1, n), m.OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
    ind[:, :n_text] = m.LLM_TOKEN_INDICATOR
    return {"encoder_hidden_states": enc, "position_ids": pos, "segment_ids": torch.ones(1, n, dtype=torch.long), "indicator": ind}


def _lumina_rope() -> torch.Tensor:
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    return get_2d_rotary_pos_embed_lumina(8, 16, 16)
