"""The model-family table: one entry per diffusers denoiser class, read by ``accel coverage`` (docs/coverage.md),
by the tests (tests/caching/test_cache_models.py, test_cache_coverage.py) and by the cache's error message
(the tested-models list).

An entry (:class:`~accel.coverage.spec.Family`) holds the class's tiny random configuration (constructor kwargs;
values follow the dummy configurations of diffusers' own model tests, shrunk where they allow), the inputs of its
own forward (initial latent, per-branch kwargs), and the diffusers pipelines that drive it end to end
(:class:`~accel.coverage.spec.Pipeline`: call kwargs with precomputed embeddings, the first and last cached block,
optional sequential CFG). ``accel coverage`` runs every entry's forward loop with the four cache checks; the
pipeline tests run every pipeline. The table is kept in two files by the kind of data the class generates:
``image.py`` (``IMAGE``) and ``video_audio.py`` (``VIDEO_AUDIO``: video, audio and 1-D signals).

Adding a family touches one file: one entry in ``IMAGE`` or ``VIDEO_AUDIO`` (with ``pipelines=`` to drive it
through its diffusers pipeline in the tests, which read the table). Then ``accel coverage`` regenerates
docs/coverage.md (tests/caching/test_cache_coverage.py fails until it is current). Nothing else is edited by hand:
the pipeline tests, the tested-models list of the cache's error message and the docs' pipeline column are read
from here. Mechanism, not family data: a block class whose tuple output cannot be told apart by shape at run time
gets its (hidden, encoder) output positions in ``accel/caching/blocks.py`` ``_BLOCK_OUTPUTS``; unknown block
classes are read from their first call.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..spec import STEPS, Family, Pipeline, build_model, build_pipeline
from .image import IMAGE
from .video_audio import VIDEO_AUDIO

FAMILIES: dict[str, Family] = {**IMAGE, **VIDEO_AUDIO}

# Exported classes that are not denoisers on their own (sub-modules of another model, or control nets).
NOT_DENOISERS = {
    "TransformerTemporalModel": "temporal sub-module of the video U-Nets",
    "Transformer2DModel": "attention sub-module of the U-Nets (its own blocks are cached with the U-Net)",
    "DreamLiteTransformer2DModel": "attention sub-module of DreamLiteUNetModel",
    "HunyuanDiT2DControlNetModel": "control net: its outputs feed a denoiser, it is not one",
    "HunyuanDiT2DMultiControlNetModel": "control net: its outputs feed a denoiser, it is not one",
}

# Denoisers without an entry yet, and what stands in the way.
GAPS = {
    "UNetControlNetXSModel": "its blocks carry two streams (base and control; down blocks return 4-tuples), which the "
                             "U-Net block roles do not pass through",
    "WanAnimate2Transformer3DModel": "its denoising calls read a KV cache that a separate reference pass fills",
}


def tested_models() -> tuple[str, ...]:
    """The denoiser classes driven end to end through a diffusers pipeline."""
    return tuple(cls for cls, fam in FAMILIES.items() if fam.pipelines)


def pipelines() -> dict[str, tuple[str, Family, Pipeline]]:
    """Every pipeline of the table by its name: ``(denoiser class, family, pipeline)``."""
    return {p.name: (cls, fam, p) for cls, fam in FAMILIES.items() for p in fam.pipelines}


def tiny_model(cls_name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """The family's tiny random model (``overrides`` replace entries of its config), built after ``manual_seed(seed)``."""
    return build_model(cls_name, {**FAMILIES[cls_name].config, **overrides}, seed)


def pipeline(name: str, steps: int = STEPS, cfg: bool = False) -> tuple[Any, Callable[[], dict[str, Any]]]:
    """``(pipeline, call_kwargs_factory)`` of the table's pipeline ``name`` (``cfg``: its sequential-CFG variant)."""
    cls, fam, p = pipelines()[name]
    return build_pipeline(cls, fam, p, steps, cfg)


__all__ = ["FAMILIES", "GAPS", "NOT_DENOISERS", "pipeline", "pipelines", "tested_models", "tiny_model"]
