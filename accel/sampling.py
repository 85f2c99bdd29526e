"""Sampling to a file, the library side of ``accel sample``: load a pipeline, :func:`generate` images with
per-image seeds (optionally CG-Taylor cached, split across processes), write the grid and a report."""

from __future__ import annotations

import inspect
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import AccelError
from .utils import make_grid

CACHE_CHOICES = ("none", "cg-taylor")


@dataclass
class GenerateResult:
    """Images plus what a report needs."""

    images: list[Any]  # PIL images
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
    ``on_step(0, steps)`` is called when sampling starts and ``on_step(i, steps)`` after every denoising step,
    so a progress bar started by the first call measures what ``seconds`` measures: the pipeline call's wall
    time (prompt encoding, denoising and decoding; not loading the model).
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
    import torch

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
    if on_step is not None:
        on_step(0, steps)
    out = pipe(**kwargs)
    seconds = time.perf_counter() - t0
    images = out.images if hasattr(out, "images") else [list(v) for v in out.frames]  # a video pipeline: frames per video
    return GenerateResult(images=list(images), seconds=seconds, steps=steps, labels=labels)


def recommended_settings(pipe: Any, preset: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """The CG-Taylor settings shipped beside a model (``accel_cache.json``) as a dict, empty if it ships none:
    :func:`accel.caching.shipped.shipped_settings` (``accel.caching.shipped.resolve`` gives the config to enable)."""
    from .caching.shipped import shipped_settings

    return shipped_settings(pipe, preset, steps)


def recommended_threshold(pipe: Any) -> float | None:
    """The calibrated CG-Taylor threshold shipped beside a model (``accel_cache.json``), if any."""
    return recommended_settings(pipe).get("threshold")


def unknown_prompt_words(pipe: Any, prompts: list[str]) -> list[str]:
    """Words of ``prompts`` that the pipeline's tokenizers turn into their unknown token (so the model never
    sees them), in order of appearance, each once. Empty for pipelines without a (fast) tokenizer."""
    words: list[str] = []
    for tok in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)):
        unk = getattr(tok, "unk_token_id", None)
        if unk is None or not getattr(tok, "is_fast", False):
            continue
        for p in prompts:
            enc = tok(p, add_special_tokens=False, return_offsets_mapping=True)
            found = [p[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]
            words += [w for w in dict.fromkeys(found) if w not in words and any(c.isalnum() for c in w)]  # not punctuation
    return words


def known_words(pipe: Any, model: str) -> str:
    """One line saying which prompt words a model knows: the shipped model's own description (its
    ``model.json`` ``vocabulary``), else a small word-level tokenizer's vocabulary, else a pointer."""
    from .zoo import MODELS

    info = MODELS.get(model)
    if info is not None and info.vocabulary:
        return info.entry(info.vocabulary)()
    tok = getattr(pipe, "tokenizer", None)
    vocab = set(tok.get_vocab()) - set(tok.all_special_tokens) if tok is not None else set()
    return f"the words {', '.join(sorted(vocab))}" if 0 < len(vocab) <= 200 else "the words of its tokenizer's vocabulary"


def warn_unknown_words(pipe: Any, model: str, prompts: list[str]) -> str | None:
    """Log (``accel`` logger, WARNING; the CLI prints it on stderr) and return one line naming the prompt words
    the model does not know and what it knows; None when it knows them all. Sampling goes on either way."""
    unknown = unknown_prompt_words(pipe, prompts)
    if not unknown:
        return None
    line = (f"{model} does not know the word{'s' if len(unknown) > 1 else ''} {', '.join(repr(w) for w in unknown)} "
            f"and ignores {'them' if len(unknown) > 1 else 'it'}; it knows {known_words(pipe, model)}")
    logging.getLogger(__name__).warning(line)
    return line


def load_pipeline(model: str) -> Any:
    from .zoo import load, resolve

    pipe = load(model)
    where = resolve(model)
    pipe._accel_source = str(where) if isinstance(where, Path) else None
    return pipe


def _run(pipe: Any, idx: list[int], kw: dict[str, Any], on_step: Callable[[int, int], None] | None) -> GenerateResult:
    labels = kw["class_labels"]
    return generate(
        pipe, num_images=len(idx), steps=kw["steps"], seed=kw["seed"], seed_offset=idx[0] if idx else 0,
        class_labels=[labels[i] for i in idx] if labels is not None else None,
        prompt=[kw["prompt"][i] for i in idx] if isinstance(kw["prompt"], list) else kw["prompt"],
        guidance_scale=kw["guidance_scale"], on_step=on_step,
    )


def _run_cached(pipe: Any, idx: list[int], kw: dict[str, Any], on_step: Callable[[int, int], None] | None,
                report: dict[str, Any], preset: str | None, threshold: float | None) -> GenerateResult:
    """:func:`_run` with the model's shipped CG-Taylor setting (:func:`accel.caching.shipped.resolve`); what was used
    goes into ``report``."""
    from . import disable, enable, stats
    from .caching.shipped import resolve

    chosen = resolve(pipe, preset, kw["steps"], threshold)
    enable(pipe, chosen.config)
    try:
        result = _run(pipe, idx, kw, on_step)
        st = stats(pipe)
    finally:
        disable(pipe)
    report["threshold"] = chosen.config.threshold
    report["preset"] = preset
    if chosen.shipped and threshold is None:
        report["calibrated_steps"] = chosen.calibrated_steps
    report["forecast_fraction_local"] = st.forecast_fraction
    return result


def sample_to_file(
    model: str,
    out: Path,
    num_images: int,
    steps: int,
    seed: int = 0,
    class_labels: list[int] | None = None,
    prompt: str | list[str] | None = None,
    guidance_scale: float | None = None,
    cache: str = "none",
    threshold: float | None = None,
    preset: str | None = None,
    compare: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any] | None:
    """Generate and write a PNG grid. Under ``accelerate launch`` images are split across processes
    (``PartialState.split_between_processes``) and the main process writes the gathered grid.

    ``cache="cg-taylor"`` uses the model's shipped setting, or its ``preset`` (quality / balanced / fast), the
    one calibrated for ``steps`` where the model ships one (``accel calibrate --steps N --save``);
    ``threshold`` replaces the threshold of either. Returns the report dict on the main process, ``None`` elsewhere.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    if cache not in CACHE_CHOICES:
        raise AccelError(f"cache must be one of {', '.join(CACHE_CHOICES)}, got {cache!r}")
    if isinstance(prompt, list):  # one prompt for all images, or one per image
        if len(prompt) not in (1, num_images):
            raise AccelError(f"give one --prompt or exactly --num-images ({num_images}) of them, got {len(prompt)}")
        prompt = prompt[0] if len(prompt) == 1 else prompt
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())  # several CPU processes form a gloo group
    t_load = time.perf_counter()
    pipe = load_pipeline(model).to(state.device)
    load_seconds = time.perf_counter() - t_load
    if hasattr(pipe, "check_labels"):
        if class_labels is None and prompt is None:
            class_labels = [i % pipe.num_classes for i in range(num_images)]
        pipe.check_labels(class_labels)
    if prompt is not None and state.is_main_process:
        warn_unknown_words(pipe, model, [prompt] if isinstance(prompt, str) else prompt)
    kw = dict(steps=steps, seed=seed, class_labels=class_labels, prompt=prompt, guidance_scale=guidance_scale)
    report: dict[str, Any] = {"model": model, "num_images": num_images, "steps": steps, "seed": seed,
                              "class_labels": class_labels, "prompt": prompt, "cache": cache,
                              "processes": state.num_processes, "host": platform.node(),
                              "load_seconds": round(load_seconds, 4)}
    if cache == "cg-taylor":  # the sampler the shipped setting was calibrated with (uncached comparison included)
        from .caching.shipped import use_calibrated_scheduler

        report["scheduler"] = use_calibrated_scheduler(pipe)
    with state.split_between_processes(list(range(num_images))) as idx:
        step_cb = on_step if state.is_main_process else None
        base = None
        if cache == "none" or compare:
            base = _run(pipe, idx, kw, step_cb if cache == "none" else None)
        result = base
        if cache == "cg-taylor":
            result = _run_cached(pipe, idx, kw, step_cb, report, preset, threshold)
        local = {"idx": list(idx), "images": result.images, "seconds": result.seconds,
                 "base_images": base.images if (base is not None and cache != "none") else None,
                 "base_seconds": base.seconds if base is not None else None,
                 "forecast": report.get("forecast_fraction_local")}
    gathered = gather_object([local]) if state.num_processes > 1 else [local]
    result = _finish(report, gathered, out, cache) if state.is_main_process else None
    if state.num_processes > 1:
        from .training import end_distributed

        end_distributed()
    return result


def _finish(report: dict[str, Any], parts: list[dict[str, Any]], out: Path, cache: str) -> dict[str, Any]:
    from .metrics import psnr

    parts = sorted(parts, key=lambda p: p["idx"][0] if p["idx"] else 1 << 30)
    images = [im for p in parts for im in p["images"]]
    report.pop("forecast_fraction_local", None)
    report["seconds"] = round(max(p["seconds"] for p in parts), 4)  # the pipeline calls' wall time (see generate)
    if isinstance(images[0], list):  # videos: an animated image and a strip of frames
        report["strip"] = str(write_video(images, out))
        report["frames"] = len(images[0])
        images = _frames(images)
    else:
        make_grid(images, scale=max(1, 128 // images[0].width)).save(out)
    report["out"] = str(out)
    if cache != "none":
        fr = [p["forecast"] for p in parts if p["forecast"] is not None]
        report["forecast_fraction"] = round(sum(fr) / len(fr), 4) if fr else None
        if parts[0]["base_images"] is not None:
            base = _frames([im for p in parts for im in p["base_images"]])
            report["uncached_seconds"] = round(max(p["base_seconds"] for p in parts), 4)
            report["speedup"] = round(report["uncached_seconds"] / report["seconds"], 3)
            report["psnr_vs_uncached"] = round(psnr(images, base), 3)
    return report


def _frames(images: list[Any]) -> list[Any]:
    """Images as they are; videos (lists of frames) as all their frames in order."""
    return [f for v in images for f in v] if isinstance(images[0], list) else images


def write_video(videos: list[list[Any]], out: Path, fps: int = 6) -> Path:
    """Write videos (each a list of PIL frames) as one animated image at ``out`` (GIF for ``.gif``, else APNG): each
    frame a grid of the videos' frames at that time; and beside it ``<stem>-strip.png``: one row of frames per video."""
    scale = max(1, 128 // videos[0][0].width)
    frames = [make_grid([v[t] for v in videos], scale=scale) for t in range(len(videos[0]))]
    fmt = "GIF" if out.suffix.lower() == ".gif" else "PNG"
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    strip = out.with_name(out.stem + "-strip.png")
    make_grid(_frames(videos), ncols=len(videos[0]), scale=scale).save(strip)
    return strip


def summary_line(r: dict[str, Any]) -> str:
    """One human line for the terminal."""
    what = f"video(s) of {r['frames']} frames to {r['out']} (frames in {r['strip']})" if "frames" in r else f"image(s) to {r['out']}"
    s = f"wrote {r['num_images']} {what} in {r['seconds']:.2f} s of sampling ({r['steps']} steps"
    if r["processes"] > 1:
        s += f", {r['processes']} processes"
    s += "; the whole pipeline call, as timed on the progress bar"
    if "load_seconds" in r:
        s += f"; loading the model took {r['load_seconds']:.2f} s more"
    s += ")"
    if r["cache"] != "none":
        s += f"; cache {r['cache']} threshold {r['threshold']:g}"
        if r.get("calibrated_steps") is not None:
            s += f" (the model's setting chosen at {r['calibrated_steps']} steps)"
        s += f": {100 * (r['forecast_fraction'] or 0):.0f}% of steps forecast"
        if r.get("scheduler"):
            s += f" (sampled with {r['scheduler']}, the scheduler the model's cache setting was calibrated with)"
        if "speedup" in r:
            s += f", speedup {r['speedup']:.2f}x vs uncached ({r['uncached_seconds']:.2f} s), PSNR {r['psnr_vs_uncached']:.1f} dB"
    return s
