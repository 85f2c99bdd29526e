"""Warm starts across U-Net architectures (the attention-free unet-natural from the earlier one with attention)."""

import pytest
import torch

from accel.errors import AccelError

WITH_ATTN = dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8, sample_size=32,
                 add_attention=True)
NO_ATTN = dict(WITH_ATTN, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False)



def test_prior_warm_start_copies_every_shared_tensor():
    from accel.zoo.unet_natural.recipe import build_unet
    from accel.training import copy_matching

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
    ims = [torch.rand(40, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
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
    ims = [torch.rand(40, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    cfg = TrainConfig(steps=1, batch_size=1, patch=16, lr=0.0, warmup=1, checkpoint_every=1)
    out = train(tmp_path / "new", cfg, unet_overrides=NO_ATTN, images=ims, init=tmp_path / "old")
    unet, _ = load_prior(str(out))
    assert unet.config.add_attention is False and not any("attentions" in k for k in unet.state_dict())
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in unet.state_dict().items())  # lr 0: exactly the warm start
