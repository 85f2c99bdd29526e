"""Level 2 of IDM: a diffusers ``UNet2DModel`` run as a reversible noise estimator, with measurement injectors.

The U-Net's same-shape resnets and its attention blocks become coupling bodies (:class:`Coupling`); inside
each layer the features are duplicated into two streams, two measurement injectors and then the layer's
units run as one reversible chain, and the first stream leaves as the layer's output.  Shape-changing
pieces (``conv_in``, channel-changing resnets, up-path resnets on concatenated skips, down/upsamplers, the
output head) run under checkpointing.  The walk is derived from the model's own modules, so any
``UNet2DModel`` built from the supported block types works (IDM, Chen et al., TPAMI 2025, Sec. 3.3-3.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from accel.errors import AccelError

from .reversible import Coupling, checkpointed, run_chain

SUPPORTED_DOWN = ("DownBlock2D", "AttnDownBlock2D")
SUPPORTED_UP = ("UpBlock2D", "AttnUpBlock2D")
SUPPORTED_MID = ("UNetMidBlock2D",)


class ResnetBody(nn.Module):
    """Coupling body ``resnet(x, temb)`` (context: temb, aty, operator)."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.resnet = resnet

    def forward(self, x: torch.Tensor, temb: torch.Tensor, aty: torch.Tensor, op: Any) -> torch.Tensor:
        return self.resnet(x, temb)


class AttnBody(nn.Module):
    """Coupling body ``attention(x)`` (diffusers ``Attention`` with its own residual connection)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor, temb: torch.Tensor, aty: torch.Tensor, op: Any) -> torch.Tensor:
        return self.attn(x)


class Injector(nn.Module):
    """Measurement injector (IDM Sec. 3.4): features (B, C, H/r, W/r) -> residual from [img, A^T A img, A^T y].

    ``img`` is a 1-channel full-resolution image read from the features (1x1 conv to r^2 channels + pixel
    shuffle); the three images are pixel-unshuffled back and mapped to C channels by a zero-initialised
    1x1 conv, so a fresh injector is the identity.
    """

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.read = nn.Conv2d(channels, scale * scale, 1)
        self.write = nn.Conv2d(3 * scale * scale, channels, 1)
        nn.init.zeros_(self.write.weight)
        nn.init.zeros_(self.write.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, aty: torch.Tensor, op: Any) -> torch.Tensor:
        r = self.scale
        img = F.pixel_shuffle(self.read(x), r) if r > 1 else self.read(x)
        feats = torch.cat([img, op.AT(op.A(img)), aty.to(img.dtype).expand(img.shape[0], -1, -1, -1)], dim=1)
        feats = F.pixel_unshuffle(feats, r) if r > 1 else feats
        return x + self.write(feats)


@dataclass
class _Op:
    """One step of the walk over the U-Net (see :func:`build_plan`)."""

    kind: str  # conv_in | piece | run | push | up_resnet | post
    module: nn.Module | None = None
    units: list[str] = field(default_factory=list)  # coupling keys for "run"
    inject: tuple[int, int] = (0, 0)  # (channels, scale) of the run's two injectors
    temb: bool = False  # whether a "piece" takes temb


def _same_shape(resnet: nn.Module) -> bool:
    return resnet.in_channels == resnet.out_channels and resnet.conv_shortcut is None and not resnet.up and not resnet.down


def _check_unet(unet: nn.Module) -> None:
    from diffusers import UNet2DModel

    if not isinstance(unet, UNet2DModel):
        raise AccelError(f"IDM needs a diffusers UNet2DModel, got {type(unet).__name__}")
    cfg = unet.config
    if cfg.in_channels != 1 or cfg.out_channels != 1:
        raise AccelError(f"IDM works on grayscale images: the U-Net needs in_channels=out_channels=1, got {cfg.in_channels}/{cfg.out_channels}")
    if cfg.time_embedding_type != "positional":
        raise AccelError(f"IDM supports time_embedding_type='positional' U-Nets, got {cfg.time_embedding_type!r}")
    if unet.class_embedding is not None:
        raise AccelError("class-conditional U-Nets are not supported by IDM (class_embed_type must be None)")
    kinds = [type(b).__name__ for b in unet.down_blocks] + [type(b).__name__ for b in unet.up_blocks]
    kinds += [type(unet.mid_block).__name__] if unet.mid_block is not None else []
    bad = [k for k in kinds if k not in SUPPORTED_DOWN + SUPPORTED_UP + SUPPORTED_MID]
    if bad:
        raise AccelError(f"unsupported U-Net block types {bad}; IDM supports {', '.join(SUPPORTED_DOWN + SUPPORTED_UP + SUPPORTED_MID)}")


def build_plan(unet: nn.Module, couplings: dict[str, Coupling], v_init: float) -> list[_Op]:
    """Walk a UNet2DModel's modules once; fill ``couplings`` (key -> Coupling) and return the op list."""
    _check_unet(unet)
    plan: list[_Op] = [_Op("conv_in", unet.conv_in), _Op("push")]
    scale, ch = 1, unet.config.block_out_channels[0]

    def unit(kind: str, mod: nn.Module) -> str:
        key = f"u{len(couplings)}"
        couplings[key] = Coupling(ResnetBody(mod) if kind == "resnet" else AttnBody(mod), v_init, register_body=False)
        return key

    def layer(resnet: nn.Module | None, attns: list[nn.Module | None]) -> None:
        nonlocal ch
        keys = []
        if resnet is not None:
            if _same_shape(resnet):
                keys.append(unit("resnet", resnet))
            else:
                plan.append(_Op("piece", resnet, temb=True))
            ch = resnet.out_channels
        keys += [unit("attn", a) for a in attns if a is not None]
        if keys:
            plan.append(_Op("run", units=keys, inject=(ch, scale)))

    for block in unet.down_blocks:
        attns = list(getattr(block, "attentions", [None] * len(block.resnets)))
        for resnet, attn in zip(block.resnets, attns):
            layer(resnet, [attn])
            plan.append(_Op("push"))
        for ds in block.downsamplers or []:
            plan.append(_Op("piece", ds, temb=getattr(block, "downsample_type", "conv") == "resnet"))
            scale *= 2
            plan.append(_Op("push"))
    if unet.mid_block is not None:
        mid = unet.mid_block
        keys = [unit("resnet", mid.resnets[0])]
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            keys += ([unit("attn", attn)] if attn is not None else []) + [unit("resnet", resnet)]
        plan.append(_Op("run", units=keys, inject=(ch, scale)))
    for block in unet.up_blocks:
        attns = list(getattr(block, "attentions", [None] * len(block.resnets)))
        for resnet, attn in zip(block.resnets, attns):
            plan.append(_Op("up_resnet", resnet))
            ch = resnet.out_channels
            layer(None, [attn])
        for us in block.upsamplers or []:
            plan.append(_Op("piece", us, temb=getattr(block, "upsample_type", "conv") == "resnet"))
            scale //= 2
    plan.append(_Op("post"))
    return plan


class ReversibleUNet(nn.Module):
    """A UNet2DModel's noise estimator with reversible layers; injectors are supplied per call (per step).

    ``forward(sample (B,1,H,W), temb (1|B, D), aty (B,1,H,W), op, injectors, mode) -> eps (B,1,H,W)``.
    The U-Net itself is registered as ``self.unet``; couplings hold only their mixing scalars ``v``.
    """

    def __init__(self, unet: nn.Module, v_init: float = 0.5) -> None:
        super().__init__()
        self.unet = unet
        couplings: dict[str, Coupling] = {}
        self.plan = build_plan(unet, couplings, v_init)
        self.couplings = nn.ModuleDict(couplings)

    def injection_points(self) -> list[tuple[int, int]]:
        """(channels, scale) of every injector slot, two per reversible layer, in call order."""
        return [op.inject for op in self.plan if op.kind == "run" for _ in range(2)]

    def make_injectors(self) -> nn.ModuleList:
        """A fresh set of injectors for one sampling step (identity at init)."""
        return nn.ModuleList(Coupling(Injector(c, s), 0.5) for c, s in self.injection_points())

    def time_embedding(self, t: torch.Tensor | float) -> torch.Tensor:
        """The pretrained embedding of timestep ``t`` (float allowed): (1, D)."""
        u = self.unet
        t = torch.as_tensor(t, dtype=torch.float32, device=u.device).reshape(1)
        return u.time_embedding(u.time_proj(t).to(u.dtype))

    def forward(self, sample: torch.Tensor, temb: torch.Tensor, aty: torch.Tensor, op: Any, injectors: nn.ModuleList | None = None, mode: str = "reversible") -> torch.Tensor:
        u = self.unet
        if u.config.center_input_sample:
            sample = 2 * sample - 1.0
        inj = iter(injectors) if injectors is not None else None
        ctx = (temb, aty, op)
        skips: list[torch.Tensor] = []
        h = sample
        for step in self.plan:
            if step.kind == "conv_in":
                h = checkpointed(u.conv_in, h, mode=mode)
            elif step.kind == "push":
                skips.append(h)
            elif step.kind == "piece":
                h = checkpointed(step.module, h, temb, mode=mode) if step.temb else checkpointed(step.module, h, mode=mode)
            elif step.kind == "up_resnet":
                h = checkpointed(_CatResnet(step.module), h, skips.pop(), temb, mode=mode)
            elif step.kind == "run":
                units = [self.couplings[k] for k in step.units]
                if inj is not None:  # both first: the streams are still equal there, so fresh injectors are exact identities
                    units = [next(inj), next(inj)] + units
                h, _ = run_chain(units, h, h, *ctx, mode=mode)
            elif step.kind == "post":
                h = checkpointed(_Head(u), h, mode=mode)
        return h


class _CatResnet(nn.Module):
    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "resnet", resnet)

    def forward(self, h: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.resnet(torch.cat([h, skip], dim=1), temb)


class _Head(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "unet", unet)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        u = self.unet
        return u.conv_out(u.conv_act(u.conv_norm_out(h)))
