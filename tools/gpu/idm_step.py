"""Seconds per IDM fine-tuning step (plain mode, T = 3, Adam) in fp32 and bf16 autocast: which precision to train in.

Prints one JSON line {"precision": {"no": s/it, "bf16": s/it}, "peak_mb": {...}, "best": name} and writes it to
$OUT/idm_step.json. Env: BATCH, CROP (default 8, 256 as in tools/gpu/run.sh), ITERS (timed steps, default 8).
SMALL=1: a CPU dry run (batch 1, crop 64, 2 steps).
"""
import json, os, time
import torch

from accel.invertible.idm import IDM
from accel.invertible.operator import BlockCS, CSConfig
from accel.invertible.prior import load_prior

small = os.environ.get("SMALL") == "1"
dev = "cuda" if torch.cuda.is_available() else "cpu"
B, C = (1, 64) if small else (int(os.environ.get("BATCH", "8")), int(os.environ.get("CROP", "256")))
n = 2 if small else int(os.environ.get("ITERS", "8"))
torch.backends.cudnn.benchmark = True
op = BlockCS(CSConfig(0.1), C, C, device=dev)
x = torch.rand(B, 1, C, C, generator=torch.Generator().manual_seed(0)).to(dev)
res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "batch": B, "crop": C, "precision": {}, "peak_mb": {}}


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


for prec in ("no", "bf16"):
    unet, acp = load_prior("unet-natural")
    idm = IDM(unet, acp, steps=3, mode="plain").to(dev).train()
    opt = torch.optim.Adam([p for p in idm.parameters() if p.requires_grad], lr=1e-5)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(n + 2):  # two warm-up steps (cuDNN autotuning)
        sync(); t = time.perf_counter()
        y = op.A(x)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=prec == "bf16"):  # as accel.invertible.finetune does
            loss = (idm(y, op) - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t)
    res["precision"][prec] = round(sorted(times[2:])[len(times[2:]) // 2], 4)
    res["peak_mb"][prec] = round(torch.cuda.max_memory_allocated() / 2**20) if dev == "cuda" else None
    del idm, opt
res["best"] = min(res["precision"], key=res["precision"].get)
print(json.dumps(res), flush=True)
with open(os.path.join(os.environ.get("OUT", "/tmp"), "idm_step.json"), "w") as f:
    json.dump(res, f, indent=1)
