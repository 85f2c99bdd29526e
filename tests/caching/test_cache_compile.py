"""CG-Taylor with torch.compile (inductor on CPU): compile then enable, enable then compile, and diffusers'
regional compile (``compile_repeated_blocks``) in both orders. Same decisions as eager, and no recompilation on any
step once warmed up (dynamo's graph count stops growing, and ``fail_on_recompile`` does not fire on the third run)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch._dynamo.utils import counters

import accel
from accel import CGTaylorConfig

CFG = CGTaylorConfig(threshold=1e3, warmup_steps=2)  # the first run sees every variant: trace, full, forecast

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


def _regional(model: torch.nn.Module) -> None:
    """diffusers' regional compilation: each transformer block's ``__call__`` compiled on its own."""
    model._repeated_blocks = ["BasicTransformerBlock"]  # DiT does not declare its repeated block class
    model.compile_repeated_blocks()


def _target(model: torch.nn.Module, order: str, config: CGTaylorConfig) -> Any:
    """Compile and enable caching in the given order; returns what the sampling loop calls."""
    if order == "compile_then_enable":
        target = torch.compile(model)  # an OptimizedModule: accel hooks the module it wraps
        accel.enable(target, config)
        return target
    if order == "enable_then_compile":
        accel.enable(model, config)
        return torch.compile(model)
    if order == "regional_then_enable":
        _regional(model)  # the blocks' compiled __call__ runs our hooks (installed as their forward)
        accel.enable(model, config)
    else:  # enable_then_regional
        accel.enable(model, config)
        _regional(model)
    return model


ORDERS = ["compile_then_enable", "enable_then_compile", "regional_then_enable", "enable_then_regional"]


@pytest.mark.parametrize("order", ORDERS)
def test_inductor_composes_without_recompiles(order: str, eager: tuple[torch.Tensor, list[bool]]) -> None:
    torch._dynamo.reset()
    model = _dit()
    target = _target(model, order, CFG)
    try:
        graphs = []
        for run in range(3):
            # The second run still compiles a variant of BasicTransformerBlock.forward (a new trajectory's first
            # full step with the installed hooks); from the third run on any recompilation raises.
            with torch.compiler.set_stance("fail_on_recompile" if run == 2 else "default"):
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


@pytest.fixture(scope="module")
def regional_plain() -> torch.Tensor:
    """The regionally compiled model's output without caching."""
    torch._dynamo.reset()
    try:
        plain = _dit()
        _regional(plain)
        return _loop(plain)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("order", ["regional_then_enable", "enable_then_regional"])
def test_regional_threshold_zero_is_exact(order: str, regional_plain: torch.Tensor) -> None:
    """Threshold 0 never forecasts: regionally compiled and cached equals the regionally compiled model bit for bit."""
    torch._dynamo.reset()
    try:
        ref = regional_plain
        model = _dit()
        target = _target(model, order, CGTaylorConfig(threshold=0.0))
        out = _loop(target)
        assert all(_decisions(target))
        assert torch.equal(out, ref)
        with accel.cached(eager_model := _dit(), CGTaylorConfig(threshold=0.0)):
            torch.testing.assert_close(out, _loop(eager_model), rtol=1e-4, atol=1e-5)
        assert accel.disable(target)
    finally:
        torch._dynamo.reset()
