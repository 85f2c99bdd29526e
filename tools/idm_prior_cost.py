"""Seconds per unet-natural training step (DDPM loss, forward + backward + Adam) at several crop sizes, for the
earlier U-Net with attention and the shipped attention-free one: the issue-24 cost measurement.

    OMP_NUM_THREADS=1 taskset -c 1 python tools/idm_prior_cost.py [--batch 4] [--sizes 64,128,256]
"""
import argparse, json, time

import torch
import torch.nn.functional as F

from accel.zoo.unet_natural.recipe import build_unet

WITH_ATTENTION = dict(down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                      add_attention=True, attention_head_dim=32)


def step_seconds(overrides: dict, size: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = build_unet(**overrides).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, t = torch.randn(batch, 1, size, size), torch.randint(0, 1000, (batch,))

    def step():
        loss = F.mse_loss(model(x, t).sample, x)
        opt.zero_grad(); loss.backward(); opt.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    return min(times)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for name, ov in (("attention (before)", WITH_ATTENTION), ("attention-free (after)", {})):
        for s in map(int, a.sizes.split(",")):
            sec = step_seconds(ov, s, a.batch, a.repeats)
            rows.append({"unet": name, "size": s, "batch": a.batch, "seconds": round(sec, 3), "threads": torch.get_num_threads()})
            print(json.dumps(rows[-1]), flush=True)
