"""Level 1 of IDM: the T-step deterministic sampler as a reversible chain (Chen et al., TPAMI 2025, Sec. 3.2).

Step t (t = T..1) with the learned schedule ``abar_t = prod_{i<=t} s_i`` (``s_i`` init ``0.125 ** (1/T)``,
i.e. 0.5 for T = 3 as in IDM; ``abar_0 = 1``)::

    eps    = noise_estimator_t(x_t)                          # level 2 + this step's injectors
    x0^    = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    x0^'   = x0^ - A^T (A x0^ - y)                             # range-null-space data consistency
    step_t = sqrt(abar_{t-1}) x0^' + sqrt(1 - abar_{t-1}) eps

coupled across steps: ``x_{t-1} = (1 - v_t) step_t(x_t) + v_t h_t``, ``h_{t-1} = x_t``; start
``x_T = sqrt(abar_T) A^T y``, ``h_T = s x_T``; output ``x_0 + beta h_0`` (``s`` init 1, ``beta`` init 0),
projected once more onto ``{A x = y}`` (our addition: the coupling mixes the data-consistent ``x0^'`` with
``h``; the projection restores consistency and, the truth lying in that affine set, never increases the error).
Every step has its own learned time embedding (initialised from the pretrained U-Net at the timestep whose
``alphas_cumprod`` matches the initial ``abar_t``) and its own measurement injectors.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from accel.errors import AccelError

from .operator import BlockCS
from .reversible import Coupling, check_mode, run_chain
from .unet import ReversibleUNet


ABAR_T_INIT = 0.125  # initial abar at the first sampling step (IDM, T = 3: 0.5 ** 3)


class _StepBody(nn.Module):
    """Body of level-1 unit ``t``: one deterministic sampling step with data consistency."""

    def __init__(self, idm: "IDM", t: int) -> None:
        super().__init__()
        object.__setattr__(self, "idm", idm)
        self.t = t

    def unit_parameters(self) -> Iterator[nn.Parameter]:
        return self.idm.parameters()

    def forward(self, x: torch.Tensor, y: torch.Tensor, aty: torch.Tensor, op: BlockCS) -> torch.Tensor:
        idm, t = self.idm, self.t
        abar = idm.abar().to(x.dtype)
        a, a_prev = abar[t], abar[t - 1]
        pd = idm.temb.dtype  # the U-Net runs in the parameters' dtype, the streams may be wider (see IDM.forward)
        eps = idm.net(x.to(pd), idm.temb[t - 1 : t], aty.to(pd), op, idm.injectors[t - 1], mode=idm.inner_mode).to(x.dtype)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x0 = op.project(x0, y)
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


class IDM(nn.Module):
    """Invertible diffusion model for CS: measurements (B, L, q) of [0, 1] images -> images (B, 1, H, W).

    ``unet``: a pretrained diffusers ``UNet2DModel`` (1 channel, epsilon prediction);
    ``alphas_cumprod``: its training schedule (to initialise the per-step time embeddings);
    ``steps``: T; ``mode``: ``"plain"`` (autograd), ``"checkpoint"`` (one checkpoint per sampling step) or
    ``"reversible"`` (both levels reversible; shape-changing U-Net pieces checkpointed).
    """

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, steps: int = 3, mode: str = "reversible", v_init: float = 0.5) -> None:
        super().__init__()
        if not isinstance(steps, int) or steps < 1:
            raise AccelError(f"the number of sampling steps T must be a positive integer, got {steps!r}")
        self.mode = check_mode(mode)
        self.steps = steps
        self.net = ReversibleUNet(unet, v_init)
        self.injectors = nn.ModuleList(self.net.make_injectors() for _ in range(steps))
        # s_i = ABAR_T_INIT ** (1 / T): 0.5 for T = 3 as in IDM; for larger T the start stays at the same noise
        # level instead of abar_T = 0.5 ** T, whose 1 / sqrt(abar) would amplify rounding in the inverse.
        s0 = ABAR_T_INIT ** (1.0 / steps)
        self.s_logit = nn.Parameter(torch.full((steps,), math.log(s0 / (1 - s0))))
        self.start_scale = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            acp = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
            init = self.abar().double()[1:]
            ts = [int(torch.argmin((acp - a).abs())) for a in init]
            temb = torch.cat([self.net.time_embedding(t) for t in ts]).float()
        self.temb = nn.Parameter(temb)  # (T, D): row t-1 is step t's embedding
        self.step_units = nn.ModuleList(Coupling(_StepBody(self, t), v_init, register_body=False) for t in range(1, steps + 1))
        # The U-Net's own time-embedding MLP is replaced by the learned per-step embeddings.
        self.net.unet.time_embedding.requires_grad_(False)

    @property
    def inner_mode(self) -> str:
        return "reversible" if self.mode == "reversible" else "plain"

    def set_mode(self, mode: str) -> "IDM":
        """Switch the memory mode (the parameters are unchanged)."""
        self.mode = check_mode(mode)
        return self

    def abar(self) -> torch.Tensor:
        """(T + 1,) learned cumulative schedule: abar[0] = 1, abar[t] = prod_{i<=t} s_i."""
        s = torch.sigmoid(self.s_logit)
        return torch.cat([s.new_ones(1), torch.cumprod(s, 0)])

    def forward(self, y: torch.Tensor, op: BlockCS) -> torch.Tensor:
        """Reconstruct: y (B, L, q) measured from [0, 1] images -> (B, 1, H, W) on the operator's padded domain."""
        # The two level-1 streams are single-channel images, so they are kept in float64 at negligible cost:
        # rounding in the inverse x2 = (y1 - (1 - v) f(x1)) / v is then amplified from 1e-16, not 1e-7, through
        # T steps (at T = 10 in float32 the rebuilt states drifted to ~4e-4 relative gradient error).
        out_dtype = y.dtype
        dtype = torch.float64 if self.temb.dtype in (torch.float32, torch.float16, torch.bfloat16) else self.temb.dtype
        y = y.to(dtype)
        ones = torch.ones(1, 1, op.height, op.width, dtype=dtype, device=y.device)
        y = 2 * y - op.A(ones)  # measurements of the image in the U-Net's [-1, 1] range
        aty = op.AT(y)
        a_t = self.abar()[-1].to(dtype)
        x = a_t.sqrt() * aty
        h = self.start_scale.to(dtype) * x
        units = list(self.step_units)[::-1]  # t = T, ..., 1
        x, h = run_chain(units, x, h, y, aty, op, mode=self.mode)
        out = op.project(x + self.beta.to(dtype) * h, y)
        return ((out + 1) / 2).to(out_dtype if out_dtype.is_floating_point else self.temb.dtype)

    def reconstruct(self, y: torch.Tensor, op: BlockCS) -> torch.Tensor:
        """Inference: y -> image (B, 1, h, w) at the original size, clamped to [0, 1]."""
        with torch.no_grad():
            return op.crop(self(y, op)).clamp(0, 1)

