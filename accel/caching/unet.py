"""The U-Net policy of CG-Taylor: keep the shallow path live, gate and forecast the deep features.

A U-Net's outer blocks work at full resolution and set the fine detail; its deep blocks (the remaining
down blocks, the mid block and the matching up blocks) carry slowly changing, low-resolution features.
DeepCache (Ma et al. 2023, arXiv 2312.00858) keeps the shallow path running on every step and reuses the
deep part's output, refreshed every N steps. This policy keeps the same shallow path but decides *when* to
refresh as CG-Taylor does for block 0 (Guan et al. 2025, arXiv 2508.02240):

- the gate sits on the last live down block (``down_blocks[split-1]``), computed on every step: its output
  is compared with its own Taylor forecast; a relative L1 error below the threshold means the trajectory is
  where the factors expect it, so the deep part is skipped;
- the deep part's output, i.e. the input of the first live up block (the output of ``up_blocks[-split-1]``,
  or of the mid block when every up block is live), is replaced by its Taylor forecast;
- ``split`` (``CGTaylorConfig.unet_split``) is how many outer down blocks and up blocks stay live.

The hooks, the per-context state and the Taylor maths are those of the transformer path (``hooks.py``,
``accel.kernels``); this module only decides which block plays which role.
"""

from __future__ import annotations

import inspect

import torch

from ..errors import AccelError
from .blocks import BlockSpec
from .config import CGTaylorConfig


def is_unet(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, "down_blocks", None), torch.nn.ModuleList) and isinstance(getattr(model, "up_blocks", None), torch.nn.ModuleList)


def _spec(name: str, module: torch.nn.Module, kind: str) -> BlockSpec:
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        params = []
    return BlockSpec(name, module, kind, params=params)


def deep_split_blocks(model: torch.nn.Module, split: int) -> list[BlockSpec]:
    """``[gate, *skipped, forecast]`` for the shallow-path policy with ``split`` live blocks on each side.

    The gate is ``down_blocks[split-1]``; ``down_blocks[split:]``, the mid block and ``up_blocks[:-split]``
    form the deep part, whose last member's output is forecast on skipped steps.
    """
    downs, ups, mid = model.down_blocks, model.up_blocks, getattr(model, "mid_block", None)
    if len(downs) != len(ups):
        raise AccelError(f"{type(model).__name__} has {len(downs)} down blocks but {len(ups)} up blocks; "
                         "the shallow-path policy needs a symmetric U-Net (use unet_policy='whole')")
    deep = [_spec(f"down_blocks.{i}", b, "unet_down") for i, b in enumerate(downs) if i >= split]
    if mid is not None:
        deep.append(_spec("mid_block", mid, "unet_plain"))
    deep += [_spec(f"up_blocks.{i}", b, "unet_plain") for i, b in enumerate(ups) if i < len(ups) - split]
    if not 1 <= split <= len(downs) or not deep:
        raise AccelError(f"unet_split must be between 1 and {len(downs) - (mid is None)} for {type(model).__name__} "
                         f"({len(downs)} down blocks{'' if mid is not None else ', no mid block'}), got {split}")
    skip_blocks = [s.name for s in deep if hasattr(s.module, "skip_conv")]
    if skip_blocks:
        raise AccelError(f"blocks with a skip_sample path ({', '.join(skip_blocks)}) cannot be skipped; use a larger unet_split")
    gate = _spec(f"down_blocks.{split - 1}", downs[split - 1], "unet_down")
    return [gate, *deep]


def unet_blocks(model: torch.nn.Module, config: CGTaylorConfig) -> list[BlockSpec] | None:
    """The blocks CG-Taylor hooks on a U-Net under the shallow-path policy, or None to use the generic
    ``find_blocks`` roles (block 0 gates, the last up block is forecast: ``unet_policy='whole'``)."""
    if config.unet_policy != "shallow" or not is_unet(model):
        return None
    if len(model.down_blocks) != len(model.up_blocks):  # UNet1D: no up block mirrors each down block
        return None
    return deep_split_blocks(model, config.unet_split)

