"""Rewrite accel/benchmarks/grids.json in its committed layout (one setting per line) after editing it as JSON:
``python tools/write_grids.py`` (reads and rewrites the file; the content is unchanged)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def dumps(g: dict) -> str:
    lines = ["{", f' "_doc": {json.dumps(g["_doc"])},', f' "budget": {g["budget"]},', f' "quick": {json.dumps(g["quick"])},', ' "grids": {']
    methods = list(g["grids"].items())
    for i, (name, kinds) in enumerate(methods):
        lines.append(f"  {json.dumps(name)}: {{")
        for j, (kind, settings) in enumerate(kinds.items()):
            lines.append(f"   {json.dumps(kind)}: [")
            lines += [f"    {json.dumps(s)}" + ("," if k < len(settings) - 1 else "") for k, s in enumerate(settings)]
            lines.append("   ]" + ("," if j < len(kinds) - 1 else ""))
        lines.append("  }" + ("," if i < len(methods) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "accel/benchmarks/grids.json")
    g = json.loads(path.read_text())
    path.write_text(dumps(g))
