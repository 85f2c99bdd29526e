"""GPU checks (run once on a lent GPU): copy bandwidth ceiling and CG-Taylor on a FLUX-sized random transformer."""
import json, os
import torch

out = os.environ.get("OUT", "/tmp")
small = os.environ.get("SMALL") == "1"  # CPU dry run
dev = "cuda" if torch.cuda.is_available() else "cpu"
res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__}

def save():
    with open(os.path.join(out, "flux_cache.json"), "w") as f:
        json.dump(res, f, indent=1)

# 1) device-to-device copy bandwidth (the practical ceiling for the memory-bound kernels)
if dev == "cuda":
    n = 2**30 // 2  # 1 GiB of bf16
    a = torch.empty(n, dtype=torch.bfloat16, device=dev).normal_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); b.copy_(a); e1.record(); torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    ts.sort()
    res["copy_gbps_median"] = round(2 * a.numel() * 2 / ts[len(ts) // 2] / 1e9, 1)
    del a, b
    torch.cuda.empty_cache()
    save()
    print("copy GB/s", res["copy_gbps_median"], flush=True)

# 2) CG-Taylor on a FLUX-architecture random transformer through the real FluxPipeline
import accel
from accel import metrics
from accel.benchmarks.common import median_time
from accel.kernels import dispatch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

dtype = torch.bfloat16 if dev == "cuda" else torch.float32
torch.manual_seed(0)
if small:
    cfg = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
               joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=[4, 6, 6])
    side, steps, txt = 128, 6, 8
else:  # FLUX.1 layout, 1/3 of its width and 1/2 of its depth (686M parameters), 1024x1024 -> 4096 image tokens
    cfg = dict(patch_size=1, in_channels=64, num_layers=10, num_single_layers=19, attention_head_dim=128, num_attention_heads=8,
               joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=[16, 56, 56])
    side, steps, txt = 1024, 28, 512
tr = FluxTransformer2DModel(**cfg).to(dev, dtype).eval()
res["flux_config"] = cfg | {"params_M": round(sum(p.numel() for p in tr.parameters()) / 1e6, 1), "side": side, "steps": steps, "dtype": str(dtype)}
sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
pipe = FluxPipeline(scheduler=sched, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tr)
pipe.set_progress_bar_config(disable=True)
g = torch.Generator("cpu").manual_seed(1)
emb = torch.randn(1, txt, cfg["joint_attention_dim"], generator=g).to(dev, dtype)
pooled = torch.randn(1, cfg["pooled_projection_dim"], generator=g).to(dev, dtype)

def call():
    with torch.no_grad():
        r = pipe(prompt_embeds=emb, pooled_prompt_embeds=pooled, height=side, width=side, num_inference_steps=steps,
                 generator=torch.Generator("cpu").manual_seed(0), output_type="latent").images
    if dev == "cuda":
        torch.cuda.synchronize()
    return r

def timed(reps=3):
    call()  # warm-up
    t, _, r = median_time(call, reps)
    return r, t

ref, t_ref = timed()
res["flux_uncached_s"] = round(t_ref, 4)
save()
print("uncached", t_ref, flush=True)
def psnr(a, b):  # latents have no fixed range: the uncached latents' range is the peak
    a, b = a.float().cpu().numpy(), b.float().cpu().numpy()
    return float(metrics.psnr(a, b, data_range=float(b.max() - b.min())))
rows = []
for thr in (0.0, 0.05, 0.1, 0.2, 0.4):
    accel.enable(pipe, accel.CGTaylorConfig(threshold=thr))
    out_, t = timed()
    st = accel.stats(pipe)
    accel.disable(pipe)
    rows.append({"threshold": thr, "seconds": round(t, 4), "speedup": round(t_ref / t, 3), "forecast_fraction": round(st.forecast_fraction, 3),
                 "exact": bool(torch.equal(out_, ref)), "psnr_vs_uncached": round(psnr(out_, ref), 2) if not torch.equal(out_, ref) else None})
    print(rows[-1], flush=True)
    res["flux_cache"] = rows
    save()
after = call()
res["flux_after_disable_exact"] = bool(torch.equal(after, ref))
try:
    res["kernel_backend"] = dispatch.backend(ref)
except Exception as e:  # noqa: BLE001
    res["kernel_backend"] = repr(e)
save()
print(json.dumps(res), flush=True)
