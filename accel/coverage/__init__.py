"""Which diffusers model families CG-Taylor supports, and the table that says so.

- ``families/``: the model-family table (one entry per diffusers denoiser class: tiny config, forward inputs,
  the pipelines that drive it end to end). Adding a family is one entry there; see its docstring.
- ``spec.py``: what an entry holds, the input helpers the entries share, building a model or a pipeline from one.
- ``check.py``: ``accel coverage``: the four cache checks on every class the installed diffusers exports, and
  the Markdown table of docs/coverage.md.

Importing this package imports torch but not diffusers, and nothing of ``accel.caching`` (``check.py`` does).
"""

from __future__ import annotations

from .families import FAMILIES, GAPS, NOT_DENOISERS, pipeline, pipelines, tested_models, tiny_model
from .spec import STEPS, Family, Pipeline

__all__ = ["FAMILIES", "GAPS", "NOT_DENOISERS", "STEPS", "Family", "Pipeline", "pipeline", "pipelines", "tested_models", "tiny_model"]
