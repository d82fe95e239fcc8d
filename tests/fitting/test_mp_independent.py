"""Marchenko–Pastur edges, CDF, Tracy–Widom scale and σ fit, checked against numbers computed
here from closed forms, numerical integration and the literature (never by the code under test).

References: Marchenko & Pastur (1967) for the law; Johnstone (2001), "On the distribution of the
largest eigenvalue in principal components analysis", Ann. Statist. 29, Theorem 1, for the
Tracy–Widom centring and scale; Tracy & Widom (1996) for the moments of TW₁.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize

from weightspectra.fitting.mp import fit_mp, mp_cdf_table, mp_edges, tw_scale

#: Mean and standard deviation of the GOE Tracy–Widom law TW₁ (Tracy & Widom 1996; the values
#: as computed by Bornemann 2010, "On the numerical evaluation of distributions in random matrix
#: theory": mean −1.2065335745820, variance 1.6077810345810).
TW1_MEAN = -1.2065335745820
TW1_SD = math.sqrt(1.6077810345810)


def closed_form_edges(Q: float, sigma: float) -> tuple[float, float]:
    """λ± = σ²(1 ± 1/√Q)², written out (metrics.md §5)."""
    return sigma**2 * (1.0 - 1.0 / math.sqrt(Q)) ** 2, sigma**2 * (1.0 + 1.0 / math.sqrt(Q)) ** 2


def density(x: float, Q: float, sigma: float = 1.0) -> float:
    """MP density of the eigenvalues of WᵀW/N, entries of variance σ², c = M/N = 1/Q:
    ρ(x) = √((λ₊ − x)(x − λ₋)) / (2π σ² c x) on [λ₋, λ₊]."""
    lo, hi = closed_form_edges(Q, sigma)
    if not lo < x < hi:
        return 0.0
    return math.sqrt((hi - x) * (x - lo)) / (2.0 * math.pi * sigma**2 * (1.0 / Q) * x)


def cdf(x: float, Q: float) -> float:
    """∫_{λ₋}^{x} ρ by adaptive quadrature. For Q = 1 the density is √(4 − t)/(2π) · t^(−½):
    the t^(−½) singularity at 0 goes into quad's algebraic weight."""
    lo, hi = closed_form_edges(Q, 1.0)
    x = min(max(x, lo), hi)
    if x <= lo:
        return 0.0
    if Q == 1.0:
        value, _ = integrate.quad(
            lambda t: math.sqrt(4.0 - t) / (2.0 * math.pi), 0.0, x, weight="alg", wvar=(-0.5, 0.0)
        )
    else:
        value, _ = integrate.quad(density, lo, x, args=(Q,), limit=400, epsabs=1e-13, epsrel=1e-12)
    return float(value)


def quantile(p: float, Q: float) -> float:
    lo, hi = closed_form_edges(Q, 1.0)
    return float(optimize.brentq(lambda x: cdf(x, Q) - p, lo, hi, xtol=1e-14, rtol=1e-13))


QS = [1.0, 1.5, 2.0, 4.0, 10.0, 37.5]


@pytest.mark.parametrize("Q", QS)
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3])
def test_edges_are_the_closed_form(Q: float, sigma: float) -> None:
    lo, hi = mp_edges(Q, sigma)
    ref_lo, ref_hi = closed_form_edges(Q, sigma)
    assert lo == pytest.approx(ref_lo, rel=1e-14, abs=1e-15)
    assert hi == pytest.approx(ref_hi, rel=1e-14)


def test_edges_literal_values() -> None:
    # Q = 4: (1 ± 1/2)²; Q = 1: [0, 4]; Q = 9, σ = 3: 9·(1 ± 1/3)² = 4 and 16
    assert mp_edges(4.0) == pytest.approx((0.25, 2.25), rel=1e-15)
    assert mp_edges(1.0) == pytest.approx((0.0, 4.0), abs=1e-15)
    assert mp_edges(9.0, 3.0) == pytest.approx((4.0, 16.0), rel=1e-14)


@pytest.mark.parametrize("Q", QS)
def test_density_written_here_is_a_probability_with_the_mp_moments(Q: float) -> None:
    """Validates the reference density itself: mass 1, mean σ², second moment σ⁴(1 + 1/Q)
    (the MP moments), to quadrature accuracy 1e-8."""
    lo, hi = closed_form_edges(Q, 1.0)
    mass = integrate.quad(density, lo, hi, args=(Q,), limit=400, epsabs=1e-13)[0]
    mean = integrate.quad(lambda x: x * density(x, Q), lo, hi, limit=400, epsabs=1e-13)[0]
    second = integrate.quad(lambda x: x * x * density(x, Q), lo, hi, limit=400, epsabs=1e-13)[0]
    assert mass == pytest.approx(1.0, abs=1e-8)
    assert mean == pytest.approx(1.0, abs=1e-8)
    assert second == pytest.approx(1.0 + 1.0 / Q, abs=1e-8)


def test_density_integrates_to_one_by_plain_trapezoid() -> None:
    """The same mass by a plain trapezoid in x = m + r·cos θ (independent of scipy's quad):
    the integrand is smooth in θ, so 20 001 points give 1 to 1e-8."""
    Q = 3.0
    lo, hi = closed_form_edges(Q, 1.0)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    theta = np.linspace(0.0, math.pi, 20_001)
    x = mid + half * np.cos(theta)
    integrand = np.array([density(v, Q) for v in x]) * half * np.sin(theta)  # dx = r sin θ dθ
    mass = float(np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(theta)))
    assert mass == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("Q", QS)
def test_cdf_table_quantiles_match_integrated_density(Q: float) -> None:
    """Quantiles read off the table (linear interpolation of its 4097 points) against quantiles
    solved here from the integrated closed-form density. Tolerance 1e-6 · (λ₊ − λ₋); the table
    is measured within 1e-7 of it (Q = 1 included), far below any finite-size fluctuation."""
    x, table = mp_cdf_table(Q)
    lo, hi = closed_form_edges(Q, 1.0)
    assert x[0] == pytest.approx(lo, abs=1e-12) and x[-1] == pytest.approx(hi, rel=1e-12)
    assert table[0] == 0.0 and table[-1] == pytest.approx(1.0, abs=1e-15)
    assert np.all(np.diff(table) >= 0.0)
    for p in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99):
        assert float(np.interp(p, table, x)) == pytest.approx(quantile(p, Q), abs=1e-6 * (hi - lo))


@pytest.mark.parametrize("Q", [1.0, 2.0, 10.0])
def test_cdf_table_values_match_quadrature_at_its_own_points(Q: float) -> None:
    """Tolerance 1e-6 in probability (measured: ≤ 1.2e-7)."""
    x, table = mp_cdf_table(Q)
    for i in range(1, x.size - 1, 409):  # ten points across the support
        assert table[i] == pytest.approx(cdf(float(x[i]), Q), abs=1e-6)


def test_cdf_table_for_square_matrices_is_the_closed_form() -> None:
    """Q = 1 in closed form: ρ(x) = √(4 − x) / (2π√x) on [0, 4]; with x = 4 sin²φ,
    F(x) = (2φ + sin 2φ)/π. Tolerance 1e-6 in probability, near 0 included (where the density
    is singular). The case needs care: x = 0 at θ = π in the table's θ-integral, where the
    integrand tends to 2/π; taken as 0 (as the code once did) the whole table is 2.4e-4 off."""
    x, table = mp_cdf_table(1.0)
    phi = np.arcsin(np.sqrt(np.clip(x, 0.0, 4.0)) / 2.0)
    exact = (2.0 * phi + np.sin(2.0 * phi)) / math.pi
    assert exact[-1] == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(table, exact, rtol=0.0, atol=1e-6)


def johnstone_scale(N: int, M: int) -> float:
    """Johnstone (2001), Theorem 1, for X of n = N rows and p = M columns:
    σ_np = (√(n−1) + √p)(1/√(n−1) + 1/√p)^(1/3) is the scale of λ_max(XᵀX); divided by N for
    λ_max(XᵀX/N)."""
    a, b = math.sqrt(N - 1), math.sqrt(M)
    return float((a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0) / N)


@pytest.mark.parametrize(("N", "M"), [(100, 25), (300, 100), (1000, 250), (2000, 1000), (500, 7)])
def test_tw_scale_is_johnstones(N: int, M: int) -> None:
    # n − 1 (Johnstone) and n differ by O(1/N) relatively: measured ≤ 0.43/N on these shapes
    assert tw_scale(N, M) == pytest.approx(johnstone_scale(N, M), rel=1.0 / N)
    # the scale is in units of σ²
    assert tw_scale(N, M, sigma=1.7) == pytest.approx(1.7**2 * johnstone_scale(N, M), rel=1.0 / N)


def test_tw_scale_matches_monte_carlo_fluctuations_of_lambda_max() -> None:
    """300 seeded 400 × 100 Gaussian matrices: the standard deviation of λ_max(WᵀW/N) is
    TW₁'s standard deviation times the scale, and its mean lies TW₁'s mean (in scale units)
    from Johnstone's centring (√(N−1) + √M)²/N. Tolerance 15 % on the sd (sampling error ~4 %,
    finite-size bias measured ~1.5 %) and 0.3 scale units on the mean; a scale off by 2 or by
    Q = 4 fails."""
    N, M, reps = 400, 100, 300
    rng = np.random.default_rng(20010401)
    lam = np.empty(reps)
    for r in range(reps):
        w = rng.standard_normal((N, M))
        lam[r] = np.linalg.eigvalsh(w.T @ w / N)[-1]
    scale = tw_scale(N, M)
    centre = (math.sqrt(N - 1) + math.sqrt(M)) ** 2 / N
    assert float(lam.std(ddof=1)) / scale == pytest.approx(TW1_SD, rel=0.15)
    assert (float(lam.mean()) - centre) / scale == pytest.approx(TW1_MEAN, abs=0.3)


@pytest.mark.parametrize(("N", "M"), [(200, 50), (200, 100)])
def test_fitted_sigma_of_gaussian_matrices_is_one(N: int, M: int) -> None:
    """Mean fitted σ over 400 seeded Gaussian matrices is 1 within 0.004. The per-matrix spread
    is ≈ 0.008 (200 × 50) and ≈ 0.006 (200 × 100), so the standard error of the mean is
    ≈ 0.0004; the measured bias is below 0.001. Off-by-one quantile probabilities (i + 1)/k
    instead of (i + ½)/k bias σ by −0.007 to −0.010 on these shapes, beyond the tolerance."""
    reps = 400
    sigmas = np.empty(reps)
    for seed in range(reps):
        w = np.random.default_rng(seed).standard_normal((N, M))
        sigmas[seed] = fit_mp(np.linalg.eigvalsh(w.T @ w / N), N, M).sigma
    assert float(sigmas.mean()) == pytest.approx(1.0, abs=0.004)
    assert float(np.abs(sigmas - 1.0).max()) < 0.04  # no single fit is off by 5 spreads


def test_fitted_sigma_of_exact_mp_quantiles() -> None:
    """An ESD that *is* the MP law (its quantiles at the mid-probabilities (i + ½)/k, solved
    here from the integrated density, times σ² = 2.25) gives σ = 1.5 back to 1e-5 (measured
    5e-8: the table's interpolation error); probabilities shifted by ½/k move σ by 0.6 %."""
    Q, k, s2 = 2.0, 100, 2.25
    evals = np.array([s2 * quantile((i + 0.5) / k, Q) for i in range(k)])
    fit = fit_mp(evals, 2 * k, k)
    assert fit.sigma == pytest.approx(1.5, rel=1e-5)
    assert fit.num_spikes == 0
