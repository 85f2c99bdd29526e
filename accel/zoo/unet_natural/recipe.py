"""``unet-natural``: the small pretrained grayscale diffusion prior that IDM fine-tunes.

A diffusers ``UNet2DModel`` trained as an unconditional epsilon-prediction denoiser (DDPM objective) on
random 64x64 grayscale patches of the natural photographs shipped inside scikit-image, scikit-learn and
PyWavelets.  Every ``camera`` image (a re-shoot of Set11's cameraman) and the synthetic pictures are left
out by name; :func:`check_disjoint` also verifies that no training image is a copy of a Set11 image.  The result is
an ordinary ``DDPMPipeline`` (``save_pretrained`` layout), so it samples with plain diffusers too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AccelError
from ...training import ProgressFn, TrainLoop, save_trained, warmup_cosine_lr, with_ema

UNET_CONFIG = dict(
    sample_size=64,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 96),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    add_attention=False,  # no attention anywhere (not even in the mid block): cost linear in the pixel count
    norm_num_groups=8,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=True)

# Photographs shipped in the wheels (file names inside each package). Left out on purpose: skimage's and
# PyWavelets' ``camera`` (the Set11 cameraman scene), motorcycle_right (a second view of motorcycle_left)
# and the synthetic or binary pictures (chessboard, clock_motion, color, horse, logo, phantom, text, page).
SKIMAGE_FILES = ("astronaut.png", "brick.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
                 "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
SKLEARN_FILES = ("china.jpg", "flower.jpg")
PYWT_FILES = ("aero", "ascent")
EXCLUDED = ("camera",)


def _gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 luminance (ITU-R BT.601 Y of the [0, 1] RGB, as for Set11) in [0, 1]."""
    x = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(1.0, float(img.max())))
    if x.ndim == 3:
        x = x[..., :3]
        x = (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2] + 16.0) / 255.0
        x = (x - 16 / 255) * (255 / 219)  # full range, like a grayscale photograph
    return np.clip(x, 0.0, 1.0)


def natural_images() -> dict[str, np.ndarray]:
    """The training photographs as float32 grayscale arrays in [0, 1] (name -> (H, W)); nothing downloaded."""
    import skimage.data
    import skimage.io
    import sklearn.datasets

    try:
        import pywt.data
    except ImportError:
        raise AccelError("the unet-natural training data includes PyWavelets' images: pip install PyWavelets") from None
    out: dict[str, np.ndarray] = {}
    sk_dir = Path(skimage.data.__file__).parent
    for f in SKIMAGE_FILES:
        out[f"skimage/{f.split('.')[0]}"] = _gray(skimage.io.imread(sk_dir / f))
    sample = sklearn.datasets.load_sample_images()
    for f, img in zip(sample.filenames, sample.images):
        name = Path(f).name
        if name in SKLEARN_FILES:
            out[f"sklearn/{name.split('.')[0]}"] = _gray(img)
    for f in PYWT_FILES:
        out[f"pywt/{f}"] = _gray(np.asarray(getattr(pywt.data, f)()).astype(np.uint8))
    for name in out:
        if any(name.endswith("/" + e) for e in EXCLUDED):
            raise AccelError(f"internal error: excluded image {name} in the training set")
    return out


def check_disjoint(images: dict[str, np.ndarray], test_dir: str | Path | None = None, size: int = 64, limit: float = 0.9) -> dict[str, tuple[str, float]]:
    """Highest normalised correlation of every training image with the test images (both resized to ``size``);
    ``test_dir`` defaults to the Set11 copy shipped with the package.

    Raises :class:`AccelError` when a pair exceeds ``limit``: this catches copies and crops-to-size of a
    test image.  It cannot tell a re-shoot of a scene (scikit-image's camera scores 0.61 against Set11's
    cameraman, while the unrelated sklearn china scores 0.57), which is why those are excluded by name.
    """
    from PIL import Image

    from accel.invertible.data import default_set11

    test_dir = default_set11() if test_dir is None else test_dir

    def small(a: np.ndarray) -> np.ndarray:
        v = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR), np.float64).ravel()
        v = v - v.mean()
        return v / (np.linalg.norm(v) + 1e-12)

    tests = {p.stem: small(_gray(np.asarray(Image.open(p)))) for p in sorted(Path(test_dir).iterdir()) if p.suffix.lower() in (".tif", ".png", ".bmp", ".jpg")}
    worst: dict[str, tuple[str, float]] = {}
    for name, img in images.items():
        s = small(img)
        cands = [(t, abs(float(s @ v))) for t, v in tests.items()]
        cands += [(t + " (mirrored)", abs(float(small(img[:, ::-1].copy()) @ v))) for t, v in tests.items()]
        worst[name] = max(cands, key=lambda c: c[1])
        if worst[name][1] > limit:
            raise AccelError(f"training image {name} resembles test image {worst[name][0]} (correlation {worst[name][1]:.2f} > {limit})")
    return worst


def sample_patches(images: list[torch.Tensor], n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """n random ``size``-square crops (B, 1, size, size) in [0, 1], images chosen by area, 8 dihedral variants."""
    areas = torch.tensor([float(im.shape[-2] * im.shape[-1]) for im in images])
    idx = torch.multinomial(areas, n, replacement=True, generator=gen)
    out = []
    for i in idx.tolist():
        im = images[i]
        h, w = im.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        p = im[..., top : top + size, left : left + size]
        k, flip = int(torch.randint(0, 4, (1,), generator=gen)), bool(torch.randint(0, 2, (1,), generator=gen))
        p = torch.rot90(p, k, dims=(-2, -1))
        out.append(p.flip(-1) if flip else p)
    return torch.stack(out).unsqueeze(1) if out[0].dim() == 2 else torch.stack(out)


@dataclass
class TrainConfig:
    """Settings of ``accel zoo train unet-natural``.  The defaults reproduced the shipped weights with the
    earlier U-Net (attention at a quarter resolution, the wheels' photographs only); the shipped weights are
    still those until an attention-free run beats them on Set11 (docs/idm.md).

    steps: optimiser steps; batch_size x patch: the crops.  Sizing: one step (batch 16, 64x64, default
    U-Net, 2.6M parameters) took 2.15 s on one core of the 2-core development machine (torch 2.13 CPU,
    1 thread, the other core busy); with 2 threads about 1.3-1.4 s, so 1800 steps take about 40-45 minutes.
    """

    steps: int = 1800
    batch_size: int = 16
    patch: int = 64
    lr: float = 5e-4
    warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "patch", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if self.patch % 8:
            raise AccelError(f"patch must be a multiple of 8 (the U-Net downsamples 4x), got {self.patch}")


def build_unet(**overrides: object) -> torch.nn.Module:
    """A fresh (random) unet-natural ``UNet2DModel``; ``overrides`` change the config (tests use tiny ones)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**(UNET_CONFIG | overrides))


def build_pipeline(unet: torch.nn.Module):
    """The ordinary diffusers ``DDPMPipeline`` around ``unet``."""
    from diffusers import DDPMPipeline, DDPMScheduler

    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER_CONFIG))


def _training_images(patch: int) -> list[torch.Tensor]:
    """All photographs (BSD400 and the wheels', :func:`~accel.invertible.trainset.training_photographs`) plus a
    half-resolution copy of each (coarser textures), as (H, W) tensors."""
    from accel.invertible.trainset import training_photographs

    ims = [torch.from_numpy(a) for a in training_photographs().values()]
    halves = [F.avg_pool2d(a[None, None], 2)[0, 0] for a in ims]
    return [a for a in ims + halves if min(a.shape) >= patch]


def train(out_dir: str | Path, config: TrainConfig | None = None, work_dir: str | Path | None = None,
          progress: ProgressFn | None = None, unet_overrides: dict | None = None,
          images: list[torch.Tensor] | None = None, init: str | Path | None = None) -> Path:
    """Train unet-natural (or resume from ``work_dir/checkpoint.safetensors``) and save the DDPM pipeline.

    Deterministic for a given config on a given machine; an interrupted run resumes exactly.
    ``progress(step, total, loss_ema)`` is called after every step.  ``unet_overrides`` and ``images``
    ((H, W) tensors in [0, 1]) replace the architecture and the photographs (tests use tiny ones).
    ``init``: warm start from another prior's U-Net (pipeline folder or safetensors file): every tensor whose
    name and shape match is copied (the shipped prior started from the earlier one with attention).
    """
    from diffusers import DDPMScheduler

    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    torch.manual_seed(cfg.seed)
    images = _training_images(cfg.patch) if images is None else [im for im in images if min(im.shape) >= cfg.patch]
    if not images:
        raise AccelError(f"no training image is at least {cfg.patch}x{cfg.patch}")
    def build() -> torch.nn.Module:
        unet = build_unet(**(unet_overrides or {}))
        if init is not None:
            from accel.invertible.transfer import copy_matching, unet_tensors

            copy_matching(unet, unet_tensors(init))
        return unet

    model, ema = with_ema(build)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    acp = DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod
    gen = torch.Generator().manual_seed(cfg.seed)
    settings = asdict(cfg) | {"unet_overrides": unet_overrides or {}} | ({"init": str(init)} if init is not None else {})

    def loss_at(step: int) -> torch.Tensor:
        x0 = sample_patches(images, cfg.batch_size, cfg.patch, gen) * 2 - 1
        t = torch.randint(0, len(acp), (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample, noise)

    loop = TrainLoop(work / "checkpoint.safetensors", settings, model, ema, opt, gen, total=cfg.steps,
                     lr_at=lambda step: warmup_cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps), ema_decay=cfg.ema_decay,
                     checkpoint_every=cfg.checkpoint_every, progress=progress)
    loss_ema = loop.run(loss_at)
    return save_trained(out_dir, build_pipeline(ema), settings, loss_ema)


def load_prior(name_or_path: str = "unet-natural") -> tuple[torch.nn.Module, torch.Tensor]:
    """(UNet2DModel, alphas_cumprod) of a shipped prior name or a local DDPM pipeline folder."""
    from .. import load

    pipe = load(name_or_path)
    unet = getattr(pipe, "unet", None)
    if unet is None:
        raise AccelError(f"{name_or_path!r} is not a UNet2DModel pipeline (it has no .unet); IDM needs one such as unet-natural")
    return unet, pipe.scheduler.alphas_cumprod


def sample_grid(name_or_path: str = "unet-natural", n: int = 16, steps: int = 100, seed: int = 0):
    """Sample ``n`` images with the ordinary diffusers pipeline (its own DDPM scheduler, ``steps`` steps): a PIL grid."""
    from ...utils import make_grid
    from .. import load

    pipe = load(name_or_path)
    out = pipe(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), output_type="np").images
    return make_grid((np.clip(out, 0, 1) * 255).round().astype(np.uint8), scale=2)
