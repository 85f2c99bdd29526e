"""Block-based compressed-sensing operator (IDM, Chen et al., TPAMI 2025, Sec. 3 "CS set-up").

``y = A x``: the (optionally scrambled) image is cut into 32x32 blocks, and every block is measured by the
same fixed random sampling matrix ``Phi`` (``q x N``, ``N = 1024``, ``q = ceil(ratio * N)``) whose rows are
orthonormal, so ``A A^T = I`` and ``A^T`` is the pseudo-inverse.  Images of any size are handled by padding
them (reflect) to a multiple of the block size; the operator itself acts on the padded domain, where
``A A^T = I``, the projection ``x - A^T (A x - y)`` and the adjoint identity hold exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from accel.errors import AccelError

BLOCK = 32


def check_ratio(ratio: float) -> float:
    """Return ``ratio`` as a float if it lies in (0, 1]; otherwise raise a clear :class:`AccelError`."""
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise AccelError(f"sampling ratio must be a number in (0, 1], got {ratio!r}") from None
    if not (0.0 < r <= 1.0) or math.isnan(r):
        raise AccelError(f"sampling ratio must be in (0, 1] (e.g. 0.1 for 10%), got {ratio!r}")
    return r


@dataclass(frozen=True)
class CSConfig:
    """What defines the measurement operator; weights fine-tuned for one config only fit that config.

    ratio:    measurements per pixel, in (0, 1]; ``q = ceil(ratio * block**2)`` rows per block.
    seed:     seed of the sampling matrix and of the pixel permutation (default 0).
    scramble: permute the (padded) image's pixels before blocking, as IDM does (default True).
    block:    block side (default 32, as in IDM).
    """

    ratio: float
    seed: int = 0
    scramble: bool = True
    block: int = BLOCK

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        if self.block <= 0:
            raise AccelError(f"block size must be positive, got {self.block}")

    @property
    def q(self) -> int:
        """Measurements per block."""
        return max(1, math.ceil(self.ratio * self.block**2 - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=4)
def _orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(n, n, generator=g, dtype=torch.float64)
    qmat, r = torch.linalg.qr(gauss)
    return qmat * torch.sign(torch.diagonal(r)).unsqueeze(0)  # the unique (Haar) orthogonal factor


def sampling_matrix(n: int, q: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """First ``q`` rows of a random ``n x n`` orthogonal matrix (QR of a seeded Gaussian): shape (q, n).

    Taking a prefix of one orthogonal matrix makes the operators of different ratios nested.
    """
    return _orthogonal(n, seed).T[:q].contiguous().to(dtype)


def padded_size(h: int, w: int, block: int = BLOCK) -> tuple[int, int]:
    """Smallest (H', W') >= (h, w) that are multiples of ``block``."""
    return -(-h // block) * block, -(-w // block) * block


class BlockCS:
    """The operator ``A`` for images of padded size (H, W) (multiples of the block size).

    Images are (B, 1, H, W); measurements are (B, L, q) with ``L = (H / 32) * (W / 32)`` blocks.
    Use :meth:`pad` / :meth:`crop` to move between an image's own size and the padded domain, or
    :meth:`for_image` to build the operator for an image of any size.
    """

    def __init__(self, config: CSConfig, height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        b = config.block
        if height <= 0 or width <= 0 or height % b or width % b:
            raise AccelError(f"BlockCS acts on padded images whose sides are multiples of {b}, got {height}x{width}; use BlockCS.for_image")
        self.config, self.height, self.width = config, height, width
        self.phi = sampling_matrix(b * b, config.q, config.seed, dtype).to(device)  # (q, N)
        self.perm: torch.Tensor | None = None
        self.inv_perm: torch.Tensor | None = None
        if config.scramble:
            g = torch.Generator().manual_seed(config.seed * 1_000_003 + height * 7919 + width)
            self.perm = torch.randperm(height * width, generator=g).to(device)
            self.inv_perm = torch.argsort(self.perm)
        self.orig_size: tuple[int, int] = (height, width)

    @classmethod
    def for_image(cls, config: CSConfig, height: int, width: int, **kw: Any) -> "BlockCS":
        """Operator for an ``height x width`` image: acts on its reflect-padded version (see :meth:`pad`)."""
        if height <= 0 or width <= 0:
            raise AccelError(f"image size must be positive, got {height}x{width}")
        op = cls(config, *padded_size(height, width, config.block), **kw)
        op.orig_size = (height, width)
        return op

    @property
    def num_blocks(self) -> int:
        return (self.height // self.config.block) * (self.width // self.config.block)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "BlockCS":
        """Move the matrices in place (returns self)."""
        self.phi = self.phi.to(device=device, dtype=dtype)
        if self.perm is not None:
            self.perm, self.inv_perm = self.perm.to(device), self.inv_perm.to(device)  # type: ignore[union-attr]
        return self

    # -- domain helpers -----------------------------------------------------------------------------
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) at the original size -> (B, 1, H, W), reflect-padded (replicate when too small)."""
        h, w = x.shape[-2:]
        ph, pw = self.height - h, self.width - w
        if ph < 0 or pw < 0:
            raise AccelError(f"image {h}x{w} is larger than this operator's domain {self.height}x{self.width}")
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, h, w): back to the original image size."""
        return x[..., : self.orig_size[0], : self.orig_size[1]]

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise AccelError(f"BlockCS expects images of shape (B, 1, {self.height}, {self.width}), got {tuple(x.shape)}")

    # -- the operator -------------------------------------------------------------------------------
    def _to_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, L, N): scramble, then one row per 32x32 block."""
        bsz, b = x.shape[0], self.config.block
        if self.perm is not None:
            x = x.reshape(bsz, -1)[:, self.perm].reshape(bsz, 1, self.height, self.width)
        return F.unfold(x, kernel_size=b, stride=b).transpose(1, 2)

    def _from_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """(B, L, N) -> (B, 1, H, W): inverse of :meth:`_to_blocks` (it is a permutation, so also its adjoint)."""
        bsz, b = blocks.shape[0], self.config.block
        x = F.fold(blocks.transpose(1, 2), (self.height, self.width), kernel_size=b, stride=b)
        if self.inv_perm is not None:
            x = x.reshape(bsz, -1)[:, self.inv_perm].reshape(bsz, 1, self.height, self.width)
        return x

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Measure: (B, 1, H, W) -> (B, L, q)."""
        self._check(x)
        return self._to_blocks(x) @ self.phi.to(x.dtype).T

    def AT(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint (= pseudo-inverse, since A A^T = I): (B, L, q) -> (B, 1, H, W)."""
        if y.dim() != 3 or y.shape[1:] != (self.num_blocks, self.config.q):
            raise AccelError(f"measurements for this operator have shape (B, {self.num_blocks}, {self.config.q}), got {tuple(y.shape)}")
        return self._from_blocks(y @ self.phi.to(y.dtype))

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Range-null-space data consistency ``x - A^T (A x - y)``: the exact projection onto {A x = y}."""
        return x - self.AT(self.A(x) - y)

    def measure(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) image at its own size -> measurements (B, L, q) of its padded version."""
        return self.A(self.pad(image))
