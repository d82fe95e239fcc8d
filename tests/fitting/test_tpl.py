"""Truncated power law and likelihood-ratio comparisons on seeded synthetic samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from weightspectra.fitting.tpl import (
    POWER_LAW,
    TRUNCATED_POWER_LAW,
    CompareError,
    compare_fits,
    tpl_log_norm,
)


def tpl_sample(rng: np.random.Generator, n: int, alpha: float, lam: float) -> np.ndarray:
    """Rejection sampling of ρ(x) ∝ x^(−α) e^(−λx) on x ≥ 1 from a Pareto proposal."""
    out: list[np.ndarray] = []
    total = 0
    while total < n:
        x = (1.0 - rng.random(4 * n)) ** (-1.0 / (alpha - 1.0))
        keep = x[rng.random(x.size) < np.exp(-lam * (x - 1.0))]
        out.append(keep)
        total += keep.size
    return np.concatenate(out)[:n]


@pytest.mark.parametrize(("alpha", "L"), [(2.5, 0.01), (0.5, 0.1), (1.01, 1e-3), (3.0, 5.0)])
def test_log_normaliser_matches_direct_quadrature(alpha: float, L: float) -> None:
    ref, _ = integrate.quad(lambda u: u ** (-alpha) * math.exp(-L * u), 1.0, np.inf, limit=500)
    assert tpl_log_norm(alpha, L) == pytest.approx(math.log(ref), rel=1e-8)


def test_log_normaliser_pure_power_law_limit() -> None:
    # Z(α, 0) = 1/(α − 1); for tiny L the leading correction is Γ(1 − α)·L^(α − 1).
    assert tpl_log_norm(2.0, 0.0) == pytest.approx(0.0, abs=1e-15)
    expected = math.log(2.0 + math.gamma(-0.5) * 1e-4)
    assert tpl_log_norm(1.5, 1e-8) == pytest.approx(expected, rel=1e-6)


def test_truncated_power_law_recovered_and_preferred() -> None:
    # Tolerances: with 2000 samples and a cut-off at 1/Λ = 20 xmin, the standard errors are
    # about 0.05 for α and 15 % for Λ; we allow three of them.
    alpha, lam = 2.0, 0.05
    for seed in range(8):
        x = tpl_sample(np.random.default_rng(seed), 2000, alpha, lam)
        cmp = compare_fits(x, 1.0)
        assert cmp.tpl.alpha == pytest.approx(alpha, abs=0.15)
        assert cmp.tpl.Lambda == pytest.approx(lam, rel=0.45)
        assert cmp.best_fit == TRUNCATED_POWER_LAW
        assert cmp.p_tpl < 0.05 and cmp.lr_tpl < 0.0


def test_pure_power_law_is_preferred() -> None:
    picks = []
    for seed in range(10):
        x = np.random.default_rng(seed).pareto(1.5, 1000) + 1.0
        cmp = compare_fits(x, 1.0)
        picks.append(cmp.best_fit)
        assert cmp.lr_exponential > 0.0  # the exponential is always worse on a power law
        assert cmp.lr_tpl <= 0.0  # nested: the larger model is never less likely
    assert picks.count(POWER_LAW) >= 8


def test_exponential_sample_is_not_called_a_power_law() -> None:
    x = 1.0 + np.random.default_rng(5).exponential(2.0, 2000)
    cmp = compare_fits(x, 1.0)
    assert cmp.best_fit != POWER_LAW
    assert cmp.lr_exponential < 0.0 and cmp.p_exponential < 0.05


def test_bad_tails_raise() -> None:
    with pytest.raises(CompareError, match="at least 10"):
        compare_fits(np.arange(1.0, 6.0), 1.0)
    with pytest.raises(CompareError, match="positive"):
        compare_fits(np.arange(1.0, 60.0), 0.0)
    with pytest.raises(CompareError, match="degenerate"):
        compare_fits(np.ones(50), 1.0)
