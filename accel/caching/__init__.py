"""Confidence-gated Taylor caching (CG-Taylor) as diffusers hooks."""

from .api import cached, disable, enable, is_enabled, reset, stats
from .blocks import find_blocks
from .config import CGTaylorConfig
from .shipped import PRESETS, shipped_config, shipped_settings
from .state import CacheStats, StepRecord

__all__ = ["CGTaylorConfig", "CacheStats", "StepRecord", "cached", "disable", "enable", "find_blocks", "is_enabled", "reset", "shipped_config", "shipped_settings", "stats", "PRESETS"]
