"""accel.adjoint: gradients through sampling, checked against autograd, gradcheck and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_dit

from accel.adjoint import ContinuousOptions, DiscreteOptions, sample_with_grad
from accel.samplers import class_embeddings
from accel.errors import AccelError


def ddim(**kw):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**({"beta_schedule": "squaredcos_cap_v2", "clip_sample": False} | kw))


class SmoothNet(torch.nn.Module):
    """A float64 eps-network that is smooth in t (a random DiT's sinusoidal time embedding is not)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
        self.temb = torch.nn.Linear(1, 2).double()

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        h = self.conv(x) + self.temb(t.reshape(-1, 1) / 1000)[:, :, None, None]
        return 0.9 * torch.tanh(h) + 0.3 * x + (0 if cond is None else cond)


def _loss(out: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (out * w).sum() + 0.5 * (out**2).sum()


def _grads(model, noise, cond, w, **kw):
    """(d noise, d cond, d weights) of a fixed loss, for one method."""
    model.zero_grad(set_to_none=True)
    x, c = noise.clone().requires_grad_(), cond.clone().requires_grad_()
    _loss(sample_with_grad(model, x, c, **kw), w).backward()
    pg = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return x.grad, c.grad, pg


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def dit64():
    m = tiny_dit(torch.float64)
    torch.manual_seed(0)
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    emb = class_embeddings(m, torch.tensor([3, 7])).detach()
    return m, noise, emb, torch.randn_like(noise)


@pytest.mark.parametrize("sampler", ["euler", "deis2m"])
def test_discrete_adjoint_equals_autograd(dit64, sampler):
    m, noise, emb, w = dit64
    kw = dict(steps=5, scheduler=ddim(), guidance_scale=2.5, options={"sampler": sampler})
    ref = _grads(m, noise, emb, w, method="autograd", **kw)
    for method in ("discrete", "checkpoint"):
        got = _grads(m, noise, emb, w, method=method, **kw)
        for g, r in zip(got, ref):
            assert _rel(g, r) < 1e-10, (method, _rel(g, r))


def test_gradcheck_three_steps():
    m = tiny_dit(torch.float64, layers=1)
    weight = m.proj_out_2.bias
    sch = ddim()

    def f(noise, emb, bias):  # bias is the model's own parameter: gradcheck perturbs it in place
        return sample_with_grad(m, noise, emb, steps=3, scheduler=sch, guidance_scale=2.0, params=[bias])

    torch.manual_seed(0)
    noise = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    emb = class_embeddings(m, torch.tensor([4])).detach().requires_grad_()
    assert torch.autograd.gradcheck(f, (noise, emb, weight), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_finite_difference_directions(dit64):
    m, noise, emb, w = dit64
    kw = dict(steps=4, scheduler=ddim(), guidance_scale=2.0)
    gx, gc, _ = _grads(m, noise, emb, w, **kw)
    p = m.transformer_blocks[0].ff.net[2].weight
    m.zero_grad(set_to_none=True)
    _loss(sample_with_grad(m, noise, emb, **kw), w).backward()
    gp = p.grad.clone()
    torch.manual_seed(3)
    eps = 1e-6
    with torch.no_grad():
        for base, grad, setter in ((noise, gx, None), (emb, gc, None), (p, gp, p)):
            v = torch.randn_like(base)
            if setter is None:
                lp = _loss(sample_with_grad(m, noise + eps * v if base is noise else noise, emb + eps * v if base is emb else emb, **kw), w)
                lm = _loss(sample_with_grad(m, noise - eps * v if base is noise else noise, emb - eps * v if base is emb else emb, **kw), w)
            else:
                p.add_(eps * v)
                lp = _loss(sample_with_grad(m, noise, emb, **kw), w)
                p.sub_(2 * eps * v)
                lm = _loss(sample_with_grad(m, noise, emb, **kw), w)
                p.add_(eps * v)
            fd, an = float((lp - lm) / (2 * eps)), float((grad * v).sum())
            assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (fd, an)


def test_torchdiffeq_euler_equals_continuous_first_order(dit64):
    m, noise, emb, w = dit64
    kw = dict(steps=4, scheduler=ddim(), guidance_scale=2.0)
    a = _grads(m, noise, emb, w, method="continuous", **kw)
    b = _grads(m, noise, emb, w, method="torchdiffeq", options={"ode_method": "euler"}, **kw)
    for g, r in zip(a, b):
        assert _rel(g, r) < 1e-10


def _continuous_errors(sampler: str, order: int, ns: list[int], reconstruct: bool = False) -> list[list[float]]:
    m = SmoothNet()
    torch.manual_seed(0)
    noise, cond = torch.randn(2, 2, 6, 6, dtype=torch.float64), 0.3 * torch.randn(2, 2, 1, 1, dtype=torch.float64)
    w = torch.randn_like(noise)
    kw = dict(scheduler=ddim(beta_schedule="scaled_linear", timestep_spacing="trailing"), guidance_scale=2.0, uncond=torch.zeros(1, 2, 1, 1, dtype=torch.float64))
    errs = []
    for n in ns:
        ref = _grads(m, noise, cond, w, steps=n, options=DiscreteOptions(sampler=sampler), **kw)
        got = _grads(m, noise, cond, w, steps=n, options=ContinuousOptions(sampler, order, reconstruct), **kw)
        errs.append([_rel(g, r) for g, r in zip(got, ref)])
    return errs


@pytest.mark.parametrize("sampler,order", [("euler", 1), ("deis2m", 2)])
def test_continuous_adjoint_error_falls_at_its_order(sampler, order):
    ns = [20, 40, 80] if order == 1 else [40, 80, 160]  # second order reaches its asymptotic rate later
    errs = _continuous_errors(sampler, order, ns)
    for j in range(3):  # noise, cond, weights
        slope = math.log(errs[0][j] / errs[-1][j]) / math.log(ns[-1] / ns[0])
        assert slope > order - 0.4, (j, errs, slope)
        assert errs[-1][j] < 0.15


def test_continuous_reconstructed_state_converges():
    errs = _continuous_errors("euler", 1, [20, 80], reconstruct=True)
    assert all(e1 < e0 / 2.5 for e0, e1 in zip(errs[0], errs[1]))


def test_lora_gradients_through_peft(dit64):
    peft = pytest.importorskip("peft")
    _, noise, _, w = dit64
    m = tiny_dit(torch.float64)
    m.requires_grad_(False)
    m = peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False), m)
    lora = [p for n, p in m.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora) and len(lora) == sum(p.requires_grad for p in m.parameters())
    kw = dict(steps=3, scheduler=ddim(), guidance_scale=2.0)
    labels = torch.tensor([1, 2])
    grads = {}
    for method in ("autograd", "discrete"):
        m.zero_grad(set_to_none=True)
        _loss(sample_with_grad(m, noise, labels, method=method, **kw), w).backward()
        grads[method] = torch.cat([p.grad.reshape(-1) for p in lora])
    assert grads["discrete"].norm() > 0 and _rel(grads["discrete"], grads["autograd"]) < 1e-10


def test_pipeline_input_labels_and_errors():
    from accel.pipelines import ClassConditionalPipeline

    pipe = ClassConditionalPipeline(tiny_dit(), ddim())
    pipe.transformer.requires_grad_(False)
    noise = torch.randn(2, 1, 8, 8, requires_grad=True)
    seen = []
    out = sample_with_grad(pipe, noise, [3, 7], steps=3, guidance_scale=3.0, callback=seen.append)
    out.mean().backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0 and len(seen) == 3
    with pytest.raises(AccelError, match="unknown gradient method"):
        sample_with_grad(pipe, noise, [3, 7], steps=3, method="magic")
    with pytest.raises(AccelError, match="order must be 1 or 2"):
        sample_with_grad(pipe, noise, [3, 7], steps=3, method="continuous", options={"order": 3})


def test_methods_take_their_own_options():
    """One entry point, a table of methods, one options dataclass each (as torchdiffeq's solvers): the options'
    class names the method; a dict is checked against the method's fields; a mismatch says what is allowed."""
    from accel.adjoint import METHODS, AutogradOptions, CheckpointOptions, TorchDiffEqOptions

    assert set(METHODS) == {"discrete", "continuous", "torchdiffeq", "autograd", "checkpoint"}
    m = SmoothNet()
    torch.manual_seed(0)
    noise, cond = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    kw = dict(steps=3, scheduler=ddim())
    ref = sample_with_grad(m, noise, cond, method="autograd", **kw)
    for options in (AutogradOptions(), CheckpointOptions(), DiscreteOptions(), ContinuousOptions(), TorchDiffEqOptions()):
        assert torch.allclose(sample_with_grad(m, noise, cond, options=options, **kw), ref)  # the same forward sampler
    with pytest.raises(AccelError, match="no option 'order'.*sampler"):
        sample_with_grad(m, noise, cond, method="discrete", options={"order": 2}, **kw)
    with pytest.raises(AccelError, match="takes ContinuousOptions"):
        sample_with_grad(m, noise, cond, method="continuous", options=DiscreteOptions(), **kw)
    with pytest.raises(AccelError, match="unknown sampler"):
        ContinuousOptions(sampler="heun")


def test_flux_discrete_adjoint_equals_autograd():
    """FLUX (packed tokens, positional ids, dynamic shift, embedded guidance): the adjoint's gradients to the
    noise, the prompt embeddings and the weights equal backprop through the sampler."""
    from conftest import flux_scheduler, tiny_flux

    m = tiny_flux(guidance_embeds=True, dtype=torch.float64)
    torch.manual_seed(0)
    noise, emb, pooled = torch.randn(1, 4, 4, 4, dtype=torch.float64), torch.randn(1, 3, 16, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    w = torch.randn_like(noise)
    kw = dict(steps=3, scheduler=flux_scheduler())
    grads = {}
    for method in ("autograd", "discrete"):
        m.zero_grad(set_to_none=True)
        x, e = noise.clone().requires_grad_(), emb.clone().requires_grad_()
        _loss(sample_with_grad(m, x, (e, pooled, 3.5), method=method, **kw), w).backward()
        grads[method] = (x.grad, e.grad, torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None]))
    for g, r in zip(grads["discrete"], grads["autograd"]):
        assert _rel(g, r) < 1e-10
