"""Figures without global state: pyplot only when the caller already uses it, the Agg canvas
for files and bytes. Shared by the layer and model plots."""

from __future__ import annotations

import io
import math
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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
#: Colour of each layer type, the same in every plot and page (the fitted curves are red, the
#: α band green; neither is a type colour).
TYPE_COLOURS = {
    "dense": "#1f77b4",
    "embedding": "#ff7f0e",
    "conv1d": "#bcbd22",
    "conv2d": "#2ca02c",
    "conv3d": "#17becf",
    "conv_transpose1d": "#8c8c00",
    "conv_transpose2d": "#006d2c",
    "conv_transpose3d": "#0b6e7a",
    "attention_in_proj": "#9467bd",
    "lstm": "#8c564b",
    "gru": "#e377c2",
    "moe_experts": "#393b79",
    "unknown": "#7f7f7f",
}
#: Colours for layer types that :data:`TYPE_COLOURS` does not name (a plugin's own types),
#: picked by a stable hash of the name so that a type keeps its colour across plots and runs.
_EXTRA_COLOURS = ("#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#636363")
#: Colour of fitted curves and xmin markers (power law, MP density).
FIT_COLOUR = "#d62728"
#: Font sizes (points) of the pictures embedded in pages; at 100 dpi a point is 1.39 px, so
#: tick labels are 11 px and titles 14 px at 100 % zoom.
PAGE_STYLE = {
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
}


def type_colour(layer_type: str) -> str:
    """The colour of a layer type: :data:`TYPE_COLOURS`, or a stable pick for other types.

    Examples
    --------
    >>> type_colour("dense")
    '#1f77b4'
    >>> type_colour("my_adapter") == type_colour("my_adapter")
    True
    """
    if layer_type in TYPE_COLOURS:
        return TYPE_COLOURS[layer_type]
    return _EXTRA_COLOURS[zlib.crc32(layer_type.encode("utf-8")) % len(_EXTRA_COLOURS)]


@contextmanager
def page_style() -> Iterator[None]:
    """matplotlib settings (:data:`PAGE_STYLE`) for figures made and saved inside the block.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    """
    _require_matplotlib("plotting")
    import matplotlib

    # cast: matplotlib types rc keys as a Literal of every setting; these are plain names.
    with matplotlib.rc_context(cast("Any", PAGE_STYLE)):
        yield


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


def figure_png(
    fig: Figure, dpi: float = 72, tight: bool = True, palette: int | None = None
) -> bytes:
    """PNG bytes of ``fig`` on the Agg canvas.

    Parameters
    ----------
    fig : Figure
    dpi : float, default 72
    tight : bool, default True
        Crop to the drawn content (one more layout pass: leave it off for figures laid out
        already, e.g. by :func:`plot_layer`).
    palette : int, optional
        Store the image with at most this many colours (an indexed PNG, about a third of the
        bytes of a true-colour one for a line plot; the pages embed their plots so).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    if palette is None:
        return buf.getvalue()
    # Pillow comes with matplotlib (one of its requirements).
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as image:
        indexed = image.convert("RGB").quantize(colors=palette, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    indexed.save(out, format="PNG")
    return out.getvalue()


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
