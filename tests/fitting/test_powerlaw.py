"""The power-law fitter against a naive O(n²) loop, and against known exponents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.fitting.powerlaw import MAX_ALPHA, FitError, fit_power_law, xmin_scan


def naive_fit(evals: np.ndarray) -> tuple[float, float, float, int]:
    """Reference: the procedure of metrics.md §3 written as plain loops (α, xmin, D, m)."""
    x = sorted(float(v) for v in evals if v > 1e-5)
    n = len(x)
    small = n < 20
    best = (math.inf, math.nan, math.nan, 0)  # (D, alpha, xmin, m)
    for i in range(n - 1):
        m = n - i
        if small and m < 8:
            break
        s = sum(math.log(x[j] / x[i]) for j in range(i, n))
        if s == 0:
            continue
        alpha = 1 + ((m - 1) if small else m) / s
        d = 1.0
        if alpha > 1:
            d = max(abs((1 - (x[i + k] / x[i]) ** (1 - alpha)) - k / m) for k in range(m))
        if d < best[0]:
            best = (d, alpha, x[i], m)
    return best[1], best[2], best[0], best[3]


@pytest.mark.parametrize("n", [12, 19, 20, 57, 300])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_loop(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    evals = np.concatenate([rng.pareto(1.5, n // 2) + 1.0, rng.uniform(0.01, 1.0, n - n // 2)])
    fit = fit_power_law(evals)
    alpha, xmin, d, m = naive_fit(evals)
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.xmin == pytest.approx(xmin, rel=1e-15)
    assert pytest.approx(d, rel=1e-9, abs=1e-13) == fit.D
    assert fit.num_pl_spikes == m
    assert fit.small_sample == (n < 20)
    assert fit.sigma == pytest.approx((alpha - 1) / math.sqrt(m), rel=1e-12)
    assert fit.xmax == pytest.approx(evals.max())


@pytest.mark.parametrize("alpha_true", [1.5, 2.0, 3.0, 4.5])
def test_recovers_pareto_exponent(alpha_true: float) -> None:
    # density ∝ x^(-alpha) for x ≥ 1 is numpy's Pareto(alpha - 1) shifted by 1
    rng = np.random.default_rng(int(alpha_true * 10))
    x = rng.pareto(alpha_true - 1.0, 20000) + 1.0
    fit = fit_power_law(x)
    # MLE standard error (α−1)/√m; 5 SE plus a small allowance for the xmin choice
    assert abs(fit.alpha - alpha_true) < 5 * fit.sigma + 0.02


def test_order_does_not_matter(rng: np.random.Generator) -> None:
    x = rng.pareto(2.0, 500) + 1
    a = fit_power_law(x)
    b = fit_power_law(rng.permutation(x))
    assert a == b


def test_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import weightspectra.fitting.powerlaw as pl

    x = np.random.default_rng(3).pareto(2.0, 700) + 1
    whole = fit_power_law(x)
    monkeypatch.setattr(pl, "_BLOCK_ELEMENTS", 1000)
    assert fit_power_law(x) == whole


def test_threshold_drops_tiny_eigenvalues(rng: np.random.Generator) -> None:
    x = rng.pareto(2.0, 200) + 1
    with_zeros = np.concatenate([x, np.zeros(50), np.full(5, 1e-6)])
    assert fit_power_law(with_zeros) == fit_power_law(x)


@pytest.mark.parametrize(
    ("evals", "match"),
    [
        (np.array([1.0, 2.0, 3.0]), "only 3 eigenvalues"),
        (np.zeros(30), "only 0 eigenvalues"),
        (np.full(30, 2.0), r"all 30 eigenvalues are equal \(2\): a flat spectrum"),
        # the largest ones equal, the rest below the threshold: a flat fit spectrum too
        (np.r_[np.full(10, 1e-6), np.full(25, 3.0)], r"all 25 eigenvalues are equal \(3\)"),
    ],
)
def test_impossible_fits_raise(evals: np.ndarray, match: str) -> None:
    with pytest.raises(FitError, match=match):
        fit_power_law(evals)


def _orthogonal(n: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("scale", [0.5, 2.0], ids=["gain<1", "gain>1"])
@pytest.mark.parametrize("kind", ["identity", "orthogonal"])
def test_flat_spectrum_is_a_fit_error_that_says_why(scale: float, kind: str) -> None:
    w = scale * (np.eye(32) if kind == "identity" else _orthogonal(32, 4))
    evals = np.linalg.eigvalsh(w.T @ w)  # the Gram route, as the pipeline computes them
    assert np.ptp(evals) <= 1e-13 * evals.max()  # equal within round-off (or exactly)
    with pytest.raises(FitError, match=f"all 32 eigenvalues are equal \\({scale**2:g}\\)") as info:
        fit_power_law(evals)
    assert "a flat spectrum, e.g. a scaled orthogonal matrix, has no power-law tail" in str(
        info.value
    )


@pytest.mark.parametrize("rel_noise", [1e-9, 1e-7])
def test_near_flat_spectrum_gives_no_absurd_alpha(rel_noise: float) -> None:
    # A scaled orthogonal matrix stored in float32, or with tiny noise: eigenvalues equal to
    # ~1e-7, not to round-off. The naive estimator's α is then in the millions.
    rng = np.random.default_rng(5)
    w = 0.5 * _orthogonal(64, 5) + rel_noise * rng.standard_normal((64, 64))
    evals = np.linalg.eigvalsh(w.T @ w)
    alpha_naive = naive_fit(evals)[0]
    assert alpha_naive > MAX_ALPHA  # the reference shows the problem is real
    with pytest.raises(FitError, match=r"α=.* > 1000: they differ by at most .* near-flat"):
        fit_power_law(evals)


def test_alpha_just_below_the_bound_is_still_reported() -> None:
    # A narrow but genuine spread keeps a finite, large α (flagged spurious by the diagnostics).
    evals = 0.25 * (1.0 + 0.1 * np.random.default_rng(6).random(64))
    fit = fit_power_law(evals)
    assert 8.0 < fit.alpha <= MAX_ALPHA
    assert fit.alpha == pytest.approx(naive_fit(evals)[0], rel=1e-12)


def naive_scan(evals: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Reference for :func:`xmin_scan`: every candidate's α and D by plain loops."""
    x = sorted(float(v) for v in evals if v > 1e-5)
    n = len(x)
    small = n < 20
    xs, alphas, ds = [], [], []
    for i in range(n - 1):
        m = n - i
        if small and m < 8:
            break
        s = sum(math.log(x[j] / x[i]) for j in range(i, n))
        alpha = 1 + ((m - 1) if small else m) / s if s > 0 else math.inf
        d = 1.0
        if math.isfinite(alpha) and alpha > 1:
            d = max(abs((1 - (x[i + k] / x[i]) ** (1 - alpha)) - k / m) for k in range(m))
        xs.append(x[i])
        alphas.append(alpha)
        ds.append(d)
    return xs, alphas, ds


@pytest.mark.parametrize("n", [9, 19, 20, 150])
def test_xmin_scan_matches_naive_loop_and_the_fit(n: int) -> None:
    rng = np.random.default_rng(n)
    evals = np.concatenate([rng.pareto(1.5, n // 2) + 1.0, rng.uniform(0.01, 1.0, n - n // 2)])
    evals = np.r_[evals, np.zeros(3)]  # below the threshold: left out, as in the fit
    xs, alphas, ds = xmin_scan(evals)
    ref_x, ref_a, ref_d = naive_scan(evals)
    assert xs.tolist() == ref_x
    np.testing.assert_allclose(alphas, ref_a, rtol=1e-11)
    np.testing.assert_allclose(ds, ref_d, rtol=1e-9, atol=1e-13)
    fit = fit_power_law(evals)
    best = int(np.argmin(ds))
    assert (xs[best], alphas[best], ds[best]) == (fit.xmin, fit.alpha, fit.D)


def test_xmin_scan_thins_evenly_and_keeps_include() -> None:
    evals = np.random.default_rng(8).pareto(2.0, 400) + 1.0
    full_x, full_a, full_d = xmin_scan(evals)
    assert full_x.size == 399
    xs, alphas, ds = xmin_scan(evals, max_candidates=10)
    positions = np.searchsorted(full_x, xs)
    assert positions.tolist() == np.linspace(0, 398, 10).round().astype(int).tolist()
    np.testing.assert_array_equal(alphas, full_a[positions])  # the same computation, rows
    np.testing.assert_array_equal(ds, full_d[positions])  # picked before or after
    extra = float(full_x[123])
    xs2, _, ds2 = xmin_scan(evals, max_candidates=10, include=extra)
    assert xs2.size == 11 and extra in xs2.tolist()
    assert ds2[xs2.tolist().index(extra)] == full_d[123]
    assert xmin_scan(evals, max_candidates=10, include=1e9)[0].size == 10  # not an eigenvalue


def test_xmin_scan_bad_inputs_raise() -> None:
    with pytest.raises(FitError, match="only 5 eigenvalues above 1e-05: no candidate xmin"):
        xmin_scan(np.ones(5))
    with pytest.raises(FitError, match="max_candidates must be None or ≥ 1"):
        xmin_scan(np.arange(1.0, 30.0), max_candidates=0)


@pytest.mark.parametrize("seed", range(6))
def test_the_coarse_to_fine_search_finds_the_full_scans_xmin(seed: int) -> None:
    # pooled-window-like ESDs: a power-law tail above an MP-like bulk, 20k eigenvalues
    rng = np.random.default_rng(seed)
    bulk = rng.uniform(0.05, 1.0, 18000)
    tail = rng.pareto(rng.uniform(1.0, 3.0), 2000) + 1.0
    x = np.concatenate([bulk, tail])
    full = fit_power_law(x)
    fast = fit_power_law(x, max_candidates=1024)
    assert fast.xmin == full.xmin and fast.alpha == full.alpha and fast.D == full.D
    # fewer candidates than the cap: the full scan itself
    small = rng.pareto(1.5, 300) + 1.0
    assert fit_power_law(small, max_candidates=1024) == fit_power_law(small)


def test_the_coarse_search_costs_a_fraction_of_the_full_scan() -> None:
    import time

    x = np.random.default_rng(0).pareto(1.5, 30000) + 1.0
    t0 = time.perf_counter()
    full = fit_power_law(x)
    t1 = time.perf_counter()
    fast = fit_power_law(x, max_candidates=2048)
    t2 = time.perf_counter()
    assert fast.alpha == pytest.approx(full.alpha, rel=1e-3)
    assert (t2 - t1) < 0.5 * (t1 - t0)  # measured ~0.1×; loose for a loaded machine
