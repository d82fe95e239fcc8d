"""Marchenko–Pastur fit: exact random-matrix predictions on seeded synthetic matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from weightspectra.fitting.mp import (
    MPFitError,
    fit_mp,
    mp_cdf_table,
    mp_density_from_edge,
    mp_edges,
    tw_scale,
)
from weightspectra.fitting.mp import mp_density as mp_density_of_module


def gaussian_evals(N: int, M: int, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((N, M))
    return np.linalg.eigvalsh(w.T @ w / N)


def mp_density(x: float, Q: float) -> float:
    a, b = mp_edges(Q)
    if not a < x < b:
        return 0.0
    return math.sqrt((b - x) * (x - a)) / (2.0 * math.pi * x / Q)


@pytest.mark.parametrize("Q", [1.0, 2.0, 4.0, 10.0])
def test_cdf_table_matches_quadrature_of_the_density(Q: float) -> None:
    x, cdf = mp_cdf_table(Q)
    a, b = mp_edges(Q)
    for frac in (0.1, 0.3, 0.5, 0.8, 0.95):
        point = a + frac * (b - a)
        ref, _ = integrate.quad(mp_density, a, point, args=(Q,), limit=200)
        assert np.interp(point, x, cdf) == pytest.approx(ref, abs=2e-4)


@pytest.mark.parametrize(
    ("Q", "M"), [(1, 200), (1, 2000), (2, 500), (4, 200), (4, 1000), (10, 200), (10, 500)]
)
def test_gaussian_sigma_is_one_and_no_spikes(Q: int, M: int) -> None:
    fit = fit_mp(gaussian_evals(Q * M, M, seed=Q * 7 + M), Q * M, M)
    assert fit.sigma == pytest.approx(1.0, rel=0.02)
    assert fit.num_spikes == 0
    assert fit.softrank >= 0.9
    lo, hi = mp_edges(Q)
    assert fit.bulk_max == pytest.approx(hi, rel=0.04)
    assert fit.bulk_min == pytest.approx(lo, rel=0.04, abs=1e-3)


def test_scaling_w_by_c_scales_sigma_by_c() -> None:
    evals = gaussian_evals(600, 300, seed=3)
    base = fit_mp(evals, 600, 300)
    scaled = fit_mp(evals * 9.0, 600, 300)
    assert scaled.sigma == pytest.approx(3.0 * base.sigma, rel=1e-9)
    assert scaled.num_spikes == base.num_spikes
    assert scaled.ks_distance == pytest.approx(base.ks_distance, abs=1e-12)


def test_tracy_widom_scale_is_of_order_n_to_minus_two_thirds() -> None:
    ratio = tw_scale(8000, 4000) / tw_scale(1000, 500)
    assert ratio == pytest.approx(8.0 ** (-2.0 / 3.0), rel=1e-12)


@pytest.mark.parametrize("Q", [1, 2, 4, 10])
def test_rank_one_spike_above_bbp_threshold(Q: int) -> None:
    M = 400
    N = Q * M
    rng = np.random.default_rng(100 + Q)
    theta = 2.0 * Q ** (-0.25)
    u = rng.standard_normal(N)
    v = rng.standard_normal(M)
    w = rng.standard_normal((N, M)) + theta * math.sqrt(N) * np.outer(
        u / np.linalg.norm(u), v / np.linalg.norm(v)
    )
    evals = np.linalg.eigvalsh(w.T @ w / N)
    fit = fit_mp(evals, N, M)
    assert fit.num_spikes == 1
    predicted = (1.0 / Q + theta**2) * (1.0 + 1.0 / theta**2)
    assert evals[-1] == pytest.approx(predicted, rel=0.05)
    assert fit.sigma == pytest.approx(1.0, rel=0.02)  # the spike does not inflate σ


@pytest.mark.parametrize("Q", [1, 4])
def test_rank_one_perturbation_below_threshold_gives_no_spike(Q: int) -> None:
    M = 400
    N = Q * M
    rng = np.random.default_rng(200 + Q)
    theta = 0.4 * Q ** (-0.25)
    u = rng.standard_normal(N)
    v = rng.standard_normal(M)
    w = rng.standard_normal((N, M)) + theta * math.sqrt(N) * np.outer(
        u / np.linalg.norm(u), v / np.linalg.norm(v)
    )
    assert fit_mp(np.linalg.eigvalsh(w.T @ w / N), N, M).num_spikes == 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(MPFitError, match="N ≥ M"):
        fit_mp(np.ones(10), 5, 10)
    with pytest.raises(MPFitError, match="at least 8"):
        fit_mp(np.array([0.0, 0.0, 1.0, 2.0]), 10, 4)
    with pytest.raises(MPFitError, match="1-D"):
        fit_mp(np.ones((3, 3)), 10, 3)


def naive_mp_density(x: float, Q: float, s2: float) -> float:
    """Reference: the MP density written from the textbook formula, edges computed here."""
    c = 1.0 / Q
    lo, hi = s2 * (1.0 - math.sqrt(c)) ** 2, s2 * (1.0 + math.sqrt(c)) ** 2
    if x <= lo or x >= hi:
        return 0.0
    return math.sqrt((hi - x) * (x - lo)) / (2.0 * math.pi * s2 * c * x)


@pytest.mark.parametrize("sigma", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("Q", [1.0, 1.5, 4.0, 10.0])
def test_mp_density_matches_formula_and_integrates_to_one(Q: float, sigma: float) -> None:
    s2 = sigma * sigma
    lo, hi = mp_edges(Q, sigma)
    grid = np.linspace(lo - 0.1 * hi, 1.1 * hi, 301)
    got = mp_density_of_module(grid, Q, sigma)
    ref = [naive_mp_density(float(t), Q, s2) for t in grid]
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0.0)

    def f(t: float) -> float:
        return float(mp_density_of_module(np.array([t]), Q, sigma)[0])

    # at Q = 1 the density diverges like x^(-1/2) at 0: integrable, and quad's QAGS copes
    total, _ = integrate.quad(f, lo, hi, limit=400)
    assert total == pytest.approx(1.0, abs=1e-6)
    mean, _ = integrate.quad(lambda t: t * f(t), lo, hi, limit=400)
    assert mean == pytest.approx(s2, rel=1e-6)  # E[λ] = σ² for entries of variance σ²
    assert mp_density_of_module(np.array([[lo - 1e-3, hi + 1e-3]]), Q, sigma).tolist() == [
        [0.0, 0.0]
    ]


@pytest.mark.parametrize("Q", [1.0, 3.0])
def test_mp_density_from_edge_is_the_same_law(Q: float) -> None:
    sigma = 1.7
    _, hi = mp_edges(Q, sigma)
    grid = np.linspace(0.0, 1.2 * hi, 97)
    np.testing.assert_allclose(
        mp_density_from_edge(grid, hi, Q), mp_density_of_module(grid, Q, sigma), rtol=1e-12
    )


def test_mp_density_describes_a_gaussian_matrix() -> None:
    # Histogram of a large Gaussian ESD against the density: the law, not just its formula.
    N, M = 4000, 1000
    evals = gaussian_evals(N, M, seed=11)
    counts, edges = np.histogram(evals, bins=20)
    mids = 0.5 * (edges[1:] + edges[:-1])
    expected = mp_density_of_module(mids, N / M) * np.diff(edges) * M
    assert np.abs(counts - expected).max() < 0.1 * counts.max()


def test_mp_density_bad_inputs_raise() -> None:
    with pytest.raises(MPFitError, match="Q = N/M ≥ 1"):
        mp_density_of_module(np.ones(3), 0.5)
    with pytest.raises(MPFitError, match="σ > 0"):
        mp_density_of_module(np.ones(3), 2.0, sigma=0.0)
    with pytest.raises(MPFitError, match="bulk_max > 0"):
        mp_density_from_edge(np.ones(3), -1.0, 2.0)
    with pytest.raises(MPFitError, match="Q = N/M ≥ 1"):
        mp_density_from_edge(np.ones(3), 1.0, 0.9)


@pytest.mark.parametrize("rank", [20, 50, 100])
def test_softrank_is_bounded_by_one_on_rank_collapsed_layers(rank: int) -> None:
    N, M = 400, 200
    rng = np.random.default_rng(rank)
    w = rng.standard_normal((N, rank)) @ rng.standard_normal((rank, M)) / math.sqrt(rank)
    evals = np.clip(np.linalg.eigvalsh(w.T @ w / N), 0.0, None)
    fit = fit_mp(evals, N, M)
    ratio = fit.bulk_max / evals[-1]
    assert fit.num_zeros >= M - rank
    assert 0.0 < fit.softrank <= 1.0
    assert fit.softrank == min(ratio, 1.0)
    if rank <= 50:  # the edge fitted to the nonzero bulk reaches past λ_max: no spike
        assert ratio > 1.1 and fit.softrank == 1.0 and fit.num_spikes == 0
    else:
        assert fit.softrank == ratio < 1.0
