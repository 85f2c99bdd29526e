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
- ``split`` is how many outer down blocks and up blocks stay live: 1 under ``CGTaylorConfig`` (DeepCache's block
  level path; the DeepCache-style peer of ``accel bench cache`` passes its own).

``unet_policy="layer"`` moves the split inside the outer blocks, where DeepCache's branches put it: ``split``
layers (a resnet and its attention) of ``down_blocks[0]`` stay live, and of the last up block the layers that
consume their skip connections and conv_in's (``split + 1``); the gate is on the last live down layer, the
forecast is the output of the last skipped up layer (the input of the first live one, before its skip is
concatenated). The rest of both outer blocks (their remaining layers, down block 0's downsampler) is skipped
with the deep part; skipped modules whose output a live layer concatenates return zeros of their shape
(``BlockSpec.keep_shape``).

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
        raise AccelError(f"the shallow path's split must be between 1 and {len(downs) - (mid is None)} for {type(model).__name__} "
                         f"({len(downs)} down blocks{'' if mid is not None else ', no mid block'}), got {split}; use unet_policy='whole'")
    skip_blocks = [s.name for s in deep if hasattr(s.module, "skip_conv")]
    if skip_blocks:
        raise AccelError(f"blocks with a skip_sample path ({', '.join(skip_blocks)}) cannot be skipped; use unet_policy='whole'")
    gate = _spec(f"down_blocks.{split - 1}", downs[split - 1], "unet_down")
    return [gate, *deep]


def _layers(block: torch.nn.Module) -> list[list[tuple[str, torch.nn.Module]]]:
    """A U-Net block's layers in call order: each resnet with the attention that follows it, if any."""
    attns = getattr(block, "attentions", None)
    attns = list(attns) if isinstance(attns, torch.nn.ModuleList) else []
    return [[(f"resnets.{i}", r)] + ([(f"attentions.{i}", attns[i])] if i < len(attns) and attns[i] is not None else [])
            for i, r in enumerate(block.resnets)]


def layer_split_blocks(model: torch.nn.Module, split: int) -> list[BlockSpec]:
    """``[gate, *skipped, forecast]`` for the layer split with ``split`` live layers of down block 0."""
    downs, ups = model.down_blocks, model.up_blocks
    d0, u_last = downs[0], ups[-1]
    cls = type(model).__name__
    if not isinstance(getattr(d0, "resnets", None), torch.nn.ModuleList) or not isinstance(getattr(u_last, "resnets", None), torch.nn.ModuleList):
        raise AccelError(f"{cls}'s outer blocks have no resnets list to split; use unet_policy='shallow'")
    down_layers, up_layers = _layers(d0), _layers(u_last)
    skipped_up = len(up_layers) - (split + 1)  # the last up block's live layers consume conv_in's and the live layers' skips
    if not 1 <= split < len(down_layers) or skipped_up < 1:
        most = min(len(down_layers) - 1, len(up_layers) - 2)
        raise AccelError(f"the layer split's live layers of down_blocks.0 must be between 1 and "
                         f"{most} for {cls} ({len(down_layers)} down layers, {len(up_layers)} in the last up block), got {split}"
                         if most >= 1 else f"{cls}'s outer blocks have too few layers to split; use unet_policy='shallow'")
    deep = deep_split_blocks(model, 1)[1:]
    for spec in deep:
        spec.keep_shape = True  # the last up block concatenates the deep part's output with a skip connection
    gate_name, gate_module = down_layers[split - 1][-1]
    gate = _spec(f"down_blocks.0.{gate_name}", gate_module, "unet_layer")
    rest = [(n, m) for layer in down_layers[split:] for n, m in layer]
    rest += [(f"downsamplers.{i}", m) for i, m in enumerate(getattr(d0, "downsamplers", None) or [])]
    down_rest = [_spec(f"down_blocks.0.{n}", m, "unet_layer") for n, m in rest]
    up_skip = [_spec(f"up_blocks.{len(ups) - 1}.{n}", m, "unet_layer") for layer in up_layers[:skipped_up] for n, m in layer]
    return [gate, *down_rest, *deep, *up_skip]


def unet_blocks(model: torch.nn.Module, config: CGTaylorConfig) -> list[BlockSpec] | None:
    """The blocks CG-Taylor hooks on a U-Net under the shallow-path policy, or None to use the generic
    ``find_blocks`` roles (block 0 gates, the last up block is forecast: ``unet_policy='whole'``)."""
    if config.unet_policy == "whole" or not is_unet(model):
        return None
    if len(model.down_blocks) != len(model.up_blocks):  # UNet1D: no up block mirrors each down block
        return None
    if config.unet_policy == "layer":
        return layer_split_blocks(model, 1)
    return deep_split_blocks(model, 1)

