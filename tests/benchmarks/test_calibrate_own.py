"""``accel calibrate`` on a user's own model and conditioning: a Stable Diffusion pipeline folder as people save them
(StableDiffusionPipeline with a CLIP text encoder, a UNet2DConditionModel and a VAE), tuned on the prompts they give,
with the split in two halves that share neither prompts nor noise, and the choice saved where ``accel.enable`` finds it.
"""

from __future__ import annotations

import json

import pytest
import torch

import accel
from accel import AccelError
from accel.benchmarks import harness
from accel.benchmarks.targets import with_conditioning

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow circle above a red square"]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny StableDiffusionPipeline saved as a diffusers folder (its text encoder and word-level tokenizer are
    flux-shapes' CLIP, so nothing is downloaded)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from accel.zoo import load

    flux = load("flux-shapes")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=flux.text_encoder.config.hidden_size, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=flux.text_encoder, tokenizer=flux.tokenizer, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = tmp_path_factory.mktemp("own") / "my-sd"
    pipe.save_pretrained(path)
    return path


def test_the_callers_conditioning_is_split_in_two_disjoint_halves(sd_folder):
    t = with_conditioning(str(sd_folder), prompts=PROMPTS)
    sel, test = t.items("selection", 5), t.items("test", 5)
    assert {p for p, _ in sel} == set(PROMPTS[:2]) and {p for p, _ in test} == set(PROMPTS[2:])
    assert not {s for _, s in sel} & {s for _, s in test} and t.scores is None and t.kind == "unet"
    labels = with_conditioning("dit-digits", labels=[3, 5, 7])
    assert {c for c, _ in labels.items("selection", 4)} == {3, 5} and {c for c, _ in labels.items("test", 4)} == {7}
    for kw, msg in ((dict(name="dit-digits", prompts=PROMPTS), "does not take text prompts: give --labels"),
                    (dict(name="flux-shapes", labels=[1, 2]), "not class-conditional"),
                    (dict(name="flux-shapes", prompts=["one"]), "at least 2 prompts"),
                    (dict(name="unet-natural", prompts=PROMPTS), "does not take text prompts"),
                    (dict(name=str(sd_folder)), "give your own prompts")):
        with pytest.raises(AccelError, match=msg):
            with_conditioning(kw.pop("name"), **kw)


def test_calibrate_tunes_a_users_sd_pipeline_on_their_prompts_and_enable_uses_it(sd_folder, tmp_path):
    from typer.testing import CliRunner

    from accel.zoo import load
    from accel.cli.main import app

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    res = CliRunner().invoke(app, ["calibrate", "--model", str(sd_folder), "--prompts", str(prompts), "--quick", "--level", "30",
                                   "--save", "--out-dir", str(tmp_path / "cal")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cal" / "bench_cache.json").read_text())
    assert "the caller's 4 prompts" in rep["config"]["split_note"] and rep["config"]["task_reader"] == "none"
    saved = json.loads((sd_folder / "accel_cache.json").read_text())
    pipe = load(str(sd_folder))
    with accel.cached(pipe) as cfg:  # the folder's own choice, found beside its weights
        assert cfg.threshold == saved["threshold"] and cfg.unet_policy == saved["config"].get("unet_policy", "shallow")
        pipe(PROMPTS[:2], num_inference_steps=6, output_type="np")
        assert accel.stats(pipe).calls == 6


def test_own_conditioning_is_refused_with_a_report_to_read(tmp_path):
    from typer.testing import CliRunner

    from accel.cli.main import app

    # (the installed command prints these as one line: tests/cli/test_cli_usage.py)
    res = CliRunner().invoke(app, ["calibrate", "--model", "dit-digits", "--labels", "1,x"])
    assert isinstance(res.exception, AccelError) and "--labels must be comma-separated class indices" in str(res.exception)
    res = CliRunner().invoke(app, ["calibrate", "--model", "flux-shapes", "--prompts", str(tmp_path / "none.txt")])
    assert isinstance(res.exception, AccelError) and "cannot read it" in str(res.exception)
    res = CliRunner().invoke(app, ["calibrate", "--from-report", str(tmp_path / "r.json"), "--labels", "1,2"])
    assert isinstance(res.exception, AccelError) and "--labels" in str(res.exception) and "drop them" in str(res.exception)


def test_calibrate_tunes_a_users_wan_pipeline_on_their_prompts(tmp_path):
    """A text-to-video folder (wan-shapes' architecture, 4 blocks, random weights) tuned on the caller's prompts: a
    Wan target (videos, per-frame PSNR) whose choice is saved beside the weights."""
    from diffusers import WanTransformer3DModel
    from typer.testing import CliRunner

    from accel.cli.main import app
    from accel.zoo.wan_shapes import recipe

    models = recipe.build_models(0)
    models["transformer"] = WanTransformer3DModel(**{**recipe.TRANSFORMER_CONFIG, "num_layers": 4})
    folder = tmp_path / "my-wan"
    recipe.build_pipeline(models).save_pretrained(folder)
    (folder / "accel_call.json").write_text(json.dumps(recipe.CALL))
    t = with_conditioning(str(folder), prompts=["a red circle moving right", "a blue square moving up"])
    assert t.kind == "wan"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving right\na blue square moving up\n")
    res = CliRunner().invoke(app, ["calibrate", "--model", str(folder), "--prompts", str(prompts), "--quick", "--level", "30",
                                   "--save", "--out-dir", str(tmp_path / "cal")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cal" / "bench_cache.json").read_text())
    assert rep["config"]["kind"] == "wan" and "temporal_psnr_median" in rep["sweep"][0]["selection"]
    assert "threshold" in json.loads((folder / "accel_cache.json").read_text())
