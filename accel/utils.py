"""Small shared helpers: atomic safetensors checkpoints, image grids (errors live in :mod:`accel.errors`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from PIL import Image

from .errors import AccelError

if TYPE_CHECKING:
    import torch

__all__ = ["atomic_write_bytes", "save_checkpoint", "load_checkpoint", "optimizer_to_tensors",
           "optimizer_from_tensors", "to_uint8", "make_grid"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Atomically save tensors plus JSON-serialisable metadata as one safetensors file."""
    from safetensors.torch import save

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata={"accel_meta": json.dumps(dict(meta))}))


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (safetensors, no pickle)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AccelError(f"checkpoint {str(path)!r} does not exist")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("accel_meta", "{}"))
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str = "optim.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and plain metadata."""
    import torch

    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            key = f"{prefix}{pid}.{name}"
            if torch.is_tensor(val):
                tensors[key] = val
            else:
                scalars[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], prefix: str = "optim.") -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith(prefix):
            pid, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[name] = val
    for key, val in meta.get("scalars", {}).items():
        pid, name = key[len(prefix):].split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8."""
    import torch

    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray | list[Image.Image], ncols: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile uint8 images (B, H, W, C) or PIL images into one PIL image."""
    if isinstance(images, list):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    b, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(b)))
    nrows = int(np.ceil(b / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    img = Image.fromarray(grid)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]  # ids 0-3 of a word_tokenizer (eos id 1: CLIP pools at the first </s>)


def word_tokenizer(words: list[str], single: str, max_length: int, bos: bool = False) -> Any:
    """A word-level fast tokenizer over a closed vocabulary: ids 0-3 are ``<pad> </s> <unk> <s>``, then ``words``;
    lower-cased, split on whitespace; ``single`` is the template around a prompt (``"$A </s>"`` as T5's,
    ``"<s> $A </s>"`` as CLIP's); ``bos`` names ``<s>`` as the tokenizer's bos token."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(SPECIAL_TOKENS + words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", 3), ("</s>", 1)])
    extra = {"bos_token": "<s>"} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length, **extra)

