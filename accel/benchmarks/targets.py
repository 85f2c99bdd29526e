"""The models the caching benchmark runs on: one entry each in :data:`TARGETS`.

A target says how to load a fresh pipeline, its kind of denoiser (which methods apply), its two disjoint
splits (the items a setting is chosen on and the items it is reported on), how to generate a batch of
items, and its readers: what counts as an item "flipped" by a cache (the object content changed) and any
accuracy against the conditioning. A local pipeline folder gets a target of its kind without readers.

Adding a model is one function returning a :class:`Target` and one line in :data:`TARGETS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import AccelError

# The test split's generation. Test seeds (and flux-shapes' test prompts) are fresh for each generation of the
# protocol and read once by it; a change to any method's code after a verdict run needs a new generation
# before results are reported again. Studies (floors, ablations, the tuner) read the selection split only.
TEST_GENERATION = 4
SELECTION_SEED = 1_000
TEST_SEEDS = {2: 300_000, 3: 500_000, 4: 700_000}  # generation -> first test noise seed (generation 1 used 100000+, and 20000+ on flux-shapes)


def test_seed() -> int:
    return TEST_SEEDS[TEST_GENERATION]


@dataclass(frozen=True)
class Sizes:
    """Items per split, the batch of the quality passes (also timed, beside batch 1), wall-time rounds."""

    selection: int
    test: int
    batch: int  # items per pipeline call in the quality passes
    rounds: int  # wall-time rounds (0: no timing)


@dataclass
class Target:
    name: str
    kind: str  # "dit" | "flux" | "wan" | "unet"
    steps: int
    load: Callable[[], Any]
    items: Callable[[str, int], list[Any]]  # (split, n) -> items; splits "selection" and "test" are disjoint
    generate: Callable[[Any, list[Any]], np.ndarray]  # (pipe, items) -> uint8 (N, H, W, C), videos (N, F, H, W, C), or latents
    full: Sizes
    quick: Sizes
    quick_steps: int | None = None
    latents: bool = False  # outputs are latents (no image readers; PSNR against the reference's peak)
    flips: Callable[[np.ndarray, np.ndarray, list[Any]], np.ndarray] | None = None  # (ref, out, items) -> bool (N,)
    scores: Callable[[np.ndarray, list[Any]], np.ndarray] | None = None  # (images, items) -> bool (N,) correct
    flip_reader: str = "none"
    guidance_batched: bool = False  # the pipeline batches classifier-free guidance's two branches in one call
    task_reader: str = "none"  # what ``scores`` reads: the harm criterion's accuracy
    split_note: str = ""
    test_generation: int = TEST_GENERATION
    extra: dict[str, Any] = field(default_factory=dict)


def _quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------- dit-digits


def _class_conditional(name: str, digits: bool) -> Target:
    from ..zoo import load

    def items(split: str, n: int) -> list[tuple[int, int]]:
        return [(i % 10, (SELECTION_SEED if split == "selection" else test_seed()) + i) for i in range(n)]

    def generate(pipe: Any, its: list[tuple[int, int]]) -> np.ndarray:
        from ..utils import to_uint8

        gens = [torch.Generator().manual_seed(s) for _, s in its]
        with torch.no_grad():
            out = pipe(class_labels=[c for c, _ in its], num_inference_steps=target.steps, generator=gens, output_type="pt").images
        return to_uint8(out)

    flips = scores = None
    if digits:
        from ..zoo.digits import DigitClassifier

        clf = DigitClassifier()

        def read(images: np.ndarray) -> np.ndarray:
            return clf.predict(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)  # the pipeline's [-1, 1]

        def flips(ref: np.ndarray, out: np.ndarray, its: list[Any]) -> np.ndarray:  # noqa: F811
            return read(ref) != read(out)

        def scores(images: np.ndarray, its: list[Any]) -> np.ndarray:  # noqa: F811
            return read(images) == np.array([c for c, _ in its])

    target = Target(name, "dit", 50, lambda: _quiet(load(name)), items, generate,
                    full=Sizes(selection=64, test=256, batch=16, rounds=15),
                    quick=Sizes(selection=2, test=4, batch=2, rounds=1), quick_steps=12,
                    flips=flips, scores=scores, flip_reader="the digit classifier's reading changed" if digits else "none",
                    guidance_batched=True,
                    task_reader="the digit classifier reads the class asked for" if digits else "none",
                    split_note=f"labels 0-9 in turn in both splits; noise seeds {SELECTION_SEED}+ (selection) and {test_seed()}+ (test)")
    return target


# --------------------------------------------------------------------------------------------- flux-shapes


def _same_objects(a: list[Any], b: list[Any], tol: float, min_area: int) -> bool:
    """Whether two images show the same objects: every clear object (area >= 2 x the detector's minimum) of
    either image has one of the same colour and shape in the other, its centroid within ``tol`` pixels.
    Objects near the detector's size floor are not held against either image (they come and go with
    sub-pixel changes that no viewer would call a different image)."""
    def covered(x: list[Any], y: list[Any]) -> bool:
        for d in x:
            if d.area < 2 * min_area:
                continue
            if not any((e.colour, e.shape) == (d.colour, d.shape) and ((e.x - d.x) ** 2 + (e.y - d.y) ** 2) ** 0.5 <= tol for e in y):
                return False
        return True

    return covered(a, b) and covered(b, a)


SELECTION_PROMPTS = 128


def _from_prompts(pipe: Any, its: list[tuple[str, int]], steps: int) -> np.ndarray:
    """A text-to-image (or text-to-video) pipeline's images (videos) for (prompt, noise seed) items, with the
    folder's call defaults."""
    gens = [torch.Generator().manual_seed(s) for _, s in its]
    with torch.no_grad():
        out = pipe(prompt=[p for p, _ in its], num_inference_steps=steps, generator=gens, output_type="np",
                   **getattr(pipe, "accel_call_defaults", {}))
    return _to_uint8(np.asarray(out.images if hasattr(out, "images") else out.frames))


def _flux_shapes(name: str = "flux-shapes") -> Target:
    from ..zoo import load, shapes

    def items(split: str, n: int) -> list[tuple[str, int]]:
        # Selection prompts come from the grammar's own distribution; test prompts from it too (another seed per
        # generation), with every selection prompt removed: the two splits share neither prompts nor noise seeds.
        sel = shapes.prompt_set(SELECTION_PROMPTS, seed=2_001)
        if split == "selection":
            return [(p, SELECTION_SEED + 10_000 + i) for i, p in enumerate(sel[:n])]
        seen, pool = set(sel), []
        for p in shapes.prompt_set(40 * n, seed=3_001 + TEST_GENERATION):
            if p not in seen and len(pool) < (n + 1) // 2:
                pool.append(p)
        return [(p, test_seed() + 2 * i + j) for i, p in enumerate(pool) for j in range(2)][:n]

    def generate(pipe: Any, its: list[tuple[str, int]]) -> np.ndarray:
        return _from_prompts(pipe, its, target.steps)

    def flips(ref: np.ndarray, out: np.ndarray, its: list[Any]) -> np.ndarray:
        tol = 0.1 * ref.shape[1]  # 3.2 px on 32 px images
        floor = max(4, int(0.012 * ref.shape[1] * ref.shape[2]))  # shapes.detect's default size floor
        return np.array([not _same_objects(shapes.detect(a, floor // 2), shapes.detect(b, floor // 2), tol, floor)
                         for a, b in zip(ref, out)])

    def scores(images: np.ndarray, its: list[Any]) -> np.ndarray:
        return np.array([shapes.score(img, p).correct for img, (p, _) in zip(images, its)])

    target = Target(name, "flux", 28, lambda: _quiet(load(name)), items, generate,
                    full=Sizes(selection=SELECTION_PROMPTS, test=512, batch=16, rounds=15),
                    quick=Sizes(selection=2, test=4, batch=2, rounds=1), quick_steps=12,
                    flips=flips, scores=scores, task_reader="the shapes scorer: objects, colours, counts and relations of the prompt",
                    flip_reader="objects changed: a clear object (area >= 2x the detector floor) of either image has no object of its colour and shape within 10% of the side in the other",
                    split_note=f"selection: {SELECTION_PROMPTS} prompts drawn from the grammar (prompt_set seed 2001), noise seeds "
                               f"{SELECTION_SEED + 10_000}+; test: 256 other prompts drawn from it (seed {3_001 + TEST_GENERATION}, every "
                               f"selection prompt removed) x 2 noise seeds ({test_seed()}+)")
    return target


# --------------------------------------------------------------------------------------------- wan-shapes


def _wan_shapes(name: str = "wan-shapes") -> Target:
    from ..zoo import MODELS, load, motion

    # a shipped model runs at its default guidance (wan-shapes: 3); a user's folder at WanPipeline's own
    guidance = {"guidance_scale": MODELS[name].default_guidance} if name in MODELS else {}

    def items(split: str, n: int) -> list[tuple[str, int]]:
        # As flux-shapes: selection prompts from the grammar, test prompts from another draw with every selection
        # prompt removed, two noise seeds each; the splits share neither prompts nor seeds.
        sel = motion.prompt_set(SELECTION_PROMPTS, seed=4_001)
        if split == "selection":
            return [(p, SELECTION_SEED + 20_000 + i) for i, p in enumerate(sel[:n])]
        seen, pool = set(sel), []
        for p in motion.prompt_set(40 * n, seed=5_001 + TEST_GENERATION):
            if p not in seen and p not in pool and len(pool) < (n + 1) // 2:
                pool.append(p)
        return [(p, test_seed() + 2 * i + j) for i, p in enumerate(pool) for j in range(2)][:n]

    def generate(pipe: Any, its: list[tuple[str, int]]) -> np.ndarray:
        gens = [torch.Generator().manual_seed(s) for _, s in its]
        with torch.no_grad():
            out = pipe(prompt=[p for p, _ in its], num_inference_steps=target.steps, generator=gens, output_type="np",
                       **getattr(pipe, "accel_call_defaults", {}), **guidance).frames
        return _to_uint8(np.asarray(out))

    def read(videos: np.ndarray, its: list[Any]) -> list[Any]:
        return [motion.score_clip(v, p) for v, (p, _) in zip(videos, its)]

    def flips(ref: np.ndarray, out: np.ndarray, its: list[Any]) -> np.ndarray:
        return np.array([(a.objects, a.correct, [c.present for c in a.checks]) != (b.objects, b.correct, [c.present for c in b.checks])
                         for a, b in zip(read(ref, its), read(out, its))])

    def scores(videos: np.ndarray, its: list[Any]) -> np.ndarray:
        return np.array([s.correct for s in read(videos, its)])

    target = Target(name, "wan", 20, lambda: _quiet(load(name)), items, generate,
                    full=Sizes(selection=32, test=128, batch=4, rounds=15),
                    quick=Sizes(selection=2, test=2, batch=2, rounds=1), quick_steps=8,
                    flips=flips, scores=scores,
                    task_reader="the motion scorer: every object of the prompt on most frames, moving the named way",
                    flip_reader="the motion scorer's reading changed (an object found or lost, or its motion read otherwise)",
                    split_note=f"selection: {SELECTION_PROMPTS} prompts drawn from the moving-shapes grammar (prompt_set seed 4001), "
                               f"noise seeds {SELECTION_SEED + 20_000}+; test: other prompts drawn from it (seed {5_001 + TEST_GENERATION}, "
                               f"every selection prompt removed) x 2 noise seeds ({test_seed()}+)")
    return target


# --------------------------------------------------------------------------------------------- U-Nets


def _unet_natural() -> Target:
    from diffusers import DDIMPipeline, DDIMScheduler

    from ..zoo import load

    def load_ddim() -> Any:
        src = load("unet-natural")
        return _quiet(DDIMPipeline(unet=src.unet.eval(), scheduler=DDIMScheduler.from_config(src.scheduler.config)))

    def items(split: str, n: int) -> list[int]:
        return [(SELECTION_SEED if split == "selection" else test_seed()) + i for i in range(n)]

    def generate(pipe: Any, its: list[int]) -> np.ndarray:
        gens = [torch.Generator().manual_seed(s) for s in its]
        with torch.no_grad():
            return _to_uint8(pipe(batch_size=len(its), generator=gens, num_inference_steps=target.steps, output_type="np").images)

    target = Target("unet-natural", "unet", 50, load_ddim, items, generate,
                  full=Sizes(selection=16, test=64, batch=4, rounds=15),
                  quick=Sizes(selection=1, test=2, batch=2, rounds=1), quick_steps=10,
                  split_note=f"unconditional: noise seeds {SELECTION_SEED}+ (selection) and {test_seed()}+ (test); sampled with DDIM (eta 0)")
    return target


def tiny_sd15_pipeline(seed: int = 0) -> Any:
    """A random SD-1.5-layout pipeline: the tiny UNet2DConditionModel of diffusers' StableDiffusionPipeline
    tests (32/64 channels, cross-attention dim 32), DDIM, no VAE or text encoder (latents out)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, time_cond_proj_dim=None,
    ).eval()
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return _quiet(StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False))


def _tiny_sd15() -> Target:
    def items(split: str, n: int) -> list[int]:
        return [(SELECTION_SEED if split == "selection" else test_seed()) + i for i in range(n)]

    def generate(pipe: Any, its: list[int]) -> np.ndarray:
        emb = torch.cat([torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(s + 10_000_000)) for s in its])
        neg = torch.cat([torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(s + 20_000_000)) for s in its])
        gens = [torch.Generator().manual_seed(s) for s in its]
        with torch.no_grad():
            out = pipe(prompt_embeds=emb, negative_prompt_embeds=neg, height=64, width=64, guidance_scale=7.5,
                       num_inference_steps=target.steps, generator=gens, output_type="latent").images
        return out.float().numpy()

    target = Target("tiny-sd15", "unet", 50, tiny_sd15_pipeline, items, generate,
                    full=Sizes(selection=16, test=64, batch=8, rounds=15),
                    quick=Sizes(selection=1, test=2, batch=2, rounds=1), quick_steps=10, latents=True,
                    split_note=f"random prompt embeddings and noise from seeds {SELECTION_SEED}+ (selection) and {test_seed()}+ (test); "
                               "a random network: mechanics and speed, not image quality (PSNR on latents)")
    return target


TARGETS: dict[str, Callable[[], Target]] = {
    "dit-digits": lambda: _class_conditional("dit-digits", digits=True),
    "flux-shapes": _flux_shapes,
    "wan-shapes": _wan_shapes,
    "wan22-shapes": lambda: _wan_shapes("wan22-shapes"),
    "unet-natural": _unet_natural,
    "tiny-sd15": _tiny_sd15,
}


def _text_to_image(name: str, index: dict[str, Any]) -> Target:
    """Any text-to-image or text-to-video pipeline folder (``pipe(prompt, num_inference_steps, generator,
    output_type="np")``), for the caller's own prompts (:func:`with_conditioning`)."""
    from ..zoo import load

    def generate(pipe: Any, its: list[tuple[str, int]]) -> np.ndarray:
        return _from_prompts(pipe, its, target.steps)

    kind = "unet" if "unet" in index and "transformer" not in index else "wan" if index.get("_class_name", "").startswith("Wan") else "dit"
    target = Target(name, kind, 50, lambda: _quiet(load(name)), lambda split, n: [], generate,
                    full=Sizes(selection=16, test=64, batch=4, rounds=15), quick=Sizes(selection=2, test=2, batch=2, rounds=1),
                    quick_steps=10, extra={"text": True})
    return target


def with_conditioning(name: str, prompts: list[str] | None = None, labels: list[int] | None = None) -> Target:
    """``name``'s target on the caller's own prompts (a text-to-image pipeline) or class labels (a class-conditional
    one): the first half of them is the selection split, the second half the test split, each cycled with its own
    noise seeds (1000+ and the test generation's), so the splits share neither conditioning nor noise. No task reader
    applies to conditioning the benchmark did not write: the harm criterion is the 10th-percentile PSNR."""
    given = prompts if prompts is not None else labels
    if prompts is not None and labels is not None:
        raise AccelError("give prompts or class labels, not both")
    if given is None:
        return get_target(name)
    if len(given) < 2:
        raise AccelError(f"give at least 2 {'prompts' if prompts is not None else 'labels'}: the first half chooses the "
                         "setting, the second half tests it")
    where = Path(name).expanduser()
    index = json.loads((where / "model_index.json").read_text()) if name not in TARGETS and (where / "model_index.json").is_file() else {}
    if prompts is not None and index and index.get("_class_name") != "FluxPipeline" and "text_encoder" in index:
        target = _text_to_image(str(where), index)  # any other text-to-image pipeline
    else:
        target = get_target(name)
    if labels is not None and not target.guidance_batched:
        raise AccelError(f"{name} is not class-conditional: give --prompts instead of --labels")
    if prompts is not None and not (target.kind == "flux" or target.extra.get("text")):
        raise AccelError(f"{name} does not take text prompts" + (": give --labels" if target.guidance_batched else ""))
    half = (len(given) + 1) // 2
    pools = {"selection": (list(given[:half]), SELECTION_SEED), "test": (list(given[half:]), test_seed())}

    def items(split: str, n: int) -> list[tuple[Any, int]]:
        pool, seed = pools[split]
        return [(pool[i % len(pool)], seed + i) for i in range(n)]

    target.items, target.flips, target.scores = items, None, None
    target.flip_reader = target.task_reader = "none"
    target.full = Sizes(selection=max(half, target.full.selection), test=max(len(given) - half, target.full.test),
                        batch=target.full.batch, rounds=target.full.rounds)
    what = "prompts" if prompts is not None else "labels"
    target.split_note = (f"the caller's {len(given)} {what}: the first {half} for selection (noise seeds {SELECTION_SEED}+), "
                         f"the other {len(given) - half} for test (noise seeds {test_seed()}+), each cycled over its split")
    return target


def get_target(name: str) -> Target:
    """A registered target, or one built from a local pipeline folder (a class-conditional DiT without
    readers, a FLUX pipeline with flux-shapes' prompts and readers, or a UNet2DModel pipeline)."""
    if name in TARGETS:
        return TARGETS[name]()
    where = Path(name).expanduser()
    index_path = where / "model_index.json"
    if not index_path.is_file():
        raise AccelError(f"unknown benchmark target {name!r}; known: {', '.join(TARGETS)} (or a local pipeline folder)")
    index = json.loads(index_path.read_text())
    cls = index.get("_class_name", "")
    if cls == "ClassConditionalPipeline":
        return _class_conditional(str(where), digits=False)
    if cls == "FluxPipeline":  # prompts of the flux-shapes grammar, read by its scorer
        return _flux_shapes(str(where))
    if cls == "WanPipeline":  # prompts of the moving-shapes grammar, read by its scorer
        return _wan_shapes(str(where))
    if "text_encoder" in index:
        raise AccelError(f"{name!r} is a text-to-image {cls or 'pipeline'}: give your own prompts (accel calibrate --prompts FILE)")
    if "unet" in index and "transformer" not in index:
        t = _unet_natural()
        from diffusers import DDIMPipeline, DDIMScheduler

        from ..zoo import load

        def load_ddim() -> Any:
            src = load(str(where))
            return _quiet(DDIMPipeline(unet=src.unet.eval(), scheduler=DDIMScheduler.from_config(src.scheduler.config)))

        t.name, t.load = str(where), load_ddim
        return t
    raise AccelError(f"{name!r} is a {cls or 'pipeline'} folder; the benchmark takes class-conditional DiT, FLUX or "
                     f"UNet2DModel folders, or one of: {', '.join(TARGETS)}")
