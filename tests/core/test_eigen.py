"""Eigenvalues: the Gram path against a full SVD, invariances, and bad matrices."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import ortho_group

from weightspectra.core import eigen
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


# --- matrices read row block by row block -----------------------------------------------------


def _recording_reader(w: np.ndarray, calls: list[tuple[int, int]]) -> Callable:
    def read(lo: int, hi: int) -> np.ndarray:
        calls.append((lo, hi))
        return w[lo:hi]

    return read


@pytest.mark.parametrize("shape", [(300, 11), (1000, 64), (64, 64), (257, 3)])
def test_streamed_gram_matches_full_svd_and_reads_each_row_once(
    rng: np.random.Generator, shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eigen, "GRAM_BLOCK_BYTES", 8 * 64 * 5)  # a few rows per syrk block
    monkeypatch.setattr(eigen, "STREAM_READ_BYTES", 4 * 64 * 37)  # several reads
    w = rng.standard_normal(shape).astype(np.float32)
    calls: list[tuple[int, int]] = []
    ours = eigen.streamed_gram_eigenvalues(_recording_reader(w, calls), shape)
    ref = naive_evals(w)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * ref[-1])
    # consecutive, non-overlapping reads that cover every row exactly once
    assert calls[0][0] == 0 and calls[-1][1] == shape[0]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(calls))
    assert len(calls) > 1 or shape[0] * shape[1] * 4 <= eigen.STREAM_READ_BYTES


def test_streamed_gram_is_the_blocked_gram_term_for_term(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed path sums the same blocks as the whole matrix's blocked path: equal bits."""
    monkeypatch.setattr(eigen, "GRAM_BLOCKED_ABOVE_BYTES", 1024)
    monkeypatch.setattr(eigen, "GRAM_BLOCK_BYTES", 8 * 48 * 7)
    monkeypatch.setattr(eigen, "STREAM_READ_BYTES", 4 * 48 * 30)  # not a multiple of 7 rows
    w = rng.standard_normal((500, 48)).astype(np.float32)
    whole = gram_eigenvalues(w)  # float32 input, float64 Gram: the blocked path
    streamed = eigen.streamed_gram_eigenvalues(lambda lo, hi: w[lo:hi], w.shape)
    np.testing.assert_array_equal(streamed, whole)


def test_streamed_float32_precision_close_to_float64(rng: np.random.Generator) -> None:
    w = rng.standard_normal((400, 30)).astype(np.float32)
    f32 = eigen.streamed_gram_eigenvalues(lambda lo, hi: w[lo:hi], w.shape, Precision.FLOAT32)
    ref = naive_evals(w)
    np.testing.assert_allclose(f32, ref, rtol=1e-4)


def test_streamed_layer_eigenvalues_scale_and_normalize_like_the_stack_path(
    rng: np.random.Generator,
) -> None:
    w = rng.standard_normal((120, 40))
    got = eigen.streamed_layer_eigenvalues(
        lambda lo, hi: w[lo:hi], w.shape, eig_scale=0.5, normalize_by=120
    )
    ref = naive_evals(w) * 0.5 / 120
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_streamed_bad_values_are_counted_across_blocks(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eigen, "STREAM_READ_BYTES", 4 * 10 * 16)  # 16-row reads
    w = rng.standard_normal((100, 10))
    w[3, 1] = w[50, 2] = np.nan
    w[99, 9] = np.inf
    with pytest.raises(LayerError, match="2 NaN and 1 infinite values out of 1000"):
        eigen.streamed_layer_eigenvalues(lambda lo, hi: w[lo:hi], w.shape, what="layer x")


def test_streamed_overflow_names_the_type() -> None:
    w = np.full((40, 4), 1e30, dtype=np.float32)
    with pytest.raises(LayerError, match="overflows float32"):
        eigen.streamed_gram_eigenvalues(lambda lo, hi: w[lo:hi], w.shape, Precision.FLOAT32)


def test_streamed_zero_matrix_is_a_layer_error() -> None:
    w = np.zeros((50, 5))
    with pytest.raises(LayerError, match="all zeros"):
        eigen.streamed_layer_eigenvalues(lambda lo, hi: w[lo:hi], w.shape)


def test_streamed_needs_a_tall_matrix_and_honest_reads(rng: np.random.Generator) -> None:
    w = rng.standard_normal((10, 30))
    with pytest.raises(ValueError, match="tall"):
        eigen.streamed_gram_eigenvalues(lambda lo, hi: w[lo:hi], w.shape)
    t = w.T
    with pytest.raises(LayerError, match="a bug in the source adapter"):
        eigen.streamed_gram_eigenvalues(lambda lo, hi: t[lo : hi + 1, :-1], t.shape)
