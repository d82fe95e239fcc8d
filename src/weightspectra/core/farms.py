"""FARMS: the pooled ESD of fixed-aspect-ratio submatrices of a layer (metrics.md, "FARMS α").

The ESD of a random matrix depends on its aspect ratio Q = N/M (the Marchenko–Pastur law is a
family in Q), so α fitted to layers of different shapes carries a bias that has nothing to do
with training. FARMS (Hu et al., "Eigenspectrum Analysis of Neural Networks without Aspect
Ratio Bias", ICML 2025) removes it by measuring every layer through windows of one aspect
ratio: overlapping submatrices are cut across the matrix, and α is fitted to the pooled
eigenvalues of all of them.

This module is the geometry and the eigenvalues: :func:`farms_windows` places the windows and
:func:`farms_eigenvalues` returns their pooled ESD. The fit is done by the caller with the same
power-law fit as the plain α (``metrics/farms.py``).

Windows (our definition, every choice a parameter): for a matrix whose sides are ``L ≥ s``,
each window has short side ``w`` (default: the largest that fits, ``min(s, ⌊L/q⌋)``) and long
side ``round(q·w)``, oriented like the matrix. Along each axis windows start every
``max(1, round(stride·side))`` entries, and a last window is aligned with the far edge, so
every entry lies in at least one window. A matrix already of ratio ``q`` is its own single
window, and its FARMS α is its plain α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from weightspectra.core.eigen import RowReader, layer_eigenvalues
from weightspectra.enums import EigenMethod, Precision
from weightspectra.errors import OptionError

#: More windows than this in one matrix is refused (the cost is one eigenvalue problem each).
MAX_WINDOWS = 4096


@dataclass(frozen=True)
class WindowGrid:
    """Where the FARMS windows of one matrix lie.

    Attributes
    ----------
    rows, cols : int
        Height and width of every window.
    row_starts, col_starts : tuple of int
        First row (column) of each window along that axis; the windows are their product.
    """

    rows: int
    cols: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of windows."""
        return len(self.row_starts) * len(self.col_starts)

    def slices(self) -> list[tuple[slice, slice]]:
        """``(row slice, column slice)`` of each window, row-major."""
        return [
            (slice(r, r + self.rows), slice(c, c + self.cols))
            for r in self.row_starts
            for c in self.col_starts
        ]


def _starts(size: int, window: int, step: int) -> tuple[int, ...]:
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return tuple(starts)


def farms_windows(
    shape: tuple[int, int],
    *,
    ratio: float = 1.0,
    window: int | None = None,
    stride: float = 0.5,
) -> WindowGrid:
    """The FARMS windows of a ``rows × cols`` matrix.

    Parameters
    ----------
    shape : (int, int)
        The matrix's rows and columns.
    ratio : float, default 1.0
        Long side / short side of every window (≥ 1).
    window : int, optional
        Short side of every window; default (and upper limit) ``min(s, ⌊L/ratio⌋)`` for
        matrix sides ``L ≥ s``.
    stride : float, default 0.5
        Step between window starts as a fraction of the window's side along that axis, in
        (0, 1].

    Returns
    -------
    WindowGrid

    Raises
    ------
    OptionError
        On a ratio below 1, a stride outside (0, 1], a window below 2, a matrix too small for
        a window of at least 2 × 2, or more than :data:`MAX_WINDOWS` windows (the message says
        which window or stride keeps it below).

    Examples
    --------
    >>> g = farms_windows((8, 2), ratio=1.0, stride=1.0)
    >>> (g.rows, g.cols, g.row_starts, g.col_starts)
    (2, 2, (0, 2, 4, 6), (0,))
    >>> farms_windows((6, 3), ratio=2.0).count
    1
    """
    rows, cols = (int(shape[0]), int(shape[1]))
    if not math.isfinite(ratio) or ratio < 1:
        raise OptionError(f"the FARMS window ratio must be ≥ 1, got {ratio!r}")
    if not 0 < stride <= 1:
        raise OptionError(f"the FARMS stride must be in (0, 1], got {stride!r}")
    long_side, short_side = max(rows, cols), min(rows, cols)
    largest = min(short_side, math.floor(long_side / ratio))
    w = largest if window is None else min(int(window), largest)
    if window is not None and window < 2:
        raise OptionError(f"the FARMS window must be at least 2, got {window!r}")
    if w < 2:
        raise OptionError(
            f"a {rows}×{cols} matrix holds no FARMS window of ratio {ratio:g} with a short side "
            "of at least 2; lower farms_ratio"
        )
    w_long = max(w, round(ratio * w))
    win_rows, win_cols = (w_long, w) if rows >= cols else (w, w_long)
    grid = WindowGrid(
        win_rows,
        win_cols,
        _starts(rows, win_rows, max(1, round(stride * win_rows))),
        _starts(cols, win_cols, max(1, round(stride * win_cols))),
    )
    if grid.count > MAX_WINDOWS:
        raise OptionError(
            f"a {rows}×{cols} matrix has {grid.count} FARMS windows of {win_rows}×{win_cols} "
            f"(at most {MAX_WINDOWS}); raise farms_window or farms_stride"
        )
    return grid


def farms_eigenvalues(
    stack: np.ndarray | None = None,
    *,
    ratio: float = 1.0,
    window: int | None = None,
    stride: float = 0.5,
    precision: Precision = Precision.FLOAT64,
    eig_scale: float = 1.0,
    normalize: bool = False,
    what: str = "matrix",
    read_rows: RowReader | None = None,
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int]:
    """The pooled ESD of the FARMS windows of a layer's matrices, and the number of windows.

    Each window's eigenvalues are those of its own correlation matrix, computed like the
    layer's (:func:`~weightspectra.core.eigen.layer_eigenvalues`: Gram route, the same
    precision and ``eig_scale``; with ``normalize``, divided by the window's long side).

    Parameters
    ----------
    stack : ndarray of shape (k, rows, cols) or (rows, cols), optional
        The layer's matrices, unscaled (k pooled convolution slices each give their windows).
    ratio, window, stride
        As :func:`farms_windows`.
    precision, eig_scale, what
        As :func:`~weightspectra.core.eigen.layer_eigenvalues`.
    normalize : bool, default False
        Divide each window's eigenvalues by its long side (the normalised convention).
    read_rows, shape : optional
        Instead of ``stack``: one matrix of this ``(rows, cols)`` shape, whose rows ``lo:hi``
        ``read_rows(lo, hi)`` returns (a streamed tensor: only one band of window rows is
        held at a time).

    Returns
    -------
    evals : ndarray, float64, ascending
        ``k × windows × short side`` eigenvalues.
    count : int
        Windows used (over all k matrices).

    Raises
    ------
    OptionError
        From :func:`farms_windows`.
    LayerError
        From the eigenvalue computation (NaN/Inf or an all-zero window).

    Examples
    --------
    >>> w = np.random.default_rng(0).standard_normal((12, 4))
    >>> evals, count = farms_eigenvalues(w, stride=1.0)
    >>> count, evals.shape
    (3, (12,))
    >>> same, _ = farms_eigenvalues(read_rows=lambda lo, hi: w[lo:hi], shape=w.shape, stride=1.0)
    >>> bool(np.array_equal(evals, same))
    True
    """
    if stack is not None:
        mats = np.asarray(stack)
        mats = mats[None] if mats.ndim == 2 else mats
        k, dims = mats.shape[0], (mats.shape[1], mats.shape[2])

        def band(lo: int, hi: int) -> np.ndarray:
            return mats[:, lo:hi]
    elif read_rows is not None and shape is not None:
        k, dims = 1, (int(shape[0]), int(shape[1]))

        def band(lo: int, hi: int) -> np.ndarray:
            return np.asarray(read_rows(lo, hi))[None]
    else:
        raise OptionError("farms_eigenvalues needs a stack, or read_rows with a shape")
    grid = farms_windows(dims, ratio=ratio, window=window, stride=stride)
    parts = []
    for r0 in grid.row_starts:
        rows = band(r0, r0 + grid.rows)  # (k, window rows, cols): one band at a time
        for c0 in grid.col_starts:
            windows = np.ascontiguousarray(rows[:, :, c0 : c0 + grid.cols])
            for one in windows:  # one ESD per window, pooled
                parts.append(
                    layer_eigenvalues(
                        one[None],
                        method=EigenMethod.GRAM,
                        precision=precision,
                        eig_scale=eig_scale,
                        normalize_by=max(grid.rows, grid.cols) if normalize else None,
                        what=f"{what} FARMS window {r0}:{r0 + grid.rows}×{c0}:{c0 + grid.cols}",
                    )
                )
    return np.sort(np.concatenate(parts)), grid.count * k
