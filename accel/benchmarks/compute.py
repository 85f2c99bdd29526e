"""The denoiser compute a method executed: the verdict's speed figure.

Counted the same way for every method, ours and the peers': the multiply-accumulates of every linear layer
and convolution plus the two attention products (Q K^T and A V), on the calls that actually ran inside the
denoiser's forward. Element-wise work (norms, activations, a cache's own forecast arithmetic) is not counted:
on a large model it is a small share, and each method's overhead is measured separately
(:mod:`accel.benchmarks.overhead`). The ratio uncached / method is the compute speedup the caching papers
report as FLOPs speedup.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _arg(args: tuple, kwargs: dict[str, Any], i: int, name: str) -> Any:
    return args[i] if len(args) > i else kwargs[name]


def _linear(args: tuple, kwargs: dict[str, Any], out: torch.Tensor) -> int:
    return out.numel() * _arg(args, kwargs, 1, "weight").shape[-1]


def _conv(args: tuple, kwargs: dict[str, Any], out: torch.Tensor) -> int:
    weight = _arg(args, kwargs, 1, "weight")
    return out.numel() * weight.shape[1] * math.prod(weight.shape[2:])  # weight: (out, in / groups, *kernel)


def _conv_transpose(args: tuple, kwargs: dict[str, Any], out: torch.Tensor) -> int:
    x, weight = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    return x.numel() * weight.shape[1] * math.prod(weight.shape[2:])  # weight: (in, out / groups, *kernel)


def _attention(args: tuple, kwargs: dict[str, Any], out: torch.Tensor) -> int:
    q, k, v = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key"), _arg(args, kwargs, 2, "value")
    lq, lk = q.shape[-2], k.shape[-2]
    heads = math.prod(out.shape[:-2])
    return heads * lq * lk * (q.shape[-1] + v.shape[-1])  # Q K^T and A V


def _matmul(args: tuple, kwargs: dict[str, Any], out: torch.Tensor) -> int:
    a = args[0] if len(args) == 2 else _arg(args, kwargs, 1, "batch1" if "batch1" in kwargs else "mat1")  # (b)addmm(input, a, b)
    return out.numel() * a.shape[-1]


_COUNTED = {
    F.linear: _linear,
    F.conv1d: _conv, F.conv2d: _conv, F.conv3d: _conv,
    F.conv_transpose1d: _conv_transpose, F.conv_transpose2d: _conv_transpose, F.conv_transpose3d: _conv_transpose,
    F.scaled_dot_product_attention: _attention,
    torch.matmul: _matmul, torch.bmm: _matmul, torch.mm: _matmul, torch.baddbmm: _matmul, torch.addmm: _matmul,
    torch.Tensor.matmul: _matmul, torch.Tensor.__matmul__: _matmul,
}


class _Count(TorchFunctionMode):
    def __init__(self, counter: "ComputeCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = _COUNTED.get(func)
        if rule is not None and self.counter.depth > 0 and isinstance(out, torch.Tensor):
            self.counter.macs += rule(args, kwargs, out)
        return out


class ComputeCounter:
    """Counts the multiply-accumulates executed inside the forwards of ``models`` (a pipeline's denoisers: Wan
    2.2's two experts are two) while the context is open.

    >>> with ComputeCounter(pipe.transformer) as c:
    ...     pipe(...)
    >>> c.macs
    """

    def __init__(self, *models: torch.nn.Module) -> None:
        self.models, self.macs, self.depth = models, 0, 0
        self._handles: list[Any] = []
        self._mode = _Count(self)

    def _enter_forward(self, *_: Any, **__: Any) -> None:
        self.depth += 1

    def _leave_forward(self, *_: Any, **__: Any) -> None:
        self.depth -= 1

    def __enter__(self) -> "ComputeCounter":
        self._handles = [h for m in self.models for h in (m.register_forward_pre_hook(self._enter_forward),
                                                          m.register_forward_hook(self._leave_forward, always_call=True))]
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles, self.depth = [], 0
