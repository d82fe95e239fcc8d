"""Eigenvalues: the Gram path against a full SVD, invariances, and bad matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import ortho_group

from weightspectra.core.eigen import gram_eigenvalues, layer_eigenvalues, svd_eigenvalues
from weightspectra.errors import LayerError, NumericalWarning
from weightspectra.options import EigenMethod, Precision


def naive_evals(w: np.ndarray) -> np.ndarray:
    """Reference: squared singular values from numpy's full SVD, ascending."""
    return np.sort(np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2)


@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (64, 64), (300, 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_matches_full_svd(
    rng: np.random.Generator, shape: tuple[int, int], dtype: type
) -> None:
    w = rng.standard_normal(shape).astype(dtype)
    ours = layer_eigenvalues(w[None])
    ref = naive_evals(w)
    assert ours.shape == (min(shape),)
    # float64 Gram: eigenvalues near the top agree to ~M·eps relative to λ_max
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * ref[-1])


def test_svd_path_is_exact_on_small_eigenvalues(rng: np.random.Generator) -> None:
    u, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    v, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    s = np.logspace(0, -7, 30)
    w = u[:, :30] @ np.diag(s) @ v.T
    exact = np.sort(s**2)
    via_svd = layer_eigenvalues(w[None], method=EigenMethod.SVD)
    np.testing.assert_allclose(via_svd, exact, rtol=1e-6)


def test_invariances(rng: np.random.Generator) -> None:
    w = rng.standard_normal((80, 30))
    base = layer_eigenvalues(w[None])
    np.testing.assert_allclose(layer_eigenvalues(w.T[None]), base, rtol=1e-10)
    q_left = ortho_group.rvs(80, random_state=1)
    q_right = ortho_group.rvs(30, random_state=2)
    np.testing.assert_allclose(layer_eigenvalues((q_left @ w @ q_right)[None]), base, rtol=1e-9)
    c = 3.7
    np.testing.assert_allclose(layer_eigenvalues((c * w)[None]), c**2 * base, rtol=1e-12)


def test_pooled_slices_scale_and_normalize(rng: np.random.Generator) -> None:
    stack = rng.standard_normal((4, 20, 12))
    pooled = layer_eigenvalues(stack, eig_scale=0.5)
    ref = np.sort(np.concatenate([naive_evals(m) for m in stack])) * 0.5
    np.testing.assert_allclose(pooled, ref, rtol=1e-10)
    normalized = layer_eigenvalues(stack[:1], normalize_by=20)
    np.testing.assert_allclose(normalized, naive_evals(stack[0]) / 20, rtol=1e-10)


def test_float32_precision_close_to_float64(rng: np.random.Generator) -> None:
    w = rng.standard_normal((200, 100))
    f64 = gram_eigenvalues(w, Precision.FLOAT64)
    f32 = gram_eigenvalues(w, Precision.FLOAT32)
    np.testing.assert_allclose(f32, f64, rtol=0, atol=1e-5 * f64[-1])


def test_svd_eigenvalues_sorted(rng: np.random.Generator) -> None:
    ev = svd_eigenvalues(rng.standard_normal((9, 7)))
    assert np.all(np.diff(ev) >= 0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")],
)
def test_non_finite_is_a_layer_error(rng: np.random.Generator, bad: float, match: str) -> None:
    w = rng.standard_normal((1, 10, 10))
    w[0, 3, 4] = bad
    with pytest.raises(LayerError, match=match):
        layer_eigenvalues(w, what="layer fc")


def test_zero_matrix_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="all zeros"):
        layer_eigenvalues(np.zeros((1, 10, 12)))


def test_rank_deficient_roundoff_is_clipped_with_warning(rng: np.random.Generator) -> None:
    w = rng.standard_normal((60, 3)) @ rng.standard_normal((3, 40))  # rank 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev = layer_eigenvalues(w[None])
    assert ev.min() >= 0.0
    assert np.count_nonzero(ev > 1e-8 * ev[-1]) == 3
    negatives = np.linalg.eigvalsh(w.T @ w).min() < 0
    assert any(issubclass(c.category, NumericalWarning) for c in caught) == negatives


def test_stack_must_be_3d(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"\(k, rows, cols\) stack"):
        layer_eigenvalues(rng.standard_normal((5, 5)))
