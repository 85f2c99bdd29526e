"""Moving flat shapes: short clips with prompts from a small grammar, and a GenEval-style scorer for video.

A clip holds one or two flat shapes of the shapes grammar (``accel.zoo.shapes``: eight colours, circle, square,
triangle) on a plain dark background, each moving in a straight line in a named direction::

    a red circle moving right                                     (single)
    a blue square moving up and a yellow triangle moving left     (pair)

:func:`render_clip` draws a clip frame by frame with the shapes renderer; :func:`parse_clip` reads a prompt back;
:func:`score_clip` checks a clip against what its prompt claims: per frame the objects (colour and shape, by the
shapes detector), across frames each object's direction of motion (the dominant axis and the sign of its track's
displacement from the first to the last third of the clip, at least :data:`MIN_TRAVEL` of the side).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import AccelError
from .shapes import COLOURS, SHAPES, Obj, Scene, _a, detect, render

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
KINDS = ("single", "pair")
MIN_TRAVEL = 0.12  # an object must travel at least this share of the side between the clip's first and last thirds
PRESENT = 0.6  # share of frames in which a claimed object must be detected


@dataclass(frozen=True)
class Mover:
    colour: str
    shape: str
    direction: str
    x: float = 0.0  # centre at the first frame, pixels
    y: float = 0.0
    size: float = 0.0
    travel: float = 0.0  # pixels from the first to the last frame

    def at(self, t: float) -> tuple[float, float]:
        """Centre at clip time ``t`` in [0, 1]."""
        dx, dy = DIRECTIONS[self.direction]
        return self.x + dx * self.travel * t, self.y + dy * self.travel * t


@dataclass(frozen=True)
class Clip:
    movers: tuple[Mover, ...]
    background: tuple[int, int, int] = (16, 16, 16)

    @property
    def kind(self) -> str:
        return KINDS[len(self.movers) - 1]

    @property
    def prompt(self) -> str:
        return " and ".join(f"{_a(m.colour)} {m.colour} {m.shape} moving {m.direction}" for m in self.movers)


def random_clip(rng: np.random.Generator, size: int = 32, kind: str | None = None) -> Clip:
    """Draw a clip: one mover (or two, ``kind="pair"``, in different colour-shape pairs, apart on every frame), each
    travelling 35-55% of the side in its direction, its whole path inside the frame."""
    kind = kind or str(rng.choice(KINDS))
    n = KINDS.index(kind) + 1
    for _ in range(2000):
        movers = []
        for _ in range(n):
            s = float(rng.uniform(0.22, 0.32) * size) if n == 2 else float(rng.uniform(0.26, 0.38) * size)
            direction, travel = str(rng.choice(list(DIRECTIONS))), float(rng.uniform(0.35, 0.55) * size)
            dx, dy = DIRECTIONS[direction]
            lo, hi = s / 2 + 1, size - s / 2 - 1  # the centre's range on every frame: the start leaves room for the path
            x = float(rng.uniform(lo - min(0, dx) * travel, hi - max(0, dx) * travel))
            y = float(rng.uniform(lo - min(0, dy) * travel, hi - max(0, dy) * travel))
            movers.append(Mover(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), direction, x, y, s, travel))
        if n == 2:
            a, b = movers
            if (a.colour, a.shape) == (b.colour, b.shape):
                continue
            gap = min(float(np.hypot(*np.subtract(a.at(t), b.at(t)))) for t in np.linspace(0, 1, 9))
            if gap <= (a.size + b.size) / 2 * 1.2:
                continue
        bg = tuple(int(v) for v in rng.integers(0, 36, size=3))
        return Clip(tuple(movers), bg)  # type: ignore[arg-type]
    raise AccelError(f"could not place a {kind} clip in {size} px")


def render_clip(clip: Clip, frames: int = 9, size: int = 32) -> np.ndarray:
    """The clip as (frames, size, size, 3) uint8 RGB, each frame drawn by the shapes renderer."""
    if frames < 2:
        raise AccelError(f"a clip needs at least 2 frames to move, got {frames}")
    out = []
    for t in np.linspace(0.0, 1.0, frames):
        objs = tuple(Obj(m.colour, m.shape, *m.at(float(t)), m.size) for m in clip.movers)
        out.append(render(Scene("single", objs, None, clip.background), size))
    return np.stack(out)


_PART = re.compile(rf"^(?:a|an) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) moving ({'|'.join(DIRECTIONS)})$")


def parse_clip(prompt: str) -> tuple[Mover, ...]:
    """The movers a prompt claims (colour, shape, direction; no positions)."""
    parts = [p.strip() for p in prompt.strip().lower().split(" and ")]
    found = [_PART.match(p) for p in parts]
    if not 1 <= len(parts) <= 2 or not all(found):
        raise AccelError(f"not a prompt of the moving-shapes grammar: {prompt!r} (e.g. 'a red circle moving right', "
                         "'a blue square moving up and a yellow triangle moving left')")
    return tuple(Mover(m.group(1), m.group(2), m.group(3)) for m in found)


@dataclass
class MoverCheck:
    present: bool  # detected (colour and shape) in at least PRESENT of the frames
    direction: bool  # and its track moved the named way, far enough
    moved: tuple[float, float] | None = None  # (dx, dy) of the track, pixels


@dataclass
class ClipScore:
    kind: str
    checks: list[MoverCheck] = field(default_factory=list)

    @property
    def objects(self) -> bool:
        return all(c.present for c in self.checks)

    @property
    def correct(self) -> bool:
        """Every claimed object is there on most frames and moves the named way."""
        return all(c.present and c.direction for c in self.checks)


def score_clip(frames: np.ndarray, prompt: str) -> ClipScore:
    """Check a clip (F, H, W, 3 uint8) against what its prompt claims."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise AccelError(f"expected frames of shape (F >= 2, H, W, 3), got {frames.shape}")
    claimed = parse_clip(prompt)
    side = float(frames.shape[2])
    dets = [detect(f) for f in frames]
    checks = []
    for m in claimed:
        track = [next(((d.x, d.y) for d in fd if d.colour == m.colour and d.shape == m.shape), None) for fd in dets]
        seen = [i for i, p in enumerate(track) if p is not None]
        present = len(seen) >= PRESENT * len(frames)
        third = max(1, len(frames) // 3)
        first = [track[i] for i in seen if i < third]
        last = [track[i] for i in seen if i >= len(frames) - third]
        if not present or not first or not last:
            checks.append(MoverCheck(present, False))
            continue
        dx, dy = np.subtract(np.mean(last, axis=0), np.mean(first, axis=0))
        ux, uy = DIRECTIONS[m.direction]
        along, across = dx * ux + dy * uy, abs(dx * uy) + abs(dy * ux)
        checks.append(MoverCheck(True, bool(along >= MIN_TRAVEL * side and along > across), (float(dx), float(dy))))
    return ClipScore(KINDS[len(claimed) - 1], checks)


def summarise_clips(scores: list[ClipScore]) -> dict[str, float]:
    """Accuracies (0..1): objects present and fully correct, per kind and overall."""
    out: dict[str, float] = {}
    for kind in KINDS:
        ks = [s for s in scores if s.kind == kind]
        if ks:
            out[f"{kind}_objects"] = float(np.mean([s.objects for s in ks]))
            out[f"{kind}_correct"] = float(np.mean([s.correct for s in ks]))
    out["accuracy"] = float(np.mean([s.correct for s in scores])) if scores else float("nan")
    return out


def prompt_set(n: int, seed: int = 1234, size: int = 32) -> list[str]:
    """``n`` prompts covering the grammar: single, pair, single, ..."""
    rng = np.random.default_rng(seed)
    return [random_clip(rng, size, KINDS[i % 2]).prompt for i in range(n)]
