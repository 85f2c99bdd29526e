"""CG-Taylor keeps one state per branch: per cache context, and per call position when a pipeline calls the
denoiser several times at the same timestep without naming its calls (true CFG, reference images)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest
import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

import accel
from accel import CGTaylorConfig

MODERATE = CGTaylorConfig(threshold=0.05, warmup_steps=2)
PERMISSIVE = CGTaylorConfig(threshold=1e3, warmup_steps=1)

pytestmark = pytest.mark.usefixtures("one_thread")



@contextlib.contextmanager
def _context(model: torch.nn.Module, name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    _set_cache_context(model, CacheContext(name))
    try:
        yield
    finally:
        _set_cache_context(model, None)


def _sample(model: torch.nn.Module, mode: str, steps: int = 6, branches: int = 2, only: int | None = None,
            guided: bool = True) -> dict[int, list[torch.Tensor]]:
    """A CFG sampling loop on a class-conditional DiT with ``branches`` label sets per step.

    mode "batched": one call per step on the concatenated branches; "named": one call per branch in
    ``cache_context("b<i>")``; "order": one call per branch, no context. ``only``: run just that branch;
    ``guided=False``: the trajectory follows branch 0 alone (the other branches only observe).
    Returns each branch's denoiser outputs, step by step.
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    sched.set_timesteps(steps)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = [torch.tensor([(i * 3 + 1) % 10, (i * 3 + 2) % 10]) for i in range(branches)]
    outs: dict[int, list[torch.Tensor]] = {i: [] for i in range(branches)}
    with torch.no_grad():
        for t in sched.timesteps:
            if mode == "batched":
                y = model(x.repeat(branches, 1, 1, 1), timestep=t.expand(2 * branches), class_labels=torch.cat(labels)).sample
                per = list(y.chunk(branches))
            else:
                per = []
                for i in range(branches) if only is None else [only]:
                    with _context(model, f"b{i}" if mode == "named" else None):
                        per.append(model(x, timestep=t.expand(2), class_labels=labels[i]).sample)
            for i, y in zip(range(branches) if only is None else [only], per):
                outs[i].append(y)
            eps = per[0] + 1.5 * (per[0] - per[-1]) if guided else per[0]
            x = sched.step(eps, t, x).prev_sample
    return outs


def _decisions(model: torch.nn.Module) -> dict[str, list[tuple[int, bool, str]]]:
    return {k: [(r.step, r.computed, r.reason) for r in v] for k, v in accel.stats(model).steps.items()}


def test_each_call_position_is_its_own_branch(tiny_dit_pipe):
    """Two calls per step without a context: both branches forecast, each on its own gate."""
    model = tiny_dit_pipe.transformer
    with accel.cached(model, PERMISSIVE):
        _sample(model, "order")
        st = accel.stats(model)
    assert set(st.steps) == {"default", "default/1"}
    fr = st.fractions()
    assert fr["default"] > 0.5 and fr["default/1"] > 0.5, fr
    for recs in st.steps.values():
        assert [r.step for r in recs] == list(range(6))
    errs = [[r.error for r in recs if r.error is not None] for recs in st.steps.values()]
    assert errs[0] and errs[1] and errs[0] != errs[1]


def test_named_contexts_and_call_order_agree(tiny_dit_pipe):
    """The same loop with named contexts and without: identical decisions per branch and identical outputs."""
    model = tiny_dit_pipe.transformer
    with accel.cached(model, MODERATE):
        named = _sample(model, "named", branches=3)
        dn = _decisions(model)
    with accel.cached(model, MODERATE):
        order = _sample(model, "order", branches=3)
        do = _decisions(model)
    assert set(dn) == {"b0", "b1", "b2"} and set(do) == {"default", "default/1", "default/2"}
    assert [dn["b0"], dn["b1"], dn["b2"]] == [do["default"], do["default/1"], do["default/2"]]
    flat = [c for v in dn.values() for _, c, _ in v]
    assert not all(flat) and any(r == "gate" for v in dn.values() for _, _, r in v), dn  # some forecast, some gated
    for i in range(3):
        assert all(torch.equal(a, b) for a, b in zip(named[i], order[i]))


def test_batched_and_sequential_cfg_agree(tiny_dit_pipe):
    """Batched CFG (one call, one decision) and sequential CFG (two branches) take the same decisions when the
    gate passes everywhere; threshold 0 gives the uncached outputs in all three modes."""
    model = tiny_dit_pipe.transformer
    ref = _sample(model, "batched")
    runs = {}
    for mode in ("batched", "named", "order"):
        with accel.cached(model, CGTaylorConfig(threshold=0.0)):
            exact = _sample(model, mode)
        assert all(torch.allclose(a, b, atol=1e-5) for i in exact for a, b in zip(exact[i], ref[i]))
        with accel.cached(model, PERMISSIVE):
            runs[mode] = (_sample(model, mode), [[c for _, c, _ in v] for v in _decisions(model).values()])
    b_dec, n_dec, o_dec = (runs[m][1] for m in ("batched", "named", "order"))
    assert n_dec == o_dec and n_dec[0] == n_dec[1] == b_dec[0] and not all(b_dec[0])
    for i in range(2):
        assert all(torch.equal(a, b) for a, b in zip(runs["named"][0][i], runs["order"][0][i]))
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(runs["batched"][0][i], runs["named"][0][i]))


def test_no_branch_reads_another_branchs_factors(tiny_dit_pipe):
    """A branch's outputs are the same whether or not other calls (uncond, a reference image) run between them."""
    model = tiny_dit_pipe.transformer
    with accel.cached(model, MODERATE):
        alone = _sample(model, "order", branches=3, only=0, guided=False)[0]
        d_alone = _decisions(model)["default"]
    with accel.cached(model, MODERATE):
        together = _sample(model, "order", branches=3, guided=False)
        d_together = _decisions(model)
    assert set(d_together) == {"default", "default/1", "default/2"}
    assert d_together["default"] == d_alone and not all(c for _, c, _ in d_alone)
    assert len(alone) == len(together[0]) == 6
    assert all(torch.equal(a, b) for a, b in zip(alone, together[0]))


def test_chroma_pipeline_forecasts_in_both_branches():
    """ChromaPipeline calls cond then uncond without a cache context: both branches forecast."""
    from conftest import PipelineRun

    fam = PipelineRun("chroma")
    with accel.cached(fam.pipe, PERMISSIVE):
        out = fam.run()
        st = accel.stats(fam.pipe)
    assert set(st.steps) == {"default", "default/1"}, st.to_dict()
    assert all(f > 0 for f in st.fractions().values()), st.fractions()
    assert all(b > 0 for b in st.factor_bytes.values())
    assert torch.isfinite(out).all()
    fam.assert_clean()


@pytest.mark.parametrize("name", ["flux"])
def test_pipeline_with_and_without_cache_context_agree(name: str, monkeypatch: Any):
    """True CFG named by the pipeline (cond / uncond) or, with cache_context a no-op, told apart by call order."""
    from conftest import PipelineRun

    fam = PipelineRun(name, cfg=True)
    cfg = CGTaylorConfig(threshold=0.5, warmup_steps=1)
    with accel.cached(fam.pipe, cfg):
        named = fam.run()
        dn = _decisions(fam.pipe)
    monkeypatch.setattr(fam.model, "cache_context", lambda *a, **k: contextlib.nullcontext())
    with accel.cached(fam.pipe, cfg):
        order = fam.run()
        do = _decisions(fam.pipe)
    monkeypatch.undo()
    assert set(dn) == {"cond", "uncond"} and set(do) == {"default", "default/1"}
    assert dn["cond"] == do["default"] and dn["uncond"] == do["default/1"]
    assert any(not c for _, c, _ in dn["uncond"])
    assert torch.equal(named, order)
