"""``accel calibrate`` and ``accel bench cache --ship``: the benchmark rule's CG-Taylor choice, written beside
a model as ``accel_cache.json`` (``threshold`` and ``config`` as ``accel sample --cache cg-taylor`` reads them,
and one preset per quality level)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import AccelError
from ..utils import atomic_write_bytes
from .methods import with_l2p_rows

PRESETS = {"quality": "40", "balanced": "35", "fast": "30"}  # preset name -> PSNR level (dB) of the rule's choice



def compact_json(obj: Any) -> str:
    """``obj`` as indented JSON with every list of numbers on one line (the l2p forecaster's fitted rows)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-+0-9.eE,\s]*?)\s*\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",") if v.strip()) + "]", text)

def cg_taylor_choices(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per level: CG-Taylor's chosen settings with their selection and test figures (levels with no choice left out)."""
    out = {}
    for lv, v in report["verdict"].items():
        e = next((e for e in v["entries"] if e["method"] == "cg-taylor" and e.get("setting")), None)
        if e is None:
            continue
        row = next(r for r in report["sweep"] if r["label"] == e["setting"])
        out[lv] = {"params": row["params"], "selection_psnr_median": e["selection"]["psnr_median"],
                   "test_psnr_median": e["test"]["psnr_median"], "holds_on_test": e["holds_on_test"],
                   "compute_skipped": e["test"]["compute_skipped"], "compute_speedup": e["test"]["compute_speedup"]}
    return out


def ship(report: dict[str, Any], folder: str | Path, level: str, command: str, steps: int | None = None) -> dict[str, Any]:
    """Write ``folder/accel_cache.json``: the rule's choice at ``level`` as the default, the others as presets.

    With ``steps`` (the report's step count), the entry goes under ``by_steps[steps]`` instead, which
    ``accel.enable(pipe, steps=N)`` and every caller that knows its step count read in place of the default.
    Only choices that hold their level on the test split ship (as the default or a preset); a ``level`` whose
    choice does not hold is refused."""
    choices = cg_taylor_choices(report)
    if steps is not None and int(report["config"]["steps"]) != int(steps):
        raise AccelError(f"the report was measured at {report['config']['steps']} steps, not {steps}")
    missed = {lv: c for lv, c in choices.items() if not c["holds_on_test"]}
    if level in missed:
        c = missed[level]
        raise AccelError(f"the rule's {level} dB choice {c['params']} does not hold on the test split (median "
                         f"{c['test_psnr_median']:.1f} dB); ship a level that holds "
                         f"(holding: {', '.join(lv for lv in choices if lv not in missed) or 'none'})")
    choices = {lv: c for lv, c in choices.items() if lv not in missed}
    if level not in choices:
        raise AccelError(f"no CG-Taylor setting meets {level} dB on the selection split; ship another level "
                         f"(available: {', '.join(choices) or 'none'})")
    rows = report["config"].get("l2p")  # the l2p forecaster's fitted rows go with the settings that use it
    pick = with_l2p_rows(dict(choices[level]["params"]), rows)
    rec = {"threshold": pick.pop("threshold"), "config": pick, "level_db": float(level),
           "presets": {name: with_l2p_rows(choices[lv]["params"], rows) for name, lv in PRESETS.items() if lv in choices},
           "figures": choices, "criterion": report["config"]["rule"], "source": command}
    if "steps" in report.get("config", {}):
        rec["steps"] = int(report["config"]["steps"])
    path = Path(folder) / "accel_cache.json"
    if not path.parent.is_dir():
        raise AccelError(f"{path.parent} is not a folder; --ship needs a local model folder")
    old: Any = {}
    if path.is_file():  # entries this does not write (the fine-tuning setting ``finetune``, other step counts) are kept
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        old = old if isinstance(old, dict) else {}
    if steps is not None:
        by_steps = dict(old.get("by_steps") or {})
        by_steps[str(int(steps))] = rec
        out = {**old, "by_steps": dict(sorted(by_steps.items(), key=lambda kv: int(kv[0])))}
    else:
        out = {**rec, **{k: v for k, v in old.items() if k not in rec}}
    atomic_write_bytes(path, (compact_json(out) + "\n").encode())
    return {**rec, "saved_to": str(path)}
