"""Configuration of confidence-gated Taylor caching (CG-Taylor, Guan et al. 2025, arXiv 2508.02240)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import AccelError
from .forecasters import Forecaster
from .forecasters import build as build_forecaster
from .forecasters import options as forecaster_options
from .gates import Gate
from .gates import build as build_gate
from .gates import options as gate_options

UNET_POLICIES = ("shallow", "layer", "whole")


@dataclass(frozen=True)
class CGTaylorConfig:
    """How CG-Taylor decides when to skip blocks 1..L-1 and forecast the last block's output instead.

    Attributes:
        threshold: gate threshold tau on the block-0 forecast error (default 0.03). A step is forecast when
            the gate passes at this threshold. 0 never forecasts (exactly the uncached output); larger values
            skip more steps: faster, lower fidelity. Model-specific: use ``accel calibrate`` (the paper: DiT
            0.008-0.014, FLUX 0.03, HunyuanVideo 0.08, Wan 0.18-0.36).
        warmup_steps: the first steps always run in full (default 3). The early, high-noise steps change
            fastest and seed the forecaster's history; fewer warm-up steps are faster but riskier.
        full_last_step: always compute the final step in full (default True), as in the paper; the last
            step sets the fine detail. Needs the scheduler's timesteps, known when ``enable`` gets a pipeline.
        residual: forecast the residual of the skipped blocks (the forecast block's output minus block 0's)
            instead of the output itself, and add it to block 0's fresh output on forecast steps (default False).
            The forecast then starts from what block 0 computed on this very step, as DBCache's residual cache
            does. Needs block 0 and the forecast block to output the same shape
            (transformers; not U-Nets).
        unet_policy: how a U-Net is cached (transformers ignore it). ``"shallow"`` (default): conv_in, the first
            down block, the last up block and the head run on every step; the gate is on the first down block and
            the deep part's output (the input of the last up block) is forecast (``accel.caching.unet``); a U-Net
            whose down and up paths differ in length (UNet1D) has no such split and is cached as under
            ``"whole"``. ``"layer"``: the split is inside the outer blocks, where DeepCache's branch 1 puts it: the
            first layer (resnet [+ attention]) of down block 0 and the layers of the last up block that consume its
            skip connections (and conv_in's) stay live. ``"whole"``: the gate is on down block 0 and the last up
            block's output is forecast, skipping everything in between (the transformer recipe; loses quality on
            natural-image U-Nets).
        gate: when a step may be forecast, by name (``accel.caching.gates``): ``"step"`` (default, the paper: the
            step's block-0 forecast error is below the threshold), ``"cumulative"`` (the sum of the errors of the
            forecast steps since the last full step, this one included, is below it), ``"lookahead"`` (the step
            gate, and after a forecast whose error is under ``ratio`` x threshold the next step forecasts block 0
            too; transformers only).
        gate_options: the gate's options (a dict; the chosen gate's ``Options`` fields).
        forecaster: what a skipped step's output is forecast with, for block 0 (which the gate judges) and the
            forecast block alike, by name (``accel.caching.forecasters``): ``"taylor"`` (default, the paper) or
            ``"l2p"`` (a per-step linear predictor whose rows are fitted on uncached trajectories).
        forecaster_options: the forecaster's options (a dict; e.g. ``{"order": 1, "block0_order": 2}`` for Taylor).
    """

    threshold: float = 0.03
    warmup_steps: int = 3
    full_last_step: bool = True
    residual: bool = False
    unet_policy: str = "shallow"
    gate: str = "step"
    gate_options: dict[str, Any] = field(default_factory=dict)
    forecaster: str = "taylor"
    forecaster_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise AccelError(f"threshold must be a finite number >= 0 (0 disables forecasting), got {t!r}")
        w = self.warmup_steps
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise AccelError(f"warmup_steps must be an int >= 0, got {w!r}")
        for name in ("full_last_step", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise AccelError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.unet_policy not in UNET_POLICIES:
            raise AccelError(f"unet_policy must be one of {UNET_POLICIES}, got {self.unet_policy!r}")
        for name in ("gate_options", "forecaster_options"):
            if not isinstance(getattr(self, name), dict):
                raise AccelError(f"{name} must be a dict of the part's options, got {getattr(self, name)!r}")
        gate_options(self.gate, self.gate_options)  # raise now, not on the first step
        forecaster_options(self.forecaster, self.forecaster_options)

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def build_gate(self) -> Gate:
        return build_gate(self.gate, self.threshold, self.gate_options)

    def build_forecaster(self, role: str) -> Forecaster:
        """The forecaster of stream ``role``: ``"block0"`` (judged by the gate) or ``"last"`` (the forecast block's)."""
        return build_forecaster(self.forecaster, self.forecaster_options, role)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
