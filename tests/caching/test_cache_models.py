"""CG-Taylor hooks across diffusers model families, each a tiny random model driven by its real pipeline.

The families and their pipelines are the model-family table ``accel.coverage`` (accel/coverage/families/): no
text encoders (prompt embeddings are passed directly), no VAE where the pipeline can return latents, a fresh
seeded generator per call so that every call is deterministic. For every pipeline of the table:

1. the blocks are found in execution order, from the table's first to its last block;
2. ``threshold=0`` never forecasts and gives exactly (``torch.equal``) the uncached output;
3. a permissive threshold forecasts some steps (``forecast_fraction > 0``) and gives a finite output;
4. after ``accel.disable`` the output is exactly the uncached one again and no hook is left behind.

Plus: sequential CFG keeps a state per context, batched CFG, unsupported models, torch.compile.
Runs on one CPU core in 20-60 s (the torch.compile test takes most of it).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import accel
from accel.caching.blocks import find_blocks, find_denoiser
from accel.coverage import STEPS, pipeline, pipelines

from conftest import PipelineRun, hook_snapshot

PERMISSIVE = accel.CGTaylorConfig(threshold=1e3, warmup_steps=1)
EXACT = accel.CGTaylorConfig(threshold=0.0, warmup_steps=1)
PIPELINES = pipelines()
SEQUENTIAL_CFG = [name for name, (_, _, p) in PIPELINES.items() if p.cfg is not None]
_BUILT: dict[tuple[str, bool], PipelineRun] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and the machine has one core to spare)
    yield
    torch.set_num_threads(n)


def _family(name: str, cfg: bool = False) -> PipelineRun:
    if (name, cfg) not in _BUILT:
        _BUILT[name, cfg] = PipelineRun(name, cfg)
    return _BUILT[name, cfg]


@pytest.fixture(params=list(PIPELINES))
def family(request: pytest.FixtureRequest) -> Any:
    fam = _family(request.param)
    yield fam
    accel.disable(fam.pipe)  # a failed test must not leave hooks for the next one


# --------------------------------------------------------------------------------------------- per family


def test_blocks_found_in_execution_order(family: PipelineRun) -> None:
    first, last = family.spec.blocks
    assert type(family.model).__name__ == family.cls
    specs = find_blocks(family.model)
    assert (specs[0].name, specs[-1].name) == (first, last)
    order: list[str] = []
    handles = [s.module.register_forward_pre_hook(lambda *_, n=s.name: order.append(n)) for s in specs]
    try:
        family.run()
    finally:
        for h in handles:
            h.remove()
    names = [s.name for s in specs]
    assert order == names * (len(order) // len(names)) and len(order) >= STEPS * len(names)


def test_threshold_zero_is_exact(family: PipelineRun) -> None:
    assert torch.isfinite(family.ref).all()
    with accel.cached(family.pipe, EXACT):
        out = family.run()
        st = accel.stats(family.pipe)
    assert st.calls >= STEPS and st.forecast_fraction == 0.0
    assert all(r.computed for v in st.steps.values() for r in v)
    assert torch.equal(out, family.ref)
    family.assert_clean()


def test_permissive_threshold_forecasts(family: PipelineRun) -> None:
    accel.enable(family.pipe, PERMISSIVE)
    try:
        out = family.run()
        st = accel.stats(family.pipe)
        # A second call is a new trajectory: the state of the first one is not carried over.
        again = family.run()
        assert torch.equal(again, out)
        assert accel.stats(family.pipe).to_dict() == st.to_dict()
    finally:
        assert accel.disable(family.pipe)
    assert st.forecast_fraction > 0, st.to_dict()
    # Every step counted once per branch (Chroma calls cond and uncond without a cache_context: the second call of
    # a step is branch "default/1", with its own state).
    assert all(sorted({r.step for r in records}) == list(range(STEPS)) for records in st.steps.values()), st.to_dict()
    assert torch.isfinite(out).all()
    assert out.shape == family.ref.shape
    assert not torch.equal(out, family.ref), "forecast steps did not change the output: blocks were not skipped"
    for records in st.steps.values():  # first and last steps always run in full
        assert records[0].computed and records[-1].computed
    family.assert_clean()


def test_disable_restores_exact_output(family: PipelineRun) -> None:
    accel.enable(family.pipe, PERMISSIVE)
    family.run()
    assert accel.disable(family.pipe)
    assert not accel.disable(family.pipe)
    family.assert_clean()
    assert torch.equal(family.run(), family.ref)
    # Enabling again after a disable starts cleanly and forecasts again.
    with accel.cached(family.pipe, PERMISSIVE):
        family.run()
        assert accel.stats(family.pipe).forecast_fraction > 0
    family.assert_clean()
    assert torch.equal(family.run(), family.ref)


@pytest.mark.parametrize("name", ["flux", "sd15"])
def test_enable_before_first_call_leaves_nothing(name: str) -> None:
    """Enabled on a fresh pipeline (no hook registry yet), disabled after a run: no registry, no override left."""
    pipe, kwargs = pipeline(name)
    model = find_denoiser(pipe)
    assert not any("_diffusers_hook" in m.__dict__ for m in model.modules())
    with accel.cached(pipe, PERMISSIVE), torch.no_grad():
        pipe(**kwargs())
        assert accel.stats(pipe).forecast_fraction > 0
    assert not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


# --------------------------------------------------------------------------------------------- CFG


@pytest.mark.parametrize("name", SEQUENTIAL_CFG)
def test_sequential_cfg_keeps_a_state_per_context(name: str) -> None:
    fam = _family(name, cfg=True)
    with accel.cached(fam.pipe, EXACT):
        assert torch.equal(fam.run(), fam.ref)
    with accel.cached(fam.pipe, PERMISSIVE):
        out = fam.run()
        st = accel.stats(fam.pipe)
    fam.assert_clean()
    assert torch.isfinite(out).all() and not torch.equal(out, fam.ref)
    assert set(st.steps) == {"cond", "uncond"}, st.to_dict()
    for ctx, records in st.steps.items():
        # One record per step in each context: the uncond call is not mistaken for a repeat of the cond call.
        assert [r.step for r in records] == list(range(STEPS)), (ctx, records)
        assert any(not r.computed for r in records), (ctx, records)
    # Each context gates on its own block-0 trajectory: the measured errors differ.
    errs = {ctx: [r.error for r in recs if r.error is not None] for ctx, recs in st.steps.items()}
    assert errs["cond"] and errs["uncond"] and errs["cond"] != errs["uncond"]
    assert torch.equal(fam.run(), fam.ref)


def test_batched_cfg() -> None:
    """DiT with guidance > 1 runs cond and uncond as one batch of 2 through each transformer call."""
    fam = _family("dit")
    batches: list[int] = []
    handle = fam.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        with accel.cached(fam.pipe, PERMISSIVE):
            out = fam.run()
            st = accel.stats(fam.pipe)
    finally:
        handle.remove()
    assert batches == [2] * STEPS
    assert list(st.steps) == ["default"] and st.calls == STEPS
    assert st.forecast_fraction > 0 and torch.isfinite(out).all()
    fam.assert_clean()
    assert torch.equal(fam.run(), fam.ref)


# --------------------------------------------------------------------------------------------- errors


class _NoBlocks(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        self.stages = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@pytest.mark.parametrize("make", [lambda: torch.nn.Linear(4, 4), _NoBlocks], ids=["linear", "no_block_lists"])
def test_unsupported_model_raises_pointing_to_supported_models(make: Callable[[], torch.nn.Module]) -> None:
    """The error names the model and where the supported classes are listed (``accel coverage``, docs/coverage.md,
    from the family table, which caching does not import)."""
    model = make()
    before = hook_snapshot(model)
    with pytest.raises(accel.AccelError) as err:
        accel.enable(model, PERMISSIVE)
    msg = str(err.value)
    assert type(model).__name__ in msg and "`accel coverage`" in msg
    assert hook_snapshot(model) == before and not accel.is_enabled(model)


# --------------------------------------------------------------------------------------------- torch.compile


def test_torch_compile_with_caching_matches_eager() -> None:
    fam = PipelineRun("flux")  # FLUX: double- and single-stream blocks (a fresh copy: compiled here)
    with accel.cached(fam.pipe, PERMISSIVE):
        eager = fam.run()
        eager_stats = accel.stats(fam.pipe).to_dict()
    graphs: list[torch.fx.GraphModule] = []

    def eager_backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        graphs.append(gm)  # dynamo's "eager" backend, counting the graphs it is handed
        return gm.forward

    torch._dynamo.reset()
    fam.model.compile(backend=eager_backend)
    try:
        with accel.cached(fam.pipe, PERMISSIVE):
            compiled = fam.run()
            compiled_stats = accel.stats(fam.pipe).to_dict()
        assert graphs, "torch.compile captured no graph"
        assert compiled_stats == eager_stats and compiled_stats["forecast_fraction"] > 0
        assert torch.equal(compiled, eager)
        fam.assert_clean()
        assert torch.equal(fam.run(), fam.ref)
    finally:
        torch._dynamo.reset()
