"""Plots of one layer's spectrum: log-log ESD with the power-law fit, linear ESD with the MP
fit, D and α against the candidate xmin, real vs randomised ESD."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from weightspectra.errors import InputError
from weightspectra.fitting.mp import mp_density_from_edge
from weightspectra.fitting.powerlaw import FIT_EVAL_THRESHOLD, FitError, xmin_scan
from weightspectra.report.plots._figure import (
    ALPHA_BAND,
    FIT_COLOUR,
    MAX_SCAN_CANDIDATES,
    _axes,
    _evals,
    _metric,
    new_figure,
    type_colour,
)
from weightspectra.report.results import LayerResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _quiet_log_axes(ax: Axes) -> None:
    # Minor ticks of log axes are left out: over several decades they are most of the
    # drawing time of a layer figure (measured: ~35 % on MiniLM's layers) and rarely read.
    from matplotlib.ticker import NullLocator

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_locator(NullLocator())


def _title(ax: Axes, layer: LayerResult, what: str) -> None:
    name = layer.name if len(layer.name) <= 44 else "…" + layer.name[-43:]
    ax.set_title(f"{name}\n{what}")


#: Fewest and most log-spaced bins of :func:`log_binned_density` when it picks the count.
LOG_BINS_RANGE = (8, 50)
#: The linear ESD is zoomed to the bulk when λ_max lies beyond this many times the view's end.
ZOOM_FACTOR = 1.5
#: Without an MP fit the bulk ends at this quantile of the eigenvalues.
BULK_QUANTILE = 0.95
#: Room left right of the bulk's end (share of it) in the zoomed linear view.
BULK_MARGIN = 0.25


def _positive(evals: np.ndarray) -> np.ndarray:
    return np.sort(evals[evals > FIT_EVAL_THRESHOLD])


def log_bin_count(evals: np.ndarray) -> int:
    """Number of log-spaced bins for the log-log ESD: the Freedman–Diaconis rule on log λ
    (bin width 2·IQR·n^(-1/3)), clipped to :data:`LOG_BINS_RANGE`.

    A rule on the data rather than a fixed count: 60 fixed bins over several decades leave most
    bins of a 384-eigenvalue layer empty, and its density reads as a comb.

    Examples
    --------
    >>> log_bin_count(np.geomspace(1e-2, 1e2, 1000))  # 4 decades, bins of 0.4 decade
    10
    """
    x = np.log10(_positive(np.asarray(evals, dtype=np.float64)))
    lo, hi = LOG_BINS_RANGE
    if x.size < 2 or x[-1] <= x[0]:
        return lo
    q75, q25 = np.percentile(x, [75, 25])
    width = 2.0 * (q75 - q25) * x.size ** (-1.0 / 3.0)
    if width <= 0:
        return lo
    return int(np.clip(np.ceil((x[-1] - x[0]) / width), lo, hi))


def log_binned_density(evals: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ESD as a density on log-spaced bins.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues; those at or below the fit's zero threshold are left out.
    bins : int, optional
        Number of bins (default :func:`log_bin_count`).

    Returns
    -------
    edges : ndarray of shape (bins + 1,)
        Geometrically spaced from the smallest to the largest eigenvalue kept.
    density : ndarray of shape (bins,)
        ``count / (n_kept · width)``: it integrates to 1 over the bins, and a power law
        ``p(λ) ∝ λ^(-α)`` is a line of slope ``-α`` on log-log axes.

    Raises
    ------
    InputError
        If fewer than two distinct positive eigenvalues remain.
    """
    pos = _positive(np.asarray(evals, dtype=np.float64))
    if pos.size < 2 or pos[-1] <= pos[0]:
        raise InputError(
            f"need at least two distinct positive eigenvalues for a log-binned density, "
            f"got {pos.size}"
        )
    n_bins = log_bin_count(pos) if bins is None else int(bins)
    if n_bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    edges = np.geomspace(pos[0], pos[-1], n_bins + 1)
    counts, _ = np.histogram(pos, edges)
    return edges, counts / (pos.size * np.diff(edges))


def plot_esd_loglog(layer: LayerResult, ax: Axes | None = None, bins: int | None = None) -> Axes:
    """The ESD on log-log axes as a log-binned density (steps and points, in the colour of the
    layer's type), the fitted power law over its tail, and xmin marked.

    Parameters
    ----------
    layer : LayerResult
        An analysed row (``report.analysed[i]``).
    ax : Axes, optional
        Where to draw; a new figure when omitted.
    bins : int, optional
        Logarithmically spaced histogram bins (default: :func:`log_bin_count`).

    Returns
    -------
    Axes

    Raises
    ------
    InputError
        If ``layer`` has no eigenvalues (a skipped or failed row).
    MissingDependencyError
        If matplotlib is not installed.
    """
    evals = _evals(layer)
    ax = _axes(ax)
    pos = _positive(evals)
    if pos.size < 2 or pos[-1] <= pos[0]:
        ax.text(0.5, 0.5, "too few distinct eigenvalues", ha="center", transform=ax.transAxes)
        return ax
    edges, density = log_binned_density(pos, bins)
    colour = type_colour(layer.layer_type)
    filled = density > 0
    shown = np.where(filled, density, np.nan)
    ax.stairs(shown, edges, color=colour, lw=1.0, alpha=0.6)
    centres = np.sqrt(edges[:-1] * edges[1:])
    ax.scatter(
        centres[filled], density[filled], s=14, color=colour, zorder=3, label="ESD (log bins)"
    )
    alpha, xmin = _metric(layer, "alpha"), _metric(layer, "xmin")
    if alpha is not None and xmin is not None and alpha > 1.0:
        tail = pos[pos >= xmin]
        grid = np.geomspace(xmin, pos[-1], 50)
        share = tail.size / pos.size
        ax.plot(
            grid,
            share * (alpha - 1.0) / xmin * (grid / xmin) ** (-alpha),
            color=FIT_COLOUR,
            lw=1.8,
            label=f"power law α={alpha:.2f} ({tail.size} in tail)",
        )
        ax.axvline(xmin, color=FIT_COLOUR, ls="--", lw=1, label=f"xmin={xmin:.3g}")
        d = _metric(layer, "D")
        what = f"log-log ESD, α={alpha:.2f}" + (f", D={d:.3f}" if d is not None else "")
    else:
        what = "log-log ESD (power-law fit failed)"
    ax.set_xscale("log")
    ax.set_yscale("log")
    _quiet_log_axes(ax)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.legend(loc="lower left")
    _title(ax, layer, what)
    return ax


def mp_edge(layer: LayerResult) -> float | None:
    """The MP bulk edge λ₊ of a layer in the units of its eigenvalues, when it was fitted.

    ``bulk_max`` (stored in the report's eigenvalue units); without it, ``mp_softrank ·
    lambda_max`` when the soft rank is below 1 (at 1 it is clipped and says only that the edge
    reaches past λ_max); ``None`` without an MP fit.
    """
    bulk = _metric(layer, "bulk_max")
    if bulk is not None and bulk > 0:
        return bulk
    soft, lam = _metric(layer, "mp_softrank"), _metric(layer, "lambda_max")
    if soft is not None and lam is not None and 0 < soft < 1:
        return soft * lam
    return None


def bulk_view(evals: np.ndarray, bulk_end: float | None = None) -> tuple[float, int]:
    """Where the linear ESD's axis ends, and how many eigenvalues lie beyond it.

    The bulk ends at ``bulk_end`` (the MP edge plus its TW margin, when fitted) or else at the
    :data:`BULK_QUANTILE` quantile; the view ends :data:`BULK_MARGIN` past it. When λ_max is
    within :data:`ZOOM_FACTOR` times that, the whole spectrum is shown (nothing beyond).

    Parameters
    ----------
    evals : ndarray of shape (n,)
        The eigenvalues (any order).
    bulk_end : float, optional
        End of the bulk in the same units.

    Returns
    -------
    (float, int)
        The right end of the view and the number of eigenvalues above it.

    Examples
    --------
    >>> bulk_view(np.array([1.0, 1.1, 1.2, 1.3, 50.0]), bulk_end=1.3)
    (1.625, 1)
    """
    x = np.asarray(evals, dtype=np.float64)
    top = float(x.max())
    end = bulk_end if bulk_end is not None and bulk_end > 0 else None
    if end is None:
        end = float(np.quantile(x, BULK_QUANTILE))
    view = end * (1.0 + BULK_MARGIN)
    if view <= 0 or top <= ZOOM_FACTOR * view:
        return top * 1.02 if top > 0 else 1.0, 0
    return view, int(np.count_nonzero(x > view))


def plot_esd_linear(layer: LayerResult, ax: Axes | None = None, bins: int = 60) -> Axes:
    """The ESD on linear axes zoomed to the bulk, with the MP density, the bulk edge and the
    spikes when fitted, and the eigenvalues beyond the view counted beside it.

    Parameters
    ----------
    layer : LayerResult
        An analysed row.
    ax : Axes, optional
        Where to draw; a new figure when omitted.
    bins : int, default 60
        Histogram bins over the view (:func:`bulk_view`).

    Returns
    -------
    Axes

    Raises
    ------
    InputError
        If ``layer`` has no eigenvalues.
    MissingDependencyError
        If matplotlib is not installed.
    """
    evals = _evals(layer)
    ax = _axes(ax)
    edge = mp_edge(layer)
    margin = _metric(layer, "tw_margin")
    has_mp = edge is not None and edge > 0 and bool(layer.M)
    end = (edge + (margin or 0.0)) if has_mp and edge is not None else None
    view, beyond = bulk_view(evals, end)
    lo = min(float(evals.min()), 0.0)
    inside = evals[evals <= view]
    counts, edges = np.histogram(inside, bins=bins, range=(lo, view))
    density = counts / (evals.size * np.diff(edges))
    colour = type_colour(layer.layer_type)
    ax.stairs(density, edges, fill=True, color=colour, alpha=0.45, label="ESD")
    what = "linear ESD"
    if has_mp and edge is not None:
        spikes = int(_metric(layer, "num_spikes") or 0)
        bulk_share = (evals.size - spikes) / evals.size
        grid = np.linspace(0.0, edge * 1.02, 400)
        mp = mp_density_from_edge(grid, edge, max(layer.Q, 1.0))
        ax.plot(grid, bulk_share * mp, color=FIT_COLOUR, lw=1.8, label="MP fit")
        ax.axvline(edge, color=FIT_COLOUR, ls="--", lw=1, label="bulk edge λ₊")
        if margin:  # in the report's eigenvalue units, like the edge
            ax.axvline(edge + margin, color=FIT_COLOUR, ls=":", lw=1, label="edge + TW margin")
        if spikes:
            top = evals[-spikes:]
            ax.plot(top, np.zeros_like(top), "v", color="#6a3d9a", ms=7, label=f"{spikes} spikes")
        what = f"linear ESD, MP fit, {spikes} spikes"
    rand_max = _metric(layer, "max_rand_eval")
    if rand_max is not None:
        ax.axvline(rand_max, color="tab:gray", ls="-.", lw=1, label="max randomised λ")
        traps = _metric(layer, "num_traps")
        if traps:
            what += f", {int(traps)} traps"
    phase = layer.metrics.get("phase")
    if isinstance(phase, str) and phase:
        what += f" [{phase}]"
    ax.set_xlim(lo, view)
    if beyond:
        ax.text(
            0.97,
            0.42,
            f"{beyond} eigenvalue{'s' * (beyond != 1)} beyond →\nup to λ_max = {evals.max():.3g}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"},
        )
    ax.set_xlabel("eigenvalue λ" + (" (zoomed to the bulk)" if beyond else ""))
    ax.set_ylabel("density")
    ax.legend(loc="upper right")
    _title(ax, layer, what)
    return ax


def randomized_evals(layer: LayerResult) -> np.ndarray | None:
    """Eigenvalues of the layer's shuffled (randomised) matrix when computed
    (``randomize=True``), else ``None``."""
    rand = layer.rand_evals
    return rand if rand is not None and rand.size else None


def plot_randomized(layer: LayerResult, ax: Axes | None = None, bins: int = 60) -> Axes:
    """The real ESD against the ESD of the same matrix with its entries shuffled (log λ axis).

    Raises
    ------
    InputError
        If ``layer`` has no eigenvalues or no randomised eigenvalues (analyse with the
        randomisation diagnostic on).
    MissingDependencyError
        If matplotlib is not installed.
    """
    evals = _evals(layer)
    rand = randomized_evals(layer)
    if rand is None:
        raise InputError(
            f"layer {layer.name!r} has no randomised eigenvalues; analyse with the randomisation "
            "diagnostic on to get them"
        )
    ax = _axes(ax)
    both = np.concatenate([evals, rand])
    both = both[both > FIT_EVAL_THRESHOLD]
    edges = np.geomspace(both.min(), both.max(), bins + 1)
    real_d, _ = np.histogram(evals[evals > FIT_EVAL_THRESHOLD], bins=edges, density=True)
    rand_d, _ = np.histogram(rand[rand > FIT_EVAL_THRESHOLD], bins=edges, density=True)
    ax.stairs(
        real_d, edges, fill=True, alpha=0.45, color=type_colour(layer.layer_type), label="real"
    )
    ax.stairs(rand_d, edges, lw=1.5, color="0.25", label="randomised")
    ax.set_xscale("log")
    _quiet_log_axes(ax)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.legend()
    _title(ax, layer, "real vs randomised ESD")
    return ax


def plot_xmin_scan(
    layer: LayerResult, ax: Axes | None = None, band: tuple[float, float] = ALPHA_BAND
) -> Axes:
    """KS distance D (left axis) and α (right axis) against the candidate xmin.

    Candidates and their α and D come from :func:`weightspectra.fitting.powerlaw.xmin_scan`, the
    fit's own computation (at most :data:`MAX_SCAN_CANDIDATES`, the fitted xmin always among
    them); ``band`` (the analysis' α thresholds, 2–6 by default) is shaded on the α axis.

    A flat D around the chosen xmin and a stable α mean a well-determined fit; a D curve with
    several similar minima at very different α means α is fragile.

    Returns
    -------
    Axes
        The axes of D; α is drawn on its twin (right) axes.

    Raises
    ------
    InputError
        If ``layer`` has no eigenvalues or too few for a fit.
    MissingDependencyError
        If matplotlib is not installed.
    """
    evals = _evals(layer)
    ax = _axes(ax)
    xmin_fit = _metric(layer, "xmin")
    try:
        xs, alphas, ds = xmin_scan(evals, max_candidates=MAX_SCAN_CANDIDATES, include=xmin_fit)
    except FitError as exc:
        raise InputError(f"layer {layer.name!r}: no xmin scan to plot ({exc})") from exc
    # Greys, not type colours: these curves are of the fit, not of a layer type.
    ax.plot(xs, ds, color="0.1", lw=1.3, label="D")
    ax.set_xscale("log")
    _quiet_log_axes(ax)
    ax.set_xlabel("candidate xmin")
    ax.set_ylabel("KS distance D (solid)")
    ax.set_ylim(0.0, min(1.0, float(np.nanmax(ds)) * 1.05 + 1e-3))
    twin = ax.twinx()
    shown = np.where(np.isfinite(alphas) & (alphas < 20), alphas, np.nan)
    twin.plot(xs, shown, color="0.45", ls="--", lw=1.3, label="α")
    twin.set_ylabel("α", color="0.35")
    twin.axhspan(*band, color="tab:green", alpha=0.08)
    if xmin_fit is not None:
        ax.axvline(xmin_fit, color=FIT_COLOUR, ls="--", lw=1)
    _title(ax, layer, "fit stability: D and α vs xmin")
    return ax


def layer_panels(layer: LayerResult) -> list[str]:
    """Names of the panels :func:`plot_layer` draws for ``layer`` (those its columns allow)."""
    panels = ["loglog", "linear"]
    if layer.evals is not None and np.count_nonzero(layer.evals > FIT_EVAL_THRESHOLD) >= 2:
        panels.append("xmin")
    if randomized_evals(layer) is not None:
        panels.append("randomized")
    return panels


_PANELS: dict[str, Callable[[LayerResult, Axes], Axes]] = {
    "loglog": plot_esd_loglog,
    "linear": plot_esd_linear,
    "randomized": plot_randomized,
}


def plot_layer(
    layer: LayerResult,
    axes: Sequence[Axes] | None = None,
    band: tuple[float, float] = ALPHA_BAND,
) -> list[Axes]:
    """Every plot of one layer side by side: log-log ESD with the fit, linear ESD (with MP fit),
    D and α against xmin, and real vs randomised ESD when present.

    Parameters
    ----------
    layer : LayerResult
        An analysed row.
    axes : sequence of Axes, optional
        One per panel (``len(layer_panels(layer))``); a new figure when omitted.

    Returns
    -------
    list of Axes

    Raises
    ------
    InputError
        If ``layer`` has no eigenvalues, or ``axes`` has the wrong length.
    MissingDependencyError
        If matplotlib is not installed.
    """
    _evals(layer)
    panels = layer_panels(layer)
    if axes is None:
        cols, rows = layer_grid(len(panels))
        fig, axs = new_figure(cols, rows, figsize=layer_figsize(len(panels)))
        axs = axs[: len(panels)]
        layout_layer_figure(fig)
    else:
        axs = list(axes)
        if len(axs) != len(panels):
            raise InputError(
                f"layer {layer.name!r} has {len(panels)} panels ({', '.join(panels)}); "
                f"got {len(axs)} axes; pass len(layer_panels(layer)) axes"
            )
    for ax, panel in zip(axs, panels, strict=True):
        if panel == "xmin":
            plot_xmin_scan(layer, ax, band=band)
        else:
            _PANELS[panel](layer, ax)
    return axs


def layer_grid(panels: int) -> tuple[int, int]:
    """Columns and rows of a figure of ``panels`` layer panels: one row up to three panels,
    two columns beyond (four panels of a readable size do not fit a 1400 px page in a row)."""
    if panels <= 3:
        return max(panels, 1), 1
    return 2, (panels + 1) // 2


def layer_figsize(panels: int) -> tuple[float, float]:
    """Size in inches of a figure of ``panels`` layer panels (:func:`layer_grid`)."""
    cols, rows = layer_grid(panels)
    return (4.3 * cols, 3.4 * rows)


def layout_layer_figure(fig: Figure) -> None:
    """Fixed margins for a grid of layer panels (a fixed layout is ~3× faster than a tight one,
    which matters for reports of hundreds of layers)."""
    specs = [ax.get_subplotspec() for ax in fig.axes]
    rows = len({spec.rowspan.start for spec in specs if spec is not None}) or 1
    inch = fig.get_figheight() / rows
    # Two title lines above and the axis label below take about 0.6 and 0.55 in per row.
    fig.subplots_adjust(
        left=0.075,
        right=0.93,
        bottom=0.55 / (inch * rows),
        top=1 - 0.6 / (inch * rows),
        wspace=0.45,
        hspace=1.3 / (inch - 1.3) if rows > 1 else 0.2,
    )
