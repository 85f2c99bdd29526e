"""The three fine-tuning tasks of ``accel finetune adjoint``: what is trained, the loss, the update, the metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from accel.errors import AccelError

TASKS = ("effect", "style", "attack")


class Task:
    """Base: samples with gradients through ``accel.adjoint.sample_with_grad`` for a class-conditional DiT."""

    uses_optimizer = True
    average_grads = True
    reference: torch.Tensor | None = None

    def __init__(self, cfg: Any, pipe: Any, device: torch.device, rank: int) -> None:
        self.cfg, self.pipe, self.device, self.rank = cfg, pipe, device, rank
        c = pipe.transformer.config
        self.sample_shape = (c.in_channels, c.sample_size, c.sample_size)
        self.cache = _cache_config(pipe, cfg.cache, cfg.steps)

    def labels(self, n: int) -> torch.Tensor:
        """Class labels of a batch of n: every digit in turn (offset per process)."""
        return ((torch.arange(n) + self.rank * n) % 10).to(self.device)

    def cond(self, n: int) -> Any:
        return self.labels(n)

    def generate(self, noise: torch.Tensor, grad: bool) -> torch.Tensor:
        """x_0 (B, C, H, W) from x_T; differentiable (adjoint method ``cfg.method``) when ``grad``."""
        from accel.adjoint import sample_with_grad

        kw = dict(steps=self.cfg.steps, guidance_scale=self.cfg.guidance_scale)
        if not grad:  # samples and metrics: always the uncached sampler
            with torch.no_grad():
                return sample_with_grad(self.pipe, noise, self.cond(noise.shape[0]), method="autograd", **kw)
        options = {"cache": self.cache} if self.cache is not None else None
        return sample_with_grad(self.pipe, noise, self.cond(noise.shape[0]), method=self.cfg.method, options=options, **kw)

    def train_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def eval_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def update(self, opt: torch.optim.Optimizer | None, lr: float) -> None:
        opt.step()

    def metrics(self, acc: Any) -> dict[str, Any]:
        return {}

    # subclasses: trainables(), loss(x0), state(), load_state(tensors)


FINETUNE = "finetune"


def _cache_config(pipe: Any, cache: float | str | None, steps: int | None = None) -> Any:
    """The CG-Taylor setting of the training gradients: None; ``"shipped"`` (bare ``--cache``), the model's
    ``finetune`` entry of ``accel_cache.json`` (chosen by the fine-tuning race: on dit-digits the sampling presets,
    picked for 50-step sampling, left the race above the uncached loss while threshold 0.05 with the paper's ends
    met it, docs/adjoint.md), else its ``quality`` preset, else its default; ``"finetune"`` or a preset by name;
    or the default with another threshold. Presets and the default are those calibrated for ``steps`` where the
    model ships them (``by_steps`` of accel_cache.json)."""
    if cache is None:
        return None
    from accel.caching import PRESETS, CGTaylorConfig
    from accel.caching.shipped import shipped_entry
    from accel.sampling import recommended_settings

    if cache == FINETUNE:
        settings = shipped_entry(pipe, FINETUNE)
        if not settings:
            raise AccelError(f"cache {FINETUNE!r} needs a {FINETUNE!r} entry in the model folder's accel_cache.json, "
                             f"and this model ships none; pass a preset ({', '.join(PRESETS)}) or a threshold")
        return CGTaylorConfig(**settings)
    if cache in PRESETS:
        return CGTaylorConfig(**recommended_settings(pipe, cache, steps))
    if cache == "shipped":
        settings = shipped_entry(pipe, FINETUNE)
        if settings:
            return CGTaylorConfig(**settings)
        try:
            return CGTaylorConfig(**recommended_settings(pipe, "quality", steps))
        except AccelError:  # no accel_cache.json, one without presets, or a step count's entry where no 40 dB choice held
            return CGTaylorConfig(**recommended_settings(pipe, steps=steps))
    settings = recommended_settings(pipe, steps=steps)
    settings["threshold"] = float(cache)
    return CGTaylorConfig(**settings)


def _digit(label: int, size: int) -> torch.Tensor:
    """The first scikit-learn digit of class ``label``, (1, 1, size, size) in [-1, 1]."""
    from accel.zoo.digits import digits_dataset

    data, targets = digits_dataset(size)
    return data[(targets == label).nonzero()[0, 0]][None]


class EffectTask(Task):
    """Learn a class embedding (1, L, D) whose samples have the ink statistics of a bold-stroke reference."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        from accel.samplers import class_embeddings

        tr = self.pipe.transformer
        self.emb = class_embeddings(tr, [self.cfg.label]).detach().clone().requires_grad_(True)
        ref = _digit(self.cfg.label, self.sample_shape[-1])
        self.reference = F.max_pool2d(ref, 3, stride=1, padding=1).to(self.device)  # dilated ink: bold strokes
        self.target = self._stats(self.reference)

    @staticmethod
    def _stats(x: torch.Tensor) -> torch.Tensor:
        p = (x.clamp(-1.5, 1.5) + 1) / 2
        return torch.stack([p.mean((1, 2, 3)), p.std((1, 2, 3))], dim=1)

    def cond(self, n: int) -> torch.Tensor:
        return self.emb.expand(n, -1, -1)

    def trainables(self) -> list[torch.Tensor]:
        return [self.emb]

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        return 100 * ((self._stats(x0) - self.target) ** 2).sum(1).mean()

    def state(self) -> dict[str, torch.Tensor]:
        return {"emb": self.emb}

    def load_state(self, t: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.emb.copy_(t["emb"])


def _gram(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    f = F.relu(F.conv2d(x, filters, padding=1)).flatten(2)  # (B, K, HW)
    return f @ f.transpose(1, 2) / f.shape[-1]


class StyleTask(Task):
    """LoRA fine-tuning so that samples take the texture (Gram statistics) of one striped reference digit."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        try:
            import peft
        except ImportError as e:
            raise AccelError("the style task needs peft for LoRA adapters: pip install peft") from e
        tr = self.pipe.transformer
        lcfg = peft.LoraConfig(r=self.cfg.lora_rank, lora_alpha=self.cfg.lora_rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        torch.manual_seed(self.cfg.seed)  # LoRA A init
        self.pipe.transformer = peft.inject_adapter_in_model(lcfg, tr).to(self.device)
        self.lora = {n: p for n, p in self.pipe.transformer.named_parameters() if "lora_" in n}
        for p in self.lora.values():
            p.requires_grad_(True)
        ref = _digit(self.cfg.label, self.sample_shape[-1])
        rows = torch.arange(ref.shape[-2])[:, None] % 4 < 2
        self.reference = torch.where(rows, ref, torch.full_like(ref, -1.0)).to(self.device)  # horizontal stripes
        gen = torch.Generator().manual_seed(1234)
        self.filters = (torch.randn(8, self.sample_shape[0], 3, 3, generator=gen) / 3).to(self.device)
        self.target = [_gram(r, self.filters) for r in self._scales(self.reference)]

    @staticmethod
    def _scales(x: torch.Tensor) -> list[torch.Tensor]:
        return [x, F.avg_pool2d(x, 2)]

    def trainables(self) -> list[torch.Tensor]:
        return list(self.lora.values())

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        return 100 * sum(((_gram(s, self.filters) - t) ** 2).mean() for s, t in zip(self._scales(x0), self.target))

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.lora)

    def load_state(self, t: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.lora.items():
                p.copy_(t[n])


def train_digit_classifier(size: int, seed: int = 0, steps: int = 300) -> tuple[torch.nn.Module, float]:
    """A small differentiable MLP on scikit-learn's digits (80/20 split); returns it and its held-out accuracy."""
    from accel.zoo.digits import digits_dataset

    data, targets = digits_dataset(size)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(data.shape[0], generator=gen)
    tr, te = perm[: int(0.8 * len(perm))], perm[int(0.8 * len(perm)) :]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(data[0].numel(), 128), torch.nn.GELU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(data[tr]), targets[tr]).backward()
        opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((net(data[te]).argmax(1) == targets[te]).float().mean())
    return net, acc


class AttackTask(Task):
    """Projected signed-gradient attack on the initial noise (radius eps) against a digit classifier."""

    uses_optimizer = False
    average_grads = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.clf, self.clf_accuracy = train_digit_classifier(self.sample_shape[-1], self.cfg.seed)
        self.clf.to(self.device)
        gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + 17 + self.rank)
        self.noise0 = torch.randn((self.cfg.batch, *self.sample_shape), generator=gen).to(self.device)
        self.delta = torch.zeros_like(self.noise0, requires_grad=True)

    def trainables(self) -> list[torch.Tensor]:
        return [self.delta]

    def train_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return self.noise0 + self.delta

    def eval_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return (self.noise0 + self.delta).detach()

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """Margin loss: zero once every sample is misread with a logit margin of 2 (Carlini-Wagner style)."""
        logits = self.clf(x0)
        y = self.labels(x0.shape[0])
        true = logits.gather(1, y[:, None])[:, 0]
        other = logits.masked_fill(F.one_hot(y, 10).bool(), float("-inf")).amax(1)
        return F.relu(true - other + 2.0).mean()

    def update(self, opt: torch.optim.Optimizer | None, lr: float) -> None:
        with torch.no_grad():
            self.delta -= lr * self.delta.grad.sign()
            self.delta.clamp_(-self.cfg.eps, self.cfg.eps)
            self.delta.grad = None

    def metrics(self, acc: Any) -> dict[str, Any]:
        from accel.zoo.digits import DigitClassifier

        y = self.labels(self.cfg.batch)
        clean, adv = self.generate(self.noise0, grad=False), self.generate(self.noise0 + self.delta.detach(), grad=False)
        judge = DigitClassifier()
        rows = torch.stack([
            (self.clf(clean).argmax(1) != y).float(), (self.clf(adv).argmax(1) != y).float(),
            torch.as_tensor(judge.predict(clean) != y.cpu().numpy(), dtype=torch.float32, device=y.device),
            torch.as_tensor(judge.predict(adv) != y.cpu().numpy(), dtype=torch.float32, device=y.device),
        ], 1)
        rows = acc.gather(rows)
        m = rows.mean(0).tolist()
        return {
            "samples": int(rows.shape[0]), "eps_linf": self.cfg.eps, "classifier_heldout_accuracy": self.clf_accuracy,
            "clean_misread_rate": m[0], "attack_success_rate": m[1], "svm_judge_clean_misread_rate": m[2], "svm_judge_attacked_misread_rate": m[3],
        }

    def state(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta}

    def load_state(self, t: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.delta.copy_(t["delta"])


def build_task(cfg: Any, device: torch.device, rank: int) -> Task:
    """Load the model (frozen, eval mode) and build the task called ``cfg.task``."""
    from accel.sampling import load_pipeline

    pipe = load_pipeline(cfg.model)  # records its folder, for the shipped cache setting
    pipe.transformer.to(device).eval().requires_grad_(False)
    cls = {"effect": EffectTask, "style": StyleTask, "attack": AttackTask}[cfg.task]
    return cls(cfg, pipe, device, rank)
