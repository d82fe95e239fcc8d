"""Figures without global state: pyplot only when the caller already uses it, the Agg canvas
for files and bytes. Shared by the layer and model plots."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightspectra.errors import InputError, MissingDependencyError
from weightspectra.report.results import LayerResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The α band of well- to reasonably-trained layers, shaded in model plots.
ALPHA_BAND = (2.0, 6.0)
#: Most candidate xmin values evaluated by :func:`xmin_scan` (evenly spread over all of them).
MAX_SCAN_CANDIDATES = 400
#: Colours of layer types (any other type gets the next colour of the default cycle).
_TYPE_COLOURS = {
    "dense": "tab:blue",
    "embedding": "tab:orange",
    "conv2d": "tab:green",
    "conv1d": "tab:olive",
    "attention_in_proj": "tab:purple",
    "lstm": "tab:brown",
    "gru": "tab:pink",
    "moe_experts": "tab:cyan",
}


def _require_matplotlib(purpose: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "plot", purpose) from exc


def new_figure(
    ncols: int = 1,
    nrows: int = 1,
    figsize: tuple[float, float] | None = None,
    *,
    managed: bool | None = None,
) -> tuple[Figure, list[Axes]]:
    """A figure and its axes (row-major).

    Parameters
    ----------
    ncols, nrows : int
        Grid of axes.
    figsize : (float, float), optional
        Size in inches.
    managed : bool, optional
        True: make it through pyplot (shown by notebooks, closed by ``plt.close``); False: a bare
        Figure on the Agg canvas (no global state). Default: pyplot only if the caller already
        imported it.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    """
    _require_matplotlib("plotting")
    if managed is None:
        managed = "matplotlib.pyplot" in sys.modules
    if managed:
        import matplotlib.pyplot as plt

        fig, grid = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        grid = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(grid.ravel())


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    return new_figure()[1][0]


def figure_png(fig: Figure, dpi: float = 72, tight: bool = True) -> bytes:
    """PNG bytes of ``fig`` on the Agg canvas; ``tight`` crops to the drawn content (one more
    layout pass: leave it off for figures laid out already, e.g. by :func:`plot_layer`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: float = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: png, svg, pdf); returns the path.

    Raises
    ------
    OSError
        If the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        path.write_bytes(figure_png(fig, dpi))
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _evals(layer: LayerResult) -> np.ndarray:
    if not isinstance(layer, LayerResult):
        raise InputError(
            f"expected a LayerResult (a row of report.analysed), got {type(layer).__name__}"
        )
    if layer.evals is None or layer.evals.size == 0:
        why = f" ({layer.reason})" if layer.reason else ""
        raise InputError(
            f"layer {layer.name!r} has no eigenvalues: its status is {layer.status.value}{why}; "
            "plot a row of report.analysed"
        )
    return layer.evals


def _metric(layer: LayerResult, key: str) -> float | None:
    value = layer.metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
