"""What one entry of the family table holds (:class:`Family`, :class:`Pipeline`), the input helpers the entries
share, and how an entry becomes a model or a pipeline (:func:`build_model`, :func:`build_pipeline`)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

STEPS = 5  # sampling steps of the coverage loop and of the pipeline tests


def randn(*shape: int, seed: int) -> torch.Tensor:
    """Seeded standard normal noise (embeddings, latents): the same tensor on every call."""
    return torch.randn(*shape, generator=torch.Generator("cpu").manual_seed(seed))


def ones(n: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """An all-ones (1, n) attention mask."""
    return torch.ones(1, n, dtype=dtype)


def ids(n: int) -> torch.Tensor:
    """FLUX-style (n, 3) position ids of n image tokens on a 4-wide grid."""
    return torch.stack([torch.zeros(n), torch.arange(n) // 4, torch.arange(n) % 4], -1).float()


def text(d: int, mask: str | None = None, key: str = "encoder_hidden_states", **more: Any) -> Callable[[int], dict[str, Any]]:
    """Per-branch forward kwargs: 6 text tokens of width ``d`` under ``key`` (branch b: seed 1 + b), an optional
    all-ones mask under ``mask``, and ``more`` (a callable value is called with the branch)."""

    def cond(b: int) -> dict[str, Any]:
        kw: dict[str, Any] = {key: randn(1, 6, d, seed=1 + b)}
        if mask:
            kw[mask] = ones(6)
        return {**kw, **{k: (v(b) if callable(v) else v) for k, v in more.items()}}

    return cond


def prompts(d: int, mask: str | None = None, pooled: int | None = None, positive: bool = True, negative: bool = True,
            mask_dtype: torch.dtype = torch.long) -> dict[str, Any]:
    """Precomputed prompt embeddings for a pipeline call (6 tokens of width ``d``; seeds 1 / 2, pooled 3 / 4), with
    the masks under ``mask`` / ``negative_<mask>`` and the pooled ones when ``pooled`` is their width."""
    kw: dict[str, Any] = {}
    if positive:
        kw["prompt_embeds"] = randn(1, 6, d, seed=1)
        if mask:
            kw[mask] = ones(6, mask_dtype)
        if pooled:
            kw["pooled_prompt_embeds"] = randn(1, pooled, seed=3)
    if negative:
        kw.update(negative_prompt=None, negative_prompt_embeds=randn(1, 6, d, seed=2))
        if mask:
            kw[f"negative_{mask}"] = ones(6, mask_dtype)
        if pooled:
            kw["negative_pooled_prompt_embeds"] = randn(1, pooled, seed=4)
    return kw


def scheduler(name: str = "FlowMatchEulerDiscreteScheduler", **config: Any) -> Callable[[], Any]:
    """A factory of the diffusers scheduler ``name`` with ``config``."""

    def make() -> Any:
        import diffusers

        return getattr(diffusers, name)(**config)

    return make


@dataclass(frozen=True)
class Pipeline:
    """A diffusers pipeline that drives a family end to end (tests/caching/test_cache_models.py).

    Checked per pipeline: the blocks are found in execution order from ``blocks[0]`` (gated on) to ``blocks[1]``
    (forecast); threshold 0 is bit-exact; a permissive threshold forecasts with a finite, changed output and a
    second call repeats it; ``disable`` restores the exact output and leaves no hook. With ``cfg``: cond and uncond
    run sequentially in cache contexts, each with its own state.
    """

    name: str  # test id
    cls: str  # the diffusers pipeline class
    call: Callable[[], dict[str, Any]]  # call kwargs (precomputed embeddings); steps, generator, output type added
    blocks: tuple[str, str]  # first and last block of the cached chain
    scheduler: Callable[[], Any] = field(default_factory=scheduler)
    components: dict[str, Any] = field(default_factory=dict)  # besides denoiser and scheduler (a callable is called);
    # every other required component (text encoders, tokenizers, VAE) is None: the pipelines return latents
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the family's tiny config (SDXL's text-time)
    output_type: str = "latent"
    cfg: Callable[[], dict[str, Any]] | None = None  # extra call kwargs for sequential CFG (cond, uncond)

    def label(self) -> str:
        """The pipeline as docs/coverage.md names it."""
        if self.cfg is None:
            return self.cls
        return f"{self.cls} (+ {'true CFG' if 'true_cfg_scale' in self.cfg() else 'CFG'})"


@dataclass(frozen=True)
class Family:
    """One diffusers denoiser class: a tiny random configuration (constructor kwargs small enough to run a 5-step,
    2-branch loop in about a second on one CPU core), the inputs of its own forward, and the pipelines that drive
    it end to end. ``accel coverage`` runs the forward loop of every family (see ``check.py``)."""

    config: dict[str, Any]
    x0: Callable[[], torch.Tensor]  # the initial latent
    cond: Callable[[int], dict[str, Any]]  # branch -> forward kwargs other than the latent and the timestep
    x_name: str = "hidden_states"
    t_name: str = "timestep"
    t_scale: float = 1000.0
    pack: Callable[[torch.Tensor], Any] | None = None  # latent -> what the forward takes (e.g. a list per sample)
    t_pack: Callable[[torch.Tensor], Any] | None = None  # timestep of shape (1,) -> what the forward takes
    pipelines: tuple[Pipeline, ...] = ()


def build_model(cls_name: str, config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The diffusers class ``cls_name`` built from ``config`` after ``torch.manual_seed(seed)``, in eval mode."""
    import diffusers

    torch.manual_seed(seed)
    return getattr(diffusers, cls_name)(**config).eval()


def build_pipeline(cls_name: str, family: Family, p: Pipeline, steps: int = STEPS, cfg: bool = False) -> tuple[Any, Callable[[], dict[str, Any]]]:
    """``(pipeline, call_kwargs_factory)`` for pipeline ``p`` of ``family``: a fresh seeded generator per call, so
    that every call is deterministic; ``cfg`` adds the pipeline's sequential-CFG kwargs."""
    import diffusers

    model = build_model(cls_name, {**family.config, **p.config})
    pipe_cls = getattr(diffusers, p.cls)
    params = inspect.signature(pipe_cls.__init__).parameters
    kw = {n: None for n, q in list(params.items())[1:] if q.default is inspect.Parameter.empty and q.kind is not q.VAR_KEYWORD}
    kw["unet" if "unet" in params else "transformer"] = model
    kw["scheduler"] = p.scheduler()
    kw.update({k: (v() if callable(v) else v) for k, v in p.components.items()})
    pipe = pipe_cls(**kw)
    if cfg and p.cfg is None:
        raise ValueError(f"pipeline {p.name} has no sequential-CFG variant")

    def kwargs() -> dict[str, Any]:
        extra = p.cfg() if cfg and p.cfg is not None else {}
        return dict(num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(0), output_type=p.output_type,
                    **{**p.call(), **extra})

    return pipe, kwargs
