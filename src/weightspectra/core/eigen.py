"""Eigenvalues of weight correlation matrices (metrics.md §2).

λᵢ = σᵢ², the squared singular values of W, computed as the eigenvalues of the smaller Gram
matrix (WᵀW or WWᵀ) by default, or by a full SVD (exact, for tests and tiny eigenvalues).
"""

from __future__ import annotations

import warnings

import numpy as np

from weightspectra.errors import LayerError, NumericalWarning
from weightspectra.options import EigenMethod, Precision

#: Negative Gram eigenvalues up to this many ``M·eps·λ_max`` are round-off and are clipped to 0;
#: larger ones mean the Gram matrix was not symmetric positive semi-definite: an error.
NEGATIVE_EVAL_ROUNDOFF = 100.0


def check_finite_nonzero(stack: np.ndarray, what: str) -> None:
    """Raise :class:`LayerError` if ``stack`` has NaN/Inf values or is entirely zero.

    Parameters
    ----------
    stack : ndarray
        The matrices of one layer, any shape.
    what : str
        How to name the layer in the message.
    """
    finite = np.isfinite(stack)
    if not finite.all():
        n_nan = int(np.isnan(stack).sum())
        n_inf = int(stack.size - finite.sum() - n_nan)
        raise LayerError(
            f"{what} contains {n_nan} NaN and {n_inf} infinite values out of {stack.size}; "
            "its spectrum is undefined (check the checkpoint or the training run that wrote it)"
        )
    if not np.any(stack):
        raise LayerError(f"{what} is all zeros: it has no spectrum (an uninitialised layer?)")


def gram_eigenvalues(matrix: np.ndarray, precision: Precision = Precision.FLOAT64) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of one 2-D ``matrix``, ascending, unclipped.

    Parameters
    ----------
    matrix : ndarray of shape (rows, cols)
    precision : Precision
        Floating type in which the Gram matrix is formed and diagonalised.

    Returns
    -------
    ndarray of shape (min(rows, cols),), float64

    Examples
    --------
    >>> import numpy as np
    >>> w = np.diag([3.0, 2.0])
    >>> gram_eigenvalues(w)
    array([4., 9.])
    """
    dtype = np.float64 if precision is Precision.FLOAT64 else np.float32
    a = np.asarray(matrix, dtype=dtype)
    if a.shape[0] < a.shape[1]:
        a = a.T
    # numpy dispatches ``a.T @ a`` on one buffer to the symmetric rank-k BLAS kernel (syrk).
    gram = a.T @ a
    return np.linalg.eigvalsh(gram).astype(np.float64, copy=False)


def svd_eigenvalues(matrix: np.ndarray) -> np.ndarray:
    """Squared singular values of ``matrix`` by a full float64 SVD, ascending (exact path)."""
    s = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    return np.sort(s * s)


def layer_eigenvalues(
    stack: np.ndarray,
    *,
    method: EigenMethod = EigenMethod.GRAM,
    precision: Precision = Precision.FLOAT64,
    eig_scale: float = 1.0,
    normalize_by: int | None = None,
    what: str = "matrix",
) -> np.ndarray:
    """Pooled, sorted eigenvalues of a stack of equally shaped matrices (one ESD).

    Parameters
    ----------
    stack : ndarray of shape (k, rows, cols)
        The matrices of one layer (k = 1 except for pooled convolution slices).
    method : EigenMethod
        Gram matrix (default) or full SVD.
    precision : Precision
        Precision of the Gram path (the SVD path is always float64).
    eig_scale : float
        Every eigenvalue is multiplied by this (the convolution scaling of metrics.md §2).
    normalize_by : int, optional
        If given, eigenvalues are divided by it (``N`` for the normalised convention).
    what : str
        Name of the layer, for messages.

    Returns
    -------
    ndarray of shape (k · min(rows, cols),), float64, ascending, all ≥ 0.

    Raises
    ------
    LayerError
        On NaN/Inf values, an all-zero stack, or a Gram matrix far from positive semi-definite.

    Warns
    -----
    NumericalWarning
        When tiny negative round-off eigenvalues are clipped to zero.
    """
    if stack.ndim != 3:
        raise ValueError(f"expected a (k, rows, cols) stack, got shape {stack.shape}")
    check_finite_nonzero(stack, what)
    parts = []
    for matrix in stack:
        if method is EigenMethod.SVD:
            parts.append(svd_eigenvalues(matrix))
        else:
            parts.append(gram_eigenvalues(matrix, precision))
    evals = np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]
    evals = _clip_roundoff(evals, stack.shape[1], stack.shape[2], precision, what)
    if eig_scale != 1.0:
        evals = evals * eig_scale
    if normalize_by is not None:
        evals = evals / float(normalize_by)
    return evals


def _clip_roundoff(
    evals: np.ndarray, rows: int, cols: int, precision: Precision, what: str
) -> np.ndarray:
    lowest = float(evals[0])
    if lowest >= 0.0:
        return evals
    eps = float(np.finfo(np.float64 if precision is Precision.FLOAT64 else np.float32).eps)
    limit = NEGATIVE_EVAL_ROUNDOFF * max(rows, cols) * eps * float(evals[-1])
    if -lowest > limit:
        raise LayerError(
            f"{what}: Gram eigenvalue {lowest:.3e} is far below zero (round-off bound "
            f"{-limit:.3e}); the matrix is numerically unusable in {precision.value}: "
            "retry with precision='float64' or eig_method='svd'"
        )
    warnings.warn(
        "tiny negative Gram eigenvalues (round-off of exact zeros) were clipped to 0",
        NumericalWarning,
        stacklevel=3,
    )
    return np.maximum(evals, 0.0)
