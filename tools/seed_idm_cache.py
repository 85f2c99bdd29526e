"""Seed ``accel bench idm``'s cache with figures from an earlier report, for images it would measure unchanged.

An ``accel bench idm --json`` report keeps every image's PSNR / SSIM per (method, ratio) and the mean seconds.
When the way images are read changes (issue 14: grey palettes and colour are no longer sent through BT.601
Y), the files whose pixels as measured stay the same keep valid figures; this writes them as cache entries
(no reconstruction image; seconds = that run's mean for the method and ratio; ``source`` names the report),
so that a rerun recomputes only the rest.  An image is seeded only if the reading of the report's time --
every palette / RGB / LA image through Y, as below -- gives exactly the pixels the benchmark measures now.

    python tools/seed_idm_cache.py docs/bench/idm_bench.json .idm-cache IMAGE... [--methods ddnm]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from accel.benchmarks import idm as bench
from accel.invertible.data import load_image, rgb_to_y
from accel.invertible.weights import shipped_path
from accel.utils import save_checkpoint


def old_reading(path: Path) -> np.ndarray:
    """How ``read_image`` read an 8-bit file before issue 14 (palette, RGB, LA and the like: BT.601 Y)."""
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
            return np.clip(rgb_to_y(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0), 0, 1).astype(np.float32)
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("cache_dir", type=Path)
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--methods", default="ddnm", help="comma-separated methods to seed (default: ddnm, the slow one)")
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    st = report["settings"]
    kw = {"tv": {"iters": st["tv_iters"]}, "ddnm": {"steps": st["ddnm_steps"]}, "atb": {}, "idm": {}}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in args.images:
        now = load_image(path, "y", warn=lambda message: None)[0]
        if not np.array_equal(now, old_reading(path)):
            print(f"skip {path.name}: it is measured differently now, its old figures do not hold")
            continue
        for rec in report["reconstruction"]:
            per = rec["per_image"].get(path.stem)
            if rec["method"] not in methods or per is None:
                continue
            deps = bench._cache_deps(rec["method"], kw[rec["method"]], st["device"], st["prior"], shipped_path(rec["ratio"]))
            entry = args.cache_dir / bench._cache_key(rec["method"], rec["ratio"], path, deps)
            if entry.exists():
                continue
            meta = {"psnr": per["psnr"], "ssim": per["ssim"], "seconds": rec["seconds"],
                    "source": f"{args.report.name} (per-image PSNR / SSIM; seconds: that run's mean)"}
            save_checkpoint(entry, {}, meta)
            written += 1
    print(f"wrote {written} entries to {args.cache_dir}")


if __name__ == "__main__":
    main()
