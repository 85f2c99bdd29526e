"""docs/coverage.md is what ``accel coverage`` writes now: regenerated here on tiny models, so it cannot go stale."""

from __future__ import annotations

from pathlib import Path

import torch

from accel.caching.coverage import NOT_DENOISERS, TINY, denoiser_classes, markdown, run_coverage

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
    assert all(r.supported for r in results if r.cls in TINY and not r.status.startswith("no tiny config"))
    assert all(r.status.startswith("not a denoiser") for r in results if r.cls in NOT_DENOISERS)
    assert DOC.read_text() == markdown(results), "docs/coverage.md is stale: run `accel coverage`"
