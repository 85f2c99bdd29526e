"""docs/coverage.md is what ``accel coverage`` writes now: regenerated here on tiny models, so it cannot go stale."""

from __future__ import annotations

from pathlib import Path

import torch

from accel.coverage import FAMILIES, NOT_DENOISERS
from accel.coverage.check import denoiser_classes, markdown, run_coverage
from accel.coverage.families.image import IMAGE
from accel.coverage.families.video_audio import VIDEO_AUDIO

DOC = Path(__file__).resolve().parents[2] / "docs" / "coverage.md"


def test_coverage_doc_is_current() -> None:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_coverage()
    finally:
        torch.set_num_threads(n)
    assert [r.cls for r in results] == denoiser_classes()
    # every class with a tiny configuration that runs is supported (a failure here is a caching bug, not a gap)
    failed = [(r.cls, r.status) for r in results if r.status.startswith(("failed", "refused"))]
    assert not failed, failed
    assert all(r.supported for r in results if r.cls in FAMILIES and not r.status.startswith("no tiny config"))
    assert all(r.status.startswith("not a denoiser") for r in results if r.cls in NOT_DENOISERS)
    assert DOC.read_text() == markdown(results), "docs/coverage.md is stale: run `accel coverage`"


def test_family_table_is_one_entry_per_class() -> None:
    """Each class is in one of the two tables, and every pipeline name is unique (the tests run them by name)."""
    assert not set(IMAGE) & set(VIDEO_AUDIO)
    names = [p.name for fam in FAMILIES.values() for p in fam.pipelines]
    assert len(names) == len(set(names)), names


def test_coverage_under_the_lookahead_gate():
    """`accel coverage --gate lookahead`: a transformer forecasts under it with every check passing; a U-Net refuses it
    in one line."""
    from accel.coverage.check import check

    assert check("DiTTransformer2DModel", gate="lookahead").status == "supported"
    assert check("UNet2DModel", gate="lookahead").status.startswith("refused: the lookahead gate forecasts block 0 too")
