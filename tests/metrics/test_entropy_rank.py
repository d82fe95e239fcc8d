"""Entropy and rank of a rank-deficient layer against a full SVD done in the test.

metrics.md §4: entropy = −Σ pᵢ ln pᵢ / ln R with pᵢ = λᵢ / Σλ = σᵢ² / Σσ² and R = matrix_rank
(numpy's σ > σ_max·max(N, M)·eps); the peer's 1e-10 added to each pᵢ and to R changes the value
by < 1e-7 here, inside the stated tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import weightspectra as ws

N, M, R = 120, 60, 20
#: Entropy through the exact SVD path: the 1e-10 regularisation moves it by ≤ M·1e-10·|ln 1e-10|
#: / ln R ≈ 5e-8; SVD rounding is ~1e-14.
TOL_SVD = 1e-6
#: Through the default Gram path the numerically zero eigenvalues come out ~1e-13·λ_max instead
#: of ~1e-30·λ_max; their share of Σλ stays < 1e-11, so the same tolerance holds once the rank is
#: right.
TOL_GRAM = 1e-6
#: The Gram path clips the round-off of the exact zeros (tiny negative eigenvalues) with a typed
#: warning; expected here, and not what these tests are about.
CLIPPED = pytest.mark.filterwarnings("ignore::weightspectra.errors.NumericalWarning")


def planted(seed: int, rank: int = R) -> np.ndarray:
    """W = A·B with inner dimension ``rank``: exactly ``rank`` nonzero singular values, spread
    over two decades so that the entropy is well below 1."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N, rank)) * np.logspace(0.0, -1.0, rank)
    b = rng.standard_normal((rank, M))
    return a @ b


def reference(w: np.ndarray) -> tuple[int, float]:
    """(rank, entropy) from numpy's full SVD, written out as the definition says."""
    s = np.linalg.svd(w, compute_uv=False)
    tol = s.max() * max(w.shape) * np.finfo(np.float64).eps
    rank = int(np.sum(s > tol))
    p = s[:rank] ** 2 / np.sum(s**2)
    return rank, float(-np.sum(p * np.log(p)) / math.log(rank))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_of_rank_deficient_layer_exact_path(seed: int) -> None:
    w = planted(seed)
    rank, expected = reference(w)
    assert rank == R  # the planted rank, by the test's own SVD
    assert expected < 0.95  # not the flat-spectrum value: normalising by ln M would show
    row = ws.analyze({"dense.weight": w}, eig_method="svd").layers[0]
    assert row.metrics["matrix_rank"] == R
    assert row.metrics["rank_loss"] == M - R
    assert row.metrics["entropy"] == pytest.approx(expected, abs=TOL_SVD)


@CLIPPED
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_of_rank_deficient_layer_default_path(seed: int) -> None:
    w = planted(seed)
    rank, expected = reference(w)
    row = ws.analyze({"dense.weight": w}).layers[0]
    assert row.metrics["matrix_rank"] == rank
    assert row.metrics["entropy"] == pytest.approx(expected, abs=TOL_GRAM)


def test_entropy_is_one_for_a_flat_spectrum_of_reduced_rank() -> None:
    """Equal nonzero singular values: pᵢ = 1/R, entropy ln R / ln R = 1 exactly (up to the
    1e-10 regularisation), whatever M is."""
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.standard_normal((N, R)))
    v, _ = np.linalg.qr(rng.standard_normal((M, R)))
    w = 2.0 * u @ v.T  # R singular values equal to 2, the rest 0
    row = ws.analyze({"dense.weight": w}, eig_method="svd").layers[0]
    assert row.metrics["matrix_rank"] == R
    assert row.metrics["entropy"] == pytest.approx(1.0, abs=TOL_SVD)


@CLIPPED
@pytest.mark.parametrize("method", ["svd", "gram"])
def test_entropy_invariances(method: str) -> None:
    """Scaling W by c, transposing it, or rotating it orthogonally leaves the entropy."""
    w = planted(4)
    _, expected = reference(w)
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((N, N)))
    for variant in (7.5 * w, w.T.copy(), q @ w):
        row = ws.analyze({"dense.weight": variant}, eig_method=method).layers[0]
        assert row.metrics["entropy"] == pytest.approx(expected, abs=TOL_GRAM)
