"""The numeric core of allocation: offsets, the exact shift, integer rounding — against brute
force and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspectra.allocation.solve import (
    AllocationError,
    integer_values,
    offsets,
    round_down,
    solve_shift,
)
from weightspectra.enums import AllocationMapping


def test_linear_offsets_are_the_min_max_score_centred_and_signed() -> None:
    m = np.array([2.0, 4.0, 3.0, 6.0])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    score = (m - 2.0) / 4.0  # by hand
    expected = 0.3 * (score - np.sum(w * score) / np.sum(w))
    np.testing.assert_allclose(
        offsets(m, AllocationMapping.LINEAR, spread=0.3, direction=1, weights=w), expected
    )
    np.testing.assert_allclose(
        offsets(m, AllocationMapping.LINEAR, spread=0.3, direction=-1, weights=w), -expected
    )
    assert np.all(offsets(m, AllocationMapping.UNIFORM, spread=0.3, direction=1) == 0)
    assert np.all(offsets(np.full(3, 2.5), AllocationMapping.LINEAR, spread=1, direction=1) == 0)


def test_rank_offsets_ignore_how_far_an_outlier_lies() -> None:
    near = offsets(np.array([2.0, 3.0, 4.0]), AllocationMapping.RANK, spread=1.0, direction=1)
    far = offsets(np.array([2.0, 3.0, 400.0]), AllocationMapping.RANK, spread=1.0, direction=1)
    np.testing.assert_allclose(near, [-0.5, 0.0, 0.5])
    np.testing.assert_allclose(far, near)
    tied = offsets(np.array([1.0, 5.0, 5.0, 9.0]), AllocationMapping.RANK, spread=3.0, direction=1)
    np.testing.assert_allclose(tied, [-1.5, 0.0, 0.0, 1.5])  # ties share their mean rank


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=1, max_size=12),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_the_shift_meets_the_weighted_total_exactly(
    off: list[float], where: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    o = np.array(off)
    lo = rng.uniform(0.0, 0.4, o.size)
    hi = lo + rng.uniform(0.0, 0.5, o.size)
    w = rng.uniform(0.1, 1e6, o.size)
    target = float(np.sum(w * lo) + where * np.sum(w * (hi - lo)))
    v = solve_shift(o, lo, hi, w, target)
    assert np.all(v >= lo) and np.all(v <= hi)
    assert float(np.sum(w * v)) == pytest.approx(target, rel=1e-12, abs=1e-9)
    # the values are one shift of the offsets wherever they are not clipped
    free = (v > lo + 1e-12) & (v < hi - 1e-12)
    if free.sum() >= 2:
        shift = v[free] - o[free]
        assert np.ptp(shift) < 1e-9


def test_an_infeasible_total_is_refused_with_the_range() -> None:
    with pytest.raises(AllocationError, match=r"allow 0 to 1\.5"):
        solve_shift(np.zeros(3), np.zeros(3), np.full(3, 0.5), np.ones(3), 2.0)


def _brute_force(values: np.ndarray, lo: int, hi: int, w: np.ndarray, target: float) -> float:
    """The largest weighted total ≤ target over integer values each floor or ceil."""
    best = -np.inf
    for bits in range(2**values.size):
        pick = np.array(
            [np.ceil(v) if (bits >> i) & 1 else np.floor(v) for i, v in enumerate(values)]
        )
        pick = np.clip(pick, lo, hi)
        total = float(np.sum(w * pick))
        if total <= target + 1e-9:
            best = max(best, total)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_rounding_stays_under_the_budget_and_near_the_best(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    w = rng.integers(1, 50, n).astype(float)
    values = rng.uniform(2, 8, n)
    target = float(np.sum(w * values))
    out = round_down(values, np.full(n, 2.0), np.full(n, 8.0), w, target)
    assert np.all(out == np.round(out)) and np.all((out >= 2) & (out <= 8))
    assert np.all(np.abs(out - values) < 1 + 1e-9)  # each floor or ceil of its value
    total = float(np.sum(w * out))
    assert total <= target + 1e-9
    # greedy by fraction: within the largest single weight of the best floor/ceil choice
    assert total >= _brute_force(values, 2, 8, w, target) - w.max()


def _best_by_enumeration(
    values: np.ndarray, w: np.ndarray, allowed: list[np.ndarray], target: float
) -> tuple[float, float]:
    """Reference: every combination; the largest total ≤ target, then the least distance."""
    import itertools

    best = (-np.inf, np.inf)
    for combo in itertools.product(*allowed):
        b = np.array(combo, dtype=float)
        total = float(np.sum(w * b))
        if total > target + 1e-9:
            continue
        dist = float(np.sum(w * (b - values) ** 2))
        if total > best[0] + 1e-9 or (abs(total - best[0]) <= 1e-9 and dist < best[1] - 1e-9):
            best = (total, dist)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_integer_values_are_the_best_plan_under_the_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    w = rng.integers(1, 100, n).astype(float)
    values = rng.uniform(2, 8, n)
    allowed = [np.unique(rng.choice([2, 3, 4, 5, 6, 8], size=3)).astype(float) for _ in range(n)]
    low = float(sum(wi * a.min() for wi, a in zip(w, allowed, strict=True)))
    target = low + rng.uniform(0, 1) * float(np.sum(w * 6))
    out = integer_values(values, w, allowed, target)
    assert all(o in a for o, a in zip(out, allowed, strict=True))
    total, dist = float(np.sum(w * out)), float(np.sum(w * (out - values) ** 2))
    best_total, best_dist = _best_by_enumeration(values, w, allowed, target)
    assert total == pytest.approx(best_total, abs=1e-6)
    assert dist == pytest.approx(best_dist, rel=1e-6, abs=1e-6)


def test_integer_values_refuse_a_budget_below_the_smallest_values() -> None:
    with pytest.raises(AllocationError, match="smallest allowed values"):
        integer_values(np.full(2, 3.0), np.ones(2), [np.array([2.0, 3.0])] * 2, 3.0)
