"""The shipped models, discovered from their folders, and loading by name, folder or Hub id.

Each shipped model is one folder ``accel/zoo/<name with underscores>/`` holding everything about it:

- ``model.json``: its name, a one-line description, the default sampling steps and guidance, the
  training entry points (``"train": "recipe:train"``, ``"config": "recipe:TrainConfig"``) and, for a
  text model with a closed vocabulary, ``"vocabulary": "recipe:describe_vocabulary"``;
- ``recipe.py``: how it is trained (``train(out_dir, config, work_dir, progress)`` and its config class);
- ``weights/``: the trained pipeline (``save_pretrained`` layout), plus ``accel_cache.json`` /
  ``accel_call.json`` when it ships recommended caching or call settings.

Adding a model is adding such a folder; nothing else lists the models.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import AccelError

ZOO = Path(__file__).parent
CALL_DEFAULTS = "accel_call.json"  # pipeline-call keyword defaults a model was trained for (height, width, ...)
_FIELDS = {"name": str, "description": str, "default_steps": int, "default_guidance": (int, float), "train": str, "config": str}
_OPTIONAL = {"vocabulary": str}  # "module:function" -> one line saying which prompt words the model knows


@dataclass(frozen=True)
class ModelInfo:
    """A shipped model: its folder under ``accel/zoo/`` and what its ``model.json`` says."""

    name: str
    description: str
    folder: Path
    default_steps: int
    default_guidance: float
    train: str  # "module:function" inside the folder's package, e.g. "recipe:train"
    config: str  # "module:Class", the training settings (a dataclass with ``seed`` and ``steps``)
    vocabulary: str | None = None  # "module:function" describing the prompt words a text model knows

    @property
    def weights(self) -> Path:
        """The shipped pipeline folder (may lack ``model_index.json`` in a checkout without weights)."""
        return self.folder / "weights"

    def entry(self, spec: str) -> Any:
        """The object ``"module:attr"`` names inside this model's package (imported now, not at discovery)."""
        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{self.folder.name}.{module}"), attr)

    def train_config(self, **overrides: Any) -> Any:
        """The recipe's settings: its defaults (which reproduce the shipped weights) with ``overrides``."""
        return self.entry(self.config)(**overrides)

    def train_model(self, out_dir: str | Path, config: Any = None, work_dir: str | Path | None = None,
                    progress: Callable[[int, int, float], None] | None = None) -> Path:
        """Train with the recipe into ``out_dir`` (checkpoints in ``work_dir``, default ``out_dir/.train``)."""
        return self.entry(self.train)(out_dir, config, work_dir=work_dir, progress=progress)


def _read(folder: Path) -> ModelInfo:
    f = folder / "model.json"
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise AccelError(f"{f} is not valid JSON ({e}); fix it") from None
    wrong = [k for k, t in _FIELDS.items() if not isinstance(data.get(k), t)]
    wrong += [k for k, t in _OPTIONAL.items() if k in data and not isinstance(data[k], t)]
    wrong = sorted(wrong + list(set(data) - set(_FIELDS) - set(_OPTIONAL)))
    if wrong:
        raise AccelError(f"{f}: missing, mistyped or unknown fields {', '.join(wrong)}; it needs exactly "
                         f"{', '.join(_FIELDS)} (optional: {', '.join(_OPTIONAL)})")
    if data["name"].replace("-", "_") != folder.name:
        raise AccelError(f"{f} names the model {data['name']!r}; its folder must then be {data['name'].replace('-', '_')!r}")
    return ModelInfo(folder=folder, **data)


def discover(root: Path = ZOO) -> dict[str, ModelInfo]:
    """Every folder under ``root`` that holds a ``model.json``, by model name."""
    infos = [_read(d) for d in sorted(root.iterdir()) if (d / "model.json").is_file()]
    return {i.name: i for i in infos}


MODELS: dict[str, ModelInfo] = discover()


def model_dir(name: str) -> Path:
    """Folder holding a shipped model's pipeline (``save_pretrained`` layout)."""
    if name not in MODELS:
        raise AccelError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))} (or pass a local pipeline folder)")
    path = MODELS[name].weights
    if not (path / "model_index.json").is_file():
        raise AccelError(f"weights for {name!r} are missing from {path}; train them with `accel zoo train {name}`")
    return path


def resolve(name_or_path: str) -> Path | str:
    """A shipped name -> its folder; an existing folder -> itself; anything else is taken as a Hub id."""
    if name_or_path in MODELS:
        return model_dir(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "model_index.json").is_file():
            raise AccelError(f"{str(p)!r} is not a diffusers pipeline folder (no model_index.json)")
        return p
    if "/" not in name_or_path:
        raise AccelError(f"unknown model {name_or_path!r}; known models: {', '.join(sorted(MODELS))} (or pass a local pipeline folder or a Hub id)")
    return name_or_path


def load(name_or_path: str, **kwargs: Any) -> Any:
    """Load a pipeline: a shipped model by name (``"dit-digits"``), a local folder, or a Hub id.

    Keyword arguments go to ``from_pretrained`` (``torch_dtype=...`` and so on).
    """
    from diffusers import DiffusionPipeline

    from ..pipelines import ClassConditionalPipeline

    where = resolve(name_or_path)
    if isinstance(where, Path):
        index = json.loads((where / "model_index.json").read_text())
        if index.get("_class_name") == ClassConditionalPipeline.__name__:
            return ClassConditionalPipeline.from_pretrained(where, **kwargs)
        pipe = DiffusionPipeline.from_pretrained(where, **kwargs)
        defaults = where / CALL_DEFAULTS
        if defaults.is_file():  # e.g. flux-shapes: FluxPipeline's own defaults are FLUX.1's (1024 px, 512 T5 tokens)
            call = json.loads(defaults.read_text())
            pipe.accel_call_defaults = call
            if "height" in call and hasattr(pipe, "default_sample_size") and hasattr(pipe, "vae_scale_factor"):
                pipe.default_sample_size = call["height"] // pipe.vae_scale_factor  # so that pipe(prompt) has that size
        return pipe
    try:
        return DiffusionPipeline.from_pretrained(where, **kwargs)
    except Exception as e:  # offline, missing repo, ...
        raise AccelError(f"could not load {where!r} from the Hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
