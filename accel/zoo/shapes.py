"""Flat-shape scenes with prompts from a small grammar, and a GenEval-style scorer that checks them.

A scene holds one to three flat shapes (circle, square, triangle) in eight colours on a plain dark
background. Its prompt comes from a grammar of three forms::

    a red circle                               (single)
    two blue squares / three white circles     (count)
    a green triangle above a yellow circle     (relation: to the left of, to the right of, above, below)

:func:`render` draws a scene (anti-aliased by 4x supersampling); :func:`parse` reads a prompt back into a
:class:`Scene` (without positions); :func:`detect` finds the objects in an image; :func:`score` checks an
image against what its prompt claims: each object's colour and shape, the count, the relation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..errors import AccelError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 140, 25),
    "yellow": (235, 225, 40),
    "green": (40, 190, 60),
    "cyan": (40, 215, 225),
    "blue": (45, 75, 235),
    "purple": (150, 55, 215),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("to the left of", "to the right of", "above", "below")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
KINDS = ("single", "count", "relation")

_SUPER = 4  # supersampling factor of the renderer


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    x: float = 0.0  # centre, pixels
    y: float = 0.0
    size: float = 0.0  # side of the bounding box, pixels


@dataclass(frozen=True)
class Scene:
    """What a prompt claims (``kind``, ``objects``, ``relation``) and, for rendered scenes, where."""

    kind: str
    objects: tuple[Obj, ...]
    relation: str | None = None
    background: tuple[int, int, int] = (16, 16, 16)

    @property
    def prompt(self) -> str:
        o = self.objects
        if self.kind == "single":
            return f"{_a(o[0].colour)} {o[0].colour} {o[0].shape}"
        if self.kind == "count":
            return f"{COUNT_WORDS[len(o)]} {o[0].colour} {o[0].shape}s"
        return f"{_a(o[0].colour)} {o[0].colour} {o[0].shape} {self.relation} {_a(o[1].colour)} {o[1].colour} {o[1].shape}"


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], margin: float = 0.0) -> bool:
    """Whether ``a`` (x, y) stands ``relation`` ``b``: the named axis dominates and the order is right."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if relation in ("to the left of", "to the right of"):
        sign = -1 if relation == "to the left of" else 1
        return sign * dx > margin and abs(dx) > abs(dy)
    sign = -1 if relation == "above" else 1
    return sign * dy > margin and abs(dy) > abs(dx)


DEFAULT_MIX = (0.4, 0.2, 0.4)


def random_scene(rng: np.random.Generator, size: int = 32, kind: str | None = None,
                 mix: tuple[float, float, float] = DEFAULT_MIX) -> Scene:
    """Draw a scene: kind (by default 40% single, 20% count, 40% relation: ``mix`` in ``KINDS`` order), colours,
    shapes, sizes and positions."""
    kind = kind or rng.choice(KINDS, p=list(mix))
    colours, shapes = list(COLOURS), list(SHAPES)
    lo, hi = 0.25 * size, 0.40 * size
    if kind == "single":
        specs = [(rng.choice(colours), rng.choice(shapes))]
        lo, hi = 0.28 * size, 0.5 * size
    elif kind == "count":
        n = int(rng.integers(2, 4))
        specs = [(rng.choice(colours), rng.choice(shapes))] * n
        lo, hi = 0.22 * size, 0.32 * size
    else:
        while True:
            specs = [(rng.choice(colours), rng.choice(shapes)) for _ in range(2)]
            if specs[0] != specs[1]:
                break
    relation = str(rng.choice(RELATIONS)) if kind == "relation" else None
    for _ in range(1000):
        objs = []
        for colour, shape in specs:
            s = float(rng.uniform(lo, hi))
            x = float(rng.uniform(s / 2 + 1, size - s / 2 - 1))
            y = float(rng.uniform(s / 2 + 1, size - s / 2 - 1))
            objs.append(Obj(str(colour), str(shape), x, y, s))
        apart = all(math.hypot(a.x - b.x, a.y - b.y) > (a.size + b.size) / 2 * 1.3
                    for i, a in enumerate(objs) for b in objs[i + 1:])
        if apart and (relation is None or _relation_holds(relation, (objs[0].x, objs[0].y), (objs[1].x, objs[1].y), 0.15 * size)):
            break
    bg = tuple(int(v) for v in rng.integers(0, 36, size=3))
    return Scene(str(kind), tuple(objs), relation, bg)  # type: ignore[arg-type]


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """The scene as an (size, size, 3) uint8 RGB array, anti-aliased."""
    big = size * _SUPER
    img = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        cx, cy, h = o.x * _SUPER, o.y * _SUPER, o.size * _SUPER / 2
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif o.shape == "square":
            r = h * 0.9  # a square of the same area impression as the circle
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


_PROMPT = re.compile(
    r"^(?:(?P<count>two|three) (?P<cc>\w+) (?P<cs>\w+?)s"
    r"|an? (?P<c1>\w+) (?P<s1>\w+)(?: (?P<rel>to the left of|to the right of|above|below) an? (?P<c2>\w+) (?P<s2>\w+))?)$"
)


def parse(prompt: str) -> Scene:
    """Read a prompt of the grammar back into a :class:`Scene` (no positions); AccelError if it is not one."""
    m = _PROMPT.match(prompt.strip().lower())
    words = {"colour": COLOURS, "shape": SHAPES}

    def check(kind: str, value: str) -> str:
        if value not in words[kind]:
            raise AccelError(f"{value!r} is not a {kind} of the flux-shapes grammar (known: {', '.join(words[kind])})")
        return value

    if m is None:
        raise AccelError(f"{prompt!r} is not a flux-shapes prompt: use 'a red circle', 'two blue squares' or "
                         "'a green triangle above a yellow circle' (left of, right of, above, below)")
    if m["count"]:
        n = {"two": 2, "three": 3}[m["count"]]
        o = Obj(check("colour", m["cc"]), check("shape", m["cs"]))
        return Scene("count", (o,) * n)
    first = Obj(check("colour", m["c1"]), check("shape", m["s1"]))
    if m["rel"]:
        return Scene("relation", (first, Obj(check("colour", m["c2"]), check("shape", m["s2"]))), m["rel"])
    return Scene("single", (first,))


@dataclass
class Detection:
    colour: str
    shape: str
    x: float  # centre of the bounding box
    y: float
    area: int
    fill: float  # area / bounding-box area


def _template(shape: str, w: int, h: int) -> np.ndarray:
    """Coverage (0..1) of ``shape`` drawn to fill a w x h box, as :func:`render` draws it."""
    big = Image.new("L", (w * _SUPER, h * _SUPER), 0)
    draw = ImageDraw.Draw(big)
    W, H = w * _SUPER - 1, h * _SUPER - 1
    if shape == "circle":
        draw.ellipse([0, 0, W, H], fill=255)
    elif shape == "square":
        draw.rectangle([0, 0, W, H], fill=255)
    else:
        draw.polygon([(W / 2, 0), (W, H), (0, H)], fill=255)
    return np.asarray(big.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255


def detect(image: np.ndarray | Image.Image, min_area: int | None = None) -> list[Detection]:
    """The objects of an RGB image.

    The background colour is the image's per-channel median. Each pixel is explained as a mix
    ``alpha * colour + (1 - alpha) * background`` for the palette colour that explains it best; pixels with
    alpha >= 0.5 belong to that colour, connected regions of one colour are objects, and the shape is
    the template (circle, square, triangle fitted to the region's bounding box) closest to the region's
    alpha map.
    """
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image).astype(np.float32)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise AccelError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    min_area = min_area if min_area is not None else max(4, int(0.012 * h * w))
    bg = np.median(rgb.reshape(-1, 3), axis=0)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    d = rgb - bg  # (h, w, 3)
    e = palette - bg  # (k, 3)
    alpha = np.clip((d @ e.T) / (e * e).sum(-1), 0, 1)  # (h, w, k)
    resid = np.linalg.norm(d[:, :, None, :] - alpha[..., None] * e[None, None], axis=-1)
    best = resid.argmin(-1)
    a = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    fg = (a >= 0.5) & (np.take_along_axis(resid, best[..., None], -1)[..., 0] < 80)
    out = []
    for k, name in enumerate(COLOURS):
        mask = fg & (best == k)
        if mask.sum() < min_area:
            continue
        labels, n = ndimage.label(mask)
        for i in range(1, n + 1):
            region = labels == i
            area = int(region.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(region)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            patch = np.where(ndimage.binary_dilation(region)[y0:y1, x0:x1], alpha[y0:y1, x0:x1, k], 0)
            errs = {s: float(np.abs(patch - _template(s, x1 - x0, y1 - y0)).mean()) for s in SHAPES}
            fill = area / float((x1 - x0) * (y1 - y0))
            shape = "square" if fill >= 0.9 else min(errs, key=errs.__getitem__)  # a filled box is a square
            out.append(Detection(name, shape, (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, area, fill))  # box centre
    return sorted(out, key=lambda d: -d.area)


@dataclass
class Score:
    """What was checked for one image: each entry is True/False, or None where the prompt claims nothing."""

    kind: str
    colour: bool | None = None
    shape: bool | None = None
    count: bool | None = None
    both_present: bool | None = None
    relation: bool | None = None
    detections: list[Detection] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        """GenEval's per-image verdict: everything the prompt claims holds."""
        return all(v for v in (self.colour, self.shape, self.count, self.both_present, self.relation) if v is not None)


def score(image: np.ndarray | Image.Image, prompt: str) -> Score:
    """Check an image against what its prompt claims."""
    scene = parse(prompt)
    det = detect(image)
    if scene.kind == "single":
        o = scene.objects[0]
        top = det[0] if det else None
        return Score("single", colour=top is not None and top.colour == o.colour,
                     shape=top is not None and top.shape == o.shape, detections=det)
    if scene.kind == "count":
        o = scene.objects[0]
        n = sum(d.colour == o.colour and d.shape == o.shape for d in det)
        same_colour = [d for d in det if d.colour == o.colour]
        return Score("count", colour=bool(same_colour), shape=bool(same_colour) and all(d.shape == o.shape for d in same_colour),
                     count=n == len(scene.objects), detections=det)
    a, b = scene.objects
    da = next((d for d in det if d.colour == a.colour and d.shape == a.shape), None)
    db = next((d for d in det if d.colour == b.colour and d.shape == b.shape and d is not da), None)
    both = da is not None and db is not None
    rel = both and _relation_holds(scene.relation or "", (da.x, da.y), (db.x, db.y))
    return Score("relation", both_present=both, relation=rel, detections=det)


def summarise(scores: list[Score]) -> dict[str, float]:
    """Accuracies (0..1) over a list of scores: per check, per kind, and overall."""
    out: dict[str, float] = {}
    for key in ("colour", "shape", "count", "both_present", "relation"):
        for kind in KINDS:
            vals = [getattr(s, key) for s in scores if s.kind == kind and getattr(s, key) is not None]
            if vals:
                out[f"{kind}_{key}"] = float(np.mean(vals))
    for kind in KINDS:
        vals = [s.correct for s in scores if s.kind == kind]
        if vals:
            out[f"{kind}_correct"] = float(np.mean(vals))
    out["accuracy"] = float(np.mean([s.correct for s in scores])) if scores else float("nan")
    return out


def prompt_set(n: int, seed: int = 1234, size: int = 32) -> list[str]:
    """``n`` prompts covering the grammar: kinds in turn (single, relation, count, single, relation, ...)."""
    rng = np.random.default_rng(seed)
    order = ("single", "relation", "count", "single", "relation")
    return [random_scene(rng, size, order[i % len(order)]).prompt for i in range(n)]
