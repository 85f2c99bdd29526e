"""Triton kernels for the cached-feature-prediction ops; references in ``reference.py`` beside this file.

Imported lazily by ``accel.kernels`` (only when an op runs on the Triton backend). Every kernel treats a
factor buffer ``(K+1, *S)`` as ``K+1`` flat rows of ``N = prod(S)`` elements, loads in the storage dtype,
computes in float32 registers and stores in the destination dtype. The number of valid orders is a
compile-time constant (the loops over orders unroll; one specialisation per value, at most K+1 of them).
Callers (``accel.kernels``) have already checked shapes, dtypes, contiguity and devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

__all__ = ["taylor_forecast", "taylor_update", "forecast_error", "launch_config"]


@dataclass(frozen=True)
class LaunchConfig:
    block: int  # elements per program (elementwise kernels) or per tile (reduction)
    num_warps: int
    tiles: int = 1  # tiles per program in the reduction (bounds the number of partial sums)


def launch_config(op: str, numel: int) -> LaunchConfig:
    """All launch settings in one place (measured once on an H200: docs/kernels.md).

    - elementwise ``forecast`` / ``update``: BLOCK 1024 with 4 warps = 8 fp32 (16 B) per thread and load,
      the usual choice for bandwidth-bound Triton kernels. H200, FLUX-sized: forecast 72-89% of the
      datasheet's 4.8 TB/s (up to 102% of the 4.2 TB/s a device copy reached); update 26-33% in its first,
      interleaved form (rewritten since; not yet re-measured).
    - ``error`` reduction: tiles of 1024 with 4 warps, 4 tiles per program, so a FLUX-sized sample
      (4096 x 3072 = 12.6M elements) gives ~3k programs (several waves on 132 SMs, so little tail
      loss) and as many partial sums (24 KB), summed afterwards by torch. H200: 67-84% of peak in fp32,
      30-77% in 16-bit (lowest at batch 1).
    Tiny tensors (under one block) use a smaller power-of-two block so the CPU interpreter stays fast.
    """
    block = 1024 if numel >= 1024 else max(16, triton.next_power_of_2(max(numel, 1)))
    if op == "error":  # fewer tiles when a sample is small, so no program loops over pure padding
        return LaunchConfig(block=block, num_warps=4, tiles=min(4, triton.cdiv(max(numel, 1), block)))
    return LaunchConfig(block=block, num_warps=4)


# ------------------------------------------------------------------------------------------------ kernels


@triton.jit
def _forecast_kernel(f_ptr, out_ptr, N, offset, N_VALID: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.load(f_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    coef = 1.0
    row_ptr = f_ptr
    for i in tl.static_range(1, N_VALID):
        coef = coef * offset / i  # offset^i / i!, same recurrence as the reference
        row_ptr += N  # pointer arithmetic is 64-bit: no overflow of i * N
        acc += coef * tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


UPDATE_MAX_ROWS = 5  # NEW_N up to which _update_kernel issues every load before its first store


@triton.jit
def _update_kernel(f_ptr, new_ptr, N, delta, NEW_N: tl.constexpr, BLOCK: tl.constexpr):
    # All loads first, then all stores. Triton cannot prove that row i+1 does not alias row i, so a load
    # placed after a store stays after it: the interleaved form (load D_0, store, load D_1, store, ...)
    # waits a full memory latency per row and ran at 26-33% of peak on an H200. Rows are named one by one
    # (constexpr ``if`` is resolved at compile time, so unused rows cost nothing); NEW_N <= UPDATE_MAX_ROWS.
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    r1 = f_ptr + N  # pointer arithmetic is 64-bit: no overflow of i * N
    r2 = r1 + N
    r3 = r2 + N
    r4 = r3 + N
    c = tl.load(new_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NEW_N > 1:  # D_i_old is needed for order i + 1 (and i < N_VALID holds then)
        o0 = tl.load(f_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NEW_N > 2:
        o1 = tl.load(r1 + offs, mask=mask, other=0.0).to(tl.float32)
    if NEW_N > 3:
        o2 = tl.load(r2 + offs, mask=mask, other=0.0).to(tl.float32)
    if NEW_N > 4:
        o3 = tl.load(r3 + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(f_ptr + offs, c.to(f_ptr.dtype.element_ty), mask=mask)
    if NEW_N > 1:
        c = tl.div_rn(c - o0, delta)  # IEEE division, as torch: no approximate fp32 div
        tl.store(r1 + offs, c.to(f_ptr.dtype.element_ty), mask=mask)
    if NEW_N > 2:
        c = tl.div_rn(c - o1, delta)
        tl.store(r2 + offs, c.to(f_ptr.dtype.element_ty), mask=mask)
    if NEW_N > 3:
        c = tl.div_rn(c - o2, delta)
        tl.store(r3 + offs, c.to(f_ptr.dtype.element_ty), mask=mask)
    if NEW_N > 4:
        c = tl.div_rn(c - o3, delta)
        tl.store(r4 + offs, c.to(f_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _update_kernel_long(f_ptr, new_ptr, N, delta, NEW_N: tl.constexpr, BLOCK: tl.constexpr):
    # Any NEW_N (orders above UPDATE_MAX_ROWS - 1): one row at a time, each old row read before it is overwritten.
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    carry = tl.load(new_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    row_ptr = f_ptr
    for i in tl.static_range(NEW_N):
        if i + 1 < NEW_N:
            old = tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(row_ptr + offs, carry.to(f_ptr.dtype.element_ty), mask=mask)
            carry = tl.div_rn(carry - old, delta)
        else:
            tl.store(row_ptr + offs, carry.to(f_ptr.dtype.element_ty), mask=mask)
        row_ptr += N


@triton.jit
def _add(a, b):
    # tl.sum (and tl.zeros) are themselves @triton.jit functions, decorated when triton.language is first
    # imported; if that import (e.g. by torch._dynamo) came before TRITON_INTERPRET=1 was set, they cannot
    # run in the CPU interpreter. This combine function is decorated with this module, so the kernels
    # work in both modes; they use only builtins besides it.
    return a + b


@triton.jit
def _error_kernel(f_ptr, a_ptr, err_ptr, ref_ptr, N, M, n_chunks, offset,
                  N_VALID: tl.constexpr, BLOCK: tl.constexpr, TILES: tl.constexpr):
    # 1D grid of B * n_chunks programs (grid axes 1 and 2 are capped at 65535, axis 0 is not): program
    # pid = b * n_chunks + c reduces TILES * BLOCK elements of sample b (M elements per sample) and writes
    # one partial sum per output, at partial[pid].
    pid = tl.program_id(0)
    b = pid // n_chunks
    c = pid % n_chunks
    sample_f = f_ptr + b * M
    sample_a = a_ptr + b * M
    err_acc = tl.full([BLOCK], 0.0, tl.float32)  # tl.full, not tl.zeros: see _add
    ref_acc = tl.full([BLOCK], 0.0, tl.float32)
    for t in range(TILES):
        offs = (c * TILES + t) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < M
        fhat = tl.load(sample_f + offs, mask=mask, other=0.0).to(tl.float32)
        coef = 1.0
        row_ptr = sample_f
        for i in tl.static_range(1, N_VALID):
            coef = coef * offset / i
            row_ptr += N
            fhat += coef * tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        a = tl.load(sample_a + offs, mask=mask, other=0.0).to(tl.float32)
        err_acc += tl.abs(fhat - a)  # masked lanes are 0 - 0
        ref_acc += tl.abs(a)
    tl.store(err_ptr + pid, tl.reduce(err_acc, 0, _add))
    tl.store(ref_ptr + pid, tl.reduce(ref_acc, 0, _add))


# ------------------------------------------------------------------------------------------------ launchers


def taylor_forecast(factors: torch.Tensor, offset: float, n_valid: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fused ``sum_{i<n_valid} D_i offset^i / i!``: (K+1, *S) -> S (see ``reference.taylor_forecast``)."""
    if out is None:
        out = torch.empty(factors.shape[1:], dtype=factors.dtype, device=factors.device)
    n = out.numel()
    if n == 0:
        return out
    cfg = launch_config("forecast", n)
    grid = (triton.cdiv(n, cfg.block),)
    _forecast_kernel[grid](factors, out, n, offset, N_VALID=n_valid, BLOCK=cfg.block, num_warps=cfg.num_warps)
    return out


def taylor_update(factors: torch.Tensor, new: torch.Tensor, delta: float, n_valid: int) -> int:
    """Fused in-place finite-difference rebuild; returns the new n_valid (see ``reference.taylor_update``)."""
    new_n = min(n_valid + 1, factors.shape[0])
    n = new.numel()
    if n == 0:
        return new_n
    cfg = launch_config("update", n)
    grid = (triton.cdiv(n, cfg.block),)
    kernel = _update_kernel if new_n <= UPDATE_MAX_ROWS else _update_kernel_long
    kernel[grid](factors, new, n, delta, NEW_N=new_n, BLOCK=cfg.block, num_warps=cfg.num_warps)
    return new_n


def forecast_error(factors: torch.Tensor, offset: float, n_valid: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(sum |F^ - actual|, sum |actual|)``, float32 (B,), without materialising F^.

    Two-stage reduction: the kernel writes one fp32 partial per (sample, chunk), then torch sums each row.
    Unlike ``atomic_add`` into (B,), this is deterministic run to run (the cache's skip decisions then
    do not flicker between identical runs), for one extra tiny launch and B * n_chunks * 8 bytes.
    """
    batch = actual.shape[0]
    n = actual.numel()
    if n == 0 or batch == 0:
        zeros = torch.zeros(batch, dtype=torch.float32, device=actual.device)
        return zeros, zeros.clone()
    per_sample = n // batch
    cfg = launch_config("error", per_sample)
    n_chunks = triton.cdiv(per_sample, cfg.block * cfg.tiles)
    partial = torch.empty((2, batch, n_chunks), dtype=torch.float32, device=actual.device)
    _error_kernel[(batch * n_chunks,)](
        factors, actual, partial[0], partial[1], n, per_sample, n_chunks, offset,
        N_VALID=n_valid, BLOCK=cfg.block, TILES=cfg.tiles, num_warps=cfg.num_warps,
    )
    sums = partial.sum(dim=2)
    return sums[0], sums[1]
