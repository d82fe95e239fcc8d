"""The last xmin candidate is tried: ESDs built so that it wins, checked against a naive loop.

metrics.md §3: every eigenvalue but the largest is a candidate xmin (the last one is the
second-largest eigenvalue, tail m = 2); with fewer than 20 fit eigenvalues only tails of at least
8 points are candidates (the last one is the tail of exactly 8) and α uses m − 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.fitting.powerlaw import fit_power_law

#: The naive loop and the vectorised fitter take logs in a different order; on these spectra they
#: agree to ~1e-12 relatively.
RTOL = 1e-9


def naive_candidates(x: np.ndarray, small: bool) -> list[tuple[float, float]]:
    """(α, D) of every candidate xmin, by the definition, one candidate and one point at a time."""
    x = np.sort(x)
    n = x.size
    min_tail = 8 if small else 2
    out: list[tuple[float, float]] = []
    for i in range(n - min_tail + 1):
        xmin = float(x[i])
        tail = [float(v) for v in x[i:]]
        m = len(tail)
        log_sum = sum(math.log(v / xmin) for v in tail)
        alpha = 1.0 + ((m - 1) if small else m) / log_sum if log_sum > 0.0 else math.inf
        if not math.isfinite(alpha) or alpha <= 1.0:
            out.append((alpha, 1.0))
            continue
        dist = 0.0
        for k, v in enumerate(tail):
            dist = max(dist, abs(1.0 - (v / xmin) ** (1.0 - alpha) - k / m))
        out.append((alpha, dist))
    return out


def large_sample_esd() -> np.ndarray:
    """21 eigenvalues: 14 tied at 1, then 7 whose log gaps shrink threefold towards the top (the
    lowest gap 8× more again), the top pair 1 % apart (α = 1 + 2/ln 1.01 ≈ 201). Every tail
    that starts below the top two looks, relative to its xmin, like one point far below a
    cluster, which an exponential-in-log (power-law) CDF fits badly (D ≥ 0.38); the top pair's
    D is 1 − e⁻² − ½ ≈ 0.365 whatever its ratio. Spectra where the last candidate wins are
    necessarily this far from a power law."""
    gaps = 0.01 * 3.0 ** np.arange(7)
    gaps[-1] *= 8.0
    logs = np.cumsum(gaps[::-1])  # ln λ above the cluster, ascending; the top gap is 0.01
    return np.concatenate((np.full(14, 1.0), np.exp(logs)))


def small_sample_esd(seed: int) -> np.ndarray:
    """19 eigenvalues: the top 8 at exact α = 3 power-law positions xmin·(1 − k/8)^(−1/2), the
    other 11 a tight cluster at ~0.5, far below: any tail that reaches into the cluster fits
    badly, so the smallest allowed tail (8 points) wins."""
    top = (1.0 - np.arange(8) / 8.0) ** (-0.5)
    cluster = 0.5 * (1.0 - 0.01 * np.random.default_rng(seed).random(11))
    return np.random.default_rng(seed + 1).permutation(np.concatenate((cluster, top)))


def check_against_naive(x: np.ndarray, small: bool, margin: float) -> None:
    naive = naive_candidates(x, small)
    dists = [d for _, d in naive]
    last = len(naive) - 1
    # the construction does what it says: the last candidate wins, by `margin`
    assert int(np.argmin(dists)) == last
    assert min(dists[:last]) - dists[last] > margin
    xs = np.sort(x)
    alpha, dist = naive[last]
    m = xs.size - last
    fit = fit_power_law(x)
    assert fit.small_sample is small
    assert fit.xmin == xs[last]
    assert fit.num_pl_spikes == m == (8 if small else 2)
    assert fit.alpha == pytest.approx(alpha, rel=RTOL)
    fit_dist = fit.D
    assert fit_dist == pytest.approx(dist, rel=RTOL)
    assert fit.sigma == pytest.approx((alpha - 1.0) / math.sqrt(m), rel=RTOL)
    assert fit.xmax == xs[-1]


def test_second_largest_eigenvalue_as_xmin_wins() -> None:
    x = large_sample_esd()
    assert x.size >= 20  # the large-sample rule
    # the top pair's D in closed form: F = 1 − r^(−2/ln r) = 1 − e⁻² against ½
    assert naive_candidates(x, small=False)[-1][1] == pytest.approx(0.5 - math.exp(-2.0), rel=1e-9)
    check_against_naive(x, small=False, margin=0.015)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smallest_allowed_tail_wins_under_small_sample_rule(seed: int) -> None:
    x = small_sample_esd(seed)
    assert x.size < 20
    check_against_naive(x, small=True, margin=0.1)


@pytest.mark.parametrize("seed", [3, 4])
def test_order_and_scale_do_not_change_the_last_candidate_fit(seed: int) -> None:
    """Scaling the ESD by c scales xmin by c and keeps α and D; any order gives the same fit."""
    x = small_sample_esd(seed)
    base = fit_power_law(x)
    scaled = fit_power_law(37.0 * x[::-1])
    assert scaled.xmin == pytest.approx(37.0 * base.xmin, rel=1e-12)
    assert scaled.alpha == pytest.approx(base.alpha, rel=1e-10)
    scaled_dist, base_dist = scaled.D, base.D
    assert scaled_dist == pytest.approx(base_dist, rel=1e-10)
    assert scaled.num_pl_spikes == base.num_pl_spikes == 8
