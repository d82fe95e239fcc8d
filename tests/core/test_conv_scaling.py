"""Conv2D eigenvalues through the public API against an SVD of the kernel slices done here.

metrics.md §2: a (out, in, kh, kw) kernel gives rf = kh·kw slices W[:, :, i, j]; pooled, each
slice is multiplied by √(1/2) (eigenvalues × 1/2); one by one (pool=False), by √(rf/2)
(eigenvalues × rf/2); conv_scaling=False leaves them unscaled.
"""

from __future__ import annotations

import numpy as np
import pytest

import weightspectra as ws

OUT, IN, KH, KW = 24, 16, 3, 3
RF = KH * KW
#: Float64 Gram eigenvalues of these well-conditioned slices (λ_min/λ_max ≈ 0.01) agree with the
#: SVD to ~1e-13 relatively; 1e-9 leaves room for any LAPACK.
RTOL = 1e-9


def kernel(seed: int = 2024) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((OUT, IN, KH, KW))


def slice_evals(k: np.ndarray, i: int, j: int) -> np.ndarray:
    """σ² of one kernel position's out × in matrix, by numpy's SVD, ascending."""
    return np.sort(np.linalg.svd(k[:, :, i, j], compute_uv=False) ** 2)


def pooled_reference(k: np.ndarray) -> np.ndarray:
    return np.sort(np.concatenate([slice_evals(k, i, j) for i in range(KH) for j in range(KW)]))


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_pooled_conv2d_eigenvalues_are_halved(method: str) -> None:
    k = kernel()
    report = ws.analyze({"conv.weight": k}, eig_method=method)
    (row,) = report.layers
    assert row.layer_type == "conv2d" and row.ok
    assert row.rf == RF and row.num_evals == IN * RF
    assert row.evals is not None
    np.testing.assert_allclose(np.sort(row.evals), 0.5 * pooled_reference(k), rtol=RTOL)
    assert row.metrics["lambda_max"] == pytest.approx(0.5 * pooled_reference(k)[-1], rel=RTOL)
    # ‖·‖_F² of the pooled, scaled slices: half the kernel's squared Frobenius norm
    assert row.metrics["norm"] == pytest.approx(0.5 * float(np.sum(k**2)), rel=RTOL)


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_unpooled_conv2d_slices_are_scaled_by_rf_over_two(method: str) -> None:
    k = kernel(7)
    report = ws.analyze({"conv.weight": k}, pool=False, eig_method=method)
    rows = report.layers
    assert len(rows) == RF
    positions = [(i, j) for i in range(KH) for j in range(KW)]
    for row, (i, j) in zip(rows, positions, strict=True):
        assert row.name == f"conv[{i},{j}]"
        assert row.evals is not None and row.num_evals == IN
        np.testing.assert_allclose(
            np.sort(row.evals), RF / 2.0 * slice_evals(k, i, j), rtol=RTOL, err_msg=row.name
        )


def test_conv_scaling_off_leaves_eigenvalues_unscaled() -> None:
    k = kernel(11)
    pooled = ws.analyze({"conv.weight": k}, conv_scaling=False).layers[0]
    assert pooled.evals is not None
    np.testing.assert_allclose(np.sort(pooled.evals), pooled_reference(k), rtol=RTOL)
    unpooled = ws.analyze({"conv.weight": k}, conv_scaling=False, pool=False).layers
    for row, (i, j) in zip(unpooled, [(i, j) for i in range(KH) for j in range(KW)], strict=True):
        assert row.evals is not None
        np.testing.assert_allclose(np.sort(row.evals), slice_evals(k, i, j), rtol=RTOL)


def test_pooled_scaling_is_half_of_unscaled_and_transpose_invariant() -> None:
    """Invariances: the scaling is a pure factor 1/2, and swapping out/in (each slice
    transposed) leaves the pooled eigenvalues unchanged."""
    k = kernel(5)
    on = ws.analyze({"conv.weight": k}).layers[0].evals
    off = ws.analyze({"conv.weight": k}, conv_scaling=False).layers[0].evals
    swapped = ws.analyze({"conv.weight": np.ascontiguousarray(k.transpose(1, 0, 2, 3))})
    assert on is not None and off is not None
    np.testing.assert_allclose(on, 0.5 * off, rtol=1e-12)
    assert swapped.layers[0].evals is not None
    np.testing.assert_allclose(swapped.layers[0].evals, on, rtol=RTOL)
