"""One tuner for every caching method: the same code and the same number of selection evaluations for each.

A method's knob space is data (``spaces.json``, :class:`Space`): one primary knob (larger = skips more), the
values of its secondary knobs, fixed values and its own recommended setting. The tuner spends a fixed budget:

1. the method's recommended setting, verbatim;
2. a coarse pass: every combination of the secondary values (their product, or a union of products) at two points
   of the primary range;
3. bisection of the primary knob onto each quality level, on the combination that skips the most compute
   while holding that level so far (levels taken in turn; a converged bracket hands its turn to the next
   best combination). A bracket whose every evaluation holds is pushed up to the knob's maximum and one
   whose every evaluation fails is pushed down to its minimum, so a level is either bracketed or reported as
   out of the method's reach, never chosen at an arbitrary end of a grid.

Whatever the tuner evaluates, the committed rule (:func:`accel.benchmarks.verdict.choose`) then picks per level
from all the method's evaluations. Knobs that count steps scale with the step count.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import AccelError

SPACES = Path(__file__).with_name("spaces.json")
Params = dict[str, Any]
Evaluate = Callable[[Params], dict[str, Any] | None]  # selection summary, or None when the setting failed to run
Holds = Callable[[dict[str, Any], float], bool]


def steps_value(v: Any, steps: int) -> Any:
    """A value of a space at ``steps`` sampling steps: ``{"per_step": f, "min": m}`` -> max(m, round(f * steps))."""
    if isinstance(v, dict) and "per_step" in v:
        return max(int(v.get("min", 1)), int(round(v["per_step"] * steps)))
    return v


@dataclass
class Space:
    """One method's knobs on one kind of denoiser at one step count (values already resolved)."""

    primary: str
    integer: bool
    lo: float
    hi: float
    min: float
    max: float
    secondary: dict[str, list[Any]] | list[dict[str, list[Any]]] = field(default_factory=dict)
    fixed: Params = field(default_factory=dict)
    recommended: Params | None = None
    excluded: tuple[tuple[str, Any], ...] = ()  # (knob, value): combinations setting a knob to such a value are left out

    def combos(self) -> list[Params]:
        """Every combination of the secondary values: the product of their lists, or where ``secondary`` is a list
        of such dicts, the union of their products (in order, without repeats)."""
        out: list[Params] = []
        for prod in (self.secondary if isinstance(self.secondary, list) else [self.secondary]):
            keys = list(prod)
            for vals in itertools.product(*(prod[k] for k in keys)):
                c = dict(zip(keys, vals))
                if c not in out and not any(k in c and c[k] == v for k, v in self.excluded):
                    out.append(c)
        return out or [{}]

    def setting(self, combo: Params, value: float) -> Params:
        v = int(value) if self.integer else float(f"{value:.4g}")
        return {**self.fixed, **combo, self.primary: v}

    def coarse_points(self) -> list[float]:
        if self.integer:
            return sorted({int(self.lo), int(self.hi)})
        return [self.lo, self.hi]


def load_spaces(path: Path = SPACES) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data.get("budget"), int) or data["budget"] < 1:
        raise AccelError(f"{path}: 'budget' must be a positive int")
    return data


def space(method: str, kind: str, steps: int, path: Path = SPACES) -> Space:
    """The resolved knob space of ``method`` on a ``kind`` denoiser sampled with ``steps`` steps."""
    data = load_spaces(path)
    entry = data["methods"].get(method)
    if entry is None:
        raise AccelError(f"no knob space for {method!r} in {path}; spaces exist for: {', '.join(data['methods'])}")
    spec = entry.get(kind, entry.get("all"))
    if spec is None:
        raise AccelError(f"{path}: {method} has no space for {kind!r} denoisers")
    p = spec["primary"]
    integer = p.get("type", "float") == "int"
    lo, hi, mn, mx = (float(steps_value(p[k], steps)) for k in ("lo", "hi", "min", "max"))
    if not mn <= lo <= hi <= mx or (not integer and mn <= 0):
        raise AccelError(f"{path}: {method}'s primary {p['name']} needs 0 < min <= lo <= hi <= max, got {mn}, {lo}, {hi}, {mx}")
    raw = spec.get("secondary", {})
    prods = [{k: list({json.dumps(steps_value(v, steps)): steps_value(v, steps) for v in vals}.values())  # scaled values may coincide
              for k, vals in prod.items()} for prod in (raw if isinstance(raw, list) else [raw])]
    sec: dict[str, list[Any]] | list[dict[str, list[Any]]] = prods if isinstance(raw, list) else prods[0]
    fixed = {k: steps_value(v, steps) for k, v in spec.get("fixed", {}).items()}
    return Space(p["name"], integer, lo, hi, mn, mx, sec, fixed, spec.get("recommended"))


def _mid(a: float, b: float, integer: bool) -> float:
    if integer:
        return float((int(a) + int(b)) // 2)
    return math.sqrt(a * b)


class Tuner:
    """Spends ``budget`` evaluations of one method on the selection split (see the module docstring)."""

    def __init__(self, sp: Space, evaluate: Evaluate, holds: Holds, levels: tuple[float, ...], budget: int) -> None:
        self.sp, self.evaluate, self.holds, self.levels, self.budget = sp, evaluate, holds, levels, budget
        self.rows: list[tuple[Params, Params, dict[str, Any] | None]] = []  # (combo, params, summary)
        self._seen: set[str] = set()

    def _run(self, combo: Params, params: Params) -> bool:
        key = json.dumps(params, sort_keys=True)
        if key in self._seen or len(self.rows) >= self.budget:
            return False
        self._seen.add(key)
        self.rows.append((combo, params, self.evaluate(params)))
        return True

    def _points(self, combo: Params) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for c, p, s in self.rows:
            if s is not None and c == combo and p.get(self.sp.primary) is not None:
                out.append((float(p[self.sp.primary]), s))
        return sorted(out, key=lambda t: t[0])

    def _next(self, combo: Params, level: float) -> float | None:
        """The next primary value to try for ``combo`` at ``level``, or None when its bracket is closed."""
        sp, pts = self.sp, self._points(combo)
        if not pts:
            return None
        ok = [v for v, s in pts if self.holds(s, level)]
        a = max(ok) if ok else None
        above = [v for v, s in pts if a is None or v > a]
        fails = [v for v in above if v not in ok]
        b = min(fails) if fails else None
        if a is None:  # nothing holds: go down towards the minimum
            if b is None or b <= sp.min * (1.0001 if not sp.integer else 1):
                return None
            return max(sp.min, b - (b - sp.min) / 2) if sp.integer else max(sp.min, b / 4)
        if b is None:  # everything holds: push up towards the maximum
            if a >= sp.max * (0.9999 if not sp.integer else 1):
                return None
            return min(sp.max, a + max(1, a)) if sp.integer else min(sp.max, a * 4)
        if (sp.integer and b - a <= 1) or (not sp.integer and b / a < 1.03):
            return None
        return _mid(a, b, sp.integer)

    def _ranked(self, level: float) -> list[Params]:
        """Combinations, best first at ``level``: most compute skipped among holding evaluations, then PSNR."""
        def score(combo: Params) -> tuple[float, float]:
            pts = self._points(combo)
            held = [s["compute_speedup"] for _, s in pts if self.holds(s, level)]
            return (max(held) if held else 0.0, max((s["psnr_median"] for _, s in pts), default=-1.0))

        return sorted(self.sp.combos(), key=score, reverse=True)

    def run(self) -> list[tuple[Params, dict[str, Any] | None]]:
        sp = self.sp
        if sp.recommended is not None:
            self._run({"_recommended": True}, dict(sp.recommended))
        for combo in sp.combos():
            for v in sp.coarse_points():
                self._run(combo, sp.setting(combo, v))
        stalled = 0
        while len(self.rows) < self.budget and stalled < len(self.levels):
            stalled = 0
            for level in self.levels:
                if len(self.rows) >= self.budget:
                    break
                stepped = False
                for combo in self._ranked(level):
                    v = self._next(combo, level)
                    if v is not None and self._run(combo, sp.setting(combo, v)):
                        stepped = True
                        break
                stalled += not stepped
        return [(p, s) for _, p, s in self.rows]
