"""``accel calibrate``: sweep CG-Taylor thresholds on a few seeds and recommend one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..utils import AccelError, atomic_write_bytes
from .cache import Method, run_cache_bench, write_outputs

CALIBRATION_THRESHOLDS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3)


def calibrate(model: str, min_psnr: float | None = 30.0, target_speedup: float | None = None, steps: int = 50,
              num_images: int = 10, repeats: int = 3, thresholds: tuple[float, ...] = CALIBRATION_THRESHOLDS,
              out_dir: Path = Path("calibration"), save: bool = False,
              progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Recommend the largest threshold whose PSNR vs uncached is >= ``min_psnr`` (or the smallest reaching
    ``target_speedup``); writes the sweep (JSON, Markdown, Pareto PNG) and, with ``save``, the model's
    ``accel_cache.json`` so that ``accel sample --cache cg-taylor`` uses it by default."""
    if (min_psnr is None) == (target_speedup is None):
        raise AccelError("give exactly one of --min-psnr or --target-speedup")
    from .cache_unet import is_unet_model, run_unet_cache_bench, write_unet_outputs

    methods = [Method("none")] + [Method("cg-taylor", {"threshold": t}) for t in thresholds]
    unet = is_unet_model(model)  # U-Nets: the default shallow-path policy, sampled with DDIM, interleaved timing
    bench = run_unet_cache_bench if unet else run_cache_bench
    report = bench(model, steps=steps, num_images=num_images, repeats=repeats, methods=methods, progress=progress)
    rows = [r for r in report["results"] if r["method"] == "cg-taylor"]
    if min_psnr is not None:
        ok = [r for r in rows if r["psnr"] >= min_psnr]
        pick = max(ok, key=lambda r: r["params"]["threshold"]) if ok else None
    else:
        ok = [r for r in rows if r["speedup"] >= target_speedup]
        pick = min(ok, key=lambda r: r["params"]["threshold"]) if ok else None
    if pick is None:
        raise AccelError("no threshold in the sweep meets the target; relax it or pass other --thresholds")
    rec = {"threshold": pick["params"]["threshold"], "psnr": pick["psnr"], "speedup": pick["speedup"],
           "forecast_fraction": pick["forecast_fraction"], "accuracy": pick.get("accuracy"), "steps": steps,
           "criterion": {"min_psnr": min_psnr} if min_psnr is not None else {"target_speedup": target_speedup}}
    report["recommended"] = rec
    if unet:
        rec["unet_policy"], rec["sampler"] = "shallow", report["config"]["sampler"]
    paths = write_unet_outputs(report, Path(out_dir), "calibration") if unet else write_outputs(report, Path(out_dir))
    rec["outputs"] = {k: str(v) for k, v in paths.items()}
    if save:
        from ..sampling import load_pipeline

        src = getattr(load_pipeline(model), "_accel_source", None)
        if src is None:
            raise AccelError("--save needs a local model folder")
        atomic_write_bytes(Path(src) / "accel_cache.json", json.dumps({k: v for k, v in rec.items() if k != "outputs"}, indent=2).encode())
        rec["saved_to"] = str(Path(src) / "accel_cache.json")
    return rec
