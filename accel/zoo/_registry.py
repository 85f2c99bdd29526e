from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import AccelError

WEIGHTS = Path(__file__).parent / "weights"
CALL_DEFAULTS = "accel_call.json"  # pipeline-call keyword defaults a model was trained for (height, width, ...)


@dataclass(frozen=True)
class ModelInfo:
    """A model this package ships (weights in ``accel/zoo/weights/<name>``) and how to use it."""

    name: str
    description: str
    default_steps: int = 50
    default_guidance: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelInfo] = {
    "dit-digits": ModelInfo(
        "dit-digits",
        "12-block class-conditional DiT (diffusers DiTTransformer2DModel, 1.16M params), 16x16 digits 0-9",
    ),
    "unet-natural": ModelInfo(
        "unet-natural",
        "grayscale UNet2DModel (2.6M params, DDPM eps), 64x64 patches of the photos shipped in scikit-image/scikit-learn/PyWavelets; IDM's prior",
        default_steps=100,
    ),
    "flux-shapes": ModelInfo(
        "flux-shapes",
        "text-to-image FluxPipeline (8-block FluxTransformer2DModel 3.5M params, AutoencoderKL, CLIP + T5 encoders), "
        "32x32 flat shapes from prompts such as 'a red circle to the left of a blue square'",
        default_steps=28,
        default_guidance=1.0,
    ),
}


def model_dir(name: str) -> Path:
    """Folder holding a shipped model's pipeline (``save_pretrained`` layout)."""
    if name not in MODELS:
        raise AccelError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))} (or pass a local pipeline folder)")
    path = WEIGHTS / name
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
