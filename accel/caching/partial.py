"""X-Slim's early-warning tier under CG-Taylor's gate: a partial refresh between a forecast and a full step.

X-Slim (arXiv 2512.12604) reuses steps up to an early-warning line, refreshes part of the network between that line
and a critical one, and computes in full past the critical line. Under the gate the lines are on block 0's forecast
error: below the threshold the step is forecast (the gate passes); a step the gate refuses is a partial refresh while
the errors of the steps since the last full step, this one's included, stay under ``partial_ratio`` x threshold (a
partial refresh does not reset what X-Slim accumulates towards its critical line); past the line it runs in full.

On a partial refresh block 0 and the forecast block run, and so do the middle blocks whose residual (output minus
input, on every stream a block updates) changed most between the last two full steps; the ``partial_share`` of them
that changed least add the residual they had at the last full step instead of running, as X-Slim's block-level
refresh does. The step then counts as computed: the streams refresh from its output. Full steps store each middle
block's residual (one copy of its outputs per block and branch), and a branch's first partial refresh waits for two
full steps. Never on the gradient path, in probe mode or on U-Nets (their blocks change the tensor's shape).
"""

from __future__ import annotations

from typing import Any

import torch

from .blocks import BlockSpec


class Residuals:
    """Per branch: each middle block's residual at the last full step, how much it changed since the full step
    before, and the blocks a partial refresh reuses."""

    def __init__(self) -> None:
        self.stored: dict[int, tuple[torch.Tensor | None, ...] | None] = {}  # block index -> residual per output
        self.change: dict[int, float] = {}
        self.reuse: frozenset[int] = frozenset()
        self.spent = 0.0  # block-0 errors of the gated steps since the last full step (forecast and partial)

    @property
    def nbytes(self) -> int:
        return sum(r.numel() * r.element_size() for rs in self.stored.values() if rs for r in rs if r is not None)


def _outputs(spec: BlockSpec, out: Any) -> tuple[Any, ...]:
    return out if isinstance(out, tuple) else (out,)


def _inputs(spec: BlockSpec, args: tuple[Any, ...], kwargs: dict[str, Any], n: int) -> list[Any]:
    """Per output position, the input tensor it updates (None where there is none)."""
    if n == 1:
        return [spec.hidden_in(args, kwargs)]
    ins: list[Any] = [None] * n
    ins[spec.hidden_index if spec.hidden_index is not None else 0] = spec.hidden_in(args, kwargs)
    streams = spec.streams if spec.streams is not None else (
        {spec.encoder_index: "encoder_hidden_states"} if spec.encoder_index is not None else {})
    for i, name in streams.items():
        ins[i] = spec.arg(name, args, kwargs)
    return ins


def store(res: Residuals, index: int, spec: BlockSpec, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
    """A full step ran middle block ``index``: keep its residual and how much its hidden residual changed."""
    tupled = spec.hidden_index is not None and spec.tuple_len is not None
    if spec.kind != "transformer" or isinstance(out, tuple) != tupled:
        res.stored[index] = None  # U-Net blocks change the tensor's shape; an output layout passthrough does not know
        return
    outs = _outputs(spec, out)
    ins = _inputs(spec, args, kwargs, len(outs))
    rs: list[torch.Tensor | None] = []
    for o, i in zip(outs, ins):
        ok = isinstance(o, torch.Tensor) and isinstance(i, torch.Tensor) and o.shape == i.shape
        rs.append((o - i).detach() if ok else None)
    h = spec.hidden_index if tupled else 0
    if rs[h] is None or any(r is None and isinstance(o, torch.Tensor) for r, o in zip(rs, outs)):
        res.stored[index] = None  # an output that is not its input plus a residual: this block always runs
        return
    old = res.stored.get(index)
    if old:
        res.change[index] = float((rs[h] - old[h]).abs().mean() / old[h].abs().mean().clamp_min(1e-30))
    res.stored[index] = tuple(rs)


def choose(res: Residuals, middle: int, share: float) -> None:
    """After a full step: the ``share`` of the middle blocks whose residual changed least are reused on partial
    refreshes (none until every reusable block has a change measured)."""
    usable = [i for i in range(middle) if res.stored.get(i) is not None]
    if not usable or any(i not in res.change for i in usable):
        res.reuse = frozenset()
        return
    k = int(share * middle)
    res.reuse = frozenset(sorted(usable, key=lambda i: res.change[i])[:k])


def reused(res: Residuals, index: int, spec: BlockSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What middle block ``index`` returns on a partial refresh that reuses it: each input plus its stored residual."""
    rs = res.stored[index]
    ins = _inputs(spec, args, kwargs, len(rs))
    outs = tuple(i + r.to(i.dtype) if r is not None else i for i, r in zip(ins, rs))
    return outs if spec.hidden_index is not None and spec.tuple_len is not None else outs[0]
