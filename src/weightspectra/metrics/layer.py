"""Per-layer spectral metrics (metrics.md §4). Pure functions of an ESD and its fit.

Logs are base 10 throughout, as in the HT-SR literature.
"""

from __future__ import annotations

import math

import numpy as np

from weightspectra.fitting.powerlaw import FIT_EVAL_THRESHOLD, PowerLawFit

#: Eigenvalues above this many ``max(N, M)·eps·λ_max`` count towards the Gram-based matrix rank.
#: Through the Gram matrix an exact zero singular value comes out near √(M·eps)·σ_max, so the
#: LAPACK-style tolerance of ``numpy.linalg.matrix_rank`` is replaced by this one, in λ units.
GRAM_RANK_FACTOR = 10.0

#: Metric columns in report order (the identity and status columns come first, elsewhere).
NORM_COLUMNS = (
    "lambda_max",
    "sv_max",
    "sv_min",
    "norm",
    "log_norm",
    "spectral_norm",
    "log_spectral_norm",
    "stable_rank",
    "matrix_rank",
    "rank_loss",
    "weak_rank_loss",
    "entropy",
)
FIT_COLUMNS = (
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "xmin",
    "xmax",
    "D",
    "sigma",
    "num_pl_spikes",
    "num_fit_evals",
)


def matrix_rank(evals: np.ndarray, N: int, M: int, *, exact: bool) -> int:
    """Number of nonzero singular values.

    Parameters
    ----------
    evals : ndarray
        Eigenvalues λ = σ² of one ESD.
    N, M : int
        Larger and smaller side of the matrix.
    exact : bool
        True for eigenvalues from a full SVD (numpy's ``matrix_rank`` tolerance,
        σ > σ_max·N·eps); False for Gram eigenvalues, where the tolerance is
        λ > λ_max·N·eps·:data:`GRAM_RANK_FACTOR` (exact zeros are not resolved more finely).
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
    """
    p = evals / evals.sum() + 1e-10
    denom = math.log(rank + 1e-10)
    if denom <= 0.0:
        return float("nan")
    return float(-(p * np.log(p)).sum() / denom)


def norm_metrics(evals: np.ndarray, N: int, M: int, *, exact: bool) -> dict[str, float | int]:
    """Norms, ranks and entropy of one ESD (all eigenvalues, none dropped).

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues ≥ 0, ascending.
    N, M : int
        Matrix sides (for a pooled convolution M is one slice's; ``n = M·rf``).
    exact : bool
        Whether ``evals`` come from a full SVD (see :func:`matrix_rank`).
    """
    lam_max = float(evals[-1])
    total = float(evals.sum())
    rank = matrix_rank(evals, N, M, exact=exact)
    return {
        "lambda_max": lam_max,
        "sv_max": math.sqrt(lam_max),
        "sv_min": math.sqrt(float(evals[0])),
        "norm": total,
        "log_norm": math.log10(total),
        "spectral_norm": lam_max,
        "log_spectral_norm": math.log10(lam_max),
        "stable_rank": total / lam_max,
        "matrix_rank": rank,
        "rank_loss": int(evals.size - rank),
        "weak_rank_loss": int(np.count_nonzero(evals <= FIT_EVAL_THRESHOLD)),
        "entropy": entropy(evals, rank),
    }


def fit_metrics(evals: np.ndarray, fit: PowerLawFit) -> dict[str, float | int]:
    """α-based metrics of one ESD from its power-law fit."""
    lam_max = float(evals[-1])
    with np.errstate(over="ignore"):
        alpha_norm = float(np.sum(evals**fit.alpha))
    return {
        "alpha": fit.alpha,
        "alpha_weighted": fit.alpha * math.log10(lam_max),
        "log_alpha_norm": math.log10(alpha_norm) if math.isfinite(alpha_norm) else math.inf,
        "xmin": fit.xmin,
        "xmax": fit.xmax,
        "D": fit.D,
        "sigma": fit.sigma,
        "num_pl_spikes": fit.num_pl_spikes,
        "num_fit_evals": fit.num_fit_evals,
    }

