"""The CG-Taylor settings a model folder ships (``accel_cache.json``), written by ``accel bench cache --ship`` or
``accel calibrate --save``: the benchmark rule's choice at one quality level as the default, and the choices at
the others as named presets (``quality`` >= 40 dB, ``balanced`` >= 35 dB, ``fast`` >= 30 dB per-image PSNR
median against the uncached images, on that model's selection split).

``accel.enable(pipe)`` without a config, ``accel.enable(pipe, preset="fast")`` and ``accel sample --cache
cg-taylor [--preset P]`` read them from the folder the pipeline was loaded from, all through :func:`resolve`.

The default and presets are chosen at the benchmark's step count (``"steps"``); a gate threshold does not carry
over to another step count (each step moves the features further at 10 steps than at 50), so
``accel calibrate --steps N --save`` keeps a choice per step count under ``"by_steps"``, which replaces the
default wherever the caller names its step count (``accel.enable(pipe, steps=N)``, ``accel sample``, the
gradient path).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

from ..errors import AccelError
from .config import CGTaylorConfig

FILE = "accel_cache.json"
PRESETS = ("quality", "balanced", "fast")


def model_folder(obj: Any) -> Path | None:
    """The local folder ``obj`` (a pipeline, or a denoiser loaded from a pipeline folder's subfolder) came from:
    accel's loader records it; diffusers' ``from_pretrained`` keeps it as ``config._name_or_path``."""
    source = getattr(obj, "_accel_source", None)
    if source is None:
        config = getattr(obj, "config", None)
        source = getattr(config, "_name_or_path", None) if config is not None else None
        if source is None and isinstance(config, dict):
            source = config.get("_name_or_path")
    if not source:
        return None
    folder = Path(str(source))
    for candidate in (folder, folder.parent):
        if (candidate / FILE).is_file():
            return candidate
    return folder if folder.is_dir() else None


def _fields(settings: Any, where: str) -> dict[str, Any]:
    """``settings`` (a dict with a threshold and CGTaylorConfig fields) checked; a clear error otherwise."""
    names = {f.name for f in dataclasses.fields(CGTaylorConfig)}
    if not isinstance(settings, dict) or "threshold" not in settings:
        raise AccelError(f"{where}: needs a 'threshold'; fix or delete the file (accel calibrate --save writes it)")
    unknown = sorted(set(settings) - names)
    if unknown:
        raise AccelError(f"{where}: unknown CGTaylorConfig fields {', '.join(unknown)}; fix or delete the file")
    return {**settings, "threshold": float(settings["threshold"])}


def _record(obj: Any) -> tuple[Path | None, dict[str, Any]]:
    """The model folder's ``accel_cache.json`` and what it holds; ``(None, {})`` when the model ships none."""
    folder = model_folder(obj)
    path = folder / FILE if folder is not None else None
    if path is None or not path.is_file():
        return None, {}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AccelError(f"{path}: not valid JSON ({e}); fix or delete the file") from None
    if not isinstance(record, dict):
        raise AccelError(f"{path}: expected a JSON object; fix or delete the file")
    return path, record


def _for_steps(path: Path, record: dict[str, Any], steps: int | None) -> tuple[str, dict[str, Any]]:
    """The part of ``record`` chosen for ``steps`` sampling steps (its ``by_steps`` entry), else the whole record."""
    by_steps = record.get("by_steps", {})
    if not isinstance(by_steps, dict) or not all(str(k).isdigit() for k in by_steps):
        raise AccelError(f"{path}: 'by_steps' must map step counts (\"10\", \"20\", ...) to settings; fix or delete it")
    if steps is None or str(int(steps)) not in by_steps:
        return str(path), record
    entry = by_steps[str(int(steps))]
    if not isinstance(entry, dict):
        raise AccelError(f"{path}: by_steps {steps} must be an object with a threshold; fix or delete it")
    return f"{path} (by_steps {int(steps)})", entry


def shipped_settings(obj: Any, preset: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """The CGTaylorConfig fields shipped beside ``obj``'s model: the default choice, or the named ``preset``; with
    ``steps``, those calibrated for that step count where the file has them (``by_steps``), else the default's.
    Empty when the model ships no ``accel_cache.json`` (then a ``preset`` is an error: there is nothing to pick)."""
    if preset is not None and preset not in PRESETS:
        raise AccelError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    path, record = _record(obj)
    if path is None:
        if preset is not None:
            raise AccelError(f"preset {preset!r} needs the model folder's {FILE}, and this model ships none; "
                             f"write one with `accel calibrate --model FOLDER --save` or pass a CGTaylorConfig")
        return {}
    where, record = _for_steps(path, record, steps)
    if preset is None:
        if "threshold" not in record and record.get("by_steps") and where == str(path):
            return {}  # settings per step count only: at other counts none held its level (the file's "default" says why)
        return _fields({"threshold": record.get("threshold"), **record.get("config", {})} if "threshold" in record else {}, where)
    presets = record.get("presets", {})
    if preset not in presets:
        if where != str(path):  # a step count's entry keeps only the levels whose choice held on the test split
            raise AccelError(f"{where} has no preset {preset!r}: at {steps} steps no setting held that level on the test "
                             f"split (it has: {', '.join(presets) or 'none'}); pick one of those or pass a threshold")
        raise AccelError(f"{where} has no preset {preset!r} (it has: {', '.join(presets) or 'none'}); "
                         f"rerun `accel calibrate --save` to write all three")
    return _fields(presets[preset], f"{where} preset {preset!r}")


def shipped_steps(obj: Any, steps: int | None = None) -> int | None:
    """The step count the setting :func:`shipped_settings` returns for ``steps`` was chosen at: ``steps`` where the
    file has an entry for it, else the default's (``"steps"``; None where the file does not say)."""
    path, record = _record(obj)
    if path is None:
        return None
    where, entry = _for_steps(path, record, steps)
    value = entry.get("steps", steps if entry is not record else None)
    return int(value) if value is not None else None


def shipped_step_counts(obj: Any) -> list[int]:
    """The step counts the model folder ships a setting of their own for (``by_steps``), in order."""
    path, record = _record(obj)
    if path is None:
        return []
    _for_steps(path, record, None)  # checks the keys
    return sorted(int(k) for k in record.get("by_steps", {}))


def shipped_entry(obj: Any, name: str) -> dict[str, Any]:
    """The CGTaylorConfig fields of another named entry of ``accel_cache.json`` (``finetune``: the setting chosen
    for training gradients, docs/adjoint.md); empty when the model ships no file or the file no such entry."""
    path, record = _record(obj)
    return _fields(record[name], f"{path} entry {name!r}") if name in record else {}


def shipped_scheduler(obj: Any) -> str | None:
    """The diffusers scheduler class the shipped setting was calibrated with (``"scheduler"`` of ``accel_cache.json``),
    or None. A setting calibrated on a deterministic sampler keeps its gate shut under one that adds fresh noise
    every step (DDPM's ancestral sampling): nothing is forecast there."""
    path, record = _record(obj)
    name = record.get("scheduler")
    if name is not None and not isinstance(name, str):
        raise AccelError(f"{path}: 'scheduler' must be a diffusers scheduler class name, got {name!r}; fix or delete it")
    return name


def use_calibrated_scheduler(pipe: Any) -> str | None:
    """Give ``pipe`` the scheduler its shipped cache setting was calibrated with, from its own scheduler's config;
    returns that class name when it swapped one in, else None."""
    name = shipped_scheduler(pipe)
    current = getattr(pipe, "scheduler", None)
    if name is None or current is None or type(current).__name__ == name:
        return None
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise AccelError(f"accel_cache.json names scheduler {name!r}, which diffusers {diffusers.__version__} does not have")
    pipe.scheduler = cls.from_config(current.config)
    return name


def shipped_config(obj: Any, preset: str | None = None, steps: int | None = None) -> CGTaylorConfig | None:
    """``CGTaylorConfig`` of :func:`shipped_settings`, or None when the model ships none."""
    settings = shipped_settings(obj, preset, steps)
    return CGTaylorConfig(**settings) if settings else None


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The CG-Taylor setting a caller gets from a model folder (:func:`resolve`).

    Attributes:
        config: the setting to enable (``CGTaylorConfig()`` where the model ships none).
        shipped: whether ``config`` came from the folder's ``accel_cache.json``.
        calibrated_steps: the step count the shipped setting was chosen at (None where unknown or not shipped).
        step_hint: where no step count was named and the folder ships settings per step count: (those step
            counts, the default's step count), for the cache to say so once when a trajectory matches one.
    """

    config: CGTaylorConfig
    shipped: bool
    calibrated_steps: int | None = None
    step_hint: tuple[list[int], int | None] | None = None


def resolve(obj: Any, preset: str | None = None, steps: int | None = None, threshold: float | None = None) -> Resolved:
    """The one way to a model's shipped setting (``accel.enable`` and ``accel sample`` both call it).

    The folder's default, or its ``preset``, for ``steps`` sampling steps where the folder has a choice for that
    step count; ``threshold`` replaces the threshold. Warns (``UserWarning``) when the setting was calibrated
    with another scheduler than ``obj``'s, under which the gate may never open.
    """
    settings = shipped_settings(obj, preset, steps)
    shipped = bool(settings)
    if threshold is not None:
        settings = settings | {"threshold": float(threshold)}
    if shipped:
        _check_scheduler(obj)
    counts = shipped_step_counts(obj) if steps is None else []
    return Resolved(CGTaylorConfig(**settings), shipped, shipped_steps(obj, steps) if shipped else None,
                    (counts, shipped_steps(obj)) if counts else None)


def _check_scheduler(obj: Any) -> None:
    """Warn when the shipped setting was calibrated with another scheduler than the pipeline's (see
    :func:`shipped_scheduler`: under DDPM's fresh noise a DDIM-calibrated gate never opens)."""
    name = shipped_scheduler(obj)
    current = getattr(obj, "scheduler", None)
    if name is not None and current is not None and type(current).__name__ != name:
        warnings.warn(f"this model's cache setting was calibrated with {name}, the pipeline samples with "
                      f"{type(current).__name__}, where it may forecast nothing; set pipe.scheduler = "
                      f"{name}.from_config(pipe.scheduler.config) before accel.enable", stacklevel=4)
