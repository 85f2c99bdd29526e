"""Benchmark of the cache ops: time and effective bandwidth of each backend against the eager op chain.

For every size, dtype and op this times three implementations on one device:

- ``eager``: the chain of PyTorch ops a cache would write without these kernels (a temporary per term),
- ``torch``: the reference in ``reference.py`` (in-place float32 accumulation; the CPU backend),
- ``triton``: the fused kernel (CUDA only; skipped elsewhere or when triton is not installed).

Effective bandwidth is the traffic of an ideal one-pass kernel (below, ``op_bytes``) divided by the
time, for all three, so the figures compare directly and the Triton one is comparable to the peak HBM
bandwidth. Caches are flushed between CUDA timings so that small sizes are not served from L2.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from accel.kernels import reference
from accel.kernels.dispatch import KernelError

__all__ = ["PRESETS", "PEAK_GBPS", "parse_sizes", "parse_dtypes", "peak_bandwidth_gbps", "run_benchmark", "to_markdown", "plot_png"]

# Hidden states (batch x tokens x channels) from a tiny DiT to FLUX (batch 2 = classifier-free guidance).
PRESETS: dict[str, tuple[int, ...]] = {
    "dit-digits": (2, 64, 64),  # accel.zoo "dit-digits": 16x16 px, patch 2, 4 heads x 16
    "dit-xl-256": (2, 256, 1152),  # DiT-XL/2 at 256 px
    "sd3-1024": (2, 4096, 1536),  # SD3-medium-like at 1024 px
    "flux-b1": (1, 4096, 3072),  # FLUX.1 at 1024 px: 4096 image tokens x 3072
    "flux-b2": (2, 4096, 3072),
    "flux-b4": (4, 4096, 3072),
}
DEFAULT_SIZES = ",".join(PRESETS)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPS = ("forecast", "update", "error")
TARGET_FRAC_PEAK = 0.8  # the kernels' goal: >= 80% of peak HBM bandwidth on FLUX-sized tensors...
TARGET_SPEEDUP = 2.0  # ... and >= 2x faster than the eager chain
# Peak memory bandwidth in GB/s (1e9 B/s) from the vendors' data sheets, matched by substring of the CUDA
# device name, most specific first.
PEAK_GBPS: list[tuple[str, float]] = [
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5 (HBM3), the name reads "NVIDIA H100 80GB HBM3"
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100-PCIE-40GB", 1555.0),
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("RTX 4090", 1008.0),
]


def parse_sizes(spec: str) -> dict[str, tuple[int, ...]]:
    """``"flux-b1,2x77x512"`` -> ``{"flux-b1": (1, 4096, 3072), "2x77x512": (2, 77, 512)}`` (presets or BxTxC...)."""
    sizes: dict[str, tuple[int, ...]] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in PRESETS:
            sizes[item] = PRESETS[item]
            continue
        try:
            shape = tuple(int(d) for d in item.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) < 2 or min(shape) < 1:
            raise KernelError(f"size {item!r} is neither a preset ({', '.join(PRESETS)}) nor BxTxC... with positive ints, e.g. 2x4096x3072")
        sizes[item] = shape
    if not sizes:
        raise KernelError(f"no sizes given: pass presets ({', '.join(PRESETS)}) or shapes like 2x4096x3072, comma-separated")
    return sizes


def parse_dtypes(spec: str) -> dict[str, torch.dtype]:
    """``"fp32,bf16"`` -> ``{"fp32": torch.float32, "bf16": torch.bfloat16}``."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise KernelError(f"unknown dtype(s) {bad or spec!r}: use a comma-separated subset of {', '.join(DTYPES)}")
    return {n: DTYPES[n] for n in names}


def peak_bandwidth_gbps(device: torch.device) -> tuple[float | None, str]:
    """(peak GB/s, device name) for a CUDA device from :data:`PEAK_GBPS`; (None, name) when unknown or CPU."""
    if device.type != "cuda":
        import platform

        return None, platform.processor() or platform.machine() or "cpu"
    name = torch.cuda.get_device_name(device)
    for key, gbps in PEAK_GBPS:
        if key.lower() in name.lower():
            return gbps, name
    return None, name


# ------------------------------------------------------------------------------------------ eager chains


def eager_forecast(factors: torch.Tensor, offset: float, n_valid: int) -> torch.Tensor:
    """The unfused chain: one temporary per cast, product and sum."""
    terms = [factors[i].float() * (offset**i / math.factorial(i)) for i in range(n_valid)]
    return sum(terms[1:], terms[0]).to(factors.dtype)


def eager_update(factors: torch.Tensor, new: torch.Tensor, delta: float, n_valid: int) -> int:
    """The unfused chain: build every new difference, then copy them into the buffer."""
    new_n = min(n_valid + 1, factors.shape[0])
    carries = [new.float()]
    for i in range(new_n - 1):
        carries.append((carries[i] - factors[i].float()) / delta)
    for i in range(new_n):
        factors[i].copy_(carries[i])
    return new_n


def eager_error(factors: torch.Tensor, offset: float, n_valid: int, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused chain: materialise the forecast, then two reductions."""
    terms = [factors[i].float() * (offset**i / math.factorial(i)) for i in range(n_valid)]
    fhat = sum(terms[1:], terms[0])
    a = actual.float()
    return (fhat - a).abs().flatten(1).sum(1), a.abs().flatten(1).sum(1)


# ------------------------------------------------------------------------------------------------ timing


def op_bytes(op: str, shape: tuple[int, ...], elem: int, orders: int) -> int:
    """Bytes an ideal one-pass kernel moves for ``op`` with a full buffer of ``orders`` (= K+1) orders.

    forecast: read K+1 orders, write one. update: read ``new`` and the K orders still needed, write K+1.
    error: read K+1 orders and ``actual`` (the partial sums are negligible). ``new`` is taken in the
    buffer's dtype.
    """
    n = math.prod(shape) * elem
    return {"forecast": (orders + 1) * n, "update": (1 + (orders - 1) + orders) * n, "error": (orders + 1) * n}[op]


def _time_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in ms (CUDA events with an L2 flush before each call on CUDA)."""
    fn()  # warm-up: Triton compiles here, allocator caches fill
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device)  # larger than any current L2
    times = []
    for _ in range(repeats):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _impls(device: torch.device) -> dict[str, dict[str, Callable]]:
    impls: dict[str, dict[str, Callable]] = {
        "eager": {"forecast": eager_forecast, "update": eager_update, "error": eager_error},
        "torch": {"forecast": reference.taylor_forecast, "update": reference.taylor_update, "error": reference.forecast_error},
    }
    from accel.kernels.dispatch import triton_installed

    if device.type == "cuda" and triton_installed():
        from accel.kernels import triton_ops

        impls["triton"] = {"forecast": triton_ops.taylor_forecast, "update": triton_ops.taylor_update, "error": triton_ops.forecast_error}
    return impls


def _bench_case(impls, op: str, shape, dtype, order: int, repeats: int, device: torch.device) -> dict[str, float]:
    orders = order + 1
    gen = torch.Generator(device="cpu").manual_seed(0)
    factors = torch.randn((orders, *shape), generator=gen).to(device=device, dtype=dtype)
    other = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    times = {}
    for name, fns in impls.items():
        fn = fns[op]
        if op == "forecast":
            call = lambda fn=fn: fn(factors, 1.5, orders)  # noqa: E731
        elif op == "update":
            call = lambda fn=fn: fn(factors, other, 1.0, orders)  # noqa: E731
        else:
            call = lambda fn=fn: fn(factors, 1.5, orders, other)  # noqa: E731
        times[name] = _time_ms(call, repeats, device)
    return times


def run_benchmark(
    sizes: dict[str, tuple[int, ...]],
    dtypes: dict[str, torch.dtype],
    *,
    order: int = 2,
    repeats: int = 10,
    device: str | torch.device = "cpu",
    peak_gbps: float | None = None,
    ops: tuple[str, ...] = OPS,
    callback: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Time every (size, dtype, op, implementation); returns a JSON-ready dict with ``rows`` and device facts.

    ``callback(done, total, info)`` is called after each (size, dtype, op) case.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KernelError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if order < 0 or repeats < 1:
        raise KernelError(f"order must be >= 0 and repeats >= 1, got order={order}, repeats={repeats}")
    table_peak, device_name = peak_bandwidth_gbps(device)
    peak = peak_gbps if peak_gbps is not None else table_peak
    impls = _impls(device)
    rows, total, done = [], len(sizes) * len(dtypes) * len(ops), 0
    for size_name, shape in sizes.items():
        for dtype_name, dtype in dtypes.items():
            for op in ops:
                times = _bench_case(impls, op, shape, dtype, order, repeats, device)
                nbytes = op_bytes(op, shape, torch.empty((), dtype=dtype).element_size(), order + 1)
                for impl, ms in times.items():
                    gbps = nbytes / (ms * 1e-3) / 1e9
                    rows.append({
                        "size": size_name, "shape": list(shape), "dtype": dtype_name, "op": op, "impl": impl,
                        "time_ms": ms, "bytes": nbytes, "gbps": gbps,
                        "frac_peak": gbps / peak if peak else None, "speedup_vs_eager": times["eager"] / ms,
                    })
                done += 1
                if callback is not None:
                    callback(done, total, f"{size_name} {dtype_name} {op}")
    triton_version = None
    if "triton" in impls:
        import triton

        triton_version = triton.__version__
    return {
        "device": str(device), "device_name": device_name, "peak_gbps": peak,
        "peak_source": "option" if peak_gbps is not None else ("table" if table_peak else None),
        "order": order, "n_valid": order + 1, "repeats": repeats, "torch": torch.__version__,
        "triton": triton_version, "impls": list(impls), "rows": rows,
    }


def to_markdown(result: dict) -> str:
    """A Markdown report: one line of device facts, then one table row per (size, dtype, op, impl)."""
    peak = result["peak_gbps"]
    peak_text = f"{peak:.0f} GB/s ({result['peak_source']})" if peak else "unknown (pass --peak-gbps)"
    lines = [
        f"Device: {result['device_name']} ({result['device']}); peak bandwidth: {peak_text}; "
        f"K+1 = {result['n_valid']} orders; median of {result['repeats']}; torch {result['torch']}"
        f"{'; triton ' + result['triton'] if result['triton'] else '; no Triton backend on this device'}.",
        "",
        "| size | shape | dtype | op | impl | time (ms) | GB/s | % of peak | speedup vs eager |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        frac = f"{100 * r['frac_peak']:.0f}%" if r["frac_peak"] is not None else "-"
        shape = "x".join(str(d) for d in r["shape"])
        lines.append(f"| {r['size']} | {shape} | {r['dtype']} | {r['op']} | {r['impl']} | {r['time_ms']:.3f} | {r['gbps']:.1f} | {frac} | {r['speedup_vs_eager']:.2f}x |")
    return "\n".join(lines + targets_summary(result)) + "\n"


def targets_summary(result: dict) -> list[str]:
    """Markdown lines checking the kernels' targets on FLUX-sized tensors (4096 x 3072, any batch): the Triton
    kernels at >= 80% of peak bandwidth and >= 2x faster than the eager chain. Empty without Triton rows."""
    rows = [r for r in result["rows"] if r["impl"] == "triton" and tuple(r["shape"][-2:]) == (4096, 3072)]
    if not rows:
        return []
    out = ["", f"Targets on FLUX-sized tensors (Triton): >= {100 * TARGET_FRAC_PEAK:.0f}% of peak, >= {TARGET_SPEEDUP:.0f}x vs eager.", ""]
    for r in rows:
        frac_ok = "unknown peak" if r["frac_peak"] is None else ("met" if r["frac_peak"] >= TARGET_FRAC_PEAK else "MISSED")
        speed_ok = "met" if r["speedup_vs_eager"] >= TARGET_SPEEDUP else "MISSED"
        frac = "-" if r["frac_peak"] is None else f"{100 * r['frac_peak']:.0f}%"
        out.append(f"- {r['size']} {r['dtype']} {r['op']}: {frac} of peak ({frac_ok}), {r['speedup_vs_eager']:.2f}x vs eager ({speed_ok})")
    return out


def plot_png(result: dict, path) -> None:
    """Bar chart of effective bandwidth per size, one panel per op, one bar per implementation and dtype."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise KernelError("--png needs matplotlib: `pip install accel-diffusion[bench]`") from exc
    rows = result["rows"]
    ops = [op for op in OPS if any(r["op"] == op for r in rows)]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    series = list(dict.fromkeys((r["impl"], r["dtype"]) for r in rows))
    fig, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    width = 0.8 / max(len(series), 1)
    for ax, op in zip(axes[0], ops):
        for k, (impl, dtype) in enumerate(series):
            vals = {r["size"]: r["gbps"] for r in rows if r["op"] == op and r["impl"] == impl and r["dtype"] == dtype}
            xs = [i + k * width for i, s in enumerate(sizes) if s in vals]
            ax.bar(xs, [vals[s] for s in sizes if s in vals], width, label=f"{impl} {dtype}")
        if result["peak_gbps"]:
            ax.axhline(result["peak_gbps"], color="k", linestyle="--", linewidth=1, label="peak")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], sizes, rotation=30, ha="right")
        ax.set_title(op)
        ax.set_ylabel("effective GB/s")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"accel.kernels on {result['device_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
