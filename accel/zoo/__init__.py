"""Model registry: shipped models by name, local diffusers folders, and Hub ids when online."""

from ._registry import MODELS, ModelInfo, load, model_dir, resolve

__all__ = ["MODELS", "ModelInfo", "load", "model_dir", "resolve"]
