"""Tiny random configurations of the diffusers denoisers for ``accel coverage`` (``coverage.py``).

Per class: constructor kwargs small enough to run a 5-step, 2-branch sampling loop in about a second on one
CPU core, the initial latent and the per-branch forward kwargs. Values follow the dummy configurations and
inputs of diffusers' own model tests (tests/models/*/test_models_*.py), shrunk where they allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def _r(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _ids(n: int) -> torch.Tensor:
    return torch.stack([torch.zeros(n), torch.arange(n) // 4, torch.arange(n) % 4], -1).float()


@dataclass
class Tiny:
    """A tiny configuration: constructor kwargs, the initial latent, per-branch forward kwargs, timestep scale."""

    config: dict[str, Any]
    x0: Callable[[], torch.Tensor]
    cond: Callable[[int], dict[str, Any]]  # branch -> kwargs other than the latent and the timestep
    x_name: str = "hidden_states"
    t_name: str = "timestep"
    t_scale: float = 1000.0
    extra: dict[str, Any] = field(default_factory=dict)
    pack: Callable[[torch.Tensor], Any] | None = None  # latent -> what the forward takes (e.g. a list per sample)
    t_pack: Callable[[torch.Tensor], Any] | None = None  # timestep of shape (1,) -> what the forward takes


def _text(d: int, mask: str | None = None, key: str = "encoder_hidden_states", **more: Any) -> Callable[[int], dict[str, Any]]:
    def cond(b: int) -> dict[str, Any]:
        kw: dict[str, Any] = {key: _r(1, 6, d, seed=1 + b)}
        if mask:
            kw[mask] = torch.ones(1, 6, dtype=torch.long)
        return {**kw, **{k: (v(b) if callable(v) else v) for k, v in more.items()}}

    return cond


_FLUX_IDS = {"img_ids": _ids(16), "txt_ids": torch.zeros(6, 3)}
# FLUX's layout at toy size (FluxTransformer2DModel and Bria, which keeps FLUX's signature)
_FLUX_LAYOUT = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
                    joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4])

TINY: dict[str, Tiny] = {
    "DiTTransformer2DModel": Tiny(
        dict(sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2, in_channels=4,
             out_channels=8, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_elementwise_affine=False),
        lambda: _r(1, 4, 8, 8, seed=0), lambda b: {"class_labels": torch.tensor([1 if b == 0 else 1000])}),
    "PixArtTransformer2DModel": Tiny(
        dict(sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=16,
             in_channels=4, cross_attention_dim=16, out_channels=8, num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16, added_cond_kwargs={"resolution": None, "aspect_ratio": None})),
    "SD3Transformer2DModel": Tiny(
        dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
             caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16, pooled_projections=lambda b: _r(1, 16, seed=3 + b))),
    "FluxTransformer2DModel": Tiny(
        dict(_FLUX_LAYOUT), lambda: _r(1, 16, 4, seed=0),
        _text(16, pooled_projections=lambda b: _r(1, 16, seed=3 + b), **_FLUX_IDS), t_scale=1.0),
    "ChromaTransformer2DModel": Tiny(
        dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, axes_dims_rope=(2, 2, 4), approximator_num_channels=8, approximator_hidden_dim=16,
             approximator_layers=1),
        lambda: _r(1, 16, 4, seed=0), _text(16, **_FLUX_IDS), t_scale=1.0),
    "SanaTransformer2DModel": Tiny(
        dict(patch_size=1, in_channels=4, out_channels=4, num_layers=3, num_attention_heads=2, attention_head_dim=4,
             num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8, sample_size=8),
        lambda: _r(1, 4, 8, 8, seed=0), _text(8)),
    "WanTransformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "CogVideoXTransformer3DModel": Tiny(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=4, text_embed_dim=16,
             num_layers=3, sample_width=4, sample_height=4, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
             max_text_seq_length=6),
        lambda: _r(1, 2, 4, 4, 4, seed=0), _text(16)),
    "HunyuanVideoTransformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=2,
             num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
             pooled_projection_dim=8, rope_axes_dim=(2, 4, 4)),
        lambda: _r(1, 4, 1, 4, 4, seed=0),
        _text(16, "encoder_attention_mask", pooled_projections=lambda b: _r(1, 8, seed=3 + b), guidance=torch.tensor([6000.0]))),
    "LTXVideoTransformer3DModel": Tiny(
        dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, num_layers=3, caption_channels=16),
        lambda: _r(1, 16, 8, seed=0), _text(16, "encoder_attention_mask", num_frames=1, height=4, width=4)),
    "QwenImageTransformer2DModel": Tiny(
        dict(patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16, num_attention_heads=2,
             joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4)),
        lambda: _r(1, 16, 16, seed=0), _text(16, "encoder_hidden_states_mask", img_shapes=[[(1, 4, 4)]]), t_scale=1.0),
    "AuraFlowTransformer2DModel": Tiny(
        dict(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2, attention_head_dim=8,
             num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, out_channels=4, pos_embed_max_size=64),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16), t_scale=1.0),
    "CogView4Transformer2DModel": Tiny(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=4, num_attention_heads=4,
             text_embed_dim=16, time_embed_dim=8, condition_dim=4),
        lambda: _r(1, 4, 8, 8, seed=0),
        _text(16, original_size=torch.tensor([[64.0, 64.0]]), target_size=torch.tensor([[64.0, 64.0]]),
              crop_coords=torch.tensor([[0.0, 0.0]]))),
    "MochiTransformer3DModel": Tiny(
        dict(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=3, pooled_projection_dim=16,
             in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=6),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16, "encoder_attention_mask")),
    "UNet2DConditionModel": Tiny(
        dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
             cross_attention_dim=16, norm_num_groups=2, attention_head_dim=2),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16), x_name="sample"),
    "UNet2DModel": Tiny(
        dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
             down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
             norm_num_groups=2, attention_head_dim=4),
        lambda: _r(1, 3, 8, 8, seed=0), lambda b: {}, x_name="sample"),
    "Lumina2Transformer2DModel": Tiny(
        dict(sample_size=4, patch_size=2, in_channels=4, hidden_size=16, num_layers=2, num_refiner_layers=1,
             num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 2, 2), axes_lens=(16, 16, 16),
             cap_feat_dim=16),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16, "encoder_attention_mask"), t_scale=1.0),
    "CogView3PlusTransformer2DModel": Tiny(
        dict(patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=4, out_channels=4,
             text_embed_dim=16, time_embed_dim=8, condition_dim=4, pos_embed_max_size=8, sample_size=8),
        lambda: _r(1, 4, 8, 8, seed=0),
        _text(16, original_size=torch.tensor([[64.0, 64.0]]), target_size=torch.tensor([[64.0, 64.0]]),
              crop_coords=torch.tensor([[0.0, 0.0]]))),
    "HunyuanDiT2DModel": Tiny(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8, hidden_size=16,
             num_layers=2, cross_attention_dim=16, cross_attention_dim_t5=16, pooled_projection_dim=16, text_len=6,
             text_len_t5=6, use_style_cond_and_image_meta_size=False),
        lambda: _r(1, 4, 8, 8, seed=0),
        _text(16, "text_embedding_mask", encoder_hidden_states_t5=lambda b: _r(1, 6, 16, seed=5 + b),
              text_embedding_mask_t5=torch.ones(1, 6, dtype=torch.long),
              image_rotary_emb=(torch.ones(16, 8), torch.zeros(16, 8)))),
    "AllegroTransformer3DModel": Tiny(
        dict(patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
             num_layers=2, cross_attention_dim=16, sample_height=8, sample_width=8, sample_frames=2, caption_channels=16),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "LatteTransformer3DModel": Tiny(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, cross_attention_dim=16,
             sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_single", caption_channels=16,
             video_length=2, norm_elementwise_affine=False),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "SkyReelsV2Transformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "ChronoEditTransformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "SanaVideoTransformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
             num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
             sample_size=8, rope_max_seq_len=32),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "BriaTransformer2DModel": Tiny(
        dict(_FLUX_LAYOUT), lambda: _r(1, 16, 4, seed=0),
        _text(16, pooled_projections=lambda b: _r(1, 16, seed=3 + b), **_FLUX_IDS), t_scale=1.0),
    "LongCatImageTransformer2DModel": Tiny(
        dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4]),
        lambda: _r(1, 16, 4, seed=0), _text(16, **_FLUX_IDS), t_scale=1.0),
    "OvisImageTransformer2DModel": Tiny(
        dict(patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8,
             num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(2, 2, 4)),
        lambda: _r(1, 16, 4, seed=0), _text(16, **_FLUX_IDS), t_scale=1.0),
    "Flux2Transformer2DModel": Tiny(
        dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, timestep_guidance_channels=8, axes_dims_rope=(2, 2, 2, 2)),
        lambda: _r(1, 16, 4, seed=0),
        _text(16, img_ids=torch.cat([torch.zeros(16, 1), _ids(16)], -1), txt_ids=torch.zeros(6, 4),
              guidance=torch.tensor([4.0])), t_scale=1.0),
    "StableAudioDiTModel": Tiny(
        dict(sample_size=8, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16, time_proj_dim=8,
             global_states_input_dim=16, cross_attention_input_dim=16),
        lambda: _r(1, 4, 8, seed=0),
        _text(16, global_hidden_states=lambda b: _r(1, 1, 16, seed=7 + b), rotary_embedding=(torch.ones(9, 4), torch.zeros(9, 4)))),
    "LuminaNextDiT2DModel": Tiny(
        dict(sample_size=4, patch_size=2, in_channels=4, hidden_size=16, num_layers=3, num_attention_heads=2,
             num_kv_heads=1, multiple_of=16, learn_sigma=True, qk_norm=True, cross_attention_dim=16),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16, "encoder_mask", image_rotary_emb=lambda b: _lumina_rope(), cross_attention_kwargs={}),
        t_scale=1.0),
    "MiniMaxMusic3Transformer1DModel": Tiny(
        dict(in_channels=4, condition_dim=16, num_layers=2, num_attention_heads=2, attention_head_dim=8, ff_inner_dim=16,
             rotary_dim=4, fourier_embedding_dim=8),
        lambda: _r(1, 4, 6, seed=0), _text(16)),
    "PRXTransformer2DModel": Tiny(
        dict(in_channels=4, patch_size=2, context_in_dim=16, hidden_size=16, num_heads=2, depth=2, axes_dim=[4, 4]),
        lambda: _r(1, 4, 8, 8, seed=0), _text(16)),
    "ErnieImageTransformer2DModel": Tiny(
        dict(hidden_size=16, num_attention_heads=2, num_layers=2, ffn_hidden_size=32, in_channels=4, out_channels=4,
             patch_size=1, text_in_dim=16, rope_axes_dim=(2, 2, 4)),
        lambda: _r(1, 4, 4, 4, seed=0), _text(16, key="text_bth", text_lens=torch.tensor([6]))),
    "WanVACETransformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32, vace_layers=[0], vace_in_channels=4),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16, control_hidden_states=_r(1, 4, 2, 8, 8, seed=9))),
    "AnyFlowTransformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32),
        lambda: _r(1, 2, 4, 8, 8, seed=0), _text(16, r_timestep=torch.zeros(1, 2)), t_pack=lambda t: t.expand(1, 2)),
    "HunyuanImageTransformer2DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
             num_refiner_layers=1, patch_size=(1, 1), text_embed_dim=16, rope_axes_dim=(4, 4)),
        lambda: _r(1, 4, 4, 4, seed=0), _text(16, "encoder_attention_mask")),
    "JoyImageEditTransformer3DModel": Tiny(
        dict(patch_size=[1, 2, 2], in_channels=4, hidden_size=16, num_attention_heads=2, text_dim=16, num_layers=2,
             rope_dim_list=[2, 2, 4]),
        lambda: _r(1, 4, 1, 8, 8, seed=0), _text(16)),
    "MotifVideoTransformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
             patch_size=2, text_embed_dim=16, rope_axes_dim=(2, 2, 4)),
        lambda: _r(1, 4, 1, 8, 8, seed=0), _text(16, "encoder_attention_mask")),
    "QwenImage21Transformer2DModel": Tiny(
        dict(patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             context_in_dim=16, axes_dims_rope=(2, 2, 4)),
        lambda: _r(1, 16, 4, seed=0),
        _text(16, "encoder_hidden_states_mask", img_shapes=[[(1, 4, 4)]],
              img_mask=torch.cat([torch.zeros(1, 6), torch.ones(1, 4)], 1).bool()), t_scale=1.0),
    "NucleusMoEImageTransformer2DModel": Tiny(
        dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
             joint_attention_dim=16, axes_dims_rope=(8, 4, 4), moe_enabled=False, capacity_factors=[8.0, 8.0]),
        lambda: _r(1, 16, 16, seed=0), _text(16, "encoder_hidden_states_mask", img_shapes=[(1, 4, 4)]), t_scale=1.0),
    "CosmosTransformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2, mlp_ratio=2,
             text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
             concat_padding_mask=False, extra_pos_embed_type="learnable"),  # the padding mask needs torchvision
        lambda: _r(1, 4, 1, 8, 8, seed=0), _text(16, attention_mask=torch.ones(1, 6), fps=30)),
    "UNet1DModel": Tiny(
        dict(block_out_channels=(8, 8, 16, 16), in_channels=4, out_channels=4, time_embedding_type="positional",
             use_timestep_embedding=True, flip_sin_to_cos=False, freq_shift=1.0, out_block_type="OutConv1DBlock",
             mid_block_type="MidResTemporalBlock1D", act_fn="swish",
             down_block_types=("DownResnetBlock1D", "DownResnetBlock1D", "DownResnetBlock1D", "DownResnetBlock1D"),
             up_block_types=("UpResnetBlock1D", "UpResnetBlock1D", "UpResnetBlock1D")),
        lambda: _r(1, 4, 16, seed=0), lambda b: {}, x_name="sample"),
    "UNetMotionModel": Tiny(
        dict(block_out_channels=(16, 32), norm_num_groups=16, layers_per_block=1, in_channels=4, out_channels=4,
             down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
             cross_attention_dim=16, num_attention_heads=2, sample_size=8),
        lambda: _r(1, 4, 2, 8, 8, seed=0), lambda b: {"encoder_hidden_states": _r(2, 6, 16, seed=1 + b)}, x_name="sample"),
    "UNetSpatioTemporalConditionModel": Tiny(
        dict(in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16,
             down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
             up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), addition_time_embed_dim=4,
             projection_class_embeddings_input_dim=12, num_attention_heads=(2, 2), num_frames=2),
        lambda: _r(1, 2, 4, 8, 8, seed=0),
        lambda b: {"encoder_hidden_states": _r(1, 1, 16, seed=1 + b), "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]])},
        x_name="sample"),
    "UNet3DConditionModel": Tiny(
        dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
             down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
             cross_attention_dim=16, norm_num_groups=2, attention_head_dim=4),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16), x_name="sample"),
    "AceStepTransformer1DModel": Tiny(
        dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
             in_channels=24, audio_acoustic_hidden_dim=8, patch_size=2, sliding_window=16),
        lambda: _r(1, 8, 8, seed=0),
        _text(16, timestep_r=lambda b: torch.tensor([0.0]), context_latents=_r(1, 8, 16, seed=9))),
    "ConsisIDTransformer3DModel": Tiny(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=8,
             num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2, temporal_compression_ratio=4,
             max_text_seq_length=6, cross_attn_interval=1, is_kps=False, is_train_face=True, cross_attn_dim_head=1,
             cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=1, LFE_dim_head=8, LFE_num_heads=2,
             LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10, LFE_ff_mult=1, LFE_num_scale=1),
        lambda: _r(1, 1, 4, 8, 8, seed=0), _text(8, id_vit_hidden=[torch.ones(1, 2, 2)], id_cond=torch.ones(1, 2))),
    "EasyAnimateTransformer3DModel": Tiny(
        dict(attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=2, num_layers=2, out_channels=4,
             patch_size=2, sample_height=60, sample_width=90, text_embed_dim=16, time_embed_dim=8),
        lambda: _r(1, 4, 2, 8, 8, seed=0), _text(16)),
    "GlmImageTransformer2DModel": Tiny(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             text_embed_dim=16, time_embed_dim=16, condition_dim=8, prior_vq_quantizer_codebook_size=64),
        lambda: _r(1, 4, 8, 8, seed=0),
        _text(16, prior_token_id=torch.tensor([3]), prior_token_drop=lambda b: torch.tensor([b == 1]),
              target_size=torch.tensor([[8.0, 8.0]]), crop_coords=torch.tensor([[0.0, 0.0]]))),
    "HeliosTransformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_dim=(4, 4, 4)),
        lambda: _r(1, 4, 2, 8, 8, seed=0),
        _text(16, indices_hidden_states=torch.ones(1, 2), indices_latents_history_short=torch.ones(1, 1),
              indices_latents_history_mid=torch.ones(1, 1), indices_latents_history_long=torch.ones(1, 4),
              latents_history_short=_r(1, 4, 1, 8, 8, seed=10), latents_history_mid=_r(1, 4, 1, 8, 8, seed=11),
              latents_history_long=_r(1, 4, 4, 8, 8, seed=12))),
    "HiDreamImageTransformer2DModel": Tiny(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
             num_attention_heads=2, caption_channels=[8, 4], text_emb_dim=8, num_routed_experts=2, num_activated_experts=2,
             axes_dims_rope=(4, 2, 2), max_resolution=(8, 8), llama_layers=(0, 1), force_inference_output=True),
        lambda: _r(1, 4, 8, 8, seed=0),
        _text(8, key="encoder_hidden_states_t5", encoder_hidden_states_llama3=lambda b: _r(2, 1, 6, 4, seed=5 + b),
              pooled_embeds=lambda b: _r(1, 8, seed=3 + b)), t_name="timesteps"),
    "HunyuanVideo15Transformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_refiner_layers=1,
             mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8,
             rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v"),
        lambda: _r(1, 4, 1, 4, 4, seed=0),
        _text(16, "encoder_attention_mask", encoder_hidden_states_2=lambda b: _r(1, 4, 8, seed=5 + b),
              encoder_attention_mask_2=torch.ones(1, 4), image_embeds=torch.zeros(1, 3, 8))),
    "HunyuanVideoFramepackTransformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
             num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
             pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), has_image_proj=True, image_proj_dim=16,
             has_clean_x_embedder=True),
        lambda: _r(1, 4, 3, 4, 4, seed=0),
        _text(16, "encoder_attention_mask", pooled_projections=lambda b: _r(1, 8, seed=3 + b), guidance=torch.tensor([6000.0]),
              image_embeds=_r(1, 6, 16, seed=9), indices_latents=torch.ones(3), latents_clean=_r(1, 4, 2, 4, 4, seed=10),
              indices_latents_clean=torch.ones(2), latents_history_2x=_r(1, 4, 2, 4, 4, seed=11),
              indices_latents_history_2x=torch.ones(2), latents_history_4x=_r(1, 4, 8, 4, 4, seed=12),
              indices_latents_history_4x=torch.ones(8))),
    "Krea2Transformer2DModel": Tiny(
        dict(in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=16, timestep_embed_dim=8, text_hidden_dim=16, num_text_layers=2, text_num_attention_heads=2,
             text_num_key_value_heads=1, text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
             axes_dims_rope=(4, 2, 2)),
        lambda: _r(1, 4, 16, seed=0),
        lambda b: {"encoder_hidden_states": _r(1, 4, 2, 16, seed=1 + b), "position_ids": _krea2_positions(4, 2),
                   "encoder_attention_mask": torch.ones(1, 4, dtype=torch.bool)}, t_scale=1.0),
    "LTX2VideoTransformer3DModel": Tiny(
        dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
             audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
             caption_channels=16, rope_double_precision=False),
        lambda: _r(1, 32, 4, seed=0),
        _text(16, "encoder_attention_mask", audio_hidden_states=_r(1, 9, 4, seed=9),
              audio_encoder_hidden_states=lambda b: _r(1, 6, 16, seed=5 + b), num_frames=2, height=4, width=4,
              audio_num_frames=9, fps=25.0)),
    "ZImageTransformer2DModel": Tiny(
        dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=16, n_layers=2, n_refiner_layers=1, n_heads=1,
             n_kv_heads=2, cap_feat_dim=16, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]),
        lambda: _r(1, 16, 1, 8, 8, seed=0), lambda b: {"cap_feats": [_r(6, 16, seed=1 + b)]},
        x_name="x", t_name="t", t_scale=1.0, pack=list),
    "StableAudio3DiTModel": Tiny(
        dict(io_channels=8, embed_dim=32, depth=2, num_heads=4, cond_token_dim=16, global_cond_dim=12, local_add_cond_dim=5,
             timestep_features_dim=16, ff_mult=2, num_memory_tokens=3, use_differential_attention=False),
        lambda: _r(1, 8, 16, seed=0), _text(16, global_hidden_states=lambda b: _r(1, 12, seed=3 + b)), t_scale=1.0),
    "OmniGenTransformer2DModel": Tiny(
        dict(hidden_size=16, num_attention_heads=4, num_key_value_heads=4, intermediate_size=32, num_layers=2, pad_token_id=0,
             vocab_size=1000, in_channels=4, time_step_dim=4, rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]}),
        lambda: _r(1, 4, 8, 8, seed=0),
        lambda b: {"input_ids": torch.arange(24).reshape(1, 24) % (10 - b), "input_img_latents": [_r(1, 4, 8, 8, seed=9)],
                   "input_image_sizes": {0: [[0, 16]]}, "attention_mask": torch.ones(1, 41, 41),
                   "position_ids": torch.arange(41).reshape(1, 41)}, t_scale=1.0),
    "BriaFiboTransformer2DModel": Tiny(
        dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=32, text_encoder_dim=16, pooled_projection_dim=None, axes_dims_rope=[0, 4, 4]),
        lambda: _r(1, 16, 16, seed=0),
        lambda b: {"encoder_hidden_states": _r(1, 6, 32, seed=1 + b), "text_encoder_layers": [_r(1, 6, 16, seed=3 + b)] * 2,
                   "img_ids": _ids(16), "txt_ids": torch.zeros(6, 3)}, t_scale=1.0),
    "Ideogram4Transformer2DModel": Tiny(
        dict(in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2, intermediate_size=32, adaln_dim=16,
             llm_features_dim=24, mrope_section=(2, 1, 1)),
        lambda: torch.cat([torch.zeros(1, 4, 16), _r(1, 4, 16, seed=0)], 1), lambda b: _ideogram4_inputs(4, 4, 24, seed=1 + b),
        t_scale=1.0),
    "JoyImageEditPlusTransformer3DModel": Tiny(
        dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=16, num_attention_heads=2, text_dim=16, num_layers=2,
             rope_dim_list=[2, 2, 4], theta=256),
        lambda: _r(1, 2, 16, 1, 2, 2, seed=0), _text(16, shape_list=[[(1, 1, 1), (1, 1, 1)]]), t_scale=1.0),
    "MiniMaxH3Transformer3DModel": Tiny(
        dict(num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2, num_refiner_layers=1, ffn_dim=32,
             in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=8, freq_dim=8, time_embed_hidden_dim=24,
             time_embed_dim=16, rope_freq_dim=2),
        lambda: _r(1, 8, 16, seed=0),
        lambda b: {"encoder_hidden_states": _r(1, 4, 8, seed=1 + b), "audio_hidden_states": _r(1, 6, 6, seed=9),
                   **_minimax_h3_layout(4, 6, 8)}, t_scale=1.0),
    "WanAnimateTransformer3DModel": Tiny(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=12, latent_channels=4,
             out_channels=4, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, image_dim=16, rope_max_seq_len=32,
             motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
             motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
             inject_face_latents_blocks=2),
        lambda: _r(1, 12, 21, 4, 4, seed=0),
        _text(16, encoder_hidden_states_image=_r(1, 4, 16, seed=9), pose_hidden_states=_r(1, 4, 20, 4, 4, seed=10),
              face_pixel_values=_r(1, 3, 77, 16, 16, seed=11))),
    "Flux3Transformer2DModel": Tiny(
        dict(in_channels=4, cond_in_channels=4, num_layers=1, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=16, timestep_channels=16, axes_dims_rope=(2, 2, 2, 2)),
        lambda: _r(1, 16, 4, seed=0),
        _text(16, img_ids=torch.cat([torch.zeros(16, 1), _ids(16)], -1), txt_ids=torch.zeros(6, 4)), t_scale=1.0),
    "Kandinsky5Transformer3DModel": Tiny(
        dict(in_visual_dim=16, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
             attention_type="regular"),
        lambda: _r(1, 1, 8, 8, 16, seed=0),
        _text(16, pooled_projections=lambda b: _r(1, 8, seed=3 + b), text_rope_pos=torch.arange(6),
              visual_rope_pos=[torch.arange(1), torch.arange(4), torch.arange(4)])),
    "Kandinsky6Transformer3DModel": Tiny(
        dict(in_visual_dim=16, out_visual_dim=16, in_text_dim=16, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
             in_audio_dim=4, out_audio_dim=4, axes_dims_a=(4,)),
        lambda: _r(1, 1, 8, 8, 16, seed=0), _text(16, pooled_projections=lambda b: _r(1, 8, seed=3 + b))),
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
    enc[:, :n_text] = _r(1, n_text, d, seed=seed)
    pos = torch.zeros(1, n, 3, dtype=torch.long)
    pos[:, :n_text] = torch.arange(n_text)[:, None]
    pos[:, n_text:, 0] = m.IMAGE_POSITION_OFFSET
    pos[:, n_text:, 1] = torch.tensor([0, 0, 1, 1]) + m.IMAGE_POSITION_OFFSET
    pos[:, n_text:, 2] = torch.tensor([0, 1, 0, 1]) + m.IMAGE_POSITION_OFFSET
    ind = torch.full((1, n), m.OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
    ind[:, :n_text] = m.LLM_TOKEN_INDICATOR
    return {"encoder_hidden_states": enc, "position_ids": pos, "segment_ids": torch.ones(1, n, dtype=torch.long), "indicator": ind}


def _minimax_h3_layout(n_text: int, n_audio: int, n_video: int) -> dict[str, torch.Tensor]:
    """MiniMax-H3's packed sequence: text, audio, video rows, tagged (video 0, text 1, audio 2), one timestep."""
    n = n_text + n_audio + n_video
    text, audio, video = torch.arange(n_text), torch.arange(n_text, n_text + n_audio), torch.arange(n_text + n_audio, n)
    tags = torch.zeros(n, dtype=torch.long)
    tags[text], tags[audio] = 1, 2
    pos = torch.zeros(n, 3)
    pos[:, 0] = torch.arange(n)
    pos[video, 1] = torch.arange(n_video).float() % 4
    pos[video, 2] = torch.arange(n_video).float() % 2
    return {"timestep_indices": torch.zeros(n, dtype=torch.long), "token_tags": tags, "position_ids": pos,
            "video_indices": video, "audio_indices": audio, "text_indices": text}


def _lumina_rope() -> torch.Tensor:
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    return get_2d_rotary_pos_embed_lumina(8, 16, 16)
