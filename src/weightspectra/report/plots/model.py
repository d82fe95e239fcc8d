"""Plots of a whole model (correlation flow, α histogram, any metric by depth) and of a
comparison of models (accuracy against a metric)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightspectra.errors import InputError
from weightspectra.report.plots._figure import (
    ALPHA_BAND,
    _axes,
    _metric,
    figure_png,
    new_figure,
    save_figure,
    type_colour,
)
from weightspectra.report.plots.layer import (
    layer_figsize,
    layer_grid,
    layer_panels,
    layout_layer_figure,
    plot_layer,
)
from weightspectra.report.results import Report
from weightspectra.report.verdict import alpha_band

if TYPE_CHECKING:
    from matplotlib.axes import Axes


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
    for lt in dict.fromkeys(types):
        sel = np.array([t == lt for t in types])
        ax.scatter(pos[sel], vals[sel], s=22, color=type_colour(lt), label=lt, zorder=2)
    ax.set_xlabel("layer (order among analysed rows)")
    ax.set_ylabel(metric)
    ax.legend(loc="best")
    ax.set_title(f"{metric} by depth")
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
    ax.set_title("correlation flow: α by depth")
    ax.set_ylabel("α")
    return ax


def plot_alpha_histogram(report: Report, ax: Axes | None = None, bins: int = 20) -> Axes:
    """Histogram of the layers' α, stacked by layer type (in the type colours of every plot),
    the analysis' α band (2–6 by default) shaded and the mean marked.

    Raises
    ------
    InputError
        If no analysed layer has a fitted α.
    MissingDependencyError
        If matplotlib is not installed.
    """
    _, vals, types = metric_by_depth(report, "alpha")
    ax = _axes(ax)
    ax.axvspan(*alpha_band(report), color="tab:green", alpha=0.1)
    kinds = list(dict.fromkeys(types))
    edges = np.histogram_bin_edges(vals, bins=bins)
    ax.hist(
        [vals[np.array([t == k for t in types])] for k in kinds],
        bins=edges.tolist(),
        stacked=True,
        color=[type_colour(k) for k in kinds],
        label=kinds,
        alpha=0.85,
    )
    ax.axvline(float(vals.mean()), color="0.15", ls="--", lw=1.2, label=f"mean α={vals.mean():.2f}")
    ax.set_xlabel("α")
    ax.set_ylabel("layers")
    ax.legend()
    ax.set_title(f"α of {vals.size} layers")
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
            ax.annotate(
                lab, (xi, yi), fontsize="x-small", xytext=(2, 2), textcoords="offset points"
            )
    ax.set_xlabel(metric)
    ax.set_ylabel(accuracy)
    if groups is not None:
        ax.legend()
    ax.set_title(f"{accuracy} vs {metric}")
    return ax


def plot_alpha_overlay(
    reports: Sequence[tuple[str, Report]],
    ax: Axes | None = None,
    band: tuple[float, float] = ALPHA_BAND,
) -> Axes:
    """α per layer of several models overlaid by relative depth (0 = first analysed layer,
    1 = last), one line per model; ``band`` is shaded.

    Depth is relative so that models of different depths share the axis (a 16-layer and a
    152-layer network are both drawn over [0, 1]).

    Parameters
    ----------
    reports : sequence of (str, Report)
        Label and report of each model (a comparison's models, or a run's checkpoints in order).
    ax : Axes, optional
    band : (float, float)
        The α band to shade (the analyses' thresholds; 2–6 by default).

    Returns
    -------
    Axes

    Raises
    ------
    InputError
        If ``reports`` is empty or no report has a fitted α.
    MissingDependencyError
        If matplotlib is not installed.
    """
    if not reports:
        raise InputError("plot_alpha_overlay needs at least one (label, report) pair")
    curves = []
    for label, report in reports:
        _check_report(report)
        try:
            pos, vals, _ = metric_by_depth(report, "alpha")
        except InputError:
            continue
        n = max(len(report.analysed) - 1, 1)
        curves.append((label, pos / n, vals))
    if not curves:
        raise InputError("no report of the comparison has a fitted α to draw")
    ax = _axes(ax)
    ax.axhspan(*band, color="tab:green", alpha=0.1, label=f"{band[0]:g}–{band[1]:g}")
    for k, (label, depth, vals) in enumerate(curves):
        ax.plot(depth, vals, marker=".", ms=5, lw=1.2, color=f"C{k % 10}", label=label)
    ax.set_xlabel("relative depth (first → last analysed layer)")
    ax.set_ylabel("α")
    ax.legend(loc="best", ncols=1 + len(curves) // 8)
    ax.set_title(f"α per layer of {len(curves)} models, by depth")
    return ax


def plot_alpha_over_steps(
    series: Mapping[str, Sequence[tuple[float, float]]],
    ax: Axes | None = None,
    *,
    layer_types: Mapping[str, str] | None = None,
    band: tuple[float, float] = ALPHA_BAND,
) -> Axes:
    """α of each layer over the steps of a run or checkpoint series, one thin line per layer
    (in the colour of its type when ``layer_types`` is given, grey otherwise) and the mean over
    layers at each step in bold; ``band`` is shaded.

    Parameters
    ----------
    series : mapping of str to sequence of (step, α)
        Per layer, its α at each step (the shape of ``Run.series("alpha")``); non-finite values
        are left out.
    ax : Axes, optional
    layer_types : mapping of str to str, optional
        Layer type of each layer (for the colours).
    band : (float, float)
        The α band to shade (2–6 by default).

    Returns
    -------
    Axes

    Raises
    ------
    InputError
        If no layer has a finite α at any step.
    MissingDependencyError
        If matplotlib is not installed.
    """
    curves: dict[str, np.ndarray] = {}
    by_step: dict[float, list[float]] = {}
    for name, points in series.items():
        pts = sorted((float(s), float(a)) for s, a in points if np.isfinite(a) and np.isfinite(s))
        if pts:
            curves[name] = np.asarray(pts, dtype=np.float64)
        for step, alpha in pts:
            by_step.setdefault(step, []).append(alpha)
    if not curves:
        raise InputError("no layer has a finite α at any step; nothing to draw")
    ax = _axes(ax)
    ax.axhspan(*band, color="tab:green", alpha=0.1, label=f"{band[0]:g}–{band[1]:g}")
    types = layer_types or {}
    labelled: set[str] = set()
    for name, xy in curves.items():
        kind = types.get(name)
        colour = type_colour(kind) if kind is not None else "0.6"
        label = kind if kind is not None and kind not in labelled else None
        if label is not None:
            labelled.add(label)
        ax.plot(xy[:, 0], xy[:, 1], color=colour, lw=0.8, alpha=0.6, label=label)
    steps = np.array(sorted(by_step))
    means = np.array([np.mean(by_step[step]) for step in sorted(by_step)])
    ax.plot(steps, means, color="0.1", lw=2.2, marker="o", ms=4, label="mean α")
    ax.set_xlabel("step")
    ax.set_ylabel("α")
    ax.legend(loc="best")
    ax.set_title(f"α of {len(curves)} layers over {steps.size} steps")
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
        cols, rows = layer_grid(n_panels)
        fig, axs = new_figure(cols, rows, figsize=layer_figsize(n_panels), managed=False)
        axs = axs[:n_panels]
        layout_layer_figure(fig)
        plot_layer(row, axs, band=alpha_band(report))
        path = out_dir / f"layer{k:04d}_{safe}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(figure_png(fig, dpi, tight=False))
        written.append(path)
    return written
