"""Statistics of a comparison: least-squares line and Kendall's τ-b, as pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from weightspectra.errors import InputError

#: Largest sample without ties for which Kendall's p-value is exact (permutation distribution).
KENDALL_EXACT_MAX_N = 40




def ols(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
        ) -> tuple[float, float, float, float]:
    """Ordinary least-squares line of ``y`` on ``x``.

    Parameters
    ----------
    x, y : array-like of shape (n,)
        Finite values, ``n ≥ 2``, ``x`` not constant.

    Returns
    -------
    slope, intercept, rmse, r2 : float
        ``rmse = √(Σ residual² / n)``; ``r2 = 1 − SSE/SST`` (NaN when ``y`` is constant).

    Raises
    ------
    InputError
        If the lengths differ, fewer than 2 points are given, a value is not finite, or ``x``
        is constant.

    Examples
    --------
    >>> ols([0, 1, 2], [1, 3, 5])
    (2.0, 1.0, 0.0, 1.0)
    """
    xa, ya = _pair(x, y, 2)
    xm, ym = xa.mean(), ya.mean()
    sxx = float(((xa - xm) ** 2).sum())
    if sxx == 0.0:
        raise InputError("x is constant: no line can be fitted; give models with different values")
    slope = float(((xa - xm) * (ya - ym)).sum()) / sxx
    intercept = float(ym - slope * xm)
    sse = float(((ya - (slope * xa + intercept)) ** 2).sum())
    sst = float(((ya - ym) ** 2).sum())
    r2 = 1.0 - sse / sst if sst > 0 else math.nan
    return slope, intercept, math.sqrt(sse / xa.size), r2


def _pair(x: Any, y: Any, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.size != ya.size:
        raise InputError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    if xa.size < min_n:
        raise InputError(f"need at least {min_n} points, got {xa.size}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise InputError("x and y must be finite; drop the models with missing values first")
    return xa, ya


def _tie_sizes(a: np.ndarray) -> np.ndarray:
    _, counts = np.unique(a, return_counts=True)
    return counts[counts > 1].astype(np.float64)


def _inversion_counts(n: int) -> list[int]:
    """How many permutations of n items have k inversions, k = 0 … n(n−1)/2 (exact integers)."""
    counts = [1]
    for m in range(2, n + 1):
        new = [0] * (len(counts) + m - 1)
        running = 0
        for k in range(len(new)):
            running += counts[k] if k < len(counts) else 0
            if k - m >= 0:
                running -= counts[k - m]
            new[k] = running
        counts = new
    return counts


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
                ) -> tuple[float, float]:
    """Kendall's τ-b between ``x`` and ``y``, and its two-sided p-value.

    τ-b = (C − D) / √((P − Tₓ)(P − T_y)) with C, D the concordant and discordant pairs, P all
    pairs and Tₓ, T_y the pairs tied in x, in y. The p-value is exact (the permutation
    distribution of the discordant count) without ties and for n ≤ 40, otherwise from the
    normal approximation with Kendall's tie-corrected variance.

    Parameters
    ----------
    x, y : array-like of shape (n,)
        Finite values, n ≥ 2.

    Returns
    -------
    tau, p : float
        NaN when x or y is constant.

    Raises
    ------
    InputError
        If the lengths differ, n < 2, or a value is not finite.

    Examples
    --------
    >>> kendall_tau([1, 2, 3, 4], [1, 2, 3, 4])
    (1.0, 0.08333333333333333)
    """
    xa, ya = _pair(x, y, 2)
    n = xa.size
    iu = np.triu_indices(n, 1)
    s = np.sign(xa[:, None] - xa[None, :])[iu] * np.sign(ya[:, None] - ya[None, :])[iu]
    score = float(s.sum())  # C − D
    pairs = n * (n - 1) / 2.0
    tx, ty = _tie_sizes(xa), _tie_sizes(ya)
    ties_x = float((tx * (tx - 1) / 2).sum())
    ties_y = float((ty * (ty - 1) / 2).sum())
    denom = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    if denom == 0.0:
        return math.nan, math.nan
    tau = score / denom
    if tx.size == 0 and ty.size == 0 and n <= KENDALL_EXACT_MAX_N:
        discordant = round((pairs - score) / 2)
        counts = _inversion_counts(n)
        tail = sum(counts[: min(discordant, int(pairs) - discordant) + 1])
        p = min(1.0, 2.0 * tail / math.factorial(n))
        return tau, p
    v0 = n * (n - 1) * (2 * n + 5)
    var = (v0 - float((tx * (tx - 1) * (2 * tx + 5)).sum())
           - float((ty * (ty - 1) * (2 * ty + 5)).sum())) / 18.0
    if n > 2:
        var += (float((tx * (tx - 1) * (tx - 2)).sum()) * float((ty * (ty - 1) * (ty - 2)).sum())
                / (9.0 * n * (n - 1) * (n - 2)))
    var += float((tx * (tx - 1)).sum()) * float((ty * (ty - 1)).sum()) / (2.0 * n * (n - 1))
    p = math.erfc(abs(score) / math.sqrt(var) / math.sqrt(2.0)) if var > 0 else math.nan
    return tau, p
