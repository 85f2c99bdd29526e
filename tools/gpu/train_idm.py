"""Calibrate, then fine-tune IDM for 10/30/50% (env RATIOS) concurrently on one GPU so that all finish before a deadline."""
import os, shutil, subprocess, sys, time
deadline = float(sys.argv[1])
OUT = os.environ["OUT"]
RATIOS = tuple(float(r) for r in os.environ.get("RATIOS", "0.1,0.3,0.5").split(","))
BATCH, CROP, LR = int(os.environ.get("BATCH", "8")), int(os.environ.get("CROP", "256")), float(os.environ.get("LR", "2e-4"))  # stage 2 of the shipped weights

def launch(tag, ratio, iters):
    w = f"/tmp/idm/{tag}{round(ratio * 100)}"
    os.makedirs(w, exist_ok=True)
    with open(w + ".log", "w") as log:  # the child keeps its own copy of the descriptor
        p = subprocess.Popen([sys.executable, "tools/gpu/train_one.py", str(ratio), str(iters), w + "/w.safetensors", w, str(BATCH), str(CROP), str(LR)],
                             stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": os.environ.get("TRAIN_THREADS", "4")})
    return p, w

def text(w):
    with open(w + ".log") as f:
        return f.read()

def lines(w):
    return [l.split() for l in text(w).splitlines() if l.startswith("it ")]

t_start = time.time()
CAL = int(os.environ.get("CAL", "40"))
cal = [launch("cal", r, CAL) for r in RATIOS]
for p, _ in cal:
    try:
        p.wait(timeout=max(30, deadline - time.time()))
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
per_it, startup = 0.0, 0.0
for p, w in cal:
    ls = lines(w)
    print(w, "rc", p.returncode, text(w)[-600:] if p.returncode else ls[-1], flush=True)
    d = {int(l[1]): float(l[2]) for l in ls}
    if 10 in d and CAL in d:
        per_it = max(per_it, (d[CAL] - d[10]) / (CAL - 10))
        startup = max(startup, d[1])
print(f"calibration: {per_it:.4f} s/it with {len(RATIOS)} concurrent runs, startup+first it {startup:.1f} s, took {time.time() - t_start:.1f} s", flush=True)
if per_it <= 0:
    sys.exit("calibration failed")
avail = deadline - time.time() - startup - 20
iters = int(avail / per_it * 0.9) // 50 * 50
print(f"training {iters} iterations per ratio (batch {BATCH}, crop {CROP}, lr {LR}, mixed precision {os.environ.get('PRECISION', 'no')})", flush=True)
if iters < 100:
    sys.exit("no time to train")
runs = [launch("run", r, iters) for r in RATIOS]
for (p, w), r in zip(runs, RATIOS):
    try:
        p.wait(timeout=max(1, deadline + 15 - time.time()))
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    ls = lines(w)
    print(w, "rc", p.returncode, "last", ls[-1] if ls else None, text(w)[-300:], flush=True)
    name = f"{OUT}/idm-r{round(r * 100):02d}.safetensors"
    if p.returncode == 0:
        shutil.copy(w + "/w.safetensors", name)
    elif os.path.exists(w + "/checkpoint.safetensors"):  # stopped early: keep what the last checkpoint holds
        from accel.invertible.weights import load_idm, save_idm
        from accel.utils import load_checkpoint
        idm, cs, _ = load_idm(f"{os.environ.get('INIT_DIR', 'invertible/weights')}/idm-unet-natural-r{round(r * 100):02d}.safetensors", ratio=r)
        t, m = load_checkpoint(w + "/checkpoint.safetensors")
        idm.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        save_idm(name, idm, cs, {"finetune_config": m["finetune_config"], "final_loss_ema": m["loss_ema"], "stopped_at": m["iteration"]})
        print("saved from checkpoint at", m["iteration"], flush=True)
    shutil.copy(w + ".log", f"{OUT}/r/train{round(r * 100)}.log")
print("train driver done", time.time() - t_start, flush=True)
