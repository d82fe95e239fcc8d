"""The "fingers" fix: refit without a few outlying top eigenvalues (metrics.md §3).

A handful of isolated eigenvalues at the top of an ESD ("fingers") can capture the KS choice of
xmin and give a short tail with an inflated α. The fix removes the top k = 1, 2, … eigenvalues in
turn and accepts the *first* k whose refit lowers α by more than a threshold. Two guards keep it
honest: only eigenvalues above an outlier edge (the MP bulk edge plus the Tracy–Widom margin, see
:mod:`weightspectra.fitting.mp`) may be removed, so a random layer, which has none, is never
touched; and the count reported is the number actually removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from weightspectra.errors import OptionError
from weightspectra.fitting.powerlaw import FIT_EVAL_THRESHOLD, FitError, PowerLawFit, fit_power_law

#: Default largest number of top eigenvalues tried.
MAX_FINGERS = 10
#: Default decrease of α that makes a removal worthwhile.
FINGERS_ALPHA_DROP = 0.5


@dataclass(frozen=True)
class FingersResult:
    """Outcome of :func:`fix_fingers`.

    Attributes
    ----------
    num_removed : int
        Eigenvalues removed from the top (0 when no k qualified).
    fit : PowerLawFit
        The accepted fit (the original one when ``num_removed == 0``).
    tried : tuple of float
        α of each refit tried, for k = 1, 2, … in order (NaN where the refit failed).
    """

    num_removed: int
    fit: PowerLawFit
    tried: tuple[float, ...]


def fix_fingers(
    evals: np.ndarray,
    fit: PowerLawFit,
    *,
    outlier_edge: float | None,
    max_fingers: int = MAX_FINGERS,
    alpha_drop: float = FINGERS_ALPHA_DROP,
    threshold: float = FIT_EVAL_THRESHOLD,
) -> FingersResult:
    """Remove the top k = 1, 2, … eigenvalues; keep the first k that lowers α by > ``alpha_drop``.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        The ESD that ``fit`` was fitted to (any order).
    fit : PowerLawFit
        Its power-law fit.
    outlier_edge : float or None
        Only eigenvalues strictly above this may be removed (same units as ``evals``); ``None``
        lifts the guard (every eigenvalue may be a finger: not recommended).
    max_fingers : int, default 10
        Largest k tried.
    alpha_drop : float, default 0.5
        A refit is accepted when ``fit.alpha − refit.alpha > alpha_drop``.
    threshold : float, default 1e-5
        Fit threshold, as in :func:`~weightspectra.fitting.powerlaw.fit_power_law`.

    Returns
    -------
    FingersResult

    Raises
    ------
    OptionError
        If ``max_fingers < 1`` or ``alpha_drop ≤ 0``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).pareto(2.0, 300) + 1.0
    >>> fix_fingers(x, fit_power_law(x), outlier_edge=None).num_removed
    0
    """
    if isinstance(max_fingers, bool) or not isinstance(max_fingers, int) or max_fingers < 1:
        raise OptionError(f"max_fingers must be a positive integer, got {max_fingers!r}")
    if not (isinstance(alpha_drop, float | int) and alpha_drop > 0.0):
        raise OptionError(f"fingers alpha_drop must be a positive number, got {alpha_drop!r}")
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    eligible = x.size if outlier_edge is None else int(np.count_nonzero(x > outlier_edge))
    k_max = min(max_fingers, eligible, x.size - 2)
    tried: list[float] = []
    for k in range(1, k_max + 1):
        try:
            refit = fit_power_law(x[: x.size - k], threshold)
        except FitError:
            tried.append(math.nan)
            continue
        tried.append(refit.alpha)
        if fit.alpha - refit.alpha > alpha_drop:
            return FingersResult(num_removed=k, fit=refit, tried=tuple(tried))
    return FingersResult(num_removed=0, fit=fit, tried=tuple(tried))
