"""One IDM fine-tuning run = `accel finetune idm --ratio R --steps 3 --iters N --batch-size B --crop C --lr LR --mode plain
--init invertible/weights/idm-unet-natural-rXX.safetensors [--mixed-precision $PRECISION]`, with timestamps for the driver."""
import os, sys, time
t0 = time.time()
from accel.invertible.finetune import FinetuneConfig, finetune

ratio, iters, out, work, batch, crop, lr = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
# INIT_DIR: the weights to start from. The shipped stage-2 files started from stage 1, which is
# `git show cc012f5:invertible/weights/idm-unet-natural-rRR.safetensors`; the default continues the shipped ones.
init = f"{os.environ.get('INIT_DIR', 'invertible/weights')}/idm-unet-natural-r{round(ratio * 100):02d}.safetensors"

def prog(it, total, loss):
    if it == 1 or it % 10 == 0 or it == total:
        print(f"it {it} {time.time() - t0:.3f} {loss:.5f}", flush=True)

cfg = FinetuneConfig(ratio=ratio, T=3, iters=iters, batch_size=batch, crop=crop, lr=lr, mode="plain", checkpoint_every=100,
                     mixed_precision=os.environ.get("PRECISION", "no"))
finetune(out, cfg, work_dir=work, progress=prog, init=init)
print(f"done {time.time() - t0:.3f}", flush=True)
