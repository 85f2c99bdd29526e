"""Shared fixtures: tiny random models (no downloads), the family-table pipelines and the shipped model when its
weights exist."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_dit(dtype: torch.dtype = torch.float32, layers: int = 2):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    m = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1, num_layers=layers,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_type="ada_norm_zero",
    ).eval()
    with torch.no_grad():  # random (not zero-initialised) weights so every block matters
        for p in m.parameters():
            p.normal_(0, 0.1)
    return m.to(dtype)


def tiny_flux(guidance_embeds: bool = False, dtype: torch.dtype = torch.float32):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=[2, 2, 4], guidance_embeds=guidance_embeds,
    ).to(dtype).eval()


def flux_scheduler():
    """FLUX.1's scheduler config: resolution-dependent (dynamic) shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


@pytest.fixture
def tiny_dit_pipe():
    """A 6-block random DiT in the ClassConditionalPipeline (16x16x1, 10 classes), deterministic."""
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    from accel.pipelines import ClassConditionalPipeline

    torch.manual_seed(0)
    model = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                  num_layers=6, sample_size=8, patch_size=2, num_embeds_ada_norm=10).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-zero starts as identity: give every block something to do
            p.normal_(0, 0.05)
    pipe = ClassConditionalPipeline(model, DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipe(pipe, steps: int = 12, labels=(0, 1), guidance: float = 3.0) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(i) for i in range(len(labels))]
    return pipe(class_labels=list(labels), num_inference_steps=steps, generator=gens, guidance_scale=guidance, output_type="pt").images


@pytest.fixture(scope="session")
def digits_pipe():
    """The shipped dit-digits pipeline (skips with a reason when its weights are absent)."""
    from accel.zoo import MODELS

    if not (MODELS["dit-digits"].weights / "model_index.json").is_file():
        pytest.skip("dit-digits weights are not in this checkout; run `accel zoo train dit-digits`")
    from accel.zoo import load

    pipe = load("dit-digits")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_dit_folder(tiny_dit_pipe, tmp_path):
    """The tiny random DiT pipeline saved as a local diffusers folder."""
    path = tmp_path / "tiny-dit"
    tiny_dit_pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: threads only add overhead there, and a lot of it on a
    loaded machine (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def hook_snapshot(model: torch.nn.Module) -> dict[str, tuple[bool, bool]]:
    """Per submodule: (has a diffusers hook registry, has an instance-level forward override)."""
    return {n: ("_diffusers_hook" in m.__dict__, "forward" in m.__dict__) for n, m in model.named_modules()}


class PipelineRun:
    """A pipeline of the model-family table (``accel.coverage``), built from its tiny config, with its call
    kwargs (``cfg``: the sequential-CFG variant) and its uncached reference output."""

    def __init__(self, name: str, cfg: bool = False) -> None:
        from accel.caching.blocks import find_denoiser
        from accel.coverage import pipeline, pipelines

        self.name = name
        self.cls, _, self.spec = pipelines()[name]
        self.pipe, self.kwargs = pipeline(name, cfg=cfg)
        for component in self.pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()  # e.g. DiT's class-label dropout is random in training mode
        self.model = find_denoiser(self.pipe)
        self.ref = self.run()
        # Taken after the reference run: a pipeline's own cache_context() creates an (empty) hook registry.
        self.before = hook_snapshot(self.model)

    def run(self) -> torch.Tensor:
        with torch.no_grad():
            result = self.pipe(**self.kwargs())
        for name in ("images", "frames", "latents"):
            value = getattr(result, name, None)
            if value is not None:
                return torch.as_tensor(value).detach().clone()
        raise AssertionError(f"no output tensor in {type(result).__name__}")

    def assert_clean(self) -> None:
        import accel

        assert not accel.is_enabled(self.pipe)
        now = hook_snapshot(self.model)
        left = sorted(n for n in now if now[n] != self.before[n])
        assert not left, f"hooks or forward overrides left behind after disable on {left}"
        assert not any("_accel_pristine" in m.__dict__ for m in self.model.modules())


def call_counts(model, names):
    """Calls of ``model``'s submodules ``names`` (forward pre-hooks): ``(counts, handles)``; remove the handles after."""
    counts = {n: 0 for n in names}
    mods = dict(model.named_modules())

    def hit(n):
        def f(*_):
            counts[n] += 1
        return f

    return counts, [mods[n].register_forward_pre_hook(hit(n)) for n in names]
