"""Model registry: shipped models by name (one folder each, see ``_registry``), local diffusers folders, and Hub ids."""

from ._registry import MODELS, ModelInfo, load, model_dir, resolve

__all__ = ["MODELS", "ModelInfo", "load", "model_dir", "resolve"]
