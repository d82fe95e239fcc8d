"""The numbers of an allocation: metric → offsets → values whose weighted mean is the budget.

Pure numpy functions, the whole numeric part of :func:`weightspectra.allocate`:

- :func:`offsets` turns each layer's metric into an offset from the budget (linear in the
  metric, linear in its rank, or zero), spread over ``spread`` and signed by the direction
  (a larger α gets more sparsity, more LoRA rank, fewer bits);
- :func:`solve_shift` finds the one shift ``c`` for which the clipped values
  ``clip(c + offsetᵢ, loᵢ, hiᵢ)`` have the weighted mean asked for, exactly (the mean is
  piecewise linear in ``c``; the segment is found and solved in closed form);
- :func:`integer_values` makes integer values (bits, ranks) from those: the weighted total
  nearest the budget from below that the allowed integers reach, and among the plans reaching
  it the one nearest the continuous values (an exact integer programme, scipy's HiGHS);
  :func:`round_down`, the greedy rounding it falls back to for very large problems.
"""

from __future__ import annotations

import math

import numpy as np

from weightspectra.enums import AllocationMapping
from weightspectra.errors import InputError


class AllocationError(InputError):
    """The budget cannot be met within the bounds (the message gives the feasible range)."""


def offsets(
    metric: np.ndarray,
    mapping: AllocationMapping,
    *,
    spread: float,
    direction: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Each layer's offset from the budget, centred (weighted mean 0) before any clipping.

    Parameters
    ----------
    metric : ndarray (L,)
        The metric per layer, finite.
    mapping : AllocationMapping
        ``LINEAR``: ``(m − m_min) / (m_max − m_min)``; ``RANK``: the metric's rank scaled to
        [0, 1] (ties share their mean rank); ``UNIFORM``: zero.
    spread : float
        Width of the offsets: the layer with the largest score is ``spread`` above the one
        with the smallest.
    direction : {+1, −1}
        +1: a larger metric gets a larger value; −1: a smaller one.
    weights : ndarray (L,), optional
        Centre with this weighted mean (default: plain mean).

    Returns
    -------
    ndarray (L,)

    Examples
    --------
    >>> offsets(np.array([2.0, 3.0, 6.0]), AllocationMapping.LINEAR, spread=0.2, direction=1)
    array([-0.08333333, -0.03333333,  0.11666667])
    """
    m = np.asarray(metric, dtype=np.float64)
    if m.size == 0 or mapping is AllocationMapping.UNIFORM:
        return np.zeros(m.size)
    if mapping is AllocationMapping.RANK:
        order = np.argsort(m, kind="stable")
        ranks = np.empty(m.size)
        ranks[order] = np.arange(m.size, dtype=np.float64)
        for value in np.unique(m):  # ties share their mean rank
            tied = m == value
            ranks[tied] = ranks[tied].mean()
        score = ranks / max(m.size - 1, 1)
    else:
        lo, hi = float(m.min()), float(m.max())
        score = np.zeros(m.size) if hi == lo else (m - lo) / (hi - lo)
    w = np.ones(m.size) if weights is None else np.asarray(weights, dtype=np.float64)
    centred = score - float(np.sum(w * score) / np.sum(w))
    return float(direction) * float(spread) * centred


def _mean(c: float, off: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * np.clip(c + off, lo, hi)))


def solve_shift(
    off: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    weights: np.ndarray,
    target: float,
) -> np.ndarray:
    """Values ``clip(c + off, lo, hi)`` whose weighted sum is ``target``, ``c`` solved exactly.

    Parameters
    ----------
    off, lo, hi, weights : ndarray (L,)
        Offsets, bounds (``lo ≤ hi``) and positive weights.
    target : float
        The weighted sum wanted, ``budget × Σ weights`` (minus what pinned layers hold).

    Returns
    -------
    ndarray (L,)

    Raises
    ------
    AllocationError
        If ``target`` lies outside ``[Σ w·lo, Σ w·hi]``.

    Examples
    --------
    >>> v = solve_shift(np.array([-0.1, 0.0, 0.1]), np.zeros(3), np.full(3, 0.55), np.ones(3), 1.5)
    >>> v.round(12).tolist()
    [0.425, 0.525, 0.55]
    """
    w = np.asarray(weights, dtype=np.float64)
    lo_v, hi_v = float(np.sum(w * lo)), float(np.sum(w * hi))
    if not lo_v - 1e-12 * abs(lo_v) <= target <= hi_v + 1e-12 * abs(hi_v):
        raise AllocationError(
            f"the budget needs a weighted total of {target:.6g}, but the bounds allow "
            f"{lo_v:.6g} to {hi_v:.6g}"
        )
    if off.size == 0:
        return np.zeros(0)
    # The weighted sum is continuous, non-decreasing and linear between these shifts.
    knots = np.unique(np.concatenate([lo - off, hi - off]))
    sums = np.array([_mean(float(k), off, lo, hi, w) for k in knots])
    j = int(np.searchsorted(sums, target, side="left"))
    if j == 0:
        c = float(knots[0])
    elif j >= knots.size:
        c = float(knots[-1])
    else:
        a, b = float(knots[j - 1]), float(knots[j])
        sa, sb = float(sums[j - 1]), float(sums[j])
        c = b if sb == sa else a + (target - sa) * (b - a) / (sb - sa)
    values = np.clip(c + off, lo, hi)
    # One Newton step on the free layers removes the rounding of the interpolation.
    free = (values > lo) & (values < hi)
    if np.any(free):
        values[free] += (target - float(np.sum(w * values))) / float(np.sum(w[free]))
        values = np.clip(values, lo, hi)
    return values


def round_down(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, weights: np.ndarray, target: float
) -> np.ndarray:
    """Integer values near ``values`` whose weighted sum does not exceed ``target``.

    Each value is rounded down (within its bounds); then one unit at a time is given back to
    the layers with the largest fractional parts, each only if it still fits under
    ``target``. The weighted sum is therefore ≤ ``target``, and no single further unit fits
    to a layer whose fraction was passed over.

    Examples
    --------
    >>> round_down(np.array([2.6, 3.5, 7.9]), np.full(3, 2.0), np.full(3, 8.0), np.ones(3), 14.0)
    array([3., 3., 8.])
    """
    w = np.asarray(weights, dtype=np.float64)
    lo_i, hi_i = np.ceil(lo - 1e-9), np.floor(hi + 1e-9)
    out = np.clip(np.floor(values + 1e-9), lo_i, hi_i)
    left = target - float(np.sum(w * out))
    for i in np.argsort(-(values - out), kind="stable"):
        if values[i] - out[i] <= 1e-9 or out[i] + 1 > hi_i[i]:
            continue
        if w[i] <= left + 1e-9 * max(1.0, abs(target)):
            out[i] += 1
            left -= w[i]
    return out


#: Integer programmes with more binary variables than this are rounded greedily instead.
MAX_BINARIES = 50_000


def integer_values(
    values: np.ndarray,
    weights: np.ndarray,
    allowed: list[np.ndarray],
    target: float,
) -> np.ndarray:
    """Integer values from ``allowed[i]`` for each layer with weighted total ≤ ``target``:
    the largest total any choice reaches, and among those the choice nearest ``values``
    (least Σ wᵢ (bᵢ − vᵢ)²).

    Two integer programmes over binaries x_ik (layer i takes its k-th allowed value), solved by
    :func:`scipy.optimize.milp`: the first maximises the total, the second minimises the
    distance at that total. A problem with more than :data:`MAX_BINARIES` binaries is rounded
    by :func:`round_down` instead.

    Raises
    ------
    AllocationError
        If even the smallest allowed values exceed ``target``.

    Examples
    --------
    >>> w = np.array([16384.0, 32768.0, 1280.0])         # an MLP's three layers
    >>> v = np.array([2.0, 2.77, 2.0])                    # continuous widths, mean 2.5
    >>> b = integer_values(v, w, [np.array([2, 3, 4, 8])] * 3, 2.5 * w.sum())
    >>> b.tolist(), round(float(np.sum(w * b) / w.sum()), 3)   # rounding down would give 2.0
    ([3.0, 2.0, 8.0], 2.477)
    """
    w = np.asarray(weights, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    low = float(sum(wi * a.min() for wi, a in zip(w, allowed, strict=True)))
    if low > target * (1 + 1e-12) + 1e-9:
        raise AllocationError(
            f"the smallest allowed values need a weighted total of {low:.6g}, above {target:.6g}"
        )
    sizes = [a.size for a in allowed]
    if sum(sizes) > MAX_BINARIES:
        lo = np.array([a.min() for a in allowed], dtype=np.float64)
        hi = np.array([a.max() for a in allowed], dtype=np.float64)
        return round_down(v, lo, hi, w, target)
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = sum(sizes)
    offsets_ = np.cumsum([0, *sizes])
    cost = np.concatenate([wi * a for wi, a in zip(w, allowed, strict=True)])
    one = np.zeros((len(allowed), n))
    for i in range(len(allowed)):
        one[i, offsets_[i] : offsets_[i + 1]] = 1.0
    pick_one = LinearConstraint(one, 1.0, 1.0)
    scale = max(float(target), 1.0)
    under = LinearConstraint(cost[None, :] / scale, -np.inf, target / scale + 1e-12)
    binary = np.ones(n)
    first = milp(
        -cost / scale, constraints=[pick_one, under], integrality=binary, bounds=Bounds(0, 1)
    )
    if not first.success:  # pragma: no cover - feasible by the check above
        raise AllocationError(f"the integer programme found no plan: {first.message}")
    best = float(cost @ np.round(first.x))
    reach = LinearConstraint(cost[None, :] / scale, best / scale - 1e-9, target / scale + 1e-12)
    dist = np.concatenate([wi * (a - vi) ** 2 for wi, a, vi in zip(w, allowed, v, strict=True)])
    second = milp(
        dist / max(float(dist.max()), 1e-300),
        constraints=[pick_one, reach],
        integrality=binary,
        bounds=Bounds(0, 1),
    )
    x = np.round(second.x if second.success else first.x)
    return np.array(
        [float(a[int(np.argmax(x[offsets_[i] : offsets_[i + 1]]))]) for i, a in enumerate(allowed)]
    )


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """``Σ wᵢ vᵢ / Σ wᵢ`` (NaN for no layers)."""
    total = float(np.sum(weights))
    return float(np.sum(weights * values)) / total if total > 0 else math.nan
