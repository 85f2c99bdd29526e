"""Seconds per IDM fine-tuning step (accel.invertible.finetune: plain mode, T = 3) in fp32 and bf16 autocast.

Prints one JSON line {"precision": {"no": s/it, "bf16": s/it}, "peak_mb": {...}, "best": name} and writes it to
$OUT/idm_step.json; tools/gpu/run.sh trains in the faster one. Env: BATCH, CROP (default 8, 256 as in
tools/gpu/run.sh), ITERS (timed steps, default 8). SMALL=1: a CPU dry run (batch 1, crop 64, 2 steps).
"""
import json, os, tempfile, time
import torch

from accel.invertible.finetune import FinetuneConfig, finetune

small = os.environ.get("SMALL") == "1"
dev = "cuda" if torch.cuda.is_available() else "cpu"
B, C = (1, 64) if small else (int(os.environ.get("BATCH", "8")), int(os.environ.get("CROP", "256")))
n = 2 if small else int(os.environ.get("ITERS", "8"))
res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "batch": B, "crop": C, "precision": {}, "peak_mb": {}}

for prec in ("no", "bf16"):
    stamps = []  # finetune reports after each step, once the loss has been read back (a device sync)
    cfg = FinetuneConfig(ratio=0.1, T=3, iters=n + 2, batch_size=B, crop=C, lr=1e-5, mode="plain", checkpoint_every=10**6, mixed_precision=prec)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        finetune(os.path.join(tmp, "w.safetensors"), cfg, progress=lambda it, total, loss: stamps.append(time.perf_counter()))
    times = sorted(b - a for a, b in zip(stamps[1:], stamps[2:]))  # steps 3..n+2: after two warm-up steps
    res["precision"][prec] = round(times[len(times) // 2], 4)
    res["peak_mb"][prec] = round(torch.cuda.max_memory_allocated() / 2**20) if dev == "cuda" else None
res["best"] = min(res["precision"], key=res["precision"].get)
print(json.dumps(res), flush=True)
with open(os.path.join(os.environ.get("OUT", "/tmp"), "idm_step.json"), "w") as f:
    json.dump(res, f, indent=1)
