"""IDM weight files: one safetensors file holding the fine-tuned model plus everything needed to rebuild it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from accel.errors import AccelError
from accel.utils import load_checkpoint, save_checkpoint

from .idm import IDM
from .operator import CSConfig

FORMAT = "accel-idm/1"
SHIPPED = Path(__file__).parent / "weights"


def shipped_path(ratio: float) -> Path:
    """Where the package keeps the fine-tuned weights for ``ratio`` (10%, 30% and 50% are shipped)."""
    return SHIPPED / f"idm-unet-natural-r{round(ratio * 100):02d}.safetensors"


def save_idm(path: str | Path, idm: IDM, cs: CSConfig, extra: dict[str, Any] | None = None) -> None:
    """Atomically write ``idm``'s weights with its architecture, CS operator and ``extra`` metadata."""
    unet = idm.net.unet
    meta = {"format": FORMAT, "cs": cs.to_dict(), "T": idm.steps, "unet_config": json.loads(json.dumps(dict(unet.config)))} | (extra or {})
    save_checkpoint(path, {k: v.float() for k, v in idm.state_dict().items()}, meta)


def load_idm(path: str | Path, ratio: float | None = None, mode: str = "reversible") -> tuple[IDM, CSConfig, dict[str, Any]]:
    """Rebuild an IDM from a file written by :func:`save_idm`; check it was trained for ``ratio`` if given."""
    from diffusers import UNet2DModel

    path = Path(path)
    if not path.is_file():
        raise AccelError(f"IDM weights {str(path)!r} do not exist" + (" (fine-tune them with `accel finetune idm`)" if path.parent == SHIPPED else ""))
    try:
        tensors, meta = load_checkpoint(path)
    except AccelError:
        raise
    except Exception as e:  # not a safetensors file
        raise AccelError(f"{str(path)!r} is not an IDM safetensors file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise AccelError(f"{str(path)!r} is not an IDM weight file (format {meta.get('format')!r}, expected {FORMAT!r}); it may be a checkpoint of another model")
    cs = CSConfig(**meta["cs"])
    if ratio is not None and abs(cs.ratio - ratio) > 1e-9:
        raise AccelError(f"{str(path)!r} was fine-tuned for ratio {cs.ratio:g}, not {ratio:g}; pass weights for {ratio:g} or use --ratio {cs.ratio:g}")
    cfg = {k: v for k, v in meta["unet_config"].items() if not k.startswith("_")}
    try:
        unet = UNet2DModel(**cfg)
        idm = IDM(unet, torch.linspace(0.999, 0.001, 1000), steps=int(meta["T"]), mode=mode)
        idm.load_state_dict(tensors)
    except (RuntimeError, TypeError, ValueError) as e:
        raise AccelError(f"{str(path)!r} does not match the IDM architecture it describes ({type(e).__name__}: {str(e)[:200]})") from None
    return idm.eval(), cs, meta
