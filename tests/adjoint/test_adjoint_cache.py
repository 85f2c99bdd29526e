"""Gradients through a CG-Taylor-cached sampler: the discrete adjoint against autograd through the same cached
forward (float64), finite differences with the gate's decisions unchanged, and refusals that leave nothing hooked."""

from __future__ import annotations

import pytest
import torch
from conftest import flux_scheduler, tiny_dit, tiny_flux

import accel
from accel import AccelError, CGTaylorConfig
from accel.adjoint import sample_with_grad
from accel.samplers import class_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


def ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _hooked(model: torch.nn.Module) -> list[str]:
    """Modules of ``model`` that still carry a diffusers hook registry or a forward override."""
    return [n for n, m in model.named_modules() if "_diffusers_hook" in m.__dict__ or "forward" in m.__dict__]


class Case:
    """A float64 model, its sampler settings and its inputs; ``grads`` runs one method and returns its gradients."""

    def __init__(self, model, cond, scheduler, steps: int, cache: CGTaylorConfig, guidance: float = 1.0, uncond=None,
                 noise_shape=(2, 1, 8, 8), fd: tuple[float, float] = (1e-4, 1e-8)):
        torch.manual_seed(0)
        self.model, self.cond, self.steps, self.cache = model, cond, steps, cache
        self.fd_eps, self.fd_tol = fd  # finite-difference step and relative tolerance
        self.kw = dict(scheduler=scheduler, guidance_scale=guidance, uncond=uncond)
        self.sampler = "euler"
        self.noise = torch.randn(noise_shape, dtype=torch.float64)
        self.w = torch.randn_like(self.noise)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        return (out * self.w).sum() + 0.5 * (out**2).sum()

    def run(self, noise, cond, method: str = "discrete", cache="default", seen=None) -> torch.Tensor:
        cache = self.cache if cache == "default" else cache
        callback = seen.append if seen is not None else None
        return sample_with_grad(self.model, noise, cond, steps=self.steps, method=method, options={"cache": cache, "sampler": self.sampler},
                                callback=callback, **self.kw)

    def float_cond(self) -> list[int]:
        flat = self.cond if isinstance(self.cond, tuple) else (self.cond,)
        return [j for j, c in enumerate(flat) if torch.is_tensor(c) and torch.is_floating_point(c)]

    def grads(self, method: str = "discrete", cache="default", seen=None) -> list[torch.Tensor]:
        """[d noise, d cond_j for each float cond tensor, d weights]."""
        self.model.zero_grad(set_to_none=True)
        x = self.noise.clone().requires_grad_()
        flat = list(self.cond) if isinstance(self.cond, tuple) else [self.cond]
        flat = [c.clone().requires_grad_() if j in self.float_cond() else c for j, c in enumerate(flat)]
        cond = tuple(flat) if isinstance(self.cond, tuple) else flat[0]
        self.loss(self.run(x, cond, method, cache, seen)).backward()
        return [x.grad, *[flat[j].grad for j in self.float_cond()], torch.cat([p.grad.reshape(-1) for p in self.params])]


def _dit(labels: bool) -> Case:
    m = tiny_dit(torch.float64, layers=4)
    cond = torch.tensor([3, 7]) if labels else class_embeddings(m, torch.tensor([3, 7])).detach()
    return Case(m, cond, ddim(), steps=10, cache=CGTaylorConfig(threshold=0.2, warmup_steps=2), guidance=2.5)


def _dit_lora() -> Case:
    peft = pytest.importorskip("peft")
    m = tiny_dit(torch.float64, layers=4).requires_grad_(False)
    m = peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False), m)
    return Case(m, torch.tensor([1, 2]), ddim(), steps=10, cache=CGTaylorConfig(threshold=0.2, warmup_steps=2), guidance=2.0)


def _flux() -> Case:
    m = tiny_flux(dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    emb, pooled = torch.randn(2, 3, 16, generator=g, dtype=torch.float64), torch.randn(2, 8, generator=g, dtype=torch.float64)
    uncond = (torch.zeros(1, 3, 16, dtype=torch.float64), torch.zeros(1, 8, dtype=torch.float64))
    # diffusers' FLUX applies its rotary embedding in float32 even to float64 inputs: differences below ~1e-4 drown
    # in that rounding (uncached too: ~1e-6 absolute at best), so its finite differences take a larger step and
    # a looser tolerance (a gradient that missed the factors' path was off by ~1% here).
    return Case(m, (emb, pooled), flux_scheduler(), steps=10, cache=CGTaylorConfig(threshold=0.3, warmup_steps=2),
                guidance=3.0, uncond=uncond, noise_shape=(2, 4, 4, 4), fd=(1e-2, 1e-4))


def _unet() -> Case:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    m = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=4, attention_head_dim=8).double().eval()
    return Case(m, None, ddim(), steps=10, cache=CGTaylorConfig(threshold=0.2, warmup_steps=2))


def _unet_layers() -> Case:
    """Two layers per block, so the layer split (``unet_policy="layer"``) has a layer of down block 0 to skip."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    m = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=2,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=4, attention_head_dim=8).double().eval()
    return Case(m, None, ddim(), steps=10, cache=CGTaylorConfig(threshold=0.2, warmup_steps=2, unet_policy="layer"))


CASES = {"dit-labels": lambda: _dit(True), "dit-embeddings": lambda: _dit(False), "dit-lora": _dit_lora, "flux": _flux, "unet": _unet}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request) -> Case:
    return CASES[request.param]()


def test_discrete_adjoint_equals_autograd_through_the_cache(case):
    """The exact adjoint of what ran: noise, conditioning and weights (LoRA adapters) to 1e-8 in float64, on
    a trajectory that forecasts some steps; the network is unhooked after the forward and after the backward."""
    seen = []
    got = case.grads("discrete", seen=seen)
    assert not _hooked(case.model)
    computed = [s["computed"] for s in seen]
    assert len(computed) == case.steps and computed[0] and not all(computed), computed
    ref = case.grads("autograd")
    assert len(got) == len(ref) == 2 + len(case.float_cond())
    for g, r in zip(got, ref):
        assert r.norm() > 0 and _rel(g, r) < 1e-8, (_rel(g, r), computed)


def test_finite_differences_with_decisions_unchanged(case):
    """Along a random direction of the noise, of each float condition and of the weights, the cached sampler's
    central difference matches the adjoint's directional derivative (the gate decides alike at each point)."""
    seen: list = []
    grads = case.grads("discrete", seen=seen)
    decisions = [s["computed"] for s in seen]
    gen = torch.Generator().manual_seed(11)
    eps = case.fd_eps
    flat = list(case.cond) if isinstance(case.cond, tuple) else [case.cond]
    targets = ["noise", *case.float_cond(), "weights"]
    for target, grad in zip(targets, grads):
        losses = []
        if target == "weights":
            # each weight moves in proportion to its own size (a step that moves small weights by their whole value would flip decisions)
            v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * p.detach().abs().mean().clamp_min(1e-3) for p in case.params]
            directional = float(sum((g * d.reshape(-1)).sum() for g, d in zip(grad.split([p.numel() for p in case.params]), v)))
        else:
            base = case.noise if target == "noise" else flat[target]
            v = torch.randn(base.shape, generator=gen, dtype=base.dtype)
            directional = float((grad * v).sum())
        for sign in (2, 1, -1, -2):
            noise, cond = case.noise, list(flat)
            with torch.no_grad():
                if target == "weights":
                    for p, d in zip(case.params, v):
                        p.add_(sign * eps * d)
                elif target == "noise":
                    noise = noise + sign * eps * v
                else:
                    cond[target] = cond[target] + sign * eps * v
                s: list = []
                losses.append(case.loss(case.run(noise, tuple(cond) if isinstance(case.cond, tuple) else cond[0], seen=s)))
                if target == "weights":
                    for p, d in zip(case.params, v):
                        p.sub_(sign * eps * d)
            assert [x["computed"] for x in s] == decisions, target
        fd = float((-losses[0] + 8 * losses[1] - 8 * losses[2] + losses[3]) / (12 * eps))  # fourth order: error ~eps^4
        assert abs(fd - directional) <= case.fd_tol * max(1.0, abs(directional)), (target, fd, directional)


def test_threshold_zero_is_the_uncached_gradient():
    case = _dit(False)
    cached = case.grads("discrete", cache=CGTaylorConfig(threshold=0.0))
    plain = case.grads("discrete", cache=None)
    for g, r in zip(cached, plain):
        assert torch.equal(g, r)


def test_second_order_sampler_through_the_cache():
    case = _dit(True)
    case.sampler = "deis2m"
    seen: list = []
    got, ref = case.grads("discrete", seen=seen), case.grads("autograd")
    assert not all(s["computed"] for s in seen)
    for g, r in zip(got, ref):
        assert _rel(g, r) < 1e-8


def test_refusals_leave_nothing_hooked():
    case = _dit(True)
    m = case.model
    with pytest.raises(AccelError, match="cannot run with cache"):
        sample_with_grad(m, case.noise, case.cond, steps=4, method="continuous", options={"cache": case.cache}, scheduler=ddim())
    with pytest.raises(AccelError, match="CGTaylorConfig"):
        sample_with_grad(m, case.noise, case.cond, steps=4, options={"cache": {"threshold": 0.1}}, scheduler=ddim())
    compiled = torch.compile(m)
    with pytest.raises(AccelError, match="compiled"):
        sample_with_grad(compiled, case.noise, case.cond, steps=4, options={"cache": case.cache}, scheduler=ddim())
    assert not _hooked(m)
    mine = CGTaylorConfig(threshold=0.05)
    accel.enable(m, mine)
    with pytest.raises(AccelError, match="already enabled"):
        sample_with_grad(m, case.noise, case.cond, steps=4, options={"cache": case.cache}, scheduler=ddim())
    assert accel.is_enabled(m) and accel.enable(m, mine) == mine  # the user's own cache is untouched
    accel.disable(m)

    def fail(info):
        if info["i"] == 5:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        sample_with_grad(m, case.noise, case.cond, steps=8, options={"cache": case.cache}, scheduler=ddim(), callback=fail)
    assert not _hooked(m)
    out = sample_with_grad(m, case.noise.clone().requires_grad_(), case.cond, steps=8, options={"cache": case.cache}, scheduler=ddim())
    assert not _hooked(m)
    out.sum().backward()
    assert not _hooked(m)


def _parts() -> list[tuple[str, dict]]:
    """Every registered gate and forecaster on the DiT (the cumulative gate at a threshold where it forecasts), and the
    residual forecast, the FLUX layout and the U-Net layer split with the defaults."""
    from accel.caching import forecasters, gates

    threshold = {"cumulative": 0.4}
    parts = [("dit", {"gate": g, "forecaster": f, **({"threshold": threshold[g]} if g in threshold else {})})
             for g in gates.REGISTRY for f in forecasters.REGISTRY]
    return parts + [("dit", {"residual": True}), ("flux", {"residual": True}), ("flux", {"gate": "cumulative", "threshold": 0.6}),
                    ("unet-layers", {}), ("unet-layers", {"residual": True})]


VARIANTS = _parts()


@pytest.mark.parametrize("model, fields", VARIANTS, ids=[f"{m}-{f}" for m, f in VARIANTS])
def test_forecast_variants_keep_the_adjoint_exact(model, fields):
    """Every registered gate and forecaster, the residual forecast and the U-Net's layer split: the discrete adjoint
    still equals autograd through the same cached forward, which forecasts some steps."""
    import dataclasses

    case = {"dit": lambda: _dit(False), "flux": _flux, "unet-layers": _unet_layers}[model]()
    cfg = dataclasses.replace(case.cache, **fields)
    seen: list = []
    got = case.grads("discrete", cache=cfg, seen=seen)
    computed = [s["computed"] for s in seen]
    assert computed[0] and not all(computed), computed
    ref = case.grads("autograd", cache=cfg)
    for g, r in zip(got, ref):
        assert r.norm() > 0 and _rel(g, r) < 1e-8, (_rel(g, r), computed)


@pytest.mark.parametrize("cache", [CGTaylorConfig(threshold=0.2, warmup_steps=4, forecaster_options={"order": 2}),
                                   CGTaylorConfig(threshold=0.2, warmup_steps=2, residual=True)],
                         ids=["order2", "residual"])
def test_rebuilt_factor_stacks_are_the_forwards(monkeypatch, cache):
    """The forward keeps one output per full step, not every stream; the stream each step started from is rebuilt
    from the forecaster's last ``rows`` of them bit for bit (order 2: a window shorter than the run), and the adjoint
    on the rebuilt streams still equals autograd."""
    from accel.caching import grad as G

    runs, started = [], []
    init, begin = G.CachedRun.__init__, G.ScriptedTrajectory.begin

    def record_init(self, *a, **k):
        init(self, *a, **k)
        runs.append(self)

    def record_begin(self, *a, **k):
        st = begin(self, *a, **k)
        if self.replay is None:
            started.append(None if st.sl.data is None else st.sl.data.clone())
        return st

    monkeypatch.setattr(G.CachedRun, "__init__", record_init)
    monkeypatch.setattr(G.ScriptedTrajectory, "begin", record_begin)
    case = _dit(False)
    got = case.grads("discrete", cache=cache)
    (run,) = runs
    assert len(started) == case.steps and len(run._rows) > (run._forecaster.rows or 1) and not all(run.decisions)
    for i, fl in enumerate(started):
        rebuilt = run.factors(i)
        assert (rebuilt is None and fl is None) or (rebuilt.dtype == fl.dtype and torch.equal(rebuilt, fl)), i
    assert all(r.row.dtype == torch.float64 for r in run._rows)
    for g, r in zip(got, case.grads("autograd", cache=cache)):
        assert r.norm() > 0 and _rel(g, r) < 1e-8, _rel(g, r)
