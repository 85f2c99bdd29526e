"""Each caching method's own work per step on FLUX.1-sized tensors (``accel bench cache-overhead``).

For every method of the benchmark's registry that applies to FLUX (one or more rows of
:data:`overhead_sites.ROWS`, each running the method's own code), on one thread:

- milliseconds of CPU time per cached and per full step: median and quartiles over ``repeats`` alternating full /
  cached steps after a warm-up (a cached step is the first one after a full step); wall time beside it;
- the bytes of the tensors it keeps between steps;
- its arithmetic per step in element operations (:class:`OpCounter`) against one FLUX.1 double block's
  multiply-accumulates (:meth:`Geometry.block_macs`), and its milliseconds against that block's time at this
  core's matrix-multiply rate (:func:`gemm_rate`): element-wise work is bound by memory, so time can say more.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from dataclasses import asdict
from typing import Any, Callable

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..errors import AccelError
from .overhead_sites import BLOCK_FORMULA, ROWS, Geometry, Probe

__all__ = ["BLOCK_FORMULA", "DTYPES", "Geometry", "OpCounter", "ROWS", "gemm_rate", "held_bytes", "measure", "run"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class OpCounter(TorchDispatchMode):
    """Counts the arithmetic of the ops run under it in element operations: a matrix product its multiply-accumulates
    (torch's flop formulas / 2), a factorisation or solve the elements of its largest operand times its smaller
    matrix side, an FFT n log2 n, any other op the elements of its largest operand; copies, casts, fills, views and
    indexing count nothing. An op with a complex operand counts 4."""

    FREE = frozenset("""copy_ clone _to_copy empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like
        new_zeros zero_ fill_ full full_like ones ones_like cat stack view _unsafe_view reshape expand slice select permute
        t transpose unsqueeze squeeze detach alias as_strided lift_fresh lift_fresh_copy _local_scalar_dense split
        split_with_sizes chunk unbind index index_select _unsafe_index eye arange linspace scalar_tensor _conj
        resolve_conj view_as_real view_as_complex real imag roll movedim contiguous set_ resize_ randn""".split())

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if name in self.FREE or not tensors:
            return out
        big = max(tensors, key=torch.Tensor.numel)
        if func.overloadpacket in flop_registry:
            n = flop_registry[func.overloadpacket](*args, **kwargs, out_val=out) // 2
        elif name.startswith(("_linalg", "linalg", "cholesky")) and big.dim() >= 2:
            n = big.numel() * min(big.shape[-2:])
        elif name.startswith("_fft"):
            n = big.numel() * max(1, math.ceil(math.log2(big.numel())))
        else:
            n = big.numel()
        self.ops += n * (4 if any(t.is_complex() for t in tensors) else 1)
        return out


def held_bytes(obj: Any, seen: set[tuple[str, int]] | None = None, depth: int = 0) -> int:
    """Bytes of the distinct tensor storages reachable from ``obj`` through containers and object attributes
    (modules and functions excepted: the stand-ins' fixed tensors are not the method's)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = ("storage", storage.data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if depth > 10 or ("object", id(obj)) in seen or isinstance(obj, (str, bytes, int, float, type, torch.nn.Module)):
        return 0
    seen.add(("object", id(obj)))
    items = (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple, set))
             else vars(obj).values() if hasattr(obj, "__dict__") and not callable(obj) else ())
    return sum(held_bytes(x, seen, depth + 1) for x in items)


def _quartiles(xs: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return {"median": median, "q1": q1, "q3": q3}


def measure(probes: list[Probe], repeats: int) -> dict[str, Any]:
    """Milliseconds per full and cached step (each summed over the probes, times their sites) after the probes'
    warm-up pairs: CPU time of this thread (what the step costs the core, also when another process shares it) and
    wall time; element operations per step, counted on the last warm-up pair; bytes held after it."""
    warmup, ops = max(p.warmup for p in probes), {"full": 0, "cached": 0}
    for i in range(warmup):
        for kind in ops:
            for p in probes:
                if i < warmup - 1:
                    getattr(p, kind)()
                    continue
                with OpCounter() as counter:
                    getattr(p, kind)()
                ops[kind] += p.sites * counter.ops
    held = sum(p.sites * held_bytes(p.held) for p in probes)
    times: dict[str, list[tuple[float, float]]] = {"full": [], "cached": []}
    for _ in range(repeats):
        for kind, samples in times.items():
            cpu = wall = 0.0
            for p in probes:
                start, wall_start = time.thread_time(), time.perf_counter()
                getattr(p, kind)()
                cpu += p.sites * (time.thread_time() - start)
                wall += p.sites * (time.perf_counter() - wall_start)
            samples.append((1e3 * cpu, 1e3 * wall))
    out: dict[str, Any] = {f"{kind}_{clock}": _quartiles([s[i] for s in times[kind]])
                           for kind in ("cached", "full") for i, clock in enumerate(("ms", "wall_ms"))}
    return {**out, "held_bytes": held, "cached_ops": ops["cached"], "full_ops": ops["full"], "warmup": warmup}


def gemm_rate(g: Geometry, dtype: torch.dtype, calls: int = 3) -> float:
    """Multiply-accumulates per second of a (T x C) @ (C x C) product here: the bulk of a FLUX.1 block's work."""
    a, b = torch.randn(g.tokens, g.channels).to(dtype), torch.randn(g.channels, g.channels).to(dtype)
    a @ b
    times = []
    for _ in range(calls):
        start = time.thread_time()
        a @ b
        times.append(time.thread_time() - start)
    return g.tokens * g.channels**2 / statistics.median(times)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "diffusers", "cache-dit", "accel-diffusion"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def _row(row: str, g: Geometry, dtype: str, repeats: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with torch.no_grad():
        return measure(ROWS[row][1](g, DTYPES[dtype]), repeats)


def _isolated(*args: Any) -> dict[str, Any]:
    """:func:`_row` in a fresh process: each row starts from the same allocator state. (Whether a new tensor of tens of
    MiB reuses freed memory or is mapped and page-faulted afresh depends on what ran before in the process, which
    changed some rows' times several-fold when they ran one after another.)"""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_row, *args).result()


def run(g: Geometry = Geometry(), dtypes: tuple[str, ...] = ("float32",), repeats: int = 15, rows: list[str] | None = None,
        threads: int = 1, isolate: bool = True, command: str = "", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every row of :data:`ROWS` whose method the benchmark registers (or those named in ``rows``), per dtype,
    each in a fresh process unless ``isolate`` is False."""
    from .methods import METHODS

    if math.isqrt(g.tokens) ** 2 != g.tokens:
        raise AccelError(f"tokens={g.tokens}: FLUX's image tokens form a square grid (4096 = 64 x 64 at 1024x1024); give a square number")
    unknown = [d for d in dtypes if d not in DTYPES] + [r for r in rows or [] if r not in ROWS]
    if unknown:
        raise AccelError(f"unknown {', '.join(unknown)}: dtypes are {', '.join(DTYPES)}; rows are {', '.join(ROWS)}")
    flux = [name for name, spec in METHODS.items() if "flux" in spec.kinds and name != "none"]
    chosen = [r for r, (method, _, _) in ROWS.items() if method in flux and (rows is None or r in rows)]
    say = progress or (lambda msg: None)
    previous, load = torch.get_num_threads(), os.getloadavg()
    torch.set_num_threads(threads)
    out_rows, rates = [], {}
    try:
        with torch.no_grad():
            for name in dtypes:
                dtype = DTYPES[name]
                rates[name] = gemm_rate(g, dtype)
                say(f"{name}: matrix products at {rates[name] / 1e9:.1f} GMAC/s")
                for row in chosen:
                    method, _, what = ROWS[row]
                    rec = (_isolated if isolate else _row)(row, g, name, repeats, threads)
                    gc.collect()
                    out_rows.append({"row": row, "method": method, "dtype": name, "what": what, "source": METHODS[method].source, **rec})
                    say(f"{name} {row}: cached {rec['cached_ms']['median']:.2f} ms, full {rec['full_ms']['median']:.2f} ms")
    finally:
        torch.set_num_threads(previous)
    return {"command": command, "geometry": {**asdict(g), "text": g.text}, "block_macs": g.block_macs(), "block_formula": BLOCK_FORMULA,
            "threads": threads, "repeats": repeats, "isolated": isolate, "gemm_macs_per_s": rates, "cpu": _cpu(),
            "load": {"start": list(load), "end": list(os.getloadavg())}, "versions": _versions(),
            "missing": [m for m in flux if all(ROWS[r][0] != m for r in ROWS)], "rows": out_rows}
