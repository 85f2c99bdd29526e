"""``wan-shapes``: a small text-to-video Wan pipeline trained here on clips of moving flat shapes.

Every part is the class Wan uses, at a tiny size: ``WanTransformer3DModel`` at Wan2.1-1.3B's depth (30 blocks, narrow,
so that one block is about the share of a step it is in Wan), ``AutoencoderKLWan`` (32x32 frames -> 16x16 latents,
9 frames -> 5), ``UMT5EncoderModel`` with a word-level tokenizer over the moving-shapes grammar
(``accel.zoo.motion``), and Wan's flow-matching UniPC scheduler, in a stock ``WanPipeline``. Training has two
stages, both seeded and resumable:

1. ``vae``: the autoencoder on rendered clips; then the latents' per-channel mean and spread set
   ``latents_mean`` / ``latents_std``, which WanPipeline undoes before decoding.
2. ``wan``: transformer and text encoder together, rectified flow (Wan's velocity target ``noise - x0``, timesteps
   ``1000 sigma`` with Wan's shift), 10% empty prompts (the pipeline's unconditional branch), on a pool of clips
   encoded once by the autoencoder (``pool_size``, kept in the work directory; encoding every batch afresh was 37% of
   a step).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AccelError
from ...training import ProgressFn, TrainLoop, cycles_lr, numpy_rng, save_trained, train_autoencoder, with_ema
from ...utils import SPECIAL_TOKENS, atomic_write_bytes, word_tokenizer
from .. import motion

SIZE, FRAMES = 32, 9
WORDS = sorted({"a", "an", "and", "moving", *motion.DIRECTIONS, *motion.COLOURS, *motion.SHAPES})
MAX_TOKENS = 16  # the prompt length the pipeline is called with (its default is Wan's 512)
TEXT_WIDTH = 64
Z = 4
# 2x spatial, 2x temporal: 9 frames of 32x32 -> 5 x 16x16 latents. A 4x-spatial autoencoder of this size stalls at ~19 dB
# and loses the colours (its reconstructions read right by the motion scorer: 3% after 600 steps); this one, after its
# 3000 steps, reconstructs 128 fresh clips at 30.1 dB median and the scorer reads 94.5% of them right (single 98%, pair 90%).
VAE_CONFIG = dict(base_dim=16, z_dim=Z, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[], temperal_downsample=[True],
                  latents_mean=[0.0] * Z, latents_std=[1.0] * Z, scale_factor_temporal=2, scale_factor_spatial=2)
UMT5_CONFIG = dict(vocab_size=len(SPECIAL_TOKENS) + len(WORDS), d_model=TEXT_WIDTH, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
# Patches of 5 x 2 x 2 latents: a token is a 4x4-pixel tube through the whole clip, 8 x 8 = 64 tokens. With patches one
# latent frame deep (1 x 4 x 4, 80 tokens) the model learnt the axis of the motion but never its sign: after 19,000
# steps the loss with the direction word flipped (left <-> right, up <-> down) was within 1-2% of the true prompt's
# while swapping the axis cost 30-50%, and 14 of 30 single objects it drew moved the opposite way. Wan's rotary
# positions are relative and separate per axis, so "later frames further right" is a product of two signs that one
# attention layer cannot express; inside a token, time is the patch's own weights, and a 1,500-step pilot with
# patches spanning the clip's time learnt the sign as soon as it used the prompt.
# Width 128 (8 heads of 16, FFN 256): at width 64 the sign was learnt but after 19,000 steps only a third of single
# clips held the right object (squares and triangles came out as blobs, colours drifted across frames); in 500-step
# pilots on the same pool the held-out loss at sigma 0.8 was 0.336 at width 128 against 0.690 at width 64 (0.600 after
# 1,000 steps, the same time on one core).
TRANSFORMER_CONFIG = dict(patch_size=(5, 2, 2), num_attention_heads=8, attention_head_dim=16, in_channels=Z, out_channels=Z,
                          text_dim=TEXT_WIDTH, freq_dim=64, ffn_dim=256, num_layers=30, cross_attn_norm=True,
                          qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
SHIFT = 3.0  # Wan's flow shift at low resolution
SCHEDULER_CONFIG = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=SHIFT)
# The transformer's 6.2M weights are stored as float16 (12 MB instead of 25 in the wheel; loaded back as float32).
HALF = ("transformer",)
CALL = {"height": SIZE, "width": SIZE, "num_frames": FRAMES, "max_sequence_length": MAX_TOKENS}


def describe_vocabulary() -> str:
    return (f"colours {', '.join(motion.COLOURS)}; shapes {', '.join(motion.SHAPES)}; directions "
            f"{', '.join(motion.DIRECTIONS)} ('a red circle moving right', two joined by 'and')")


@dataclass
class TrainConfig:
    """Settings of ``accel zoo train wan-shapes``."""

    vae_steps: int = 3000
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    steps: int = 5000
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 150
    ema_decay: float = 0.998
    prompt_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200
    vae_floor: float = 0.9  # share of reconstructed clips the motion scorer must read right before stage 2 starts
    # further cosine cycles of the diffusion stage after its first ``steps``: (steps, peak lr) each, 100 warm-up steps;
    # the list may grow after a run finished, and the work directory's checkpoint resumes into the longer schedule.
    restarts: tuple[tuple[int, float], ...] = ((6000, 3e-4),)
    pool_size: int = 16384  # clips encoded once for the diffusion stage (half single, half pair)

    def __post_init__(self) -> None:
        for name in ("vae_steps", "vae_batch_size", "steps", "batch_size", "checkpoint_every", "pool_size"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.vae_floor <= 1:
            raise AccelError(f"vae_floor must be in [0, 1], got {self.vae_floor}")
        if not 0 <= self.prompt_dropout < 1:
            raise AccelError(f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}")
        self.restarts = tuple((int(n), float(lr)) for n, lr in self.restarts)
        if any(n <= 0 or lr <= 0 for n, lr in self.restarts):
            raise AccelError(f"every restart needs positive (steps, lr), got {self.restarts}")

    @property
    def diffusion_steps(self) -> int:
        return self.steps + sum(n for n, _ in self.restarts)

    def lr_at(self, step: int) -> float:
        """Warm-up then cosine over ``steps``; then each restart is another cosine cycle with 100 warm-up steps."""
        first = (self.steps, self.lr, min(self.warmup, self.steps // 4))
        return cycles_lr(step, [first, *((n, lr, min(100, n // 4)) for n, lr in self.restarts)])


def build_tokenizer():
    """A word-level tokenizer over the grammar's words, adding </s> as T5's does."""
    return word_tokenizer(WORDS, "$A </s>", 512)


def build_vae(seed: int = 0) -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(**VAE_CONFIG)


def build_models(seed: int = 0) -> dict[str, torch.nn.Module]:
    """The three networks, freshly initialised from ``seed`` (the VAE first)."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    return {"vae": build_vae(seed), "transformer": WanTransformer3DModel(**TRANSFORMER_CONFIG),
            "text_encoder": UMT5EncoderModel(UMT5Config(**UMT5_CONFIG))}


def build_pipeline(models: dict[str, torch.nn.Module]):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    for m in models.values():
        m.eval().requires_grad_(False)
    return WanPipeline(tokenizer=build_tokenizer(), scheduler=UniPCMultistepScheduler(**SCHEDULER_CONFIG), **models)


def batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` rendered clips in [-1, 1], (n, 3, FRAMES, SIZE, SIZE), and their prompts (single and pair in turn)."""
    clips = [motion.random_clip(rng, SIZE, motion.KINDS[int(rng.random() < 0.5)]) for _ in range(n)]
    video = np.stack([motion.render_clip(c, FRAMES, SIZE) for c in clips])  # (n, F, H, W, 3)
    return torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 127.5 - 1, [c.prompt for c in clips]


def _train_vae(cfg: TrainConfig, work: Path, progress: ProgressFn | None) -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    done = work / "vae"
    if (done / "config.json").is_file():
        return AutoencoderKLWan.from_pretrained(done)
    sub = {k: getattr(cfg, k) for k in ("vae_steps", "vae_batch_size", "vae_lr", "seed")}
    ema = train_autoencoder(work / "vae.safetensors", sub, lambda: build_vae(cfg.seed), lambda rng, n: batch(rng, n)[0],
                            steps=cfg.vae_steps, batch_size=cfg.vae_batch_size, lr=cfg.vae_lr, warmup=min(100, cfg.vae_steps // 4),
                            seed=cfg.seed, checkpoint_every=cfg.checkpoint_every, progress=progress)
    with torch.no_grad():  # per-channel latent statistics -> Wan's (z - mean) / std normalisation
        x, _ = batch(np.random.default_rng(cfg.seed + 1), 64)
        z = torch.cat([ema.encode(c).latent_dist.mode() for c in x.split(32)])
    dims = (0, 2, 3, 4)
    ema.register_to_config(latents_mean=[round(float(v), 4) for v in z.mean(dims)],
                           latents_std=[round(float(v), 4) for v in z.std(dims)])
    check_autoencoder(ema, cfg.vae_floor, cfg.seed)
    ema.save_pretrained(done)
    return ema


def check_autoencoder(vae: torch.nn.Module, floor: float, seed: int, n: int = 32) -> float:
    """The share of ``n`` rendered clips whose reconstruction the motion scorer reads right; below ``floor`` the
    diffusion stage would learn to make clips the decoder cannot show, so training stops here with what to change."""
    x, prompts = batch(np.random.default_rng(seed + 2), n)
    with torch.no_grad():
        rec = torch.cat([vae(c).sample for c in x.split(8)])
    clips = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()
    read = float(np.mean([motion.score_clip(c, p).correct for c, p in zip(clips, prompts)]))
    if read < floor:
        raise AccelError(f"the autoencoder stage reconstructs {read:.0%} of {n} clips so that the motion scorer reads them "
                         f"right (floor {floor:.0%}): train it longer (vae_steps) or with more capacity before the "
                         "diffusion stage")
    return read


def latent_pool(vae: torch.nn.Module, n: int, seed: int, path: Path,
                progress: ProgressFn | None = None) -> tuple[torch.Tensor, list[str]]:
    """``n`` rendered clips encoded once (normalised latents, float16) and their prompts, drawn from ``seed``; saved to
    ``path`` (atomically) and read back from there when it holds a pool of that size and seed."""
    from safetensors import safe_open
    from safetensors.torch import save

    if path.is_file():
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("n") == str(n) and meta.get("seed") == str(seed):
                return f.get_tensor("latents"), json.loads(meta["prompts"])
    rng, chunks, prompts = np.random.default_rng(seed), [], []
    with torch.no_grad():
        for i in range(0, n, 32):
            x, p = batch(rng, min(32, n - i))
            chunks.append(normalise(vae, vae.encode(x).latent_dist.mode()).half())
            prompts += p
            if progress is not None:
                progress(i + len(p), n, float("nan"))
    latents = torch.cat(chunks)
    atomic_write_bytes(path, save({"latents": latents}, metadata={"n": str(n), "seed": str(seed), "prompts": json.dumps(prompts)}))
    return latents, prompts


def normalise(vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Latents in the space the transformer works in (what WanPipeline de-normalises before decoding)."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (z - mean) / std


def encode_prompts(text: torch.nn.Module, tok: Any, prompts: list[str]) -> torch.Tensor:
    """The prompt sequence exactly as WanPipeline.encode_prompt makes it: UMT5's states, zero beyond each prompt."""
    enc = tok(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, add_special_tokens=True,
              return_attention_mask=True, return_tensors="pt")
    return text(enc.input_ids, enc.attention_mask).last_hidden_state * enc.attention_mask[..., None]


class _Trainable(torch.nn.Module):
    def __init__(self, models: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self.transformer, self.text_encoder = models["transformer"], models["text_encoder"]


def train(out_dir: str | Path, config: TrainConfig | None = None, work_dir: str | Path | None = None,
          progress: ProgressFn | None = None) -> Path:
    """Train wan-shapes (both stages; resumes from ``work_dir``) and save the WanPipeline to ``out_dir``."""
    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    work.mkdir(parents=True, exist_ok=True)
    total = cfg.vae_steps + cfg.diffusion_steps
    vae = _train_vae(cfg, work, (lambda s, n, loss: progress(s, total, loss)) if progress else None).eval().requires_grad_(False)

    pool, pool_prompts = latent_pool(vae, cfg.pool_size, cfg.seed + 3, work / "pool.safetensors",
                                     (lambda i, n, _: print(f"encoding the clip pool: {i}/{n}", flush=True)) if progress else None)
    torch.manual_seed(cfg.seed)
    model, ema = with_ema(lambda: _Trainable(build_models(cfg.seed)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    tok = build_tokenizer()

    def loss_at(step: int) -> torch.Tensor:
        rng = numpy_rng(gen)
        idx = rng.integers(0, len(pool_prompts), cfg.batch_size)
        x0 = pool[torch.from_numpy(idx)].float()
        prompts = ["" if rng.random() < cfg.prompt_dropout else pool_prompts[i] for i in idx]
        u = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen))
        sigma = SHIFT * u / (1 + (SHIFT - 1) * u)  # Wan's shifted flow sigmas
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        pred = model.transformer(hidden_states=xt, timestep=1000 * sigma, encoder_hidden_states=encode_prompts(model.text_encoder, tok, prompts),
                                 return_dict=False)[0]
        return F.mse_loss(pred, noise - x0)

    # The transformer's shape is part of what a checkpoint must match: a work directory of another recipe is refused.
    sub = {**{k: v for k, v in asdict(cfg).items() if not k.startswith("vae_")}, "transformer": TRANSFORMER_CONFIG}
    loop = TrainLoop(work / "wan.safetensors", sub, model, ema, opt, gen, total=cfg.diffusion_steps, lr_at=cfg.lr_at,
                     ema_decay=cfg.ema_decay, checkpoint_every=cfg.checkpoint_every, extendable="restarts",
                     progress=(lambda s, n, loss: progress(cfg.vae_steps + s, total, loss)) if progress else None)
    loss_ema = loop.run(loss_at)
    pipe = build_pipeline({"vae": vae, "transformer": ema.transformer, "text_encoder": ema.text_encoder})
    out = save_trained(out_dir, pipe, asdict(cfg), loss_ema, half=HALF)
    from .._registry import CALL_DEFAULTS

    (Path(out) / CALL_DEFAULTS).write_text(json.dumps(CALL, indent=2) + "\n")
    return out
