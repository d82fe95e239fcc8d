"""Per-layer spectral metrics (metrics.md §4). Pure functions of an ESD and its fit.

Logs are base 10 throughout, as in the HT-SR literature. Rank-type metrics (``matrix_rank``,
``rank_loss``, ``weak_rank_loss``, ``sv_min``, ``entropy``) need the small eigenvalues, which
the Gram route cannot resolve near zero: :func:`needs_exact_ranks` says when a layer's must be
recomputed from an exact SVD, and :func:`exact_rank_metrics` does it.
"""

from __future__ import annotations

import math

import numpy as np

from weightspectra.core.eigen import svd_eigenvalues
from weightspectra.fitting.powerlaw import PowerLawFit

#: Eigenvalues above this many ``max(N, M)·eps·λ_max`` count towards the Gram-based matrix rank.
#: Through the Gram matrix an exact zero singular value comes out near √(M·eps)·σ_max, so the
#: LAPACK-style tolerance of ``numpy.linalg.matrix_rank`` is replaced by this one, in λ units.
GRAM_RANK_FACTOR = 10.0

#: Eigenvalues below this count as weak rank loss: the peer's tolerance on eigenvalues (it
#: reproduces the peer's ``weak_rank_loss`` on all 39 MiniLM matrices, and on pooled and unpooled
#: convolutions, where it applies to the scaled eigenvalues; see docs/metrics.md).
WEAK_RANK_TOLERANCE = 1e-6

#: A Gram-path ESD whose smallest singular value is at most this fraction of σ_max has its
#: rank-type metrics recomputed from an exact SVD (:func:`needs_exact_ranks`). A float64 Gram
#: eigenvalue carries an absolute error of order eps·λ_max, i.e. ≥ 2e-4 relative below
#: λ = 1e-12·λ_max, and singular values under ~1e-8·σ_max cannot be told from exact zeros. The
#: smallest ratio on all-MiniLM-L6-v2 is 1.2e-5 (no recomputation); trained VGG-style
#: convolutions go down to 1e-10 (CRAFT's backbone).
EXACT_RANK_SV_RATIO = 1e-6


def matrix_rank(evals: np.ndarray, N: int, M: int, *, exact: bool) -> int:
    """Number of nonzero singular values.

    Parameters
    ----------
    evals : ndarray
        Eigenvalues λ = σ² of one ESD (any common scale factor: the rank does not change).
    N, M : int
        Larger and smaller side of the matrix.
    exact : bool
        True for eigenvalues from a full SVD (numpy's ``matrix_rank`` tolerance,
        σ > σ_max·N·eps); False for Gram eigenvalues, where the tolerance is
        λ > λ_max·N·eps·:data:`GRAM_RANK_FACTOR` (exact zeros are not resolved more finely).

    Examples
    --------
    >>> import numpy as np
    >>> matrix_rank(np.array([0.0, 1e-30, 1.0, 4.0]), 10, 4, exact=True)
    2
    """
    lam_max = float(evals.max())
    eps = float(np.finfo(np.float64).eps)
    if exact:
        sv = np.sqrt(evals)
        return int(np.count_nonzero(sv > math.sqrt(lam_max) * N * eps))
    return int(np.count_nonzero(evals > lam_max * N * eps * GRAM_RANK_FACTOR))


def entropy(evals: np.ndarray, rank: int) -> float:
    """Normalised spectral entropy −Σ pᵢ ln pᵢ / ln R, pᵢ = λᵢ/Σλ (1 for a flat spectrum).

    As the peer, 1e-10 is added to each pᵢ and to R before taking logs.

    Examples
    --------
    >>> import numpy as np
    >>> round(entropy(np.ones(8), 8), 6)
    1.0
    """
    denom = math.log(rank + 1e-10)
    total = float(evals.sum())
    if denom <= 0.0 or not total > 0.0:
        return math.nan
    p = evals / total + 1e-10
    return float(-(p * np.log(p)).sum() / denom)


def rank_metrics(evals: np.ndarray, N: int, *, exact: bool) -> dict[str, float | int]:
    """The rank-type metrics of one ESD: ``matrix_rank``, ``rank_loss``, ``weak_rank_loss``,
    ``sv_min`` and ``entropy``.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues ≥ 0 of the whole ESD, ascending, in the report's units.
    N : int
        Larger side of each matrix (the rank tolerance scales with it).
    exact : bool
        Whether ``evals`` come from a full SVD (see :func:`matrix_rank`).

    Returns
    -------
    dict
        ``rank_loss`` is ``n − matrix_rank``; ``weak_rank_loss`` counts eigenvalues below
        :data:`WEAK_RANK_TOLERANCE`; ``sv_min`` is √λ_min over the whole ESD.
    """
    rank = matrix_rank(evals, N, min(N, evals.size), exact=exact)
    return {
        "sv_min": math.sqrt(float(evals[0])),
        "matrix_rank": rank,
        "rank_loss": int(evals.size - rank),
        "weak_rank_loss": int(np.count_nonzero(evals < WEAK_RANK_TOLERANCE)),
        "entropy": entropy(evals, rank),
    }


def norm_metrics(evals: np.ndarray, N: int, M: int, *, exact: bool) -> dict[str, float | int]:
    """Norms, ranks and entropy of one ESD (all eigenvalues, none dropped).

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues ≥ 0, ascending, the largest > 0.
    N, M : int
        Matrix sides (for a pooled convolution M is one slice's; ``n = M·rf``).
    exact : bool
        Whether ``evals`` come from a full SVD (see :func:`matrix_rank`).

    Returns
    -------
    dict
        The norm-group columns of :mod:`weightspectra.schema`. Logs of a zero norm are −inf,
        never an error.
    """
    lam_max = float(evals[-1])
    total = float(evals.sum())
    out: dict[str, float | int] = {
        "lambda_max": lam_max,
        "sv_max": math.sqrt(lam_max),
        "norm": total,
        "log_norm": _log10(total),
        "spectral_norm": lam_max,
        "log_spectral_norm": _log10(lam_max),
        "stable_rank": total / lam_max if lam_max > 0.0 else math.nan,
    }
    out.update(rank_metrics(evals, N, exact=exact))
    return out


def needs_exact_ranks(evals: np.ndarray, N: int) -> bool:
    """Whether a Gram-path ESD's rank-type metrics must come from an exact SVD instead.

    True when the Gram eigenvalues put the rank below the eigenvalue count (some λ at or below
    the Gram tolerance of :func:`matrix_rank`), or the smallest singular value is at most
    :data:`EXACT_RANK_SV_RATIO`·σ_max: there the Gram route cannot tell a tiny singular value
    from an exact zero, and the rank, ``sv_min`` and (through the rank) ``entropy`` would differ
    from a full SVD's. The norms and the power-law fit are unaffected.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Gram eigenvalues ≥ 0 of one ESD, ascending.
    N : int
        Larger side of each matrix.

    Examples
    --------
    >>> import numpy as np
    >>> needs_exact_ranks(np.array([1e-13, 0.5, 1.0]), 10), needs_exact_ranks(np.ones(3), 10)
    (True, False)
    """
    lam_max = float(evals[-1])
    if float(evals[0]) <= EXACT_RANK_SV_RATIO**2 * lam_max:
        return True
    return matrix_rank(evals, N, min(N, evals.size), exact=False) < evals.size


def exact_rank_metrics(
    matrices: np.ndarray,
    *,
    eig_scale: float = 1.0,
    normalize_by: int | None = None,
) -> dict[str, float | int]:
    """:func:`rank_metrics` of a layer from an exact float64 SVD of its matrices.

    The singular values of every matrix are computed by LAPACK's SVD in float64, squared,
    multiplied by ``eig_scale`` and divided by ``normalize_by``, exactly as the layer's ESD was
    scaled, then pooled. The rank uses numpy's ``matrix_rank`` tolerance on the pooled singular
    values, σ > σ_max·N·eps (as the peer does for a pooled convolution).

    Parameters
    ----------
    matrices : ndarray of shape (k, rows, cols) or (rows, cols)
        The layer's matrices (k slices pooled into one ESD), any float dtype.
    eig_scale : float, default 1.0
        Factor of every eigenvalue (the convolution scaling).
    normalize_by : int, optional
        Eigenvalues are divided by it (``N`` under ``normalize=True``).

    Returns
    -------
    dict
        ``matrix_rank``, ``rank_loss``, ``weak_rank_loss``, ``sv_min`` and ``entropy``.

    Raises
    ------
    ValueError
        If ``matrices`` is not 2-D or 3-D.
    numpy.linalg.LinAlgError
        If LAPACK's SVD does not converge.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.diag([3.0, 2.0, 1e-9, 0.0])
    >>> m = exact_rank_metrics(w)
    >>> m["matrix_rank"], m["rank_loss"], m["sv_min"]
    (3, 1, 0.0)
    """
    stack = np.asarray(matrices)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(
            f"expected the layer's matrices as (rows, cols) or (k, rows, cols), got shape "
            f"{stack.shape}"
        )
    evals = np.sort(np.concatenate([svd_eigenvalues(m) for m in stack]))
    if eig_scale != 1.0:
        evals = evals * eig_scale
    if normalize_by is not None:
        evals = evals / float(normalize_by)
    return rank_metrics(evals, max(stack.shape[1:]), exact=True)


def log10_power_sum(evals: np.ndarray, alpha: float) -> float:
    """log₁₀ Σ λᵢ^α, computed in log space (a log-sum-exp), so it never under- or overflows.

    Zero eigenvalues contribute nothing (α > 0). Finite for finite α and any ESD with a
    positive eigenvalue; −inf when none is positive; NaN only for a NaN α.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.full(32, 0.25)
    >>> float(np.sum(x**3.5e15)), round(log10_power_sum(x, 3.5e15) / 1e15, 4)
    (0.0, -2.1072)
    """
    x = np.asarray(evals, dtype=np.float64)
    pos = x[x > 0.0]
    if pos.size == 0:
        return -math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        logs = alpha * np.log(pos)
        top = float(logs.max())
        if not math.isfinite(top):
            return top
        total = top + math.log(float(np.sum(np.exp(logs - top))))
    return total / math.log(10.0)


def fit_metrics(evals: np.ndarray, fit: PowerLawFit) -> dict[str, float | int]:
    """α-based metrics of one ESD from its power-law fit.

    Never raises on an under- or overflow: ``log_alpha_norm`` is computed in log space
    (:func:`log10_power_sum`), ``alpha_weighted`` is −inf for λ_max = 0.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        The ESD, ascending.
    fit : PowerLawFit
        Its power-law fit.

    Returns
    -------
    dict
        The fit-group columns of :mod:`weightspectra.schema` (``fit_error`` aside).
    """
    lam_max = float(evals[-1])
    return {
        "alpha": fit.alpha,
        "alpha_weighted": fit.alpha * _log10(lam_max),
        "log_alpha_norm": log10_power_sum(evals, fit.alpha),
        "xmin": fit.xmin,
        "xmax": fit.xmax,
        "D": fit.D,
        "sigma": fit.sigma,
        "num_pl_spikes": fit.num_pl_spikes,
        "num_fit_evals": fit.num_fit_evals,
    }


def _log10(value: float) -> float:
    """log₁₀ that gives −inf for 0 (and NaN for a negative or NaN value) instead of raising."""
    if value > 0.0:
        return math.log10(value)
    return -math.inf if value == 0.0 else math.nan
