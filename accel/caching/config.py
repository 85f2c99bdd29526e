"""Configuration of confidence-gated Taylor caching (CG-Taylor, Guan et al. 2025, arXiv 2508.02240)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import AccelError

METRICS = ("rel_l1",)
BATCH_POLICIES = ("any", "mean")
UNET_POLICIES = ("shallow", "layer", "whole")
GATES = ("step", "cumulative")
FORECASTERS = ("taylor", "horizon", "exp", "select")  # accel.caching.forecasters


@dataclass(frozen=True)
class CGTaylorConfig:
    """How CG-Taylor decides when to skip blocks 1..L-1 and forecast the last block's output instead.

    Attributes:
        threshold: gate threshold tau on the block-0 forecast error (default 0.03). A step is forecast when
            the error is below it. 0 never forecasts (exactly the uncached output); larger values skip more
            steps: faster, lower fidelity. Model-specific: use ``accel calibrate`` (the paper: DiT 0.008-0.014,
            FLUX 0.03, HunyuanVideo 0.08, Wan 0.18-0.36).
        block0_order: Taylor order of the block-0 forecast used only by the gate (default 2; the paper uses
            1-3). A better block-0 forecast makes the gate a sharper judge of the last-block forecast: on
            dit-digits order 2 gives 1-5 dB more PSNR than order 1 at the same speed. Order 0 makes the gate
            a plain "has block 0 changed" test, as in FirstBlockCache.
        last_order: Taylor order of the last-block forecast that replaces blocks 1..L-1 (default 1; the paper
            uses 1 on every model). Order 2+ can extrapolate better over long skips but amplifies noise.
        warmup_steps: the first steps always run in full (default 3). The early, high-noise steps change
            fastest and seed the finite differences; fewer warm-up steps are faster but riskier.
        full_last_step: always compute the final step in full (default True), as in the paper; the last
            step sets the fine detail. Needs the scheduler's timesteps, known when ``enable`` gets a pipeline.
        max_consecutive: cap on consecutive forecast steps (default None = no cap, as in the paper). A cap
            bounds the error that a long run of forecasts can accumulate, at a small cost in speed.
        metric: gate error metric; ``"rel_l1"`` = sum|F^ - F| / sum|F| as in the paper.
        batch_policy: ``"any"`` (default, conservative): compute the whole batch if any sample's error is
            above the threshold, so one easy sample never forces a bad forecast on another (CFG halves
            included). ``"mean"``: the paper's single error over the whole batch; skips more, risks outliers.
        factor_dtype: dtype of the stored factors: ``None`` keeps the hidden states' dtype; ``"float32"``
            keeps low-precision models' finite differences exact, at twice the memory.
        unet_policy: how a U-Net is cached (transformers ignore it). ``"shallow"`` (default): the outer
            blocks (conv_in, ``unet_split`` down and up blocks, the head) run on every step; the gate is on the
            last live down block and the deep part's output (the input of the first live up block) is
            forecast (``accel.caching.unet``); a U-Net whose down and up paths differ in length (UNet1D) has
            no such split and is cached as under ``"whole"``. ``"layer"``: the split is inside the outer blocks, as
            DeepCache's branches are: ``unet_split`` layers (resnet [+ attention]) of down block 0 and the layers of
            the last up block that consume their skip connections (and conv_in's) stay live; the gate is on the
            last live down layer and the input of the first live up layer is forecast. ``"whole"``: the gate is on down block 0 and the last up
            block's output is forecast, skipping everything in between (the transformer recipe; loses quality
            on natural-image U-Nets).
        unet_split: how many outer down blocks (and as many up blocks) stay live under ``"shallow"``
            (default 1: the cheapest shallow path, the one DeepCache keeps at block level; see docs/cache_unet.md);
            under ``"layer"``, how many layers of down block 0 stay live (1: the path of DeepCache's branch 1).
        residual: forecast the residual of the skipped blocks (the forecast block's output minus block 0's)
            instead of the output itself, and add it to block 0's fresh output on forecast steps (default False).
            The forecast then starts from what block 0 computed on this very step, as DBCache's residual cache
            and FoCa's corrector do. Needs block 0 and the forecast block to output the same shape
            (transformers; not U-Nets).
        live_tail: the last ``live_tail`` blocks run on every step (default 0), on the forecast of the block
            before them, as DBCache's Bn: they refine the forecast at the cost of their compute. Transformers only.
        gate: ``"step"`` (default, the paper): a step is forecast when its block-0 forecast error is below the
            threshold. ``"cumulative"``: when the sum of the errors of the forecast steps since the last full
            step, this one included, is below it: a budget on the error a run of forecasts accumulates.
        damping: the forecasts (block 0's, which the gate judges, and the forecast block's) are evaluated at
            ``damping`` times the steps since the last full step (default 1.0, the plain Taylor series): each
            order-k term is scaled by ``damping ** k``, a damped extrapolation in the spirit of HiCache's
            contracted basis. Must be in (0, 1].
        forecaster: how the factors are extrapolated, for block 0's forecast and the forecast block's alike
            (``accel.caching.forecasters``): ``"taylor"`` (default, the paper), ``"horizon"`` (FoCa's horizon
            rule: beyond 3 steps since the last full step the forecast is blended back towards that step's value),
            ``"exp"`` (an exponential basis per element, its rate from the second-order factors: needs
            ``last_order >= 2``) or ``"select"`` (on every gated step block 0 picks the candidate among reuse, first order, damped
            first order and second order that forecasts its own output best, and the forecast block uses it;
            second order needs ``last_order >= 2``).
    """

    threshold: float = 0.03
    block0_order: int = 2
    last_order: int = 1
    warmup_steps: int = 3
    full_last_step: bool = True
    max_consecutive: int | None = None
    metric: str = "rel_l1"
    batch_policy: str = "any"
    factor_dtype: str | None = None
    unet_policy: str = "shallow"
    unet_split: int = 1
    residual: bool = False
    live_tail: int = 0
    gate: str = "step"
    damping: float = 1.0
    forecaster: str = "taylor"

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise AccelError(f"threshold must be a finite number >= 0 (0 disables forecasting), got {t!r}")
        for name in ("block0_order", "last_order", "warmup_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise AccelError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("block0_order", "last_order"):
            if getattr(self, name) > 4:
                raise AccelError(f"{name} must be at most 4 (higher orders only amplify noise), got {getattr(self, name)}")
        mc = self.max_consecutive
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
            raise AccelError(f"max_consecutive must be None (no cap) or an int >= 1, got {mc!r}")
        if self.metric not in METRICS:
            raise AccelError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.batch_policy not in BATCH_POLICIES:
            raise AccelError(f"batch_policy must be one of {BATCH_POLICIES}, got {self.batch_policy!r}")
        if self.unet_policy not in UNET_POLICIES:
            raise AccelError(f"unet_policy must be one of {UNET_POLICIES}, got {self.unet_policy!r}")
        us = self.unet_split
        if isinstance(us, bool) or not isinstance(us, int) or us < 1:
            raise AccelError(f"unet_split must be an int >= 1 (live outer blocks, or layers under unet_policy='layer'), got {us!r}")
        if not isinstance(self.residual, bool):
            raise AccelError(f"residual must be True or False, got {self.residual!r}")
        lt = self.live_tail
        if isinstance(lt, bool) or not isinstance(lt, int) or lt < 0:
            raise AccelError(f"live_tail must be an int >= 0 (blocks at the end that always run), got {lt!r}")
        if self.gate not in GATES:
            raise AccelError(f"gate must be one of {GATES}, got {self.gate!r}")
        d = self.damping
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise AccelError(f"damping must be a number in (0, 1] (1: the plain Taylor forecast), got {d!r}")
        if self.forecaster not in FORECASTERS:
            raise AccelError(f"forecaster must be one of {FORECASTERS}, got {self.forecaster!r}")
        if self.forecaster == "exp" and min(self.block0_order, self.last_order) < 2:
            raise AccelError("forecaster='exp' takes its rates from second-order factors: set block0_order >= 2 and last_order >= 2")
        if self.factor_dtype not in (None, "float32"):
            raise AccelError(f"factor_dtype must be None or 'float32', got {self.factor_dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
