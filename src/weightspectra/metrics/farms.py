"""The FARMS columns of one layer: α fitted to the pooled ESD of its fixed-aspect-ratio windows.

:func:`farms_metrics` cuts the windows (:mod:`weightspectra.core.farms`), fits the same power
law as the plain α to their pooled eigenvalues, and builds the α-based metrics from that α
with the layer's own ESD, exactly as the plain ones are built (metrics.md, "FARMS α"):
``alpha_weighted_farms = alpha_farms · log10 λ_max`` and
``log_alpha_norm_farms = log10 Σ λᵢ^alpha_farms`` over the layer's eigenvalues.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightspectra.core.eigen import RowReader
from weightspectra.core.farms import farms_eigenvalues
from weightspectra.errors import LayerError, OptionError
from weightspectra.fitting.powerlaw import FitError, fit_power_law
from weightspectra.metrics.layer import fit_metrics
from weightspectra.options import Options

#: Pooled ESDs larger than this are fitted coarse to fine (the full xmin scan is O(n²): 8 s for
#: the 61,056 eigenvalues of MiniLM's word embedding, against 0.5 s).
FULL_SCAN_MAX = 16384

#: Coarse candidates of that search (:func:`~weightspectra.fitting.powerlaw.fit_power_law`).
COARSE_CANDIDATES = 4096


def farms_metrics(
    stack: np.ndarray | None,
    evals: np.ndarray,
    options: Options,
    *,
    eig_scale: float = 1.0,
    what: str = "matrix",
    read_rows: RowReader | None = None,
    shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The ``*_farms`` columns of one layer.

    Parameters
    ----------
    stack : ndarray of shape (k, rows, cols) or (rows, cols), or None
        The layer's matrices, unscaled; None with ``read_rows`` and ``shape`` (a streamed
        matrix, read one band of window rows at a time).
    evals : ndarray
        The layer's own ESD, ascending, in report units (for the α-weighted metrics).
    options : Options
        Gives the window geometry (``farms_ratio``, ``farms_window``, ``farms_stride``),
        the precision and the normalisation.
    eig_scale : float, default 1.0
        The convolution scaling, applied to the windows as to the layer.
    what : str
        The layer, for messages.

    Returns
    -------
    dict
        ``alpha_farms`` (None when the fit failed or the matrix holds no window, with the
        cause in ``farms_error``), ``alpha_weighted_farms``, ``log_alpha_norm_farms``,
        ``xmin_farms``, ``D_farms`` and ``num_farms_windows``.
    """
    try:
        pooled, count = farms_eigenvalues(
            stack,
            ratio=options.farms_ratio,
            window=options.farms_window,
            stride=options.farms_stride,
            precision=options.precision,
            eig_scale=eig_scale,
            normalize=options.normalize,
            what=what,
            read_rows=read_rows,
            shape=shape,
        )
    except (OptionError, LayerError) as exc:
        return {"alpha_farms": None, "farms_error": str(exc)}
    try:
        coarse = COARSE_CANDIDATES if pooled.size > FULL_SCAN_MAX else None
        fit = fit_power_law(pooled, max_candidates=coarse)
    except FitError as exc:
        return {"alpha_farms": None, "num_farms_windows": count, "farms_error": str(exc)}
    own = fit_metrics(evals, fit)
    return {
        "alpha_farms": fit.alpha,
        "alpha_weighted_farms": own["alpha_weighted"],
        "log_alpha_norm_farms": own["log_alpha_norm"],
        "xmin_farms": fit.xmin,
        "D_farms": fit.D,
        "num_farms_windows": count,
    }
