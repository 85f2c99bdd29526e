"""CS baselines for the IDM benchmark: back-projection, total-variation FISTA, DDNM-style zero-shot diffusion.

All take measurements ``y`` (B, L, q) of [0, 1] images and a :class:`BlockCS` operator, and return images
(B, 1, H, W) in [0, 1] on the operator's padded domain.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .operator import BlockCS


def back_projection(y: torch.Tensor, op: BlockCS) -> torch.Tensor:
    """``A^T y``, the minimum-norm solution of ``A x = y`` (the pseudo-inverse, as A A^T = I)."""
    return op.AT(y)


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Forward differences (B, 1, H, W) -> (B, 2, H, W), zero at the far border."""
    dx = torch.zeros_like(x).repeat(1, 2, 1, 1)
    dx[:, 0, :, :-1] = x[:, 0, :, 1:] - x[:, 0, :, :-1]
    dx[:, 1, :-1, :] = x[:, 0, 1:, :] - x[:, 0, :-1, :]
    return dx


def _div(p: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of :func:`_grad`: (B, 2, H, W) -> (B, 1, H, W)."""
    px, py = p[:, 0], p[:, 1]
    d = torch.zeros_like(px)
    d[:, :, 0] = px[:, :, 0]
    d[:, :, 1:-1] = px[:, :, 1:-1] - px[:, :, :-2]
    d[:, :, -1] = -px[:, :, -2]
    d[:, 0, :] += py[:, 0, :]
    d[:, 1:-1, :] += py[:, 1:-1, :] - py[:, :-2, :]
    d[:, -1, :] += -py[:, -2, :]
    return d.unsqueeze(1)


def tv_prox(b: torch.Tensor, lam: float, p: torch.Tensor, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Isotropic TV denoising ``argmin_x 0.5 ||x - b||^2 + lam TV(x)`` by Chambolle's dual projection.

    ``p`` (B, 2, H, W) is the dual variable, returned for warm starts.  Chambolle, JMIV 20 (2004), Eq. 9.
    """
    tau = 0.249
    for _ in range(iters):
        g = _grad(_div(p) - b / lam)
        p = (p + tau * g) / (1 + tau * (g * g).sum(1, keepdim=True).sqrt())  # (not .norm(dim=1): 300x slower on CPU)
    return b - lam * _div(p), p


def tv_fista(y: torch.Tensor, op: BlockCS, iters: int = 300, lam: float | None = None, inner: int = 10,
             callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """TV-regularised CS by FISTA with continuation: ``min 0.5 ||A x - y||^2 + lam TV(x)``.

    The step is 1 (``||A|| = 1``); ``lam`` decays geometrically from 0.2 to its final value over the first
    half of the iterations (default final ``lam`` 0.001: on three Set11 images at 10% / 50%, final values
0.001 / 0.005 / 0.03 gave 27.0 / 26.5 / 22.8 dB and 37.4 / 36.1 / 30.6 dB).  Beck & Teboulle,
    IEEE TIP 18 (2009).
    """
    r = op.config.ratio
    lam_end = lam if lam is not None else 0.001
    x = op.AT(y) + (1 - r) * 0.5  # start: back-projection plus mid-grey in the null space
    x = op.project(x.clamp(0, 1), y)
    z, t = x.clone(), 1.0
    p = torch.zeros_like(x).repeat(1, 2, 1, 1)
    for k in range(iters):
        lam_k = max(lam_end, 0.2 * (lam_end / 0.2) ** (k / max(1, iters // 2)))
        b = z - op.AT(op.A(z) - y)
        x_new, p = tv_prox(b, lam_k, p, inner)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if callback is not None:
            callback(k + 1, iters)
    return x.clamp(0, 1)


@torch.no_grad()
def ddnm(y: torch.Tensor, op: BlockCS, unet: torch.nn.Module, alphas_cumprod: torch.Tensor, steps: int = 100, eta: float = 0.85,
         seed: int = 0, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Zero-shot range-null-space diffusion (DDNM, Wang et al., ICLR 2023) with a pretrained eps U-Net.

    ``steps`` evenly spaced timesteps of the training schedule; at each: predict x0, replace its range-space
    part by ``A^T y`` (``x0 - A^T (A x0 - y)``), then a DDIM step with stochasticity ``eta``.
    """
    dev = y.device
    dtype = next(unet.parameters()).dtype
    acp = alphas_cumprod.to(dev, torch.float64)
    n = len(acp)
    ts = torch.linspace(n - 1, 0, steps).round().long().tolist()
    y = (2 * y - op.A(torch.ones(1, 1, op.height, op.width, device=dev, dtype=y.dtype))).to(dtype)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn((y.shape[0], 1, op.height, op.width), generator=g).to(dev, dtype)
    for i, t in enumerate(ts):
        a = float(acp[t])
        a_prev = float(acp[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        eps = unet(x, torch.full((x.shape[0],), t, device=dev)).sample
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
        x0 = op.project(x0, y)
        sigma = eta * math.sqrt(max(0.0, (1 - a_prev) / (1 - a) * (1 - a / a_prev)))
        noise = torch.randn(x.shape, generator=g).to(dev, dtype)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma**2)) * eps + sigma * noise
        if callback is not None:
            callback(i + 1, steps)
    return ((x + 1) / 2).clamp(0, 1)
