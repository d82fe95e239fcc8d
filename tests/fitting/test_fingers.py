"""Fingers fix: tries k = 1, 2, …, reports what it removed, leaves random layers alone."""

from __future__ import annotations

import numpy as np
import pytest

from weightspectra.errors import OptionError
from weightspectra.fitting.fingers import fix_fingers
from weightspectra.fitting.mp import fit_mp
from weightspectra.fitting.powerlaw import fit_power_law


def first_qualifying_k(x: np.ndarray, drop: float, k_max: int) -> int:
    """Naive reference: refit without the top k for k = 1, 2, … and return the first good k."""
    base = fit_power_law(x).alpha
    for k in range(1, k_max + 1):
        if base - fit_power_law(np.sort(x)[:-k]).alpha > drop:
            return k
    return 0


def fingered_samples() -> list[np.ndarray]:
    """Small MP or Pareto spectra with 1-3 planted top outliers (seeded; a few qualify)."""
    out = []
    for seed in range(300):
        base: np.ndarray
        rng = np.random.default_rng(seed)
        n = int(rng.integers(30, 120))
        if seed % 2:
            base = np.sort(rng.pareto(rng.uniform(1.0, 5.0), n) + 1.0)
        else:
            w = rng.standard_normal((2 * n, n))
            base = np.linalg.eigvalsh(w.T @ w / (2 * n))
        k = 1 + seed % 3
        spread = np.geomspace(1.0, rng.uniform(1.0001, 1.3), k)
        out.append(np.concatenate([base, base[-1] * rng.uniform(1.05, 20.0) * spread]))
    return out


def test_matches_naive_search_and_tries_k_equal_one() -> None:
    seen = set()
    for x in fingered_samples():
        expected = first_qualifying_k(x, 0.5, 5)
        res = fix_fingers(x, fit_power_law(x), outlier_edge=None, max_fingers=5)
        assert res.num_removed == expected
        if expected:
            assert res.fit.alpha == pytest.approx(fit_power_law(np.sort(x)[:-expected]).alpha)
            assert len(res.tried) == expected
        seen.add(expected)
    assert 1 in seen  # the peer never tries k = 1
    assert len(seen - {0}) >= 2


def test_guard_keeps_random_layers_random() -> None:
    for seed in range(10):
        w = np.random.default_rng(seed).standard_normal((800, 400))
        evals = np.linalg.eigvalsh(w.T @ w / 800)
        mp = fit_mp(evals, 800, 400)
        res = fix_fingers(evals, fit_power_law(evals), outlier_edge=mp.bulk_max + mp.tw_margin)
        assert res.num_removed == 0
        assert res.tried == ()


def test_only_outliers_above_the_edge_may_go() -> None:
    x = fingered_samples()[0]
    res = fix_fingers(x, fit_power_law(x), outlier_edge=float(np.sort(x)[-2]))
    assert len(res.tried) <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_fingers": 0}, "positive integer"), ({"alpha_drop": -1.0}, "positive number")],
)
def test_bad_options_raise(kwargs: dict[str, float], match: str) -> None:
    x = np.random.default_rng(0).pareto(1.5, 200) + 1.0
    with pytest.raises(OptionError, match=match):
        fix_fingers(x, fit_power_law(x), outlier_edge=None, **kwargs)  # type: ignore[arg-type]
