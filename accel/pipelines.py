"""A class-conditional pixel-space diffusion pipeline in diffusers' conventions (used by the shipped models)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .errors import AccelError
from .utils import to_uint8


class ClassConditionalPipeline(DiffusionPipeline):
    """Class-conditional sampling with batched classifier-free guidance, for a DiT-style transformer.

    The transformer takes ``(sample, timestep=, class_labels=)``; class ``num_classes`` (the last row of its
    label table) is the null class used for the unconditional half of classifier-free guidance.
    """

    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer: torch.nn.Module, scheduler: Any) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @property
    def current_timestep(self) -> Any:
        """The timestep being denoised (None outside a call), as diffusers' pipelines expose it for the
        timestep-range callbacks of their cache hooks (PAB, FasterCache)."""
        return getattr(self, "_current_timestep", None)

    @property
    def num_classes(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    def check_labels(self, class_labels: int | list[int] | torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor([class_labels] if isinstance(class_labels, int) else class_labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 0:
            raise AccelError("class_labels is empty: pass at least one class label")
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise AccelError(f"class label {int(bad[0])} is out of range: this model knows classes 0..{self.num_classes - 1}")
        return labels

    @contextlib.contextmanager
    def _cache_context(self, name: str) -> Iterator[None]:
        """Name the denoiser call for stateful cache hooks, as diffusers pipelines do (no-op without hooks)."""
        model = self.transformer
        if hasattr(model, "cache_context"):
            with model.cache_context(name):
                yield
        elif "_diffusers_hook" in model.__dict__:
            from diffusers.hooks.hooks import CacheContext, _set_cache_context

            _set_cache_context(model, CacheContext(name))
            try:
                yield
            finally:
                _set_cache_context(model, None)
        else:
            yield

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Sample one image per class label.

        Args:
            class_labels: one label or a list; the batch size is their number.
            num_inference_steps: denoising steps of the scheduler.
            guidance_scale: classifier-free guidance weight; <= 1 disables guidance (and the 2x batch).
            generator: RNG(s) for the initial noise, or pass ``latents`` (B, C, H, W) directly.
            output_type: ``"pil"``, ``"np"`` (float in [0, 1], B x H x W x C) or ``"pt"`` (raw, in [-1, 1]).
            callback_on_step_end: called as ``fn(pipe, i, t, {"latents": x})`` after each step.
        """
        if num_inference_steps <= 0:
            raise AccelError(f"num_inference_steps must be positive, got {num_inference_steps}")
        labels = self.check_labels(class_labels).to(self.device)
        b = labels.shape[0]
        cfg = self.transformer.config
        shape = (b, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        dtype = self.transformer.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise AccelError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        latents = latents.to(self.device, dtype) * self.scheduler.init_noise_sigma
        do_cfg = guidance_scale > 1
        class_in = torch.cat([labels, torch.full_like(labels, self.num_classes)]) if do_cfg else labels

        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            self._current_timestep = t
            x_in = torch.cat([latents, latents]) if do_cfg else latents
            x_in = self.scheduler.scale_model_input(x_in, t)
            t_in = t.expand(x_in.shape[0]) if torch.is_tensor(t) else torch.full((x_in.shape[0],), t, device=self.device)
            with self._cache_context("cond_uncond" if do_cfg else "cond"):
                eps = self.transformer(x_in, timestep=t_in, class_labels=class_in).sample
            if do_cfg:
                cond, uncond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(eps, t, latents).prev_sample
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents})
                latents = out.get("latents", latents) if out else latents

        self._current_timestep = None
        self.maybe_free_model_hooks()
        if output_type == "pt":
            images: Any = latents
        elif output_type in ("np", "pil"):
            arr = to_uint8(latents)
            images = arr.astype(np.float32) / 255.0 if output_type == "np" else [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]
        else:
            raise AccelError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
