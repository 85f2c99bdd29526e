"""The family table, video, audio and 1-D denoisers: one :class:`Family` per diffusers class.

A new video, audio or 1-D family is one entry in ``VIDEO_AUDIO`` here (see ``accel/coverage/families/__init__.py``).
"""

from __future__ import annotations

import torch

from ..spec import Family, Pipeline, prompts, randn, scheduler, text

VIDEO_AUDIO: dict[str, Family] = {
    "WanTransformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16),
        pipelines=(
            Pipeline("wan", "WanPipeline", lambda: dict(**prompts(16), height=32, width=32, num_frames=5, guidance_scale=1.0),
                     ("blocks.0", "blocks.2"), scheduler(shift=3.0), cfg=lambda: dict(guidance_scale=5.0)),
        )),
    "CogVideoXTransformer3DModel": Family(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=4, text_embed_dim=16,
             num_layers=3, sample_width=4, sample_height=4, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
             max_text_seq_length=6),
        lambda: randn(1, 2, 4, 4, 4, seed=0), text(16),
        pipelines=(
            Pipeline("cogvideox", "CogVideoXPipeline", lambda: dict(**prompts(16), height=32, width=32, num_frames=5, guidance_scale=6.0),
                     ("transformer_blocks.0", "transformer_blocks.2"), scheduler("CogVideoXDDIMScheduler")),
        )),
    "HunyuanVideoTransformer3DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=2,
             num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
             pooled_projection_dim=8, rope_axes_dim=(2, 4, 4)),
        lambda: randn(1, 4, 1, 4, 4, seed=0),
        text(16, "encoder_attention_mask", pooled_projections=lambda b: randn(1, 8, seed=3 + b), guidance=torch.tensor([6000.0])),
        pipelines=(
            Pipeline("hunyuan_video", "HunyuanVideoPipeline",
                     lambda: dict(**prompts(16, "prompt_attention_mask", pooled=8, negative=False), height=32, width=32, num_frames=5,
                                  guidance_scale=6.0), ("transformer_blocks.0", "single_transformer_blocks.1"), scheduler(shift=7.0)),
        )),
    "LTXVideoTransformer3DModel": Family(
        dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, num_layers=3, caption_channels=16),
        lambda: randn(1, 16, 8, seed=0), text(16, "encoder_attention_mask", num_frames=1, height=4, width=4),
        pipelines=(
            Pipeline("ltx", "LTXPipeline", lambda: dict(**prompts(16, "prompt_attention_mask"), height=64, width=64, num_frames=9,
                                                       guidance_scale=3.0), ("transformer_blocks.0", "transformer_blocks.2")),
        )),
    "MochiTransformer3DModel": Family(
        dict(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=3, pooled_projection_dim=16,
             in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=6),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16, "encoder_attention_mask"),
        pipelines=(
            Pipeline("mochi", "MochiPipeline", lambda: dict(**prompts(16, "prompt_attention_mask"), height=32, width=32, num_frames=7,
                                                           guidance_scale=4.5), ("transformer_blocks.0", "transformer_blocks.2")),
        )),
    "AllegroTransformer3DModel": Family(
        dict(patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
             num_layers=2, cross_attention_dim=16, sample_height=8, sample_width=8, sample_frames=2, caption_channels=16),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16)),
    "LatteTransformer3DModel": Family(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, cross_attention_dim=16,
             sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_single", caption_channels=16,
             video_length=2, norm_elementwise_affine=False),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16)),
    "SkyReelsV2Transformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16)),
    "ChronoEditTransformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16)),
    "SanaVideoTransformer3DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
             num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
             sample_size=8, rope_max_seq_len=32),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16)),
    "StableAudioDiTModel": Family(
        dict(sample_size=8, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16, time_proj_dim=8,
             global_states_input_dim=16, cross_attention_input_dim=16),
        lambda: randn(1, 4, 8, seed=0),
        text(16, global_hidden_states=lambda b: randn(1, 1, 16, seed=7 + b), rotary_embedding=(torch.ones(9, 4), torch.zeros(9, 4)))),
    "MiniMaxMusic3Transformer1DModel": Family(
        dict(in_channels=4, condition_dim=16, num_layers=2, num_attention_heads=2, attention_head_dim=8, ff_inner_dim=16,
             rotary_dim=4, fourier_embedding_dim=8),
        lambda: randn(1, 4, 6, seed=0), text(16)),
    "WanVACETransformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32, vace_layers=[0], vace_in_channels=4),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16, control_hidden_states=randn(1, 4, 2, 8, 8, seed=9))),
    "AnyFlowTransformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32),
        lambda: randn(1, 2, 4, 8, 8, seed=0), text(16, r_timestep=torch.zeros(1, 2)), t_pack=lambda t: t.expand(1, 2)),
    "JoyImageEditTransformer3DModel": Family(
        dict(patch_size=[1, 2, 2], in_channels=4, hidden_size=16, num_attention_heads=2, text_dim=16, num_layers=2,
             rope_dim_list=[2, 2, 4]),
        lambda: randn(1, 4, 1, 8, 8, seed=0), text(16)),
    "MotifVideoTransformer3DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
             patch_size=2, text_embed_dim=16, rope_axes_dim=(2, 2, 4)),
        lambda: randn(1, 4, 1, 8, 8, seed=0), text(16, "encoder_attention_mask")),
    "CosmosTransformer3DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2, mlp_ratio=2,
             text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
             concat_padding_mask=False, extra_pos_embed_type="learnable"),  # the padding mask needs torchvision
        lambda: randn(1, 4, 1, 8, 8, seed=0), text(16, attention_mask=torch.ones(1, 6), fps=30)),
    "UNet1DModel": Family(
        dict(block_out_channels=(8, 8, 16, 16), in_channels=4, out_channels=4, time_embedding_type="positional",
             use_timestep_embedding=True, flip_sin_to_cos=False, freq_shift=1.0, out_block_type="OutConv1DBlock",
             mid_block_type="MidResTemporalBlock1D", act_fn="swish",
             down_block_types=("DownResnetBlock1D", "DownResnetBlock1D", "DownResnetBlock1D", "DownResnetBlock1D"),
             up_block_types=("UpResnetBlock1D", "UpResnetBlock1D", "UpResnetBlock1D")),
        lambda: randn(1, 4, 16, seed=0), lambda b: {}, x_name="sample"),
    "UNetMotionModel": Family(
        dict(block_out_channels=(16, 32), norm_num_groups=16, layers_per_block=1, in_channels=4, out_channels=4,
             down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
             cross_attention_dim=16, num_attention_heads=2, sample_size=8),
        lambda: randn(1, 4, 2, 8, 8, seed=0), lambda b: {"encoder_hidden_states": randn(2, 6, 16, seed=1 + b)}, x_name="sample"),
    "UNetSpatioTemporalConditionModel": Family(
        dict(in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16,
             down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
             up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), addition_time_embed_dim=4,
             projection_class_embeddings_input_dim=12, num_attention_heads=(2, 2), num_frames=2),
        lambda: randn(1, 2, 4, 8, 8, seed=0),
        lambda b: {"encoder_hidden_states": randn(1, 1, 16, seed=1 + b), "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]])},
        x_name="sample"),
    "UNet3DConditionModel": Family(
        dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
             down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
             cross_attention_dim=16, norm_num_groups=2, attention_head_dim=4),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16), x_name="sample"),
    "AceStepTransformer1DModel": Family(
        dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
             in_channels=24, audio_acoustic_hidden_dim=8, patch_size=2, sliding_window=16),
        lambda: randn(1, 8, 8, seed=0),
        text(16, timestep_r=lambda b: torch.tensor([0.0]), context_latents=randn(1, 8, 16, seed=9))),
    "ConsisIDTransformer3DModel": Family(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=8,
             num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2, temporal_compression_ratio=4,
             max_text_seq_length=6, cross_attn_interval=1, is_kps=False, is_train_face=True, cross_attn_dim_head=1,
             cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=1, LFE_dim_head=8, LFE_num_heads=2,
             LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10, LFE_ff_mult=1, LFE_num_scale=1),
        lambda: randn(1, 1, 4, 8, 8, seed=0), text(8, id_vit_hidden=[torch.ones(1, 2, 2)], id_cond=torch.ones(1, 2))),
    "EasyAnimateTransformer3DModel": Family(
        dict(attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=2, num_layers=2, out_channels=4,
             patch_size=2, sample_height=60, sample_width=90, text_embed_dim=16, time_embed_dim=8),
        lambda: randn(1, 4, 2, 8, 8, seed=0), text(16)),
    "HeliosTransformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
             freq_dim=32, ffn_dim=16, num_layers=2, rope_dim=(4, 4, 4)),
        lambda: randn(1, 4, 2, 8, 8, seed=0),
        text(16, indices_hidden_states=torch.ones(1, 2), indices_latents_history_short=torch.ones(1, 1),
              indices_latents_history_mid=torch.ones(1, 1), indices_latents_history_long=torch.ones(1, 4),
              latents_history_short=randn(1, 4, 1, 8, 8, seed=10), latents_history_mid=randn(1, 4, 1, 8, 8, seed=11),
              latents_history_long=randn(1, 4, 4, 8, 8, seed=12))),
    "HunyuanVideo15Transformer3DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_refiner_layers=1,
             mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8,
             rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v"),
        lambda: randn(1, 4, 1, 4, 4, seed=0),
        text(16, "encoder_attention_mask", encoder_hidden_states_2=lambda b: randn(1, 4, 8, seed=5 + b),
              encoder_attention_mask_2=torch.ones(1, 4), image_embeds=torch.zeros(1, 3, 8))),
    "HunyuanVideoFramepackTransformer3DModel": Family(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
             num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
             pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), has_image_proj=True, image_proj_dim=16,
             has_clean_x_embedder=True),
        lambda: randn(1, 4, 3, 4, 4, seed=0),
        text(16, "encoder_attention_mask", pooled_projections=lambda b: randn(1, 8, seed=3 + b), guidance=torch.tensor([6000.0]),
              image_embeds=randn(1, 6, 16, seed=9), indices_latents=torch.ones(3), latents_clean=randn(1, 4, 2, 4, 4, seed=10),
              indices_latents_clean=torch.ones(2), latents_history_2x=randn(1, 4, 2, 4, 4, seed=11),
              indices_latents_history_2x=torch.ones(2), latents_history_4x=randn(1, 4, 8, 4, 4, seed=12),
              indices_latents_history_4x=torch.ones(8))),
    "LTX2VideoTransformer3DModel": Family(
        dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
             audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
             caption_channels=16, rope_double_precision=False),
        lambda: randn(1, 32, 4, seed=0),
        text(16, "encoder_attention_mask", audio_hidden_states=randn(1, 9, 4, seed=9),
              audio_encoder_hidden_states=lambda b: randn(1, 6, 16, seed=5 + b), num_frames=2, height=4, width=4,
              audio_num_frames=9, fps=25.0)),
    "StableAudio3DiTModel": Family(
        dict(io_channels=8, embed_dim=32, depth=2, num_heads=4, cond_token_dim=16, global_cond_dim=12, local_add_cond_dim=5,
             timestep_features_dim=16, ff_mult=2, num_memory_tokens=3, use_differential_attention=False),
        lambda: randn(1, 8, 16, seed=0), text(16, global_hidden_states=lambda b: randn(1, 12, seed=3 + b)), t_scale=1.0),
    "JoyImageEditPlusTransformer3DModel": Family(
        dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=16, num_attention_heads=2, text_dim=16, num_layers=2,
             rope_dim_list=[2, 2, 4], theta=256),
        lambda: randn(1, 2, 16, 1, 2, 2, seed=0), text(16, shape_list=[[(1, 1, 1), (1, 1, 1)]]), t_scale=1.0),
    "MiniMaxH3Transformer3DModel": Family(
        dict(num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2, num_refiner_layers=1, ffn_dim=32,
             in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=8, freq_dim=8, time_embed_hidden_dim=24,
             time_embed_dim=16, rope_freq_dim=2),
        lambda: randn(1, 8, 16, seed=0),
        lambda b: {"encoder_hidden_states": randn(1, 4, 8, seed=1 + b), "audio_hidden_states": randn(1, 6, 6, seed=9),
                   **_minimax_h3_layout(4, 6, 8)}, t_scale=1.0),
    "WanAnimateTransformer3DModel": Family(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=12, latent_channels=4,
             out_channels=4, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, image_dim=16, rope_max_seq_len=32,
             motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
             motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
             inject_face_latents_blocks=2),
        lambda: randn(1, 12, 21, 4, 4, seed=0),
        text(16, encoder_hidden_states_image=randn(1, 4, 16, seed=9), pose_hidden_states=randn(1, 4, 20, 4, 4, seed=10),
              face_pixel_values=randn(1, 3, 77, 16, 16, seed=11))),
    "Kandinsky5Transformer3DModel": Family(
        dict(in_visual_dim=16, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
             attention_type="regular"),
        lambda: randn(1, 1, 8, 8, 16, seed=0),
        text(16, pooled_projections=lambda b: randn(1, 8, seed=3 + b), text_rope_pos=torch.arange(6),
              visual_rope_pos=[torch.arange(1), torch.arange(4), torch.arange(4)])),
    "Kandinsky6Transformer3DModel": Family(
        dict(in_visual_dim=16, out_visual_dim=16, in_text_dim=16, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
             in_audio_dim=4, out_audio_dim=4, axes_dims_a=(4,)),
        lambda: randn(1, 1, 8, 8, 16, seed=0), text(16, pooled_projections=lambda b: randn(1, 8, seed=3 + b))),
}


def _minimax_h3_layout(n_text: int, n_audio: int, n_video: int) -> dict[str, torch.Tensor]:
    """MiniMax-H3's packed sequence: text, audio, video rows, tagged (video 0, text 1, audio 2), one timestep."""
    n = n_text + n_audio + n_video
    txt, audio, video = torch.arange(n_text), torch.arange(n_text, n_text + n_audio), torch.arange(n_text + n_audio, n)
    tags = torch.zeros(n, dtype=torch.long)
    tags[txt], tags[audio] = 1, 2
    pos = torch.zeros(n, 3)
    pos[:, 0] = torch.arange(n)
    pos[video, 1] = torch.arange(n_video).float() % 4
    pos[video, 2] = torch.arange(n_video).float() % 2
    return {"timestep_indices": torch.zeros(n, dtype=torch.long), "token_tags": tags, "position_ids": pos,
            "video_indices": video, "audio_indices": audio, "text_indices": txt}
