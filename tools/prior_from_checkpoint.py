"""Save the EMA weights of a stopped unet-natural training run as a DDPM pipeline folder.

    python tools/prior_from_checkpoint.py WORK_DIR/checkpoint.safetensors OUT_DIR

The shipped attention-free prior is the EMA at the step-80 checkpoint of a run stopped there (see docs/idm.md).
"""
import json
import sys
from pathlib import Path

from accel.zoo.unet_natural.recipe import build_pipeline, build_unet
from accel.utils import load_checkpoint

tensors, meta = load_checkpoint(sys.argv[1])
cfg = meta["train_config"]
unet = build_unet(**cfg.get("unet_overrides", {}))
unet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
out = Path(sys.argv[2])
build_pipeline(unet.eval()).save_pretrained(out)
(out / "train_config.json").write_text(json.dumps(cfg | {"stopped_at_step": meta["step"], "loss_ema": meta["loss_ema"]}, indent=2))
print(f"step {meta['step']} of {cfg['steps']}, loss EMA {meta['loss_ema']:.4f} -> {out}")
