"""Best per-image PSNR median (selection split) among each method's settings that skip at least a share of the
denoiser's compute, from a harness report: issue 22's equal-share comparison.

    python tools/equal_share.py docs/bench/cache/dit-digits/bench_cache.json 0.6,0.7,0.8
"""

import json
import sys
r = json.load(open(sys.argv[1]))
shares = [float(x) for x in sys.argv[2].split(",")]
best = {}
for row in r["sweep"]:
    s = row.get("selection")
    if not s or "psnr_median" not in s: continue
    m = row["label"].split("(")[0]
    for sh in shares:
        if s["compute_skipped"] >= sh:
            best.setdefault(m, {}).setdefault(sh, -1)
            best[m][sh] = max(best[m][sh], s["psnr_median"])
print("method | " + " | ".join(f">= {int(sh*100)}%" for sh in shares))
for m, d in best.items():
    print(m, "|", " | ".join(f"{d.get(sh, float('nan')):.1f}" for sh in shares))
