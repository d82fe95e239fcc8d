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
    MAX_SCAN_CANDIDATES,
    _axes,
    _evals,
    _metric,
    new_figure,
)
from weightspectra.report.results import LayerResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _quiet_log_axes(ax: Axes) -> None:
    # Minor tick labels of log axes are mathtext, slow to lay out and rarely read: left out.
    from matplotlib.ticker import NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_formatter(NullFormatter())


def _title(ax: Axes, layer: LayerResult, what: str) -> None:
    name = layer.name if len(layer.name) <= 48 else "…" + layer.name[-47:]
    ax.set_title(f"{name}\n{what}", fontsize=8)


def plot_esd_loglog(layer: LayerResult, ax: Axes | None = None, bins: int = 60) -> Axes:
    """The ESD on log-log axes (density), the fitted power law over its tail, xmin marked.

    Parameters
    ----------
    layer : LayerResult
        An analysed row (``report.analysed[i]``).
    ax : Axes, optional
        Where to draw; a new figure when omitted.
    bins : int, default 60
        Logarithmically spaced histogram bins.

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
    pos = evals[evals > FIT_EVAL_THRESHOLD]
    if pos.size < 2 or pos[-1] <= pos[0]:
        ax.text(0.5, 0.5, "too few distinct eigenvalues", ha="center", transform=ax.transAxes)
        return ax
    edges = np.geomspace(pos[0], pos[-1], bins + 1)
    counts, _ = np.histogram(pos, edges)
    density = counts / (pos.size * np.diff(edges))
    ax.stairs(
        np.where(density > 0, density, np.nan),
        edges,
        fill=True,
        alpha=0.5,
        color="tab:blue",
        label="ESD",
    )
    alpha, xmin = _metric(layer, "alpha"), _metric(layer, "xmin")
    if alpha is not None and xmin is not None and alpha > 1.0:
        tail = pos[pos >= xmin]
        grid = np.geomspace(xmin, pos[-1], 50)
        share = tail.size / pos.size
        ax.plot(
            grid,
            share * (alpha - 1.0) / xmin * (grid / xmin) ** (-alpha),
            color="tab:red",
            lw=1.5,
            label=f"power law α={alpha:.2f}",
        )
        ax.axvline(xmin, color="tab:red", ls="--", lw=1, label=f"xmin={xmin:.3g}")
        d = _metric(layer, "D")
        what = f"log-log ESD, α={alpha:.2f}" + (f", D={d:.3f}" if d is not None else "")
    else:
        what = "log-log ESD (power-law fit failed)"
    ax.set_xscale("log")
    ax.set_yscale("log")
    _quiet_log_axes(ax)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="lower left")
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


def plot_esd_linear(layer: LayerResult, ax: Axes | None = None, bins: int = 80) -> Axes:
    """The ESD on linear axes, with the MP density, the bulk edge and the spikes when fitted.

    Parameters
    ----------
    layer : LayerResult
        An analysed row.
    ax : Axes, optional
        Where to draw; a new figure when omitted.
    bins : int, default 80
        Histogram bins.

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
    counts, edges = np.histogram(evals, bins=bins, density=True)
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.5, label="ESD")
    edge = mp_edge(layer)
    what = "linear ESD"
    if edge is not None and edge > 0 and layer.M:
        spikes = int(_metric(layer, "num_spikes") or 0)
        bulk_share = (evals.size - spikes) / evals.size
        grid = np.linspace(0.0, edge * 1.02, 400)
        density = mp_density_from_edge(grid, edge, max(layer.Q, 1.0))
        ax.plot(grid, bulk_share * density, color="tab:red", lw=1.5, label="MP fit")
        ax.axvline(edge, color="tab:red", ls="--", lw=1, label="bulk edge λ₊")
        margin = _metric(layer, "tw_margin")
        if margin:  # in the report's eigenvalue units, like the edge
            ax.axvline(edge + margin, color="tab:red", ls=":", lw=1, label="edge + TW margin")
        if spikes:
            top = evals[-spikes:]
            ax.plot(
                top,
                np.zeros_like(top),
                "v",
                color="tab:purple",
                ms=6,
                clip_on=False,
                label=f"{spikes} spikes",
            )
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
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper right")
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
    ax.stairs(real_d, edges, fill=True, alpha=0.5, color="tab:blue", label="real")
    ax.stairs(rand_d, edges, lw=1.5, color="tab:red", label="randomised")
    ax.set_xscale("log")
    _quiet_log_axes(ax)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
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
    ax.plot(xs, ds, color="tab:blue", lw=1.2, label="D")
    ax.set_xscale("log")
    _quiet_log_axes(ax)
    ax.set_xlabel("candidate xmin")
    ax.set_ylabel("KS distance D", color="tab:blue")
    ax.set_ylim(0.0, min(1.0, float(np.nanmax(ds)) * 1.05 + 1e-3))
    twin = ax.twinx()
    shown = np.where(np.isfinite(alphas) & (alphas < 20), alphas, np.nan)
    twin.plot(xs, shown, color="tab:orange", lw=1.2, label="α")
    twin.set_ylabel("α", color="tab:orange")
    twin.axhspan(*band, color="tab:green", alpha=0.08)
    if xmin_fit is not None:
        ax.axvline(xmin_fit, color="tab:red", ls="--", lw=1)
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
        fig, axs = new_figure(len(panels), 1, figsize=layer_figsize(len(panels)))
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


def layer_figsize(panels: int) -> tuple[float, float]:
    """Size in inches of a figure of ``panels`` layer panels side by side."""
    return (3.6 * panels, 2.9)


def layout_layer_figure(fig: Figure) -> None:
    """Fixed margins for a row of layer panels (a fixed layout is ~3× faster than a tight one,
    which matters for reports of hundreds of layers)."""
    fig.subplots_adjust(left=0.07, right=0.94, bottom=0.17, top=0.8, wspace=0.5)
