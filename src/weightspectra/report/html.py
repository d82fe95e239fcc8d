"""A self-contained HTML report: one file, no network (plots inline as base64 PNG, CSS and a
little vanilla JavaScript for the sortable tables inline).

Pure string functions; matplotlib is needed only for the plots (``plots=False`` writes a report
without them and without matplotlib).
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from weightspectra import schema
from weightspectra.errors import InputError
from weightspectra.report.plots.model import alpha_band
from weightspectra.report.render import _not_analysed, fmt_value
from weightspectra.report.results import Report
from weightspectra.schema import Value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Above this many analysed layers the per-layer plots start collapsed.
OPEN_LAYER_PLOTS = 60
#: Resolution of embedded PNGs (modest: a report of hundreds of layers stays a few MB).
DEFAULT_DPI = 72

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;
max-width:1400px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em}.muted{color:#666;font-size:.9em}
table.ws{border-collapse:collapse;font-size:.82em;margin:.5em 0}
table.ws th,table.ws td{border:1px solid #ddd;padding:2px 6px;white-space:nowrap}
table.ws td.num{text-align:right;font-variant-numeric:tabular-nums}
table.ws th{background:#f3f3f3;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th.asc::after{content:" ▲"}table.sortable th.desc::after{content:" ▼"}
tr.heavy td.alpha{background:#fde2c8}tr.under td.alpha{background:#f8d0d0}
tr.good td.alpha{background:#d8f0d8}
.cards{display:flex;flex-wrap:wrap;gap:.6em}.card{border:1px solid #ddd;border-radius:6px;
padding:.5em .8em;min-width:9em}.card b{display:block;font-size:1.3em}
.plots img{max-width:100%;height:auto;margin:.3em}.scroll{overflow-x:auto;max-height:70vh}
details{margin:.3em 0}summary{cursor:pointer}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  var heads = table.querySelectorAll('thead th');
  heads.forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('asc');
      heads.forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        if (isNaN(nx) !== isNaN(ny)) { r = isNaN(nx) ? 1 : -1; return r; }
        return asc ? r : -r;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def esc(text: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body``, with the inline CSS and sorting script."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # An empty data-URI icon: the browser asks the file system for no favicon.
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )


def _sort_key(value: Value) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return repr(float(value)) if math.isfinite(value) else ""
    return str(value)


def table(
    columns: Sequence[str],
    rows: Sequence[dict[str, Value]],
    *,
    table_id: str,
    row_class: Callable[[dict[str, Value]], str] | None = None,
    sortable: bool = True,
) -> str:
    """An HTML table, sortable by clicking a header (numbers sort as numbers)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    lines = [
        f'<table class="ws{" sortable" if sortable else ""}" id="{esc(table_id)}">'
        f"<thead><tr>{head}</tr></thead><tbody>"
    ]
    for row in rows:
        cls = row_class(row) if row_class else ""
        cells = []
        for c in columns:
            v = row.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(
                f'<td class="{"num " if num else ""}{esc(c)}" '
                f'data-v="{esc(_sort_key(v))}">{esc(fmt_value(v))}</td>'
            )
        lines.append(f'<tr class="{esc(cls)}">{"".join(cells)}</tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inline (base64 data URI)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def figure_img(
    draw: Callable[[Axes], object],
    alt: str,
    figsize: tuple[float, float] = (6, 3.6),
    dpi: float = DEFAULT_DPI,
) -> str:
    """Draw on a fresh Agg figure with ``draw(ax)`` and return it as an inline ``<img>``.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    """
    from weightspectra.report.plots import figure_png, new_figure

    fig, (ax,) = new_figure(figsize=figsize, managed=False)
    draw(ax)
    return img(figure_png(fig, dpi), alt)


def _alpha_classifier(report: Report) -> Callable[[dict[str, Value]], str]:
    low, high = alpha_band(report)

    def alpha_class(row: dict[str, Value]) -> str:
        a = row.get("alpha")
        if not isinstance(a, (int, float)) or not math.isfinite(a):
            return "nofit"
        if a < low:
            return "heavy"
        if a > high:
            return "under"
        return "good"

    return alpha_class


READING = (
    "<p><b>How to read α</b> (the power-law exponent of each layer's eigenvalue tail): "
    "2–4 is typical of well-trained layers (2 is the ideal of the latest theory); below 2 the "
    "spectrum is very heavy-tailed (possibly over-fit, or a few dominant directions); above 6 "
    "the layer is weakly correlated, under-trained or random-like, and above 8 the fit means "
    "little. <b>Comparing models</b> within one series (same architecture family, or "
    "checkpoints of one run): smaller mean <code>alpha_weighted</code>, "
    "<code>log_alpha_norm</code> and <code>log_spectral_norm</code> go with better models; "
    "mean α compares models of the same depth only. These are data-free indicators, not "
    "accuracies.</p>"
)


def _summary_section(report: Report) -> str:
    s = report.summary
    low, high = alpha_band(report)
    cards = [
        ("analysed", s.get("num_layers", 0)),
        ("skipped", s.get("num_skipped", 0)),
        ("failed", s.get("num_failed", 0)),
        ("fits failed", s.get("num_fit_failed", 0)),
    ]
    cards += [(k, v) for k, v in s.items() if not k.startswith("num_")]
    body = "".join(f'<div class="card">{esc(k)}<b>{esc(fmt_value(v))}</b></div>' for k, v in cards)
    alpha = s.get("alpha")
    verdict = ""
    if isinstance(alpha, (int, float)):
        if alpha < low:
            verdict = f"very heavy-tailed on average (below {low:g})"
        elif alpha <= 4.0:
            verdict = f"in the {low:g}–4 range of well-trained layers"
        elif alpha <= high:
            verdict = f"between 4 and {high:g}: trained, with weaker correlations than 2–4"
        else:
            verdict = f"above {high:g}: weakly trained or random-like on average"
        verdict = f"<p>Mean α = {alpha:.2f}: {verdict}.</p>"
    return f'<h2>Summary</h2><div class="cards">{body}</div>{verdict}{READING}'


def _glance_section(report: Report) -> str:
    # The counts are the stored model diagnostics; layers without a warning are counted here.
    diag = report.diagnostics
    warnings: Counter[str] = Counter(dict(diag.get("warning_counts", {})))
    unflagged = sum(1 for r in report.analysed if not r.metrics.get("warning"))
    if unflagged:
        warnings["none"] = unflagged
    phases: Counter[str] = Counter(dict(diag.get("phase_counts", {})))
    parts = ["<h2>At a glance</h2>"]
    items = "".join(
        f"<li><b>{esc(k)}</b>: {n} layer{'s' * (n != 1)}</li>" for k, n in warnings.most_common()
    )
    parts.append(f"<p>Warnings:</p><ul>{items}</ul>")
    if phases:
        items = "".join(f"<li><b>{esc(k)}</b>: {n}</li>" for k, n in phases.most_common())
        parts.append(f"<p>Phases of training:</p><ul>{items}</ul>")
    flagged = [
        r
        for r in report.analysed
        if isinstance(r.metrics.get("warning"), str) and r.metrics.get("warning")
    ]
    if flagged:
        items = "".join(
            f"<li>{esc(r.name)}: {esc(r.metrics.get('warning'))} "
            f"(α = {esc(fmt_value(r.metrics.get('alpha')))})</li>"
            for r in flagged[:50]
        )
        more = f"<li>… and {len(flagged) - 50} more</li>" if len(flagged) > 50 else ""
        parts.append(
            f"<details><summary>Layers with a warning ({len(flagged)})</summary>"
            f"<ul>{items}{more}</ul></details>"
        )
    extra = _not_analysed(report)
    if extra:
        items = "".join(f"<li>{esc(line.strip())}</li>" for line in extra)
        parts.append(f"<details><summary>Not analysed</summary><ul>{items}</ul></details>")
    return "".join(parts)


def _layer_columns(rows: Sequence[dict[str, Value]]) -> list[str]:
    cols = ["layer_id", "name", "layer_type", "N", "M", "num_evals"]
    cols += [c for c in schema.html_columns() if c not in cols and any(c in r for r in rows)]
    return cols


def _model_plots(report: Report, dpi: float) -> str:
    from weightspectra.report.plots import (
        plot_alpha_histogram,
        plot_correlation_flow,
        plot_metric_depth,
    )

    has_alpha = any(isinstance(r.metrics.get("alpha"), (int, float)) for r in report.analysed)
    if not report.analysed:
        return ""
    figs = []
    if has_alpha:
        figs.append(
            figure_img(lambda ax: plot_correlation_flow(report, ax), "correlation flow", dpi=dpi)
        )
        figs.append(
            figure_img(lambda ax: plot_alpha_histogram(report, ax), "alpha histogram", dpi=dpi)
        )
    figs.append(
        figure_img(
            lambda ax: plot_metric_depth(report, "log_spectral_norm", ax),
            "log spectral norm by depth",
            dpi=dpi,
        )
    )
    return f'<h2 id="model-plots">Model plots</h2><div class="plots">{"".join(figs)}</div>'


def _layer_plots(report: Report, dpi: float, max_layers: int | None) -> str:
    from weightspectra.report.plots import (
        figure_png,
        layer_figsize,
        layer_panels,
        layout_layer_figure,
        new_figure,
        plot_layer,
    )

    rows = report.analysed
    shown = rows if max_layers is None else rows[:max_layers]
    opened = " open" if len(rows) <= OPEN_LAYER_PLOTS else ""
    parts = [
        '<h2>Layer spectra</h2><p class="muted">Per layer: the ESD on log-log axes with the '
        "fitted power law (xmin dashed); on linear axes (with the MP fit, bulk edge and "
        "spikes when computed); the KS distance D and α for every candidate xmin (a flat, "
        "low D near the chosen xmin means a stable fit); real vs randomised ESD when "
        "computed.</p>"
    ]
    for k, row in enumerate(shown):
        n_panels = len(layer_panels(row))
        fig, axs = new_figure(n_panels, 1, figsize=layer_figsize(n_panels), managed=False)
        layout_layer_figure(fig)
        plot_layer(row, axs, band=alpha_band(report))
        alpha = fmt_value(row.metrics.get("alpha"))
        parts.append(
            f'<details class="layer" id="layer-{k}"{opened}><summary>{esc(row.name)} '
            f'(α = {esc(alpha)})</summary><div class="plots">'
            f"{img(figure_png(fig, dpi, tight=False), f'spectra of {row.name}')}"
            "</div></details>"
        )
    if len(shown) < len(rows):
        parts.append(
            f'<p class="muted">Plots of the first {len(shown)} of {len(rows)} layers '
            "shown (max_layer_plots).</p>"
        )
    return "\n".join(parts)


def report_html(
    report: Report,
    *,
    title: str | None = None,
    plots: bool = True,
    dpi: float = DEFAULT_DPI,
    max_layer_plots: int | None = None,
) -> str:
    """The HTML text of a self-contained report of one analysis.

    Parameters
    ----------
    report : Report
        From :func:`weightspectra.analyze`.
    title : str, optional
        Page title (default: the source analysed).
    plots : bool, default True
        Embed the model-level and per-layer plots (needs matplotlib).
    dpi : float, default 72
        Resolution of the embedded PNGs.
    max_layer_plots : int, optional
        Plot at most this many layers (all by default); the table always has every layer.

    Returns
    -------
    str
        A complete HTML document with no external reference.

    Raises
    ------
    InputError
        If ``report`` is not a :class:`Report`.
    MissingDependencyError
        If ``plots`` is true and matplotlib is not installed.
    """
    if not isinstance(report, Report):
        raise InputError(
            f"expected a weightspectra Report (from ws.analyze), got {type(report).__name__}"
        )
    title = title or f"weightspectra report: {report.source}"
    rows = report.rows()
    cols = _layer_columns(rows)
    low, high = alpha_band(report)
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">weightspectra {esc(report.version)} · source {esc(report.source)} · '
        f"options {esc(', '.join(f'{k}={v}' for k, v in report.options.items()))}</p>",
        _summary_section(report),
        _glance_section(report),
        f'<h2>Layers ({len(rows)})</h2><p class="muted">Click a header to sort. α cells: '
        f"green {low:g}–{high:g}, orange below {low:g}, red above {high:g}.</p>",
        '<div class="scroll">'
        + table(cols, rows, table_id="layers", row_class=_alpha_classifier(report))
        + "</div>",
    ]
    if plots:
        parts.append(_model_plots(report, dpi))
        parts.append(_layer_plots(report, dpi, max_layer_plots))
    return page(title, "\n".join(parts))


def write_html(text: str, path: str | Path) -> Path:
    """Write an HTML document to ``path`` (parents created); returns the path.

    Raises
    ------
    OSError
        If the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
