"""Does what a model learns on small crops hold on whole 256x256 images?  Issue 24's check, two ways:

1. the prior's denoising error (DDPM epsilon MSE at t = 50, 200, 500, 800, fixed noise) on whole 256x256
   images against the same images cut into 64x64 tiles (each tile denoised on its own);
2. IDM's PSNR when each 64x64 tile is measured and reconstructed on its own, against measuring and
   reconstructing the whole 256x256 image.

A U-Net whose attention sees the whole image (4,096 tokens at 256 px, 256 at 64 px) meets at 256 px a
context it never trained on; a convolutional one sees the same local statistics at both sizes.

    OMP_NUM_THREADS=1 python tools/idm_scale_check.py --priors OLD_PRIOR,NEW_PRIOR --idm OLD.safetensors,NEW.safetensors --images SET11_DIR
"""
import argparse
import json

import torch

from accel.invertible.data import list_images, psnr, read_image, to_tensor


def tiles(x: torch.Tensor, k: int = 64) -> torch.Tensor:
    """(1, 1, H, W) -> (H/k * W/k, 1, k, k)."""
    return x.unfold(2, k, k).unfold(3, k, k).reshape(-1, 1, k, k)


def prior_errors(prior: str, images: list[torch.Tensor], ts=(50, 200, 500, 800)) -> dict:
    from accel.zoo.unet_natural.recipe import load_prior

    unet, acp = load_prior(prior)
    unet.eval()
    whole, tiled = [], []
    with torch.no_grad():
        for i, x in enumerate(images):
            x0 = x * 2 - 1
            for t in ts:
                noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1000 * i + t))
                a = acp[t]
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
                tt = torch.full((1,), t)
                whole.append(((unet(xt, tt).sample - noise) ** 2).mean().item())
                xt_tiles, n_tiles = tiles(xt), tiles(noise)
                tiled.append(((unet(xt_tiles, tt.expand(len(xt_tiles))).sample - n_tiles) ** 2).mean().item())
    return {"prior": prior, "eps_mse_whole_256": sum(whole) / len(whole), "eps_mse_64_tiles": sum(tiled) / len(tiled)}


def idm_psnrs(weights: str, images: list[torch.Tensor]) -> dict:
    from accel.invertible.operator import BlockCS
    from accel.invertible.weights import load_idm

    idm, cs, _ = load_idm(weights, mode="plain")
    whole, tiled = [], []
    for x in images:
        op = BlockCS(cs, 256, 256)
        whole.append(psnr(idm.reconstruct(op.A(x), op), x))
        xs = tiles(x)
        op64 = BlockCS(cs, 64, 64)
        rec = idm.reconstruct(op64.A(xs), op64)
        tiled.append(psnr(rec, xs))  # the same pixels, scored together
    return {"weights": weights, "ratio": cs.ratio, "psnr_whole_256": sum(whole) / len(whole), "psnr_64_tiles": sum(tiled) / len(tiled)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True, help="folder of test images; the 256x256 ones are used")
    ap.add_argument("--priors", default="", help="comma-separated prior names / pipeline folders")
    ap.add_argument("--idm", default="", help="comma-separated IDM weight files")
    a = ap.parse_args()
    ims = [to_tensor(im) for im in (read_image(p) for p in list_images(a.images)) if im.shape == (256, 256)]
    for p in filter(None, a.priors.split(",")):
        print(json.dumps(prior_errors(p, ims) | {"images": len(ims)}), flush=True)
    for w in filter(None, a.idm.split(",")):
        print(json.dumps(idm_psnrs(w, ims) | {"images": len(ims)}), flush=True)
