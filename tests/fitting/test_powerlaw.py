"""The power-law fitter against a naive O(n²) loop, and against known exponents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.fitting.powerlaw import FitError, fit_power_law


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
        (np.full(30, 2.0), "degenerate"),
    ],
)
def test_impossible_fits_raise(evals: np.ndarray, match: str) -> None:
    with pytest.raises(FitError, match=match):
        fit_power_law(evals)
