"""accel.samplers: peer checks against diffusers schedulers and convergence on an exactly solvable ODE."""

from __future__ import annotations

import math

import pytest
import torch
from accel.samplers import (
    Denoiser,
    FlowSchedule,
    VPSchedule,
    class_embeddings,
    grid_from_scheduler,
    make_grid,
    prepare,
    sample,
    sample_odeint,
    schedule_from_scheduler,
)

from accel.errors import AccelError
from conftest import flux_scheduler, tiny_dit, tiny_flux


class ToyNet(torch.nn.Module):
    """A small smooth network fn(x, t, cond) used where a diffusers model is not needed."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.temb = torch.nn.Linear(1, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        h = self.conv(x) + self.temb(t.reshape(-1, 1) / 1000)[:, :, None, None]
        return torch.tanh(h) + (0 if cond is None else cond)


def _scheduler_loop(scheduler, net, x, steps, cond=None):
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t.expand(x.shape[0]).float(), cond), t, x).prev_sample
    return x


def test_euler_reproduces_ddim_pipeline_with_guidance():
    from diffusers import DDIMScheduler

    from accel.pipelines import ClassConditionalPipeline

    pipe = ClassConditionalPipeline(tiny_dit(), DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    noise, labels = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    ref = pipe(labels, num_inference_steps=8, guidance_scale=3.0, latents=noise, output_type="pt").images
    den, grid = prepare(pipe, 8, guidance_scale=3.0)
    with torch.no_grad():
        out = sample(den, noise, grid, labels)
        out_emb = sample(den, noise, grid, class_embeddings(pipe.transformer, labels))
    scale = ref.abs().max()
    assert (out - ref).abs().max() / scale < 1e-5
    assert (out_emb - ref).abs().max() / scale < 1e-5


@pytest.mark.parametrize("prediction_type,spacing", [("epsilon", "leading"), ("v_prediction", "trailing"), ("sample", "leading")])
def test_euler_reproduces_ddim_scheduler(prediction_type, spacing):
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(prediction_type=prediction_type, timestep_spacing=spacing, clip_sample=False, steps_offset=1 if spacing == "leading" else 0)
    net = ToyNet()
    x = torch.randn(2, 2, 4, 4)
    ref = _scheduler_loop(sch, net, x, 10)
    schedule, pred = schedule_from_scheduler(sch)
    with torch.no_grad():
        out = sample(Denoiser(net, schedule, pred), x, grid_from_scheduler(sch, 10))
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


def test_euler_reproduces_flow_match_euler_sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(0)
    m = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
    ).eval()
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    x, cond = torch.randn(1, 4, 8, 8), (torch.randn(1, 5, 16), torch.randn(1, 8))
    sch.set_timesteps(6)
    ref = x.clone()
    with torch.no_grad():
        for t in sch.timesteps:
            v = m(hidden_states=ref, timestep=t.expand(1), encoder_hidden_states=cond[0], pooled_projections=cond[1]).sample
            ref = sch.step(v, t, ref).prev_sample
        den, grid = prepare(m, 6, scheduler=sch)
        out = sample(den, x, grid, cond)
    assert isinstance(den.schedule, FlowSchedule)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


def test_flow_euler_toy_with_guidance():
    from diffusers import FlowMatchEulerDiscreteScheduler

    net, sch = ToyNet(), FlowMatchEulerDiscreteScheduler(shift=2.0)
    x, c, u = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 1, 1), torch.zeros(1, 2, 1, 1)
    w = 2.5
    guided = lambda xx, t, _: net(xx, t, u) + w * (net(xx, t, c) - net(xx, t, u))  # noqa: E731
    ref = _scheduler_loop(sch, guided, x, 7)
    den, grid = prepare(net, 7, guidance_scale=w, uncond=u, scheduler=sch)
    with torch.no_grad():
        out = sample(den, x, grid, c)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


# ------------------------------------------------------------- exactly solvable: Gaussian data
MU, C = 0.3, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)  # data ~ N(MU, C^2) per dimension


def gaussian_eps(schedule: VPSchedule):
    def eps(x, t, cond=None):
        a, s = schedule.alpha_sigma(t[:1].double())
        return s * (x - a * MU) / (a * a * C * C + s * s)

    return eps


def exact_flow(x_t: torch.Tensor, a0, s0, a1, s1) -> torch.Tensor:
    """The probability-flow ODE solution for Gaussian data from noise level (a0, s0) to (a1, s1)."""
    return a1 * MU + ((a1 * C) ** 2 + s1**2).sqrt() * (x_t - a0 * MU) / ((a0 * C) ** 2 + s0**2).sqrt()


def _gaussian_errors(sampler: str, ns: list[int]) -> list[float]:
    from diffusers import DDIMScheduler

    schedule, _ = schedule_from_scheduler(DDIMScheduler(beta_schedule="scaled_linear"))
    den = Denoiser(gaussian_eps(schedule), schedule, "epsilon")
    x = torch.randn(4, 3, dtype=torch.float64) * 2
    errs = []
    for n in ns:
        grid = make_grid(schedule, torch.linspace(900, 50, n + 1, dtype=torch.float64))
        out = sample(den, x * 1.0, grid, sampler=sampler)
        ref = exact_flow(x, grid.alpha[0], grid.sigma[0], grid.alpha[-1], grid.sigma[-1])
        errs.append(float((out - ref).norm() / ref.norm()))
    return errs


@pytest.mark.parametrize("sampler,order", [("euler", 1), ("deis2m", 2)])
def test_convergence_order_on_gaussian_data(sampler, order):
    ns = [8, 16, 32, 64]
    errs = _gaussian_errors(sampler, ns)
    slope = -(math.log(errs[-1]) - math.log(errs[1])) / (math.log(ns[-1]) - math.log(ns[1]))
    assert order - 0.25 < slope < order + 0.5, (errs, slope)
    assert errs[-1] < (3e-2 if order == 1 else 3e-3)


def test_second_order_beats_first_order():
    e1, e2 = _gaussian_errors("euler", [16])[0], _gaussian_errors("deis2m", [16])[0]
    assert e2 < e1 / 2.5


def test_odeint_euler_equals_euler_and_dopri5_is_accurate():
    from diffusers import DDIMScheduler

    schedule, _ = schedule_from_scheduler(DDIMScheduler(beta_schedule="scaled_linear"))
    den = Denoiser(gaussian_eps(schedule), schedule, "epsilon")
    x = torch.randn(2, 3, dtype=torch.float64)
    grid = make_grid(schedule, torch.linspace(900, 50, 11, dtype=torch.float64))
    assert torch.allclose(sample_odeint(den, x, grid, method="euler"), sample(den, x, grid), rtol=1e-12, atol=1e-12)
    ref = exact_flow(x, grid.alpha[0], grid.sigma[0], grid.alpha[-1], grid.sigma[-1])
    out = sample_odeint(den, x, grid, method="dopri5", rtol=1e-8, atol=1e-8)
    assert (out - ref).norm() / ref.norm() < 1e-6


def test_vp_schedule_time_inverse():
    from diffusers import DDPMScheduler

    schedule, _ = schedule_from_scheduler(DDPMScheduler(beta_schedule="squaredcos_cap_v2"))
    t = torch.tensor([0.0, 0.5, 17.25, 500.0, 998.9], dtype=torch.float64)
    a, s = schedule.alpha_sigma(t)
    t2, a2, s2 = schedule.from_ode_time(s / a)
    assert torch.allclose(t2, t, atol=1e-9) and torch.allclose(a2, a) and torch.allclose(s2, s)
    acp = schedule.alphas_cumprod[[0, 500]]
    assert torch.allclose(schedule.alpha_sigma(torch.tensor([0.0, 500.0], dtype=torch.float64))[0] ** 2, acp)


def test_callback_keys_and_errors():
    from diffusers import DDIMScheduler

    net, sch = ToyNet(), DDIMScheduler()
    den, grid = prepare(net, 4, scheduler=sch)
    seen = []
    with torch.no_grad():
        sample(den, torch.randn(1, 2, 4, 4), grid, callback=seen.append)
    assert [d["i"] for d in seen] == [0, 1, 2, 3]
    assert all(set(d) == {"i", "steps", "t", "x", "denoised"} and d["steps"] == 4 for d in seen)
    with pytest.raises(AccelError, match="unknown sampler"):
        sample(den, torch.randn(1, 2, 4, 4), grid, sampler="heun")
    with pytest.raises(AccelError, match="does not fit"):
        Denoiser(net, FlowSchedule(), "epsilon")
    with pytest.raises(AccelError, match="unconditional"):
        Denoiser(net, den.schedule, "epsilon", guidance_scale=2.0)(torch.randn(1, 2, 4, 4), torch.tensor(10.0), torch.zeros(1))
    with pytest.raises(AccelError, match="scheduler="):
        prepare(net, 4)


@pytest.mark.parametrize("guidance_embeds", [False, True])
def test_euler_reproduces_flux_pipeline(guidance_embeds):
    """Our Euler sampler on unpacked (B, 4, H, W) latents == FluxPipeline (packed latents, ids, shift, guidance)."""
    from accel.samplers import pack_flux_latents, unpack_flux_latents
    from diffusers import FluxPipeline

    pipe = FluxPipeline(scheduler=flux_scheduler(), vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tiny_flux(guidance_embeds))
    torch.manual_seed(1)
    emb, pooled, x = torch.randn(2, 5, 16), torch.randn(2, 8), torch.randn(2, 4, 8, 6)
    assert torch.equal(unpack_flux_latents(pack_flux_latents(x), 8, 6), x)
    with torch.no_grad():  # FluxPipeline's latent size is height / vae_scale_factor (8): 64x48 px -> 8x6 latents
        ref = pipe(prompt_embeds=emb, pooled_prompt_embeds=pooled, latents=pack_flux_latents(x), height=64, width=48,
                   num_inference_steps=4, guidance_scale=3.5, output_type="latent").images
        den, grid = prepare(pipe, 4, sample_shape=x.shape)
        cond = (emb, pooled, 3.5) if guidance_embeds else (emb, pooled)
        out = pack_flux_latents(sample(den, x, grid, cond))
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5
    with pytest.raises(AccelError, match="sample_shape"):
        prepare(pipe, 4)
    if guidance_embeds:
        with pytest.raises(AccelError, match="guidance"):
            den(x, grid.t[0], (emb, pooled))
