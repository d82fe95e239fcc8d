"""Renderings of a :class:`~weightspectra.compare.Comparison`: text table, markdown, CSV, JSON,
and a self-contained HTML page. Pure string functions."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any

from weightspectra.errors import OptionError
from weightspectra.report.render import _grid, fmt_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from weightspectra.compare import Comparison, LinearFit
    from weightspectra.report.layout import Picture
    from weightspectra.report.results import Report

FORMATS = ("table", "markdown", "csv", "json")
FIT_COLUMNS = ("series", "metric", "n", "slope", "intercept", "rmse", "r2", "tau", "tau_p")
_FIT_HEADER = {"rmse": "RMSE", "r2": "R²", "tau": "Kendall τ", "tau_p": "p(τ)"}
FIT_NOTE = (
    "ordinary least squares of {acc} on each metric; RMSE = √(mean squared residual); "
    "Kendall τ-b with its two-sided p-value"
)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _ranking_lines(cmp: Comparison, limit: int = 12) -> list[str]:
    lines = []
    for metric, names in cmp.rankings.items():
        shown = " < ".join(names[:limit]) + (" < …" if len(names) > limit else "")
        lines.append(f"  {metric}: {shown}")
    return lines


def _model_columns(cmp: Comparison) -> list[str]:
    cols = ["model"]
    if any(m.series for m in cmp.models):
        cols.append("series")
    if cmp.accuracy_name is not None:
        cols.append(cmp.accuracy_name)
    return cols + list(cmp.metrics)


def to_table(cmp: Comparison) -> str:
    """Aligned text: models side by side, rankings, and the fits per series and metric."""
    cols = _model_columns(cmp)
    rows = cmp.rows()
    body = [[fmt_value(r.get(c)) for c in cols] for r in rows]
    out = [f"Models compared: {len(rows)}", *_grid(cols, body, {0, 1} if "series" in cols else {0})]
    out += ["", "Ranking by each metric (ascending):", *_ranking_lines(cmp)]
    if cmp.fits:
        out += ["", "Fit: " + FIT_NOTE.format(acc=cmp.accuracy_name)]
        header = [_FIT_HEADER.get(c, c) for c in FIT_COLUMNS]
        fbody = [[fmt_value(r[c]) for c in FIT_COLUMNS] for r in cmp.fit_rows()]
        out += _grid(header, fbody, {0, 1})
    elif cmp.accuracy_name is None:
        out += ["", "No accuracies given: no fits (use --accuracy, or a 'top1' column)."]
    return "\n".join(out) + "\n"


def to_markdown(cmp: Comparison) -> str:
    """GitHub-flavoured markdown of the same content as :func:`to_table`."""

    def md(cols: list[str], rows: list[list[str]]) -> list[str]:
        return [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---" for _ in cols) + "|",
            *("| " + " | ".join(r) + " |" for r in rows),
        ]

    cols = _model_columns(cmp)
    lines = ["## weightspectra comparison", ""]
    lines += md(cols, [[fmt_value(r.get(c)) for c in cols] for r in cmp.rows()])
    lines += ["", "### Ranking (ascending)", ""]
    lines += [f"- {ln.strip()}" for ln in _ranking_lines(cmp)]
    if cmp.fits:
        lines += ["", "### Fits", "", FIT_NOTE.format(acc=cmp.accuracy_name) + ".", ""]
        lines += md(
            [_FIT_HEADER.get(c, c) for c in FIT_COLUMNS],
            [[fmt_value(r[c]) for c in FIT_COLUMNS] for r in cmp.fit_rows()],
        )
    return "\n".join(lines) + "\n"


def to_csv(cmp: Comparison) -> str:
    """CSV of the fits when accuracies are known, else of the models (exact floats)."""
    rows = cmp.fit_rows() if cmp.fits else cmp.rows()
    cols = list(FIT_COLUMNS) if cmp.fits else _model_columns(cmp)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def render_comparison(cmp: Comparison, fmt: str = "table") -> str:
    """Render ``cmp`` as ``table``, ``markdown``, ``csv`` or ``json``.

    Raises
    ------
    OptionError
        On another format.
    """
    if fmt == "table":
        return to_table(cmp)
    if fmt == "markdown":
        return to_markdown(cmp)
    if fmt == "csv":
        return to_csv(cmp)
    if fmt == "json":
        return json.dumps(_json_safe(cmp.to_dict()), indent=1) + "\n"
    raise OptionError(
        f"format={fmt!r} is not valid for a comparison; choose one of {', '.join(FORMATS)}"
    )


#: R² of the best fit from which a metric "tracks" the accuracy well / partly.
GOOD_R2 = 0.7
FAIR_R2 = 0.4
#: Size in inches of one accuracy-vs-metric picture (three side by side on a 1400 px page).
FIT_FIGSIZE = (4.6, 3.5)


def best_fits(cmp: Comparison) -> list[LinearFit]:
    """Per series (``"all"`` first), the fit with the largest R² (finite ones only)."""
    from weightspectra.compare import ALL_SERIES

    best: dict[str, LinearFit] = {}
    for f in cmp.fits:
        if not math.isfinite(f.r2):
            continue
        if f.series not in best or f.r2 > best[f.series].r2:
            best[f.series] = f
    order = sorted(best, key=lambda k: (k != ALL_SERIES, k))
    return [best[k] for k in order]


def comparison_verdict(cmp: Comparison) -> tuple[str, str]:
    """The tone (``good``, ``mixed``, ``poor``, ``none``) and the one-line verdict of a
    comparison: which metric tracks the accuracy best, over all models and within each
    series."""
    n = len(cmp.models)
    if cmp.accuracy_name is None:
        return "none", (
            f"{n} models compared without accuracies: they are ranked by each metric below "
            "(give accuracies for fits)."
        )
    fits = best_fits(cmp)
    if not fits:
        return "none", f"Too few models with a {cmp.accuracy_name} for a fit (3 per series)."
    from weightspectra.compare import ALL_SERIES

    head, *rest = fits
    where = "all" if head.series == ALL_SERIES else head.series
    line = (
        f"{head.metric} tracks {cmp.accuracy_name} best over {where} {head.n} models "
        f"(R² {head.r2:.2f}, Kendall τ {head.tau:+.2f})."
    )
    if rest:
        within = "; ".join(f"{f.series}: {f.metric} (R² {f.r2:.2f})" for f in rest)
        line += f" Within each series: {within}."
    tone = "good" if head.r2 >= GOOD_R2 else "mixed" if head.r2 >= FAIR_R2 else "poor"
    return tone, line


def _reports(cmp: Comparison) -> list[tuple[str, Report]]:
    """The models with a full report in which some layer has a fitted α."""
    from weightspectra.report.verdict import row_alpha

    return [
        (m.name, m.report)
        for m in cmp.models
        if m.report is not None and any(row_alpha(r) is not None for r in m.report.analysed)
    ]


def _fit_pictures(cmp: Comparison, dpi: float) -> list[Picture]:
    from weightspectra.compare import ALL_SERIES
    from weightspectra.report.layout import Picture, figure_img
    from weightspectra.report.plots import plot_metric_vs_accuracy

    have = [m for m in cmp.models if m.accuracy is not None]
    groups = [m.series for m in have] if any(m.series for m in have) else None
    ranked = [f.metric for f in best_fits(cmp)]
    metrics = list(dict.fromkeys([*ranked, *cmp.metrics]))
    by_metric = {f.metric: f for f in cmp.fits if f.series == ALL_SERIES}
    pictures = []
    for metric in metrics:

        def draw(ax: Axes, metric: str = metric) -> None:
            plot_metric_vs_accuracy(
                [m.metrics.get(metric, math.nan) for m in have],
                [float(m.accuracy if m.accuracy is not None else math.nan) for m in have],
                labels=[m.name for m in have],
                groups=groups,
                metric=metric,
                accuracy=str(cmp.accuracy_name),
                ax=ax,
            )

        fit = by_metric.get(metric)
        caption = (
            f"{cmp.accuracy_name} against {metric}: R² {fit.r2:.2f}, τ {fit.tau:+.2f} over "
            f"{fit.n} models; one line per series."
            if fit is not None and math.isfinite(fit.r2)
            else f"{cmp.accuracy_name} against {metric}, one line per series."
        )
        alt = f"{cmp.accuracy_name} of each model against its {metric}, with least-squares lines"
        pictures.append(Picture(figure_img(draw, alt, FIT_FIGSIZE, dpi), caption))
    return pictures


def _overlay_picture(reports: list[tuple[str, Report]], dpi: float) -> Picture:
    from weightspectra.report.layout import Picture, figure_img
    from weightspectra.report.plots import plot_alpha_overlay
    from weightspectra.report.verdict import alpha_band

    band = alpha_band(reports[0][1])

    def draw(ax: Axes) -> None:
        plot_alpha_overlay(reports, ax, band=band)

    return Picture(
        figure_img(
            draw, "α of every layer of each model against its relative depth", FIT_FIGSIZE, dpi
        ),
        "α per layer of each model, overlaid by relative depth (0 = first, 1 = last layer).",
    )


def comparison_html(cmp: Comparison, *, plots: bool = True, dpi: float = 100) -> str:
    """Self-contained HTML page in the shared layout (:mod:`weightspectra.report.layout`):
    the verdict (which metric tracks the accuracy), then the accuracy-vs-metric fits and α per
    layer of each model overlaid by depth, then the tables of fits, models and rankings.

    Raises
    ------
    MissingDependencyError
        If ``plots`` is true and matplotlib is not installed.
    """
    from weightspectra.report.layout import (
        Section,
        esc,
        header_html,
        hero_html,
        page_html,
        table,
        verdict_html,
    )

    series = sorted({m.series for m in cmp.models if m.series})
    meta = [f"{len(cmp.models)} models"]
    if series:
        meta.append(f"{len(series)} series ({esc(', '.join(series))})")
    meta.append(f"accuracy: {esc(cmp.accuracy_name or 'none given')}")
    meta.append(f"{len(cmp.metrics)} metrics")
    tone, line = comparison_verdict(cmp)
    reports = _reports(cmp)
    pictures: list[Picture] = []
    note = ""
    if plots:
        fits = _fit_pictures(cmp, dpi) if cmp.fits else []
        overlay = [_overlay_picture(reports, dpi)] if reports else []
        # The best fit first, then the overlay, then the other metrics.
        pictures = fits[:1] + overlay + fits[1:]
        if not reports:
            note = (
                "α per layer is drawn for models given as models or saved reports (JSON); "
                "a CSV of per-model summaries has no layers."
            )
    sections = []
    if cmp.fits:
        fit_note = esc(FIT_NOTE.format(acc=cmp.accuracy_name))
        fit_rows = [{_FIT_HEADER.get(k, k): v for k, v in r.items()} for r in cmp.fit_rows()]
        sections.append(
            Section(
                "fits-section",
                "Fits",
                f'<p class="muted">{fit_note}</p><div class="scroll">'
                + table([_FIT_HEADER.get(c, c) for c in FIT_COLUMNS], fit_rows, table_id="fits")
                + "</div>",
            )
        )
    sections.append(
        Section(
            "models-section",
            "Models",
            '<p class="muted">Ranking and fits use model-level means. Within a series, smaller '
            "α-weighted, log α-norm and log spectral norm go with better models.</p>"
            '<div class="scroll">'
            + table(_model_columns(cmp), cmp.rows(), table_id="models")
            + "</div>",
        )
    )
    items = "".join(f"<li>{esc(ln.strip())}</li>" for ln in _ranking_lines(cmp, 50))
    sections.append(Section("ranking", "Ranking (ascending)", f'<ul class="tight">{items}</ul>'))
    return page_html(
        title="weightspectra comparison",
        header=header_html("weightspectra comparison", meta),
        verdict=verdict_html(tone, f"<b>{esc(line)}</b>"),
        hero=hero_html(pictures, note, min_width=400),
        sections=sections,
    )


def comparison_repr(cmp: Comparison) -> str:
    """Plain text for ``repr``: the models and the verdict."""
    names = ", ".join(cmp.names[:6]) + (", …" if len(cmp.names) > 6 else "")
    return (
        f"<weightspectra Comparison of {len(cmp.models)} models ({names})>\n"
        f"{comparison_verdict(cmp)[1]}"
    )


def comparison_summary_html(cmp: Comparison, *, plot: bool = True, dpi: float = 80) -> str:
    """A compact HTML summary for a notebook: the verdict and the best fit's picture (or the
    overlay of the models' α when there are no accuracies)."""
    from weightspectra.errors import MissingDependencyError
    from weightspectra.report.layout import esc, verdict_html

    tone, line = comparison_verdict(cmp)
    picture = ""
    if plot:
        try:
            if cmp.fits:
                picture = _fit_pictures(cmp, dpi)[0].html()
            elif reports := _reports(cmp):
                picture = _overlay_picture(reports, dpi).html()
        except MissingDependencyError:  # no matplotlib: the verdict alone still helps
            picture = ""
    return (
        f"<div><p><b>weightspectra comparison</b> of {len(cmp.models)} models</p>"
        f"{verdict_html(tone, esc(line), element_id='')}"
        f'<div style="max-width:520px">{picture}</div>'
        '<p style="color:#555">cmp.to_html("cmp.html") writes the full page.</p></div>'
    )
