"""Statistics of a comparison: least-squares line and Kendall's τ-b, as pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from weightspectra.errors import InputError

#: Largest sample without ties for which Kendall's p-value is exact (permutation distribution).
KENDALL_EXACT_MAX_N = 40


def ols(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
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


def kendall_tau(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Kendall's τ-b between ``x`` and ``y``, and its two-sided p-value.

    τ-b = (C − D) / √((P − Tₓ)(P − T_y)) with C, D the concordant and discordant pairs, P all
    pairs and Tₓ, T_y the pairs tied in x, in y. The p-value is exact (the permutation
    distribution of the discordant count) without ties and for n ≤ 40
    (:data:`KENDALL_EXACT_MAX_N`), otherwise from the normal approximation with the
    tie-corrected variance. The computation is :func:`scipy.stats.kendalltau`'s, which is
    imported here, on first use, so that ``import weightspectra`` does not load
    ``scipy.stats``. This is the one Kendall τ of the package: :mod:`weightspectra.quantize`
    uses it too.

    Parameters
    ----------
    x, y : array-like of shape (n,)
        Finite values, n ≥ 2.

    Returns
    -------
    tau, p : float
        Both NaN when x or y is constant.

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
    if np.all(xa == xa[0]) or np.all(ya == ya[0]):
        # τ-b is 0/0 there: every pair is tied on that side.
        return math.nan, math.nan
    from scipy.stats import kendalltau

    ties = np.unique(xa).size < xa.size or np.unique(ya).size < ya.size
    exact = not ties and xa.size <= KENDALL_EXACT_MAX_N
    res = kendalltau(xa, ya, method="exact" if exact else "asymptotic")
    return float(res.statistic), float(res.pvalue)
