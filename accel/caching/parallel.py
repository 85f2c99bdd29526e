"""CG-Taylor under diffusers' context parallelism (``model.enable_parallelism(config=ContextParallelConfig(...))``).

Context parallelism (Ulysses or ring attention) shards the token sequence across the ranks of a process group: each
rank's block 0 sees only its own tokens. A gate computed on a shard would let ranks decide differently, and a rank
that skips the blocks would then wait forever in a collective that the others never enter. So the gate's sums
(``sum |error|`` and ``sum |reference|`` per sample, and the forecast's finiteness) are all-reduced over the group
before dividing: every rank takes the decision the unsharded model would take. Without a sharded model (no
``torch.distributed``, or data/tensor parallelism, where every rank holds whole sequences) nothing is reduced.
"""

from __future__ import annotations

from typing import Any

import torch


def shard_group(model: torch.nn.Module) -> Any:
    """The process group over which diffusers' context parallelism shards ``model``'s sequence, or None.

    Read on every call (cheap attribute lookups), so ``enable_parallelism`` may come before or after ``accel.enable``.
    """
    pc = getattr(model, "_parallel_config", None)
    cp = getattr(pc, "context_parallel_config", None)
    mesh = getattr(cp, "_flattened_mesh", None)
    if mesh is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    return mesh.get_group() if mesh.size() > 1 else None


def all_reduce_sum(x: torch.Tensor, group: Any) -> torch.Tensor:
    """``x`` summed over the ranks of ``group`` (``x`` itself when there is no group). Same shape on every rank."""
    if group is None:
        return x
    x = x.contiguous().clone()
    torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM, group=group)
    return x


def sum_over_shards(err: torch.Tensor, ref: torch.Tensor, group: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A gate's error and reference sums over the ranks of ``group``, in one collective (unchanged without one)."""
    if group is None:
        return err, ref
    both = all_reduce_sum(torch.stack([err, ref]), group)
    return both[0], both[1]
