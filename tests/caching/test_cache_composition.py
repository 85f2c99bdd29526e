"""CG-Taylor composed with what diffusers users already run: LoRA adapters (load, switch, re-weight, fuse,
unload, and a switch mid-trajectory), layerwise casting, torchao weight-only int8, group offloading.

A tiny random FLUX pipeline (text-to-image, prompt embeddings given, latents out). Every case: ``threshold=0``
is bit-exact against the same setup uncached, a permissive threshold forecasts with a finite output.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import accel
from accel import CGTaylorConfig

from accel.coverage import pipeline, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 6
EXACT = CGTaylorConfig(threshold=0.0, warmup_steps=1)
PERMISSIVE = CGTaylorConfig(threshold=1e3, warmup_steps=1)


def _flux() -> tuple[Any, Any]:
    pipe, kwargs = pipeline("flux")
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.eval()
    return pipe, lambda **kw: {**kwargs(), "num_inference_steps": STEPS, **kw}


def _run(pipe: Any, kwargs: Any, config: CGTaylorConfig | None = None, **kw: Any) -> tuple[torch.Tensor, Any]:
    """(output, stats) of one call, cached with ``config`` (uncached, stats None, when it is None)."""
    if config is None:
        with torch.no_grad():
            return pipe(**kwargs(**kw)).images.detach().clone(), None
    with accel.cached(pipe, config), torch.no_grad():
        out = pipe(**kwargs(**kw)).images.detach().clone()
        return out, accel.stats(pipe)


def _exact_and_forecasts(pipe: Any, kwargs: Any) -> torch.Tensor:
    ref, _ = _run(pipe, kwargs)
    exact, st0 = _run(pipe, kwargs, EXACT)
    assert torch.equal(exact, ref) and st0.forecast_fraction == 0
    out, st = _run(pipe, kwargs, PERMISSIVE)
    assert st.forecast_fraction > 0, st.to_dict()
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    return ref


# --------------------------------------------------------------------------------------------- LoRA


def _lora(seed: int) -> dict[str, torch.Tensor]:
    """A random rank-2 LoRA on the attention projections of the tiny FLUX transformer, in diffusers' format."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    donor = tiny_model("FluxTransformer2DModel")
    torch.manual_seed(seed)
    donor.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in donor.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    return {f"transformer.{k}": v.clone() for k, v in get_peft_model_state_dict(donor).items()}


def _lora_changes() -> list[tuple[str, Any]]:
    return [
        ("load a", lambda p: p.load_lora_weights(_lora(1), adapter_name="a")),
        ("load b, mix", lambda p: (p.load_lora_weights(_lora(2), adapter_name="b"), p.set_adapters(["a", "b"], [1.0, 0.5]))),
        ("only b", lambda p: p.set_adapters("b")),
        ("fuse", lambda p: p.fuse_lora(adapter_names=["b"])),
        ("unfuse", lambda p: p.unfuse_lora()),
        ("unload", lambda p: p.unload_lora_weights()),
    ]


def test_lora_changes_between_calls_stay_exact() -> None:
    pytest.importorskip("peft")
    pipe, kwargs = _flux()
    base, _ = _run(pipe, kwargs)
    refs = {}
    for name, change in _lora_changes():  # uncached references, one per state of the adapters
        change(pipe)
        refs[name], _ = _run(pipe, kwargs)
    # fuse + unfuse adds and subtracts the LoRA delta: the weights come back up to rounding only.
    assert torch.allclose(refs["unload"], base, atol=1e-5) and not torch.allclose(refs["load a"], base, atol=1e-3)
    assert not torch.equal(refs["only b"], refs["load b, mix"])
    pipe, kwargs = _flux()  # the same seeded build: fuse + unfuse left the first one's weights rounded
    accel.enable(pipe, EXACT)
    try:  # the same changes with caching on all along
        for name, change in _lora_changes():
            change(pipe)
            with torch.no_grad():
                out = pipe(**kwargs()).images
            assert torch.equal(out, refs[name]), name
            assert accel.stats(pipe).forecast_fraction == 0
    finally:
        accel.disable(pipe)
    pipe.load_lora_weights(_lora(1), adapter_name="a")
    out, st = _run(pipe, kwargs, PERMISSIVE)
    assert st.forecast_fraction > 0 and torch.isfinite(out).all() and not torch.equal(out, refs["load a"])


def test_adapter_switched_mid_trajectory_restarts_the_factors() -> None:
    """A callback switches the adapter after step 2: the old factors describe another function, so step 3
    must warm up again (run in full and reseed), not forecast from them."""
    pytest.importorskip("peft")
    pipe, kwargs = _flux()
    pipe.load_lora_weights(_lora(1), adapter_name="a")
    pipe.load_lora_weights(_lora(2), adapter_name="b")

    def switch(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        p.set_adapters("b" if i == 2 else p.get_active_adapters())
        return kw

    pipe.set_adapters("a")
    ref, _ = _run(pipe, kwargs, callback_on_step_end=switch)
    pipe.set_adapters("a")
    exact, _ = _run(pipe, kwargs, EXACT, callback_on_step_end=switch)
    assert torch.equal(exact, ref)
    pipe.set_adapters("a")
    out, st = _run(pipe, kwargs, PERMISSIVE, callback_on_step_end=switch)
    recs = st.steps["cond"]
    assert [r.reason for r in recs] == ["warmup", "forecast", "forecast", "warmup", "forecast", "last"], st.to_dict()
    assert torch.isfinite(out).all()
    # Without a switch the same step is forecast: the restart came from the adapter change.
    pipe.set_adapters("a")
    _, plain = _run(pipe, kwargs, PERMISSIVE)
    assert not plain.steps["cond"][3].computed


# --------------------------------------------------------------------------------------------- casting, quantization, offloading


@pytest.mark.parametrize("storage", [torch.float8_e4m3fn, torch.bfloat16], ids=["float8", "bfloat16"])
def test_layerwise_casting(storage: torch.dtype) -> None:
    pipe, kwargs = _flux()
    plain, _ = _run(pipe, kwargs)
    pipe.transformer.enable_layerwise_casting(storage_dtype=storage, compute_dtype=torch.float32)
    assert pipe.transformer.transformer_blocks[0].attn.to_q.weight.dtype == storage
    ref = _exact_and_forecasts(pipe, kwargs)
    assert not torch.equal(ref, plain)  # the casting is really in effect


def test_torchao_int8_weight_only(tmp_path: Any) -> None:
    pytest.importorskip("torchao")
    from diffusers import FluxTransformer2DModel, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    pipe, kwargs = _flux()
    plain, _ = _run(pipe, kwargs)
    pipe.transformer.save_pretrained(tmp_path)
    pipe.transformer = FluxTransformer2DModel.from_pretrained(
        tmp_path, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()), torch_dtype=torch.float32
    ).eval()
    w = pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert "torchao" in type(w).__module__, type(w)
    ref = _exact_and_forecasts(pipe, kwargs)
    assert not torch.equal(ref, plain)  # the quantization is really in effect


def test_group_offloading_on_cpu() -> None:
    pipe, kwargs = _flux()
    plain, _ = _run(pipe, kwargs)
    cpu = torch.device("cpu")
    pipe.transformer.enable_group_offload(onload_device=cpu, offload_device=cpu, offload_type="block_level", num_blocks_per_group=1)
    ref = _exact_and_forecasts(pipe, kwargs)
    assert torch.equal(ref, plain)  # offloading to the same device changes nothing
    assert pipe.transformer.transformer_blocks[0]._diffusers_hook.get_hook("group_offloading") is not None
