"""``flux-shapes``: a small text-to-image FLUX pipeline trained here on flat-shape scenes.

Every part is the class the real FLUX.1 uses, at a tiny size: ``FluxTransformer2DModel`` (double- and
single-stream blocks, rotary positions), ``AutoencoderKL``, ``CLIPTextModel`` (pooled vector) and
``T5EncoderModel`` (token sequence), with word-level tokenizers built from the grammar's vocabulary, in
a stock ``FluxPipeline``. Training has two stages, both seeded and resumable:

1. ``vae``: the autoencoder (32x32 RGB -> 16x16x4 latents) on rendered scenes; then the latents' mean
   and spread set ``shift_factor`` / ``scaling_factor``.
2. ``flux``: transformer and both text encoders together, rectified flow (FLUX's velocity target),
   10% empty prompts (for true CFG), the T5 padding length drawn per batch so the model does not depend
   on it.
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
from ...utils import SPECIAL_TOKENS, word_tokenizer
from .. import shapes

IMAGE_SIZE = 32
WORDS = sorted({"a", "an", "two", "three", "to", "the", "left", "right", "of", "above", "below",
                *shapes.COLOURS, *shapes.SHAPES, *(s + "s" for s in shapes.SHAPES)})
CLIP_MAX_LENGTH = 77
T5_LENGTHS = (16, 16, 16, 16, 24, 32, 64)  # padding lengths drawn in training; inference default: 16

def describe_vocabulary() -> str:
    """The prompt words flux-shapes knows, by kind, in one line (its tokenizers map any other word to <unk>)."""
    counts = ["a", "an", *(w for n, w in sorted(shapes.COUNT_WORDS.items()) if n > 1)]
    return (f"colours {', '.join(shapes.COLOURS)}; shapes {', '.join(shapes.SHAPES)} (plural with -s); "
            f"counts {', '.join(counts)}; relations {', '.join(shapes.RELATIONS)}")


VAE_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=IMAGE_SIZE,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False,
)
TEXT_WIDTH = 64
CLIP_CONFIG = dict(vocab_size=len(SPECIAL_TOKENS) + len(WORDS), hidden_size=TEXT_WIDTH, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=TEXT_WIDTH,
                   pad_token_id=0, bos_token_id=3, eos_token_id=1)
T5_CONFIG = dict(vocab_size=len(SPECIAL_TOKENS) + len(WORDS), d_model=TEXT_WIDTH, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                 relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=16, num_layers=4, num_single_layers=4, attention_head_dim=32, num_attention_heads=4,
    joint_attention_dim=TEXT_WIDTH, pooled_projection_dim=TEXT_WIDTH, guidance_embeds=False, axes_dims_rope=(8, 12, 12),
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                        base_image_seq_len=256, max_image_seq_len=4096)


@dataclass(frozen=True)
class Restart:
    """One further cosine cycle of stage 2 (after the first ``steps``), with 100 warm-up steps.

    steps: its length; lr: its peak learning rate; mix: the prompt mix (single, count, relation) drawn in
    it (None: ``shapes.DEFAULT_MIX``); t5_causal_heads: at its first step T5's first k heads become causal
    (0: no change; see :func:`make_t5_heads_causal`).
    """

    steps: int
    lr: float
    mix: tuple[float, float, float] | None = None
    t5_causal_heads: int = 0

    def __post_init__(self) -> None:
        given = repr(self)
        try:
            mix = tuple(float(m) for m in self.mix) if self.mix is not None else None
        except (TypeError, ValueError):
            mix = ()
        object.__setattr__(self, "mix", mix)
        ok = isinstance(self.steps, int) and self.steps > 0 and isinstance(self.lr, (int, float)) and self.lr > 0
        ok = ok and (mix is None or (len(mix) == 3 and min(mix) >= 0 and abs(sum(mix) - 1) < 1e-6))
        heads = self.t5_causal_heads
        if not (ok and isinstance(heads, int) and 0 <= heads <= T5_CONFIG["num_heads"]):
            raise AccelError(f"bad restart {given}: steps and lr must be positive, mix three shares (single, count, "
                             f"relation) summing to 1, t5_causal_heads in 0..{T5_CONFIG['num_heads']}")

    @classmethod
    def of(cls, r: Any) -> "Restart":
        """A restart from itself, a dict of its fields, or the older positional form ``(steps, lr)``,
        ``(steps, lr, mix)``, ``(steps, lr, mix, {"t5_causal_heads": k})`` (the shipped train_config.json)."""
        if isinstance(r, Restart):
            return r
        if isinstance(r, dict) and set(r) <= {"steps", "lr", "mix", "t5_causal_heads"}:
            return cls(**r)
        if isinstance(r, (tuple, list)) and 2 <= len(r) <= 4:
            changes = r[3] if len(r) == 4 else {}
            if isinstance(changes, dict) and set(changes) <= {"t5_causal_heads"}:
                return cls(r[0], r[1], r[2] if len(r) >= 3 else None, changes.get("t5_causal_heads", 0))
        raise AccelError(f"bad restart {r!r}: give Restart(steps, lr, mix=None, t5_causal_heads=0) or its fields as a dict")


@dataclass
class TrainConfig:
    """Settings of ``accel zoo train flux-shapes``; the defaults reproduce the shipped weights."""

    vae_steps: int = 800
    vae_batch_size: int = 16
    vae_lr: float = 1e-3
    steps: int = 4000
    batch_size: int = 24
    lr: float = 6e-4
    warmup: int = 150
    # further cosine cycles after the first ``steps`` (see Restart); older positional tuples are converted
    restarts: tuple[Restart, ...] = (Restart(6000, 4e-4), Restart(8000, 3e-4, (0.2, 0.1, 0.7)),
                                     Restart(8000, 3e-4, (0.15, 0.1, 0.75), t5_causal_heads=1))
    ema_decay: float = 0.998
    prompt_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        for name in ("vae_steps", "vae_batch_size", "steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise AccelError(f"{name} must be positive, got {getattr(self, name)}")
        self.restarts = tuple(Restart.of(r) for r in self.restarts)
        if not 0 <= self.prompt_dropout < 1:
            raise AccelError(f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}")

    @property
    def total_steps(self) -> int:
        return self.steps + sum(r.steps for r in self.restarts)

    def _restart_at(self, step: int) -> tuple[int, Restart | None]:
        """``(step within its restart, the restart)``; the restart is None in the first cycle and past the end."""
        step -= self.steps
        for r in self.restarts:
            if 0 <= step < r.steps:
                return step, r
            step -= r.steps
        return step, None

    def lr_at(self, step: int) -> float:
        """Warm-up then cosine over ``steps``; then each restart is another cosine cycle (100 warm-up steps)."""
        return cycles_lr(step, [(self.steps, self.lr, self.warmup), *((r.steps, r.lr, 100) for r in self.restarts)])

    def mix_at(self, step: int) -> tuple[float, float, float]:
        """The prompt mix (single, count, relation) of the cycle ``step`` is in."""
        r = self._restart_at(step)[1]
        return r.mix if r is not None and r.mix is not None else shapes.DEFAULT_MIX

    def changes_at(self, step: int) -> dict[str, int]:
        """The model changes made before ``step`` (only at the first step of a restart that names some)."""
        within, r = self._restart_at(step)
        return {"t5_causal_heads": r.t5_causal_heads} if r is not None and within == 0 and r.t5_causal_heads else {}


def _upgrade_settings(old: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored settings with older positional restarts in the current named form."""
    if isinstance(old.get("restarts"), list):
        old = old | {"restarts": [asdict(Restart.of(r)) for r in old["restarts"]]}
    return old


def build_tokenizer(kind: str):
    """A word-level tokenizer over the grammar's words: ``"clip"`` adds <s> ... </s>, ``"t5"`` adds </s>."""
    return word_tokenizer(WORDS, "<s> $A </s>" if kind == "clip" else "$A </s>", CLIP_MAX_LENGTH if kind == "clip" else 512, bos=True)


def build_vae(seed: int = 0) -> torch.nn.Module:
    """The autoencoder alone, initialised exactly as :func:`build_models` initialises it (it is drawn first)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_CONFIG)


def build_models(seed: int = 0) -> dict[str, torch.nn.Module]:
    """All four networks, freshly initialised from ``seed`` (the VAE first: the recipe's initial weights
    depend on that order)."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    return {
        "vae": build_vae(seed),
        "transformer": FluxTransformer2DModel(**TRANSFORMER_CONFIG),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)),
        "text_encoder_2": T5EncoderModel(T5Config(**T5_CONFIG)),
    }


CALL = {"height": IMAGE_SIZE, "width": IMAGE_SIZE, "max_sequence_length": 16}


def write_call_defaults(folder: str | Path) -> None:
    """The call settings flux-shapes was trained for, read by ``accel.zoo.load`` (see ``CALL_DEFAULTS``)."""
    from .._registry import CALL_DEFAULTS

    (Path(folder) / CALL_DEFAULTS).write_text(json.dumps(CALL, indent=2) + "\n")


def make_t5_heads_causal(text_encoder_2: torch.nn.Module, heads: int) -> None:
    """Make T5's first ``heads`` attention heads causal: each token then sees only itself and the tokens before it.

    T5 knows word order only through its relative-position biases, and the trained bidirectional biases
    came out nearly symmetric: "red" embedded almost identically (cosine 0.9997) first or second in "a red
    circle to the left of a blue square", so the prompt did not say which object the relation puts where.
    A causal head gives the second object's words the relation words before them and the first object's
    words none. It is made by setting the head's biases for keys after the query to -30 (the relative
    biases are shared by every layer; their gradient there is ~0, so the head stays causal in training).
    """
    bias = text_encoder_2.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight  # (buckets, heads)
    half = bias.shape[0] // 2  # bidirectional buckets: the upper half holds keys after the query
    with torch.no_grad():
        bias[half:, :heads] = -30.0


def build_pipeline(models: dict[str, torch.nn.Module]):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    for m in models.values():
        m.eval().requires_grad_(False)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), tokenizer=build_tokenizer("clip"),
                        tokenizer_2=build_tokenizer("t5"), **models)


def batch(rng: np.random.Generator, n: int, mix: tuple[float, float, float] = shapes.DEFAULT_MIX) -> tuple[torch.Tensor, list[str]]:
    """``n`` rendered scenes in [-1, 1], (n, 3, 32, 32), and their prompts (kinds drawn by ``mix``)."""
    scenes = [shapes.random_scene(rng, IMAGE_SIZE, mix=mix) for _ in range(n)]
    img = np.stack([shapes.render(s, IMAGE_SIZE) for s in scenes])
    return torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1, [s.prompt for s in scenes]


def _train_vae(cfg: TrainConfig, work: Path, progress: ProgressFn | None) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    done = work / "vae"
    if (done / "config.json").is_file():
        return AutoencoderKL.from_pretrained(done)
    sub = {k: getattr(cfg, k) for k in ("vae_steps", "vae_batch_size", "vae_lr", "seed")}
    ema = train_autoencoder(work / "vae.safetensors", sub, lambda: build_vae(cfg.seed), lambda rng, n: batch(rng, n)[0],
                            steps=cfg.vae_steps, batch_size=cfg.vae_batch_size, lr=cfg.vae_lr, warmup=100, seed=cfg.seed,
                            checkpoint_every=cfg.checkpoint_every, progress=progress)
    # latent statistics -> FLUX's (z - shift) * scale normalisation
    with torch.no_grad():
        x, _ = batch(np.random.default_rng(cfg.seed + 1), 1024)
        z = torch.cat([ema.encode(c).latent_dist.mode() for c in x.split(256)])
    ema.register_to_config(shift_factor=round(float(z.mean()), 4), scaling_factor=round(float(1 / z.std()), 4))
    ema.save_pretrained(done)
    return ema


def encode_prompts(text: torch.nn.Module, text_2: torch.nn.Module, tok: Any, tok_2: Any, prompts: list[str],
                   t5_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 sequence, CLIP pooled vector) exactly as FluxPipeline.encode_prompt computes them."""
    ids = tok(prompts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
    ids_2 = tok_2(prompts, padding="max_length", max_length=t5_length, truncation=True, return_tensors="pt").input_ids
    return text_2(ids_2)[0], text(ids).pooler_output


class _Trainable(torch.nn.Module):
    """The three networks trained together in stage 2 (one module, for the shared checkpoint code)."""

    def __init__(self, models: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self.transformer = models["transformer"]
        self.text_encoder = models["text_encoder"]
        self.text_encoder_2 = models["text_encoder_2"]


def train(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    work_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Train flux-shapes (both stages; resumes from ``work_dir``) and save the FluxPipeline to ``out_dir``.

    ``progress(step, total, loss)`` is called after every step, counting both stages: the VAE's
    ``vae_steps``, then stage 2's ``total_steps``.
    """
    from diffusers import FluxPipeline

    cfg = config or TrainConfig()
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / ".train"
    work.mkdir(parents=True, exist_ok=True)
    total = cfg.vae_steps + cfg.total_steps
    vae_progress = (lambda s, n, loss: progress(s, total, loss)) if progress is not None else None
    vae = _train_vae(cfg, work, vae_progress).eval().requires_grad_(False)

    torch.manual_seed(cfg.seed)
    model, ema = with_ema(lambda: _Trainable(build_models(cfg.seed)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    tok, tok_2 = build_tokenizer("clip"), build_tokenizer("t5")
    h = IMAGE_SIZE // 2
    img_ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, h // 2, "cpu", torch.float32)

    def loss_at(step: int) -> torch.Tensor:
        rng = numpy_rng(gen)
        x, prompts = batch(rng, cfg.batch_size, cfg.mix_at(step))
        prompts = ["" if rng.random() < cfg.prompt_dropout else p for p in prompts]
        length = int(rng.choice(T5_LENGTHS))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
            z = (z - vae.config.shift_factor) * vae.config.scaling_factor
        x0 = FluxPipeline._pack_latents(z, z.shape[0], z.shape[1], h, h)
        sigma = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - sigma.view(-1, 1, 1)) * x0 + sigma.view(-1, 1, 1) * noise
        if heads := cfg.changes_at(step).get("t5_causal_heads"):
            for m in (model, ema):
                make_t5_heads_causal(m.text_encoder_2, heads)
        seq, pooled = encode_prompts(model.text_encoder, model.text_encoder_2, tok, tok_2, prompts, length)
        pred = model.transformer(hidden_states=xt, timestep=sigma, pooled_projections=pooled, encoder_hidden_states=seq,
                                 txt_ids=torch.zeros(length, 3), img_ids=img_ids, return_dict=False)[0]
        return F.mse_loss(pred, noise - x0)

    sub = {k: v for k, v in asdict(cfg).items() if not k.startswith("vae_")}
    flux_progress = (lambda s, n, loss: progress(cfg.vae_steps + s, total, loss)) if progress is not None else None
    loop = TrainLoop(work / "flux.safetensors", sub, model, ema, opt, gen, total=cfg.total_steps, lr_at=cfg.lr_at,
                     ema_decay=cfg.ema_decay, checkpoint_every=cfg.checkpoint_every, progress=flux_progress,
                     extendable="restarts", upgrade=_upgrade_settings)
    loss_ema = loop.run(loss_at)
    pipe = build_pipeline({"vae": vae, "transformer": ema.transformer, "text_encoder": ema.text_encoder,
                           "text_encoder_2": ema.text_encoder_2})
    out = save_trained(out_dir, pipe, asdict(cfg), loss_ema)
    write_call_defaults(out)
    return out


GRID_PROMPTS = ("a red circle", "an orange triangle", "a blue square", "two white circles", "three yellow triangles",
                "a red circle to the left of a blue square", "a green triangle above a yellow circle")


def prompt_grid(path: str | Path, pipe: Any = None, prompts: tuple[str, ...] = GRID_PROMPTS, seeds: int = 6, steps: int = 28) -> Path:
    """A figure of one row per prompt and one column per seed (0..seeds-1), uncached, written to ``path``
    (docs/flux-shapes-grid.png is ``prompt_grid("docs/flux-shapes-grid.png")``); ``pipe`` defaults to flux-shapes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if pipe is None:
        from .. import load

        pipe = load("flux-shapes")
    pipe.set_progress_bar_config(disable=True)
    images = pipe([p for p in prompts for _ in range(seeds)], num_inference_steps=steps,
                  generator=[torch.Generator().manual_seed(s) for _ in prompts for s in range(seeds)]).images
    fig, axes = plt.subplots(len(prompts), seeds, figsize=(seeds * 1.2 + 3.2, len(prompts) * 1.2), dpi=100, squeeze=False)
    for i, p in enumerate(prompts):
        for j in range(seeds):
            axes[i, j].imshow(images[i * seeds + j], interpolation="nearest")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(p, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
