"""Tests of the block CS operator of accel.invertible (A A^T = I, projection, adjointness, padding)."""

import pytest
import torch

from accel.invertible.operator import BlockCS, CSConfig, padded_size
from accel.errors import AccelError


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("scramble", [True, False])
def test_orthonormal_rows_projection_adjoint(ratio, scramble):
    op = BlockCS(CSConfig(ratio, seed=3, scramble=scramble), 64, 96, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 64, 96, generator=g, dtype=torch.float64)
    y = torch.randn(2, op.num_blocks, op.config.q, generator=g, dtype=torch.float64)
    # A A^T = I
    torch.testing.assert_close(op.A(op.AT(y)), y, rtol=0, atol=1e-12)
    # the projection is idempotent and lands on {A x = y}
    p = op.project(x, y)
    torch.testing.assert_close(op.project(p, y), p, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.A(p), y, rtol=0, atol=1e-12)
    # adjointness <A x, y> = <x, A^T y>
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.AT(y)).sum()
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_shapes_padding_and_determinism():
    cfg = CSConfig(0.1)
    assert cfg.q == 103
    op = BlockCS.for_image(cfg, 50, 70)
    assert (op.height, op.width) == padded_size(50, 70) == (64, 96)
    img = torch.rand(1, 1, 50, 70)
    y = op.measure(img)
    assert y.shape == (1, 6, 103)
    assert op.crop(op.pad(img)).equal(img)
    y2 = BlockCS.for_image(cfg, 50, 70).measure(img)
    assert y.equal(y2)  # same seed -> same operator
    other = BlockCS.for_image(CSConfig(0.1, seed=1), 50, 70).measure(img)
    assert not torch.allclose(y, other)
    # full sampling is invertible
    full = BlockCS(CSConfig(1.0), 32, 32, dtype=torch.float64)
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(full.AT(full.A(x)), x)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "abc"])
def test_bad_ratio(bad):
    with pytest.raises(AccelError, match=r"\(0, 1\]"):
        CSConfig(bad)


def test_bad_shapes():
    op = BlockCS(CSConfig(0.5), 32, 32)
    with pytest.raises(AccelError, match="expects images"):
        op.A(torch.zeros(1, 1, 32, 64))
    with pytest.raises(AccelError, match="measurements"):
        op.AT(torch.zeros(1, 2, op.config.q))
    with pytest.raises(AccelError, match="multiples"):
        BlockCS(CSConfig(0.5), 30, 32)
