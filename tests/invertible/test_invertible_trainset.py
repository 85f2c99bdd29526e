"""Training photographs (BSD400 in the repository, kept apart from test images by content) and warm starts
across U-Net architectures (the attention-free unet-natural from the earlier one with attention)."""

import numpy as np
import pytest
import torch
from PIL import Image

from accel.invertible import trainset
from accel.errors import AccelError

WITH_ATTN = dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8, sample_size=32,
                 add_attention=True)
NO_ATTN = dict(WITH_ATTN, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False)


def _photo(seed: int, h: int, w: int) -> np.ndarray:
    """A textured test picture: smoothed noise plus edges (float32 in [0, 1])."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((1, 1, h, w)).astype(np.float32))
    x = 30 * torch.nn.functional.avg_pool2d(x, 31, 1, 15)[0, 0].numpy()
    x += (np.arange(w)[None, :] > w * rng.uniform(0.3, 0.7)) * 0.5
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


def _save(folder, name, a):
    folder.mkdir(exist_ok=True)
    Image.fromarray((a * 255).round().astype(np.uint8)).save(folder / f"{name}.png")


def test_bsd400_is_in_the_repository_not_the_package():
    folder = trainset.repo_data()
    assert folder.name == "bsd400" and (folder / "SOURCE.md").is_file()
    import tomllib

    root = folder.parents[2]  # data/train/bsd400 at the top of the repository
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(d.startswith("data") for d in setup["package-dir"].values())  # no package ships it
    ims = trainset.bsd400_images()
    assert len(ims) == 400
    a = ims["bsd400/test_001"]
    assert a.shape == (180, 180) and a.dtype == np.float32 and 0 <= a.min() < a.max() <= 1
    with pytest.raises(AccelError, match="not in the wheel"):
        trainset.repo_data("data/train/no-such-set")


def test_crop_search_finds_resized_rotated_crops_and_passes_other_pictures(tmp_path):
    tests = tmp_path / "tests"
    big = _photo(0, 240, 320)
    _save(tests, "big", big)
    _save(tests, "other", _photo(1, 200, 200))
    crop = big[54:198, 99:243]  # 144x144: 60% of the shorter side, then resized and rotated
    crop = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((90, 90), Image.BILINEAR), np.float32) / 255
    train = {"crop": np.rot90(crop).copy(), "unrelated": _photo(2, 120, 150)}
    scores = trainset.crop_match_scores(train, trainset.test_images([tests]))
    assert scores["crop"][0].startswith("tests/big") and scores["crop"][1] > 0.93
    assert scores["unrelated"][1] < 0.9
    with pytest.raises(AccelError, match="crop of test image tests/big"):
        trainset.check_no_test_crops(train, [tests])
    found = trainset.check_no_test_crops({"unrelated": train["unrelated"]}, [tests])
    assert set(found) == {"whole", "crops"} and found["crops"]["unrelated"][1] < 0.9


def test_prior_warm_start_copies_every_shared_tensor():
    from accel.zoo.unet_natural.recipe import build_unet
    from accel.invertible.transfer import copy_matching

    src, dst = build_unet(**WITH_ATTN), build_unet(**NO_ATTN)
    n, fresh = copy_matching(dst, src.state_dict())
    assert n == len(dst.state_dict()) and not fresh  # dropping attention leaves nothing unmatched
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
    assert not any("attentions" in k for k in dst.state_dict())
    with pytest.raises(AccelError, match="no tensor"):
        copy_matching(dst, {"other.weight": torch.zeros(3)})


def test_idm_transfer_across_architectures_and_finetune_init(tmp_path):
    from accel.invertible.finetune import FinetuneConfig, finetune
    from accel.invertible.idm import IDM
    from accel.invertible.operator import BlockCS, CSConfig
    from accel.zoo.unet_natural.recipe import build_pipeline, build_unet
    from accel.invertible.transfer import transfer_idm
    from accel.invertible.weights import load_idm, save_idm

    torch.manual_seed(0)
    acp = torch.linspace(0.999, 0.001, 1000)
    src = IDM(build_unet(**WITH_ATTN), acp, steps=2, mode="plain")
    with torch.no_grad():  # make every parameter distinguishable from a fresh one
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    dst = IDM(build_unet(**NO_ATTN), acp, steps=2, mode="plain")
    counts = transfer_idm(src, dst)
    assert counts["unet_fresh"] == 0 and counts["couplings_fresh"] == 0
    # runs whose first body is an attention block (and the up blocks' attention runs) have no counterpart
    assert counts["injectors"] > 0 and counts["injectors"] + counts["injectors_fresh"] == sum(len(i) for i in dst.injectors)
    assert torch.equal(dst.temb, src.temb) and torch.equal(dst.s_logit, src.s_logit)
    assert torch.equal(dst.injectors[1][0].body.write.weight, src.injectors[1][0].body.write.weight)
    op = BlockCS(CSConfig(0.25), 32, 32)
    x = torch.rand(1, 1, 32, 32)
    assert torch.isfinite(dst(op.A(x), op)).all()
    with pytest.raises(AccelError, match="across T"):
        transfer_idm(src, IDM(build_unet(**NO_ATTN), acp, steps=1))

    save_idm(tmp_path / "src.safetensors", src, CSConfig(0.25), {})
    build_pipeline(build_unet(**NO_ATTN)).save_pretrained(tmp_path / "prior")
    ims = [torch.from_numpy(_photo(i, 40, 40)) for i in range(2)]
    cfg = FinetuneConfig(ratio=0.25, T=2, iters=1, batch_size=1, crop=32, mode="plain")
    with pytest.raises(AccelError, match="--init-transfer"):
        finetune(tmp_path / "a.safetensors", cfg, prior=str(tmp_path / "prior"), images=ims, init=tmp_path / "src.safetensors")
    out = finetune(tmp_path / "b.safetensors", cfg, prior=str(tmp_path / "prior"), images=ims, init=tmp_path / "src.safetensors", init_transfer=True)
    idm, _, meta = load_idm(out)
    assert meta["finetune_config"]["init_transfer"] is True
    assert not any("attentions" in k for k in idm.state_dict())


def test_prior_train_warm_starts_from_a_pipeline_with_attention(tmp_path):
    from accel.zoo.unet_natural.recipe import TrainConfig, build_pipeline, build_unet, load_prior, train

    torch.manual_seed(0)
    src = build_unet(**WITH_ATTN)
    build_pipeline(src).save_pretrained(tmp_path / "old")
    ims = [torch.from_numpy(_photo(i, 40, 40)) for i in range(2)]
    cfg = TrainConfig(steps=1, batch_size=1, patch=16, lr=0.0, warmup=1, checkpoint_every=1)
    out = train(tmp_path / "new", cfg, unet_overrides=NO_ATTN, images=ims, init=tmp_path / "old")
    unet, _ = load_prior(str(out))
    assert unet.config.add_attention is False and not any("attentions" in k for k in unet.state_dict())
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in unet.state_dict().items())  # lr 0: exactly the warm start
