"""The moving-shapes grammar and its video scorer, on rendered ground truth: what it must read right, and what it
must catch (another direction, a still clip, another colour or shape, frames in reverse)."""

from __future__ import annotations

import numpy as np
import pytest

from accel import AccelError
from accel.zoo import motion


def _clips(n: int, seed: int, kind: str | None = None):
    rng = np.random.default_rng(seed)
    return [motion.random_clip(rng, 32, kind) for _ in range(n)]


@pytest.mark.parametrize("kind", motion.KINDS)
def test_rendered_clips_are_read_right(kind):
    clips = _clips(40, 0 if kind == "single" else 1, kind)
    scores = [motion.score_clip(motion.render_clip(c, frames=9), c.prompt) for c in clips]
    acc = motion.summarise_clips(scores)
    assert acc[f"{kind}_correct"] >= 0.95, acc
    assert motion.parse_clip(clips[0].prompt) == tuple(motion.Mover(m.colour, m.shape, m.direction) for m in clips[0].movers)


def test_the_scorer_catches_wrong_motion_and_wrong_objects():
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    turned = {"left": "up", "up": "right", "right": "down", "down": "left"}
    others = {c: next(o for o in motion.COLOURS if o != c) for c in motion.COLOURS}
    caught = {"reverse": 0, "opposite": 0, "turned": 0, "still": 0, "colour": 0}
    clips = _clips(30, 2, "single")
    for c in clips:
        video = motion.render_clip(c, frames=9)
        m = c.movers[0]
        caught["reverse"] += not motion.score_clip(video[::-1], c.prompt).correct
        caught["opposite"] += not motion.score_clip(video, c.prompt.replace(f"moving {m.direction}", f"moving {opposite[m.direction]}")).correct
        caught["turned"] += not motion.score_clip(video, c.prompt.replace(f"moving {m.direction}", f"moving {turned[m.direction]}")).correct
        caught["still"] += not motion.score_clip(np.repeat(video[:1], 9, axis=0), c.prompt).correct
        caught["colour"] += not motion.score_clip(video, c.prompt.replace(m.colour, others[m.colour], 1)).correct
    assert all(v >= 0.95 * len(clips) for v in caught.values()), caught


def test_every_draw_places_its_clip_inside_the_frame():
    """Thousands of draws (a training run makes about 80,000) all succeed, each path inside the frame, pairs apart."""
    rng = np.random.default_rng(7)
    for _ in range(3000):
        c = motion.random_clip(rng, 32)
        for m in c.movers:
            r = m.size / 2 + 1 - 1e-9
            assert all(r <= v <= 32 - r for t in (0.0, 1.0) for v in m.at(t)), m


def test_bad_prompts_and_frames_are_refused():
    with pytest.raises(AccelError, match="not a prompt of the moving-shapes grammar"):
        motion.parse_clip("a red circle")
    with pytest.raises(AccelError, match="expected frames of shape"):
        motion.score_clip(np.zeros((1, 32, 32, 3), np.uint8), "a red circle moving up")
    with pytest.raises(AccelError, match="at least 2 frames"):
        motion.render_clip(_clips(1, 3)[0], frames=1)
    assert len(set(motion.prompt_set(20, seed=5))) > 15
