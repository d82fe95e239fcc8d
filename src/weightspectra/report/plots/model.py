"""Plots of a whole model (correlation flow, α histogram, any metric by depth) and of a
comparison of models (accuracy against a metric)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightspectra.errors import InputError
from weightspectra.report.plots._figure import (
    _TYPE_COLOURS,
    ALPHA_BAND,
    _axes,
    _metric,
    figure_png,
    new_figure,
    save_figure,
)
from weightspectra.report.plots.layer import (
    layer_figsize,
    layer_panels,
    layout_layer_figure,
    plot_layer,
)
from weightspectra.report.results import Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def alpha_band(report: Report) -> tuple[float, float]:
    """The α band of the analysis: (``over_trained_alpha``, ``under_trained_alpha``) as the
    user set them (2–6 by default)."""
    low = report.option("over_trained_alpha", ALPHA_BAND[0])
    high = report.option("under_trained_alpha", ALPHA_BAND[1])
    return float(low), float(high)


def _check_report(report: Report) -> None:
    if not isinstance(report, Report):
        raise InputError(
            f"expected a weightspectra Report (from ws.analyze), got {type(report).__name__}"
        )


def metric_by_depth(report: Report, metric: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Positions (index among analysed rows, model order), values and layer types of ``metric``.

    Rows without a finite value (a failed fit) are left out.

    Raises
    ------
    InputError
        If no analysed row has ``metric`` (the message lists the metrics that exist).
    """
    _check_report(report)
    pos, vals, types = [], [], []
    seen: set[str] = set()
    for i, row in enumerate(report.analysed):
        seen.update(k for k, v in row.metrics.items() if isinstance(v, (int, float)))
        value = _metric(row, metric)
        if value is not None:
            pos.append(i)
            vals.append(value)
            types.append(row.layer_type)
    if not vals:
        raise InputError(
            f"no analysed layer has a value for {metric!r}; numeric metrics present: "
            f"{', '.join(sorted(seen)) or 'none (nothing was analysed)'}"
        )
    return np.asarray(pos), np.asarray(vals), types


def _type_colour(layer_type: str, order: list[str]) -> str:
    if layer_type in _TYPE_COLOURS:
        return _TYPE_COLOURS[layer_type]
    if layer_type not in order:
        order.append(layer_type)
    return f"C{(order.index(layer_type) + 4) % 10}"


def plot_metric_depth(
    report: Report,
    metric: str = "alpha",
    ax: Axes | None = None,
    band: tuple[float, float] | None = None,
) -> Axes:
    """Any metric against depth (the position of the layer among analysed rows), coloured by
    layer type; ``band`` shades a range of values.

    Raises
    ------
    InputError
        If no analysed row has ``metric``.
    MissingDependencyError
        If matplotlib is not installed.
    """
    pos, vals, types = metric_by_depth(report, metric)
    ax = _axes(ax)
    if band is not None:
        ax.axhspan(*band, color="tab:green", alpha=0.1, label=f"{band[0]:g}–{band[1]:g}")
    ax.plot(pos, vals, color="0.75", lw=0.8, zorder=1)
    extra: list[str] = []
    for lt in dict.fromkeys(types):
        sel = np.array([t == lt for t in types])
        ax.scatter(pos[sel], vals[sel], s=16, color=_type_colour(lt, extra), label=lt, zorder=2)
    ax.set_xlabel("layer (order among analysed rows)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{metric} by depth", fontsize=9)
    return ax


def plot_correlation_flow(report: Report, ax: Axes | None = None) -> Axes:
    """Correlation flow: α against depth, coloured by layer type, the band between the
    analysis' ``over_trained_alpha`` and ``under_trained_alpha`` (2–6 by default) shaded.

    Raises
    ------
    InputError
        If no analysed layer has a fitted α.
    MissingDependencyError
        If matplotlib is not installed.
    """
    ax = plot_metric_depth(report, "alpha", ax, band=alpha_band(report))
    ax.set_title("correlation flow: α by depth", fontsize=9)
    ax.set_ylabel("α")
    return ax


def plot_alpha_histogram(report: Report, ax: Axes | None = None, bins: int = 20) -> Axes:
    """Histogram of the layers' α, the analysis' α band (2–6 by default) shaded and the mean
    marked.

    Raises
    ------
    InputError
        If no analysed layer has a fitted α.
    MissingDependencyError
        If matplotlib is not installed.
    """
    _, vals, _ = metric_by_depth(report, "alpha")
    ax = _axes(ax)
    ax.axvspan(*alpha_band(report), color="tab:green", alpha=0.1)
    ax.hist(vals, bins=bins, color="tab:blue", alpha=0.7)
    ax.axvline(
        float(vals.mean()), color="tab:red", ls="--", lw=1, label=f"mean α={vals.mean():.2f}"
    )
    ax.set_xlabel("α")
    ax.set_ylabel("layers")
    ax.legend(fontsize=7)
    ax.set_title(f"α of {vals.size} layers", fontsize=9)
    return ax


# ---------------------------------------------------------------------------------------------
# Per comparison
# ---------------------------------------------------------------------------------------------


def plot_metric_vs_accuracy(
    values: Sequence[float],
    accuracies: Sequence[float],
    *,
    labels: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    metric: str = "metric",
    accuracy: str = "accuracy",
    ax: Axes | None = None,
) -> Axes:
    """Accuracy against a metric, one colour and one least-squares line per group.

    Parameters
    ----------
    values, accuracies : sequence of float
        The metric and the accuracy of each model.
    labels : sequence of str, optional
        Model names written next to the points.
    groups : sequence of str, optional
        Series of each model (a line is fitted per series with at least two models).
    metric, accuracy : str
        Axis labels.
    ax : Axes, optional

    Returns
    -------
    Axes

    Raises
    ------
    InputError
        If the sequences differ in length.
    MissingDependencyError
        If matplotlib is not installed.
    """
    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    n = x.size
    if (
        y.size != n
        or (labels is not None and len(labels) != n)
        or (groups is not None and len(groups) != n)
    ):
        raise InputError(
            f"values, accuracies, labels and groups must have one entry per model; got "
            f"{n}, {y.size}, {None if labels is None else len(labels)}, "
            f"{None if groups is None else len(groups)}"
        )
    ax = _axes(ax)
    keys = list(groups) if groups is not None else ["all"] * n
    for k, group in enumerate(dict.fromkeys(keys)):
        sel = np.array([g == group for g in keys]) & np.isfinite(x) & np.isfinite(y)
        colour = f"C{k % 10}"
        ax.scatter(x[sel], y[sel], s=20, color=colour, label=group if groups else None)
        if sel.sum() >= 2 and np.ptp(x[sel]) > 0:
            slope, intercept = np.polyfit(x[sel], y[sel], 1)
            grid = np.linspace(x[sel].min(), x[sel].max(), 2)
            ax.plot(grid, slope * grid + intercept, color=colour, lw=1)
    if labels is not None:
        for xi, yi, lab in zip(x, y, labels, strict=True):
            ax.annotate(lab, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(metric)
    ax.set_ylabel(accuracy)
    if groups is not None:
        ax.legend(fontsize=7)
    ax.set_title(f"{accuracy} vs {metric}", fontsize=9)
    return ax


def save_report_plots(report: Report, directory: str | Path, dpi: float = 100) -> list[Path]:
    """Write the model plots and every analysed layer's plots as PNG files under ``directory``.

    Files: ``model_correlation_flow.png``, ``model_alpha_hist.png`` (when α was fitted), and
    ``layer{k:04d}_{name}.png`` for the k-th analysed row.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    OSError
        If the files cannot be written.
    """
    _check_report(report)
    out_dir = Path(directory)
    written: list[Path] = []
    has_alpha = any(_metric(r, "alpha") is not None for r in report.analysed)
    if has_alpha:
        for name, draw in (
            ("correlation_flow", plot_correlation_flow),
            ("alpha_hist", plot_alpha_histogram),
        ):
            fig, (ax,) = new_figure(figsize=(6, 3.5), managed=False)
            draw(report, ax)
            written.append(save_figure(fig, out_dir / f"model_{name}.png", dpi))
    for k, row in enumerate(report.analysed):
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in row.name)[:80]
        n_panels = len(layer_panels(row))
        fig, axs = new_figure(n_panels, 1, figsize=layer_figsize(n_panels), managed=False)
        layout_layer_figure(fig)
        plot_layer(row, axs, band=alpha_band(report))
        path = out_dir / f"layer{k:04d}_{safe}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(figure_png(fig, dpi, tight=False))
        written.append(path)
    return written
