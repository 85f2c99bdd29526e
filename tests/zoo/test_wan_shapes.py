"""wan-shapes' recipe end to end at a toy length: both stages train, the folder loads as a stock WanPipeline with the
call settings it was trained for, and it samples a clip the video scorer can read; every grammar word is in the
tokenizer's vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from accel.errors import AccelError
from accel.zoo import load, motion
from accel.zoo.wan_shapes import recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_prompt_of_the_grammar_is_in_the_vocabulary():
    tok = recipe.build_tokenizer()
    for p in motion.prompt_set(40, seed=3):
        ids = tok(p).input_ids
        assert 2 not in ids and ids[-1] == 1 and len(ids) <= recipe.MAX_TOKENS, p  # no <unk>, ends with </s>, fits


def test_restarts_are_cosine_cycles_after_the_first_and_bad_ones_are_refused():
    cfg = recipe.TrainConfig(steps=1000, lr=5e-4, warmup=100, restarts=((400, 3e-4), (200, 1e-4)))
    assert cfg.diffusion_steps == 1600
    assert cfg.lr_at(99) == pytest.approx(5e-4) and cfg.lr_at(999) == pytest.approx(5e-5, rel=0.01)
    assert cfg.lr_at(1000) == pytest.approx(3e-4 / 100) and cfg.lr_at(1099) == pytest.approx(3e-4)  # warm-up again
    assert cfg.lr_at(1399) == pytest.approx(3e-5, rel=0.01) and cfg.lr_at(1400 + 49) == pytest.approx(1e-4)
    for bad in (((0, 1e-4),), ((100, -1.0),)):
        with pytest.raises(AccelError, match="restart"):
            recipe.TrainConfig(restarts=bad)


def test_the_recipe_trains_and_the_folder_is_a_wan_pipeline(tmp_path):
    from diffusers import WanPipeline

    cfg = recipe.TrainConfig(vae_steps=2, vae_batch_size=2, steps=2, batch_size=2, checkpoint_every=1, vae_floor=0.0,
                             restarts=((1, 1e-4),), pool_size=6)
    seen = []
    out = recipe.train(tmp_path / "wan", cfg, progress=lambda s, n, loss: seen.append((s, n)))
    assert seen[-1] == (5, 5) and np.isfinite(json.loads((out / "train_config.json").read_text())["final_loss_ema"])
    # the clip pool is encoded once and read back (same latents and prompts) from the work directory
    pool = out / ".train" / "pool.safetensors"
    again = recipe.latent_pool(None, 6, cfg.seed + 3, pool)
    assert again[0].shape == (6, recipe.Z, 5, recipe.SIZE // 2, recipe.SIZE // 2) and len(again[1]) == 6
    # a finished run trains further when its restarts grow: it resumes after the last step, not from the start
    longer = recipe.TrainConfig(**{**cfg.__dict__, "restarts": ((1, 1e-4), (1, 5e-5))})
    seen.clear()
    recipe.train(tmp_path / "wan", longer, work_dir=tmp_path / "wan" / ".train", progress=lambda s, n, loss: seen.append((s, n)))
    assert seen == [(6, 6)]
    with pytest.raises(AccelError, match="another config"):
        recipe.train(tmp_path / "wan", recipe.TrainConfig(**{**cfg.__dict__, "lr": 1e-3}), work_dir=tmp_path / "wan" / ".train")
    pipe = load(str(out))
    assert isinstance(pipe, WanPipeline) and pipe.transformer.config.num_layers == 30
    # the transformer is stored as float16 and loaded back as float32 (the VAE keeps float32)
    from safetensors import safe_open

    with safe_open(str(out / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    with safe_open(str(out / "vae" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.float32}
    assert pipe.accel_call_defaults == recipe.CALL
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(["a red circle moving right"], num_inference_steps=2, guidance_scale=1.0, output_type="np",
                  generator=torch.Generator().manual_seed(0), **pipe.accel_call_defaults).frames
    assert frames.shape == (1, recipe.FRAMES, recipe.SIZE, recipe.SIZE, 3)
    video = (np.clip(frames[0], 0, 1) * 255).astype(np.uint8)
    assert motion.score_clip(video, "a red circle moving right").kind == "single"  # readable, right or wrong


def test_accel_sample_writes_a_video_pipelines_clips_as_an_animation_and_a_strip(tmp_path):
    """``accel sample`` on a Wan folder (wan-shapes' architecture, random weights): an animated GIF or PNG with one
    frame per video frame, and a strip with one row of frames per clip; cached and uncached compared frame by frame."""
    from PIL import Image

    from accel.sampling import sample_to_file

    torch.manual_seed(0)
    folder = tmp_path / "wan"
    recipe.build_pipeline(recipe.build_models(0)).save_pretrained(folder)
    (folder / "accel_call.json").write_text(json.dumps(recipe.CALL))
    for name, fmt in (("clips.gif", "GIF"), ("clips.png", "PNG")):
        r = sample_to_file(str(folder), tmp_path / name, num_images=2, steps=5, prompt="a red circle moving right",
                           cache="cg-taylor", threshold=1e3)
        anim, strip = Image.open(tmp_path / name), Image.open(r["strip"])
        assert anim.format == fmt and anim.n_frames == recipe.FRAMES and r["frames"] == recipe.FRAMES
        assert strip.size[0] > strip.size[1] and r["forecast_fraction"] > 0 and np.isfinite(r["psnr_vs_uncached"])


def test_the_two_expert_recipe_fine_tunes_a_low_noise_expert_and_resumes(tmp_path):
    """wan22-shapes at a toy length from a random base folder: the low-noise expert starts as a copy of the base
    transformer and moves; the folder is a stock two-expert WanPipeline; a stopped run resumes to the same weights."""
    from diffusers import WanPipeline
    from safetensors.torch import load_file

    from accel.training import store_half
    from accel.zoo.wan22_shapes import recipe as two

    base = tmp_path / "base"
    recipe.build_pipeline(recipe.build_models(0)).save_pretrained(base)
    store_half(base / "transformer")  # as wan-shapes ships it: storing the experts as float16 again loses nothing
    (base / "accel_call.json").write_text(json.dumps(recipe.CALL))
    cfg = two.TrainConfig(steps=2, batch_size=2, checkpoint_every=1)
    out = two.train(tmp_path / "w22", cfg, base_model=str(base))
    pipe = load(str(out))
    assert isinstance(pipe, WanPipeline) and pipe.config.boundary_ratio == cfg.boundary_ratio
    assert pipe.transformer_2 is not None and pipe.accel_call_defaults == recipe.CALL
    b, e = load(str(base)).transformer.state_dict(), pipe.transformer_2.state_dict()
    assert all(torch.equal(b[k], pipe.transformer.state_dict()[k]) for k in b)  # the high-noise expert is the base
    assert any(not torch.equal(b[k], e[k]) for k in b)  # the low-noise expert was trained
    class Stop(Exception):
        pass

    def stop_after_one(step, total, loss):
        if step == 1:
            raise Stop

    with pytest.raises(Stop):  # stopped after its first step (checkpointed)
        two.train(tmp_path / "resumed", cfg, work_dir=tmp_path / "resume", progress=stop_after_one, base_model=str(base))
    resumed = two.train(tmp_path / "resumed", cfg, work_dir=tmp_path / "resume", base_model=str(base))
    w_direct = load_file(out / "transformer_2" / "diffusion_pytorch_model.safetensors")
    w_resumed = load_file(resumed / "transformer_2" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(w_direct[k], w_resumed[k]) for k in w_direct)
    sigma = two.low_noise_sigma(torch.tensor([0.0, 0.5, 1.0]), cfg.boundary_ratio)
    assert float(sigma.max()) <= cfg.boundary_ratio and bool((sigma.diff() > 0).all())



def test_an_autoencoder_the_scorer_cannot_read_through_stops_training(tmp_path):
    """Two steps of the autoencoder stage cannot reconstruct clips the scorer reads: training stops before the
    diffusion stage, saying what to change."""
    cfg = recipe.TrainConfig(vae_steps=2, vae_batch_size=2, steps=2, batch_size=2, checkpoint_every=1, restarts=(), pool_size=4)
    with pytest.raises(AccelError, match="autoencoder stage reconstructs .* train it longer"):
        recipe.train(tmp_path / "wan", cfg)
    assert not (tmp_path / "wan" / "model_index.json").exists()


FLOOR_PROMPTS = 40  # prompts of the floor test (seed 11; single and pair in turn), one noise seed each


def test_shipped_model_draws_single_moving_shapes_right():
    """The shipped wan-shapes, uncached at its default steps and guidance: single moving shapes right (object on
    most frames and moving the named way) in at least 80% of clips; pairs guarded at what the model has."""
    from accel.zoo import MODELS
    from accel.zoo.wan_shapes.evaluate import accuracy

    info = MODELS["wan-shapes"]
    pipe = load("wan-shapes")
    pipe.set_progress_bar_config(disable=True)
    acc = accuracy(pipe, FLOOR_PROMPTS, seed=11, steps=info.default_steps, guidance=info.default_guidance)
    assert acc["single_correct"] >= 0.8, acc
