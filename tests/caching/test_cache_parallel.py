"""CG-Taylor under diffusers' context parallelism: two CPU processes (gloo), Ulysses attention on a tiny FLUX.

Each rank's block 0 sees half the tokens; the gate all-reduces its sums, so both ranks must take the decisions
of the unsharded single-process run (and not hang in the next collective, as they would if they disagreed).

Two facts about diffusers 0.42.1 on CPU, found by running it:
- ``ModelMixin.enable_parallelism`` fails on a CPU-only machine before doing anything: ``_resolve_parallel_config``
  (diffusers/models/modeling_utils.py, line 1719) computes ``rank % torch.accelerator.device_count()``, and the
  count is 0 without an accelerator: ``ZeroDivisionError: integer modulo by zero``. The workers below patch the
  count to 1 for that call only (the device becomes ``cpu:0``); everything after it (device mesh on ``cpu``, the
  split/gather hooks, Ulysses all-to-all over gloo) runs unpatched.
- Ring attention (``ring_degree=2``) does not run with the only CPU backend, ``native``: its forward op raises
  ``ValueError: Native attention does not support return_lse=True`` (attention_dispatch.py,
  ``_native_attention_forward_op``); the ring-capable backends (flash, cuDNN, sage) need CUDA. So only Ulysses is
  tested here; the gate's reduction is the same for both (it reduces over the flattened ring x ulysses group).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

import accel
from accel import CGTaylorConfig

CFG = CGTaylorConfig(threshold=0.06, warmup_steps=2)
STEPS = 10
ORDERS = ("parallel_then_cache", "cache_then_parallel")
TIMEOUT_S = 240

pytestmark = pytest.mark.usefixtures("one_thread")


def _flux() -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4],
    ).eval()


def _loop(model: torch.nn.Module) -> torch.Tensor:
    """A flow-matching Euler loop on 2 samples of 16 image tokens and 6 text tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 4, generator=g)
    text, pooled = torch.randn(2, 6, 16, generator=g), torch.randn(2, 16, generator=g)
    ids = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(16, 2)
    img_ids = torch.cat([torch.zeros(16, 1), ids], dim=1)
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(STEPS)
    with torch.no_grad():
        for t in sched.timesteps:
            v = model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t.expand(2) / 1000,
                      img_ids=img_ids, txt_ids=torch.zeros(6, 3), return_dict=False)[0]
            x = sched.step(v, t, x).prev_sample
    return x


def _run(model: torch.nn.Module) -> dict[str, Any]:
    out = _loop(model)
    recs = accel.stats(model).steps["default"]
    return {"out": out, "computed": [r.computed for r in recs], "errors": [r.error for r in recs]}


def _parallel(model: torch.nn.Module) -> None:
    from diffusers import ContextParallelConfig

    with mock.patch.object(torch.accelerator, "device_count", return_value=1):  # see the module docstring
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))


def _worker(rank: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = {}
        for order in ORDERS:
            model = _flux()
            if order == "parallel_then_cache":
                _parallel(model)
                accel.enable(model, CFG)
            else:
                accel.enable(model, CFG)
                _parallel(model)
            results[order] = _run(model)
            accel.disable(model)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path) -> list[dict[str, Any]]:
    """Run ``_worker`` on 2 forked processes; fail (and kill them) if they have not finished within TIMEOUT_S.

    Forked, not spawned: the ranks inherit the imported torch and diffusers (a fresh import costs minutes on a
    loaded 2-core machine)."""
    import torch.distributed.device_mesh  # noqa: F401  (imported once here, not in each rank)
    import torch.multiprocessing as mp
    from diffusers import ContextParallelConfig  # noqa: F401

    ctx = mp.start_processes(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"context-parallel ranks did not finish within {TIMEOUT_S} s (a collective hung?)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_context_parallel_ranks_take_the_unsharded_decisions(tmp_path: Path) -> None:
    model = _flux()
    with accel.cached(model, CFG):
        ref = _run(model)
    assert 0 < sum(not c for c in ref["computed"]) < STEPS - CFG.warmup_steps, f"want a mix of decisions: {ref['computed']}"
    gated = [e for e in ref["errors"] if e is not None]
    assert min(abs(e - CFG.threshold) for e in gated) > 1e-3, "an error this close to the threshold could flip"
    ranks = _spawn(tmp_path)
    for order in ORDERS:
        r0, r1 = ranks[0][order], ranks[1][order]
        assert r0["computed"] == r1["computed"] == ref["computed"], order
        for e0, e1, e in zip(r0["errors"], r1["errors"], ref["errors"]):
            assert (e0 is None) == (e1 is None) == (e is None) and (e is None or e0 == e1 == pytest.approx(e, rel=1e-4))
        torch.testing.assert_close(r0["out"], ref["out"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r1["out"], r0["out"], rtol=0, atol=0)


def test_no_group_without_context_parallelism() -> None:
    from accel.caching.parallel import shard_group

    assert shard_group(_flux()) is None  # no torch.distributed, no parallel config: the gate reduces nothing
