"""The one model contract of all samplers: ``Denoiser(x, t, cond) -> Prediction(eps, x0)``.

Everything model-specific lives here: how a diffusers network is called (a small registry keyed by class
name), which conditioning it takes, classifier-free guidance, and the conversion of its native output
(epsilon, v, sample or flow velocity) into the noise and data predictions. Samplers never see any of it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, NamedTuple, Sequence, Union

import torch

from accel.errors import AccelError

from ._schedules import Schedule, schedule_from_scheduler

Cond = Union[torch.Tensor, Sequence[torch.Tensor], None]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


class Prediction(NamedTuple):
    """Noise and data predictions, both shaped like x (B, C, H, W)."""

    eps: torch.Tensor
    x0: torch.Tensor


def convert_prediction(out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str) -> Prediction:
    """Native network output -> (eps, x0), for ``x = alpha x0 + sigma eps`` (alpha, sigma scalars)."""
    a, s = alpha.to(x.dtype), sigma.to(x.dtype)
    if prediction_type == "epsilon":
        return Prediction(out, (x - s * out) / a)
    if prediction_type == "v_prediction":  # v = alpha eps - sigma x0 (Salimans and Ho 2022)
        return Prediction(a * out + s * x, a * x - s * out)
    if prediction_type == "sample":
        return Prediction((x - a * out) / s, out)
    if prediction_type == "flow":  # v = eps - x0 with x = (1 - s) x0 + s eps
        return Prediction(x + a * out, x - s * out)
    raise AccelError(f"prediction_type {prediction_type!r} is not supported; choose one of {', '.join(PREDICTION_TYPES)}")


# ---------------------------------------------------------------- how each diffusers network is called
_CALLERS: dict[str, Callable[[Any, torch.Tensor, torch.Tensor, Any], torch.Tensor]] = {}


def register_caller(*class_names: str) -> Callable:
    """Register ``fn(model, x (B,C,H,W), t (B,), cond) -> native output`` for diffusers model classes."""

    def deco(fn: Callable) -> Callable:
        for name in class_names:
            if name in _CALLERS:
                raise AccelError(f"a caller for {name} is already registered")
            _CALLERS[name] = fn
        return fn

    return deco


def label_embedders(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The class-label tables of a DiT (one ``LabelEmbedding`` per block), in forward order."""
    found = [m for m in model.modules() if type(m).__name__ == "LabelEmbedding"]
    if not found:
        raise AccelError(f"{type(model).__name__} has no LabelEmbedding modules: it is not class-conditional")
    return found


def class_embeddings(model: torch.nn.Module, labels: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
    """Class labels (B,) -> the rows of every block's label table, (B, L, D): a differentiable DiT condition."""
    emb = label_embedders(model)
    dev = emb[0].embedding_table.weight.device
    labels = torch.as_tensor([labels] if isinstance(labels, int) else labels, dtype=torch.long, device=dev).reshape(-1)
    return torch.stack([m.embedding_table(labels) for m in emb], dim=1)


@contextlib.contextmanager
def _injected_label_embeddings(model: torch.nn.Module, emb: torch.Tensor) -> Iterator[None]:
    """Make every LabelEmbedding of ``model`` return ``emb[:, l]`` (hooks removed exactly on exit)."""
    mods = label_embedders(model)
    if emb.ndim != 3 or emb.shape[1] != len(mods):
        raise AccelError(f"class embeddings must be (B, {len(mods)}, D) for this model, got {tuple(emb.shape)}; build them with class_embeddings(model, labels)")
    handles = [m.register_forward_hook(lambda mod, args, out, l=l: emb[:, l].to(out.dtype)) for l, m in enumerate(mods)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@register_caller("DiTTransformer2DModel")
def _call_dit(model: Any, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    if cond is None:
        raise AccelError("a DiT needs a condition: class labels (B,) or class embeddings (B, L, D)")
    if not torch.is_floating_point(cond):
        return model(x, timestep=t, class_labels=cond.to(x.device)).sample
    with _injected_label_embeddings(model, cond):
        return model(x, timestep=t, class_labels=torch.zeros(x.shape[0], dtype=torch.long, device=x.device)).sample


@register_caller("UNet2DConditionModel")
def _call_unet_cond(model: Any, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    return model(x, t, encoder_hidden_states=cond).sample


@register_caller("UNet2DModel")
def _call_unet(model: Any, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    return model(x, t, class_labels=cond).sample


@register_caller("SD3Transformer2DModel")
def _call_sd3(model: Any, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    if not isinstance(cond, (tuple, list)) or len(cond) != 2:
        raise AccelError("an SD3 transformer needs cond = (prompt_embeds (B, L, D), pooled_prompt_embeds (B, P))")
    return model(hidden_states=x, timestep=t, encoder_hidden_states=cond[0], pooled_projections=cond[1]).sample


def pack_flux_latents(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents -> FLUX's token sequence (B, H/2 * W/2, 4C) of 2x2 patches (FluxPipeline's packing)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise AccelError(f"FLUX latents need an even height and width (2x2 packing), got {h}x{w}")
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack_flux_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_flux_latents`: (B, H/2 * W/2, 4C) -> (B, C, H, W)."""
    b, n, c4 = tokens.shape
    if n != (height // 2) * (width // 2) or c4 % 4:
        raise AccelError(f"{tuple(tokens.shape)} tokens do not unpack to {height}x{width} latents")
    return tokens.reshape(b, height // 2, width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, height, width)


def flux_image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """FLUX's positional ids of the packed image tokens, (H/2 * W/2, 3): (0, row, column)."""
    h, w = height // 2, width // 2
    ids = torch.zeros(h, w, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w, device=device, dtype=dtype)[None, :]
    return ids.reshape(h * w, 3)


@register_caller("FluxTransformer2DModel")
def _call_flux(model: Any, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    """FLUX on unpacked latents x (B, C, H, W): pack 2x2 patches, add positional ids, unpack the velocity.

    ``cond = (prompt_embeds (B, L, D), pooled_prompt_embeds (B, P))``, plus a third entry, the embedded
    guidance (B,) or a float, for guidance-distilled checkpoints (``guidance_embeds=True``, FLUX.1-dev).
    The network takes ``t / 1000`` as FluxPipeline passes it.
    """
    if not isinstance(cond, (tuple, list)) or len(cond) not in (2, 3):
        raise AccelError("a FLUX transformer needs cond = (prompt_embeds (B, L, D), pooled_prompt_embeds (B, P)[, guidance])")
    emb, pooled = cond[0], cond[1]
    guidance = None
    if model.config.guidance_embeds:
        if len(cond) != 3:
            raise AccelError("this FLUX transformer embeds the guidance scale (guidance_embeds=True): pass cond = (prompt_embeds, pooled_prompt_embeds, guidance), e.g. guidance 3.5")
        guidance = torch.as_tensor(cond[2], dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
    h, w = x.shape[-2:]
    txt_ids = torch.zeros(emb.shape[1], 3, device=x.device, dtype=x.dtype)
    out = model(hidden_states=pack_flux_latents(x), encoder_hidden_states=emb, pooled_projections=pooled, timestep=t / 1000,
                img_ids=flux_image_ids(h, w, x.device, x.dtype), txt_ids=txt_ids, guidance=guidance).sample
    return unpack_flux_latents(out, h, w)


def image_seq_len(model: Any, shape: Sequence[int]) -> int | None:
    """The number of image tokens a transformer makes of latents shaped (B, C, H, W) (None if not a patch transformer)."""
    name, (h, w) = type(model).__name__, tuple(shape[-2:])
    if name == "FluxTransformer2DModel":
        return (h // 2) * (w // 2)
    p = getattr(getattr(model, "config", None), "patch_size", None)
    return (h // p) * (w // p) if isinstance(p, int) and "Transformer" in name else None


def _null_condition(model: Any, cond: Cond) -> Cond:
    """The unconditional input for CFG where the model defines one (a DiT's null class); else None."""
    if type(model).__name__ != "DiTTransformer2DModel" or cond is None:
        return None
    null = torch.full((cond.shape[0],), int(model.config.num_embeds_ada_norm), dtype=torch.long)
    return class_embeddings(model, null).to(cond.dtype) if torch.is_floating_point(cond) else null.to(cond.device)


def _cat(a: Cond, b: Cond) -> Cond:
    if isinstance(a, (tuple, list)):
        return type(a)(_cat(x, y) for x, y in zip(a, b))
    if a is None or not torch.is_tensor(a):  # None, or a float such as FLUX's embedded guidance
        return a
    return torch.cat([a, b.expand_as(a) if b.shape[0] == 1 and a.shape[0] > 1 else b])


class Denoiser:
    """A diffusers network (or any ``fn(x, t, cond)``) as ``Denoiser(x, t, cond) -> Prediction``.

    Args:
        model: a diffusers model with a registered caller (DiT, UNet2DCondition, UNet2D, SD3, FLUX) or a callable
            ``fn(x (B,C,H,W), t (B,), cond) -> native output``.
        schedule: the noise schedule (VPSchedule or FlowSchedule), which gives alpha_t, sigma_t.
        prediction_type: "epsilon", "v_prediction", "sample" (VP) or "flow" (velocity).
        guidance_scale: classifier-free guidance weight w; ``out = out_u + w (out_c - out_u)`` (one batched call);
            w == 1 disables guidance.
        uncond: the unconditional input for guidance (default: the DiT null class; required otherwise).
    """

    def __init__(self, model: Any, schedule: Schedule, prediction_type: str = "epsilon", guidance_scale: float = 1.0, uncond: Cond = None) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise AccelError(f"prediction_type {prediction_type!r} is not supported; choose one of {', '.join(PREDICTION_TYPES)}")
        if (prediction_type == "flow") != (schedule.kind == "flow"):
            raise AccelError(f"prediction_type {prediction_type!r} does not fit a {schedule.kind} schedule ('flow' goes with FlowSchedule only)")
        name = type(model).__name__
        if name not in _CALLERS and not callable(model):
            raise AccelError(f"{name} is not callable and has no registered caller; known: {', '.join(sorted(_CALLERS))}")
        self.model, self.schedule, self.prediction_type = model, schedule, prediction_type
        self.guidance_scale, self.uncond = float(guidance_scale), uncond
        self._call = _CALLERS.get(name, lambda m, x, t, c: m(x, t, c))

    @property
    def network(self) -> torch.nn.Module | None:
        """The wrapped torch module (for its parameters), if it is one."""
        return self.model if isinstance(self.model, torch.nn.Module) else None

    def raw(self, x: torch.Tensor, t: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """The guided native output at model timestep ``t`` (scalar) for x (B, C, H, W)."""
        t = t.to(device=x.device, dtype=x.dtype)
        if self.guidance_scale == 1.0:
            return self._call(self.model, x, t.expand(x.shape[0]), cond)
        uncond = self.uncond if self.uncond is not None else _null_condition(self.model, cond)
        if uncond is None:
            raise AccelError(f"guidance_scale={self.guidance_scale} needs an unconditional input: pass uncond= (e.g. negative prompt embeddings) or guidance_scale=1")
        x2 = torch.cat([x, x])
        out_c, out_u = self._call(self.model, x2, t.expand(x2.shape[0]), _cat(cond, uncond)).chunk(2)
        return out_u + self.guidance_scale * (out_c - out_u)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond = None) -> Prediction:
        t = torch.as_tensor(t, dtype=torch.float64)
        alpha, sigma = self.schedule.alpha_sigma(t.cpu())
        return convert_prediction(self.raw(x, t, cond), x, alpha, sigma, self.prediction_type)


def denoiser_from_pipeline(pipe: Any, guidance_scale: float = 1.0, uncond: Cond = None, scheduler: Any = None) -> Denoiser:
    """A Denoiser for a diffusers pipeline's network (``.transformer`` or ``.unet``) and its (or the given) scheduler."""
    model = getattr(pipe, "transformer", None)
    model = getattr(pipe, "unet", None) if model is None else model
    scheduler = scheduler if scheduler is not None else getattr(pipe, "scheduler", None)
    if model is None or scheduler is None:
        raise AccelError(f"{type(pipe).__name__} has no .transformer/.unet and .scheduler; pass a Denoiser instead")
    schedule, pred = schedule_from_scheduler(scheduler)
    return Denoiser(model, schedule, pred, guidance_scale, uncond)
