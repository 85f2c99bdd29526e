"""One entry point to sample from any pipeline (class-conditional or text) with per-image seeds."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from PIL import Image

from .errors import AccelError


@dataclass
class GenerateResult:
    """Images plus what a report needs."""

    images: list[Image.Image]
    seconds: float
    steps: int
    labels: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _call_params(pipe: Any) -> set[str]:
    return set(inspect.signature(pipe.__call__).parameters)


def generate(
    pipe: Any,
    *,
    num_images: int,
    steps: int,
    seed: int = 0,
    class_labels: list[int] | None = None,
    prompt: str | list[str] | None = None,
    guidance_scale: float | None = None,
    seed_offset: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Sample ``num_images`` images; image ``i`` uses ``Generator().manual_seed(seed + seed_offset + i)``.

    Per-image seeds make the result independent of how images are split across batches or processes.
    ``class_labels`` (one per image) for class-conditional pipelines, ``prompt`` for text pipelines.
    ``on_step(i, steps)`` is called after every denoising step.
    """
    if steps <= 0:
        raise AccelError(f"steps must be positive, got {steps}")
    if num_images <= 0:
        raise AccelError(f"num_images must be positive, got {num_images}")
    params = _call_params(pipe)
    kwargs: dict[str, Any] = {"num_inference_steps": steps, "output_type": "pil"}
    if "class_labels" in params:
        if prompt is not None:
            raise AccelError("this pipeline is class-conditional: pass --class, not --prompt")
        labels = class_labels if class_labels is not None else [i % 10 for i in range(num_images)]
        if len(labels) != num_images:
            raise AccelError(f"got {len(labels)} class labels for {num_images} images")
        kwargs["class_labels"] = labels
    elif "prompt" in params:
        if prompt is None:
            raise AccelError("this pipeline is text-conditional: pass --prompt")
        kwargs["prompt"] = list(prompt) if isinstance(prompt, list) else [prompt] * num_images
        if len(kwargs["prompt"]) != num_images:
            raise AccelError(f"got {len(kwargs['prompt'])} prompts for {num_images} images")
        labels = None
    else:
        if class_labels is not None or prompt is not None:
            raise AccelError(f"{type(pipe).__name__} is unconditional: drop --class / --prompt")
        labels = None
        kwargs["batch_size"] = num_images
    for k, v in getattr(pipe, "accel_call_defaults", {}).items():  # a shipped model's trained size and so on
        if k in params:
            kwargs.setdefault(k, v)
    if guidance_scale is not None and "guidance_scale" in params:
        kwargs["guidance_scale"] = guidance_scale
    dev = getattr(pipe, "device", torch.device("cpu"))
    kwargs["generator"] = [torch.Generator(device=dev).manual_seed(seed + seed_offset + i) for i in range(num_images)]
    if on_step is not None and "callback_on_step_end" in params:
        def _cb(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, steps)
            return {}

        kwargs["callback_on_step_end"] = _cb
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    out = pipe(**kwargs)
    seconds = time.perf_counter() - t0
    return GenerateResult(images=list(out.images), seconds=seconds, steps=steps, labels=labels)
