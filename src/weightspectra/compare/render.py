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
    from weightspectra.compare import Comparison

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


def comparison_html(cmp: Comparison, *, plots: bool = True, dpi: float = 72) -> str:
    """Self-contained HTML page: models, rankings, fits, and accuracy-vs-metric plots (and the
    correlation flows of the models that have full reports).

    Raises
    ------
    MissingDependencyError
        If ``plots`` is true and matplotlib is not installed.
    """
    from weightspectra.report.html import esc, figure_img, page, table

    parts = [
        "<h1>weightspectra comparison</h1>",
        f'<p class="muted">{len(cmp.models)} models; ranking and fits use '
        "model-level means. Within a series, smaller α-weighted, log α-norm and log "
        "spectral norm go with better models.</p>",
        "<h2>Models</h2>",
        table(_model_columns(cmp), cmp.rows(), table_id="models"),
    ]
    items = "".join(f"<li>{esc(ln.strip())}</li>" for ln in _ranking_lines(cmp, 50))
    parts.append(f"<h2>Ranking (ascending)</h2><ul>{items}</ul>")
    if cmp.fits:
        note = esc(FIT_NOTE.format(acc=cmp.accuracy_name))
        parts.append(f'<h2>Fits</h2><p class="muted">{note}</p>')
        fit_rows = [{_FIT_HEADER.get(k, k): v for k, v in r.items()} for r in cmp.fit_rows()]
        parts.append(table([_FIT_HEADER.get(c, c) for c in FIT_COLUMNS], fit_rows, table_id="fits"))
    if plots and cmp.fits:
        from weightspectra.report.plots import plot_metric_vs_accuracy

        have = [m for m in cmp.models if m.accuracy is not None]
        groups = [m.series for m in have] if any(m.series for m in have) else None
        figs = []
        for metric in cmp.metrics:

            def draw(ax: Any, metric: str = metric) -> None:
                plot_metric_vs_accuracy(
                    [m.metrics.get(metric, math.nan) for m in have],
                    [float(m.accuracy or math.nan) for m in have],
                    labels=[m.name for m in have],
                    groups=groups,
                    metric=metric,
                    accuracy=str(cmp.accuracy_name),
                    ax=ax,
                )

            figs.append(figure_img(draw, f"{cmp.accuracy_name} vs {metric}", (5.2, 3.6), dpi))
        parts.append(
            f'<h2>Accuracy against each metric</h2><div class="plots">{"".join(figs)}</div>'
        )
    reports = [
        (m.name, m.report)
        for m in cmp.models
        if m.report is not None
        and any(isinstance(r.metrics.get("alpha"), float) for r in m.report.analysed)
    ]
    if plots and reports:
        from weightspectra.report.plots import ALPHA_BAND, metric_by_depth

        def flows(ax: Any) -> None:
            ax.axhspan(*ALPHA_BAND, color="tab:green", alpha=0.1)
            for name, report in reports:
                pos, vals, _ = metric_by_depth(report, "alpha")
                ax.plot(pos, vals, marker=".", lw=1, label=name)
            ax.set_xlabel("layer (order among analysed rows)")
            ax.set_ylabel("α")
            ax.legend(fontsize=7)
            ax.set_title("correlation flows", fontsize=9)

        parts.append(
            f'<h2>Correlation flows</h2><div class="plots">'
            f"{figure_img(flows, 'correlation flows', (7, 3.8), dpi)}</div>"
        )
    return page("weightspectra comparison", "\n".join(parts))
