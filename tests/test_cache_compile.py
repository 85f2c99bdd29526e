"""CG-Taylor with torch.compile (inductor on CPU): compile then enable, enable then compile, and diffusers'
regional compile (``compile_repeated_blocks``). Same decisions as eager, and no recompilation per step once
warmed up (dynamo's graph count stops growing)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch._dynamo.utils import counters

import accel
from accel import CGTaylorConfig

CFG = CGTaylorConfig(threshold=1e3, warmup_steps=1)

pytestmark = pytest.mark.usefixtures("one_thread")



def _dit() -> torch.nn.Module:
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1, num_layers=3,
                                 sample_size=8, patch_size=2, num_embeds_ada_norm=10).eval()


def _loop(model: Callable[..., Any], steps: int = 5) -> torch.Tensor:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler()
    sched.set_timesteps(steps)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(x, timestep=t.expand(2), class_labels=torch.tensor([1, 2])).sample, t, x).prev_sample
    return x


def _decisions(model: Any) -> list[bool]:
    return [r.computed for r in accel.stats(model).steps["default"]]


@pytest.fixture(scope="module")
def eager() -> tuple[torch.Tensor, list[bool]]:
    model = _dit()
    with accel.cached(model, CFG):
        out = _loop(model)
        return out, _decisions(model)


@pytest.mark.parametrize("order", ["compile_then_enable", "enable_then_compile", "regional"])
def test_inductor_composes_without_recompiles(order: str, eager: tuple[torch.Tensor, list[bool]]) -> None:
    torch._dynamo.reset()
    model = _dit()
    if order == "compile_then_enable":
        target = torch.compile(model)  # an OptimizedModule: accel hooks the module it wraps
        accel.enable(target, CFG)
    elif order == "enable_then_compile":
        accel.enable(model, CFG)
        target = torch.compile(model)
    else:
        model._repeated_blocks = ["BasicTransformerBlock"]  # DiT does not declare its repeated block class
        model.compile_repeated_blocks()
        accel.enable(model, CFG)
        target = model
    try:
        graphs = []
        for _ in range(3):
            out = _loop(target)
            graphs.append(counters["stats"]["unique_graphs"])
            assert _decisions(target) == eager[1] and not all(eager[1])
            assert torch.allclose(out, eager[0], atol=1e-4)
        assert graphs[0] > 0, "nothing was compiled"
        assert graphs[2] == graphs[1], f"recompiled after warm-up: unique graphs per run {graphs}"
        assert accel.disable(target)
        assert not any("_diffusers_hook" in m.__dict__ and m._diffusers_hook.hooks for m in model.modules())
    finally:
        torch._dynamo.reset()
