"""All metric columns of one ESD, as one pure function of its eigenvalues (metrics.md §4–§6).

:func:`spectrum_metrics` is the pipeline's per-layer step after the eigenvalues: norms and ranks,
the power-law fit and the α-based metrics, the random-matrix diagnostics. Where the Gram route
cannot resolve the small singular values, the rank-type metrics are recomputed from an exact SVD
of the layer's matrices (:func:`~weightspectra.metrics.layer.needs_exact_ranks`).
:func:`internal_error_reason` words the row of a layer whose metrics raised unexpectedly.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.core.eigen import RowReader
from weightspectra.enums import EigenMethod, Estimator, Precision
from weightspectra.fitting.powerlaw import FitError, PowerLawFit, fit_power_law
from weightspectra.metrics.diagnostics import layer_diagnostics
from weightspectra.metrics.farms import farms_metrics
from weightspectra.metrics.layer import (
    exact_rank_metrics,
    fit_metrics,
    needs_exact_ranks,
    norm_metrics,
)
from weightspectra.options import Options

logger = logging.getLogger(__name__)


def spectrum_metrics(
    evals: np.ndarray,
    N: int,
    M: int,
    options: Options,
    matrix: Callable[[], np.ndarray] | None = None,
    rand_evals: np.ndarray | None = None,
    *,
    eig_scale: float = 1.0,
    read_rows: RowReader | None = None,
) -> dict[str, Any]:
    """All metric columns of one ESD: norms, ranks, entropy, power-law fit, random-matrix
    diagnostics and warnings.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        The layer's ESD, ascending, ≥ 0, as the pipeline computed it: multiplied by
        ``eig_scale`` and, under ``options.normalize``, divided by ``N``.
    N, M : int
        Larger and smaller side of each matrix (``n = M·k`` for k pooled slices).
    options : Options
        The analysis options (eigenvalue method and precision, normalisation, diagnostics).
    matrix : callable, optional
        Returns the layer's matrices, shape (k, rows, cols) or (rows, cols), unscaled. Read only
        when the rank-type metrics need an exact SVD (Gram route, float64, and
        :func:`~weightspectra.metrics.layer.needs_exact_ranks`), and for the FARMS windows
        (``options.estimator`` FARMS); without it the rank-type metrics stay from the Gram
        eigenvalues and no FARMS column is computed.
    rand_evals : ndarray, optional
        The ESD of the layer's entry-shuffled matrix (``randomize``), in the units of ``evals``.
    eig_scale : float, default 1.0
        The factor the ESD was multiplied by (the convolution scaling), applied alike to the
        exact singular values.
    read_rows : callable, optional
        For a streamed matrix (one ``(N, M)`` matrix, rows ``lo:hi`` read on demand): the
        FARMS windows read their rows through it, one band at a time, instead of ``matrix``.

    Returns
    -------
    dict
        Metric columns. A failed power-law fit gives ``alpha=None`` and its cause in
        ``fit_error`` (the diagnostics then warn ``fit-failed``); it is not an error.

    Raises
    ------
    OptionError
        From the diagnostics, if N < M.
    numpy.linalg.LinAlgError
        If the exact SVD of the rank-type metrics does not converge.

    Examples
    --------
    >>> import numpy as np
    >>> from weightspectra.options import Options
    >>> w = np.diag([3.0, 2.0, 1.0, 1e-9]) @ np.eye(4, 6)
    >>> m = spectrum_metrics(np.linalg.eigvalsh(w @ w.T), 6, 4, Options(), matrix=lambda: w)
    >>> m["matrix_rank"], round(m["sv_min"], 12)
    (4, 1e-09)
    """
    exact = options.eig_method is EigenMethod.SVD
    metrics: dict[str, Any] = norm_metrics(evals, N, M, exact=exact)
    if (
        not exact
        and matrix is not None
        and options.precision is Precision.FLOAT64
        and needs_exact_ranks(evals, N)
    ):
        metrics.update(
            exact_rank_metrics(
                matrix(), eig_scale=eig_scale, normalize_by=N if options.normalize else None
            )
        )
    fit: PowerLawFit | None = None
    fit_error: str | None = None
    try:
        fit = fit_power_law(evals)
    except FitError as exc:
        fit_error = str(exc)
        metrics.update({"alpha": None, "fit_error": fit_error})
    else:
        metrics.update(fit_metrics(evals, fit))
    if options.estimator is Estimator.FARMS and read_rows is not None:
        shape = (N, M)
        metrics.update(
            farms_metrics(
                None, evals, options, eig_scale=eig_scale, read_rows=read_rows, shape=shape
            )
        )
    elif options.estimator is Estimator.FARMS and matrix is not None:
        metrics.update(farms_metrics(matrix(), evals, options, eig_scale=eig_scale))
    metrics.update(
        layer_diagnostics(
            evals,
            N,
            M,
            fit=fit,
            fit_error=fit_error,
            rand_evals=rand_evals,
            normalized=options.normalize,
            config=options,
        )
    )
    return metrics


def internal_error_reason(exc: Exception, what: str) -> str:
    """The reason of the failed row of a layer whose metrics raised ``exc`` unexpectedly.

    The pipeline turns any such exception into that layer's row instead of stopping the run;
    this names the layer, the exception (type, message and where it was raised) and what to do.
    The traceback is logged at DEBUG level on this module's logger.

    Parameters
    ----------
    exc : Exception
        What was raised.
    what : str
        The layer, as messages name it (``"layer fc1 (64, 32) float32"``).

    Returns
    -------
    str

    Examples
    --------
    >>> try:
    ...     1 / 0
    ... except ZeroDivisionError as exc:
    ...     print(internal_error_reason(exc, "layer fc").split(" at ")[0])
    layer fc: internal error while computing its metrics (ZeroDivisionError: division by zero
    """
    logger.debug("%s: internal error while computing its metrics", what, exc_info=exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return (
        f"{what}: internal error while computing its metrics ({type(exc).__name__}: {exc}"
        f"{where}); the other layers are unaffected. This is a bug: rerun with --debug for the "
        "traceback and please report it"
    )
