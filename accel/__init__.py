"""accel: acceleration for Hugging Face diffusers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
