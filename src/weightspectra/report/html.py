"""A self-contained HTML report of one analysis, in the shared page layout
(:mod:`weightspectra.report.layout`): the verdict and the correlation flow and α histogram on the
first screen, then the warnings with their layers, the summary, the sortable layer table, and
the per-layer plots.

Pure string functions; matplotlib is needed only for the plots (``plots=False`` writes a report
without them and without matplotlib).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from weightspectra import schema
from weightspectra.errors import InputError
from weightspectra.report.layout import (
    DEFAULT_DPI,
    HERO_FIGSIZE,
    PALETTE,
    Picture,
    Section,
    cards,
    details,
    esc,
    figure_img,
    header_html,
    hero_html,
    img,
    options_html,
    page,
    page_html,
    source_html,
    source_name,
    table,
    verdict_html,
)
from weightspectra.report.render import _not_analysed, fmt_value
from weightspectra.report.results import Report
from weightspectra.report.verdict import (
    LABEL_WORDS,
    Verdict,
    alpha_band,
    alpha_class,
    row_alpha,
    verdict,
)
from weightspectra.schema import Value

__all__ = [
    "DEFAULT_DPI",
    "OPEN_LAYER_PLOTS",
    "esc",
    "figure_img",
    "img",
    "page",
    "report_html",
    "report_summary_html",
    "table",
    "write_html",
]

#: Above this many analysed layers the per-layer plots start collapsed.
OPEN_LAYER_PLOTS = 60


def _alpha_classifier(report: Report) -> Callable[[Mapping[str, Value]], str]:
    band = alpha_band(report)

    def row_class(row: Mapping[str, Value]) -> str:
        return alpha_class(row.get("alpha"), band)

    return row_class


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


def _verdict_text(v: Verdict, limit: int = 3) -> str:
    """The verdict as HTML: the headline in bold, then the layers to look at."""
    look = v.look_at(limit)
    return f"<b>{esc(v.headline)}</b>" + (f" {esc(look)}" if look else "")


def _mean_alpha_text(report: Report) -> str:
    s = report.summary
    low, high = alpha_band(report)
    alpha = s.get("alpha")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        return ""
    if alpha < low:
        what = f"very heavy-tailed on average (below {low:g})"
    elif alpha <= 4.0:
        what = f"in the {low:g}–4 range of well-trained layers"
    elif alpha <= high:
        what = f"between 4 and {high:g}: trained, with weaker correlations than 2–4"
    else:
        what = f"above {high:g}: weakly trained or random-like on average"
    return f"<p>Mean α = {alpha:.2f}: {what}.</p>"


def _summary_section(report: Report) -> str:
    s = report.summary
    items: list[tuple[str, Value]] = [
        ("analysed", s.get("num_layers", 0)),
        ("skipped", s.get("num_skipped", 0)),
        ("failed", s.get("num_failed", 0)),
        ("fits failed", s.get("num_fit_failed", 0)),
    ]
    items += [(k, v) for k, v in s.items() if not k.startswith("num_")]
    return cards(items) + _mean_alpha_text(report) + details("How to read α", READING)


def _warnings_section(report: Report, v: Verdict) -> str:
    """Each warning with its layers (the verdict's concerns), the phases, what was not
    analysed."""
    parts = []
    by_label: dict[str, list[str]] = {}
    for c in v.concerns:
        for label in c.labels:
            alpha = f" (α = {c.alpha:.2f})" if c.alpha is not None else ""
            by_label.setdefault(label, []).append(f"{c.name}{alpha}")
    if by_label:
        items = "".join(
            f'<li><b title="{esc(LABEL_WORDS.get(label, label))}">{esc(label)}</b> '
            f"({len(names)}): {esc(', '.join(names[:50]))}{' …' if len(names) > 50 else ''}</li>"
            for label, names in by_label.items()
        )
        parts.append(f'<ul class="tight" id="warnings">{items}</ul>')
    else:
        parts.append('<p id="warnings">No layer has a warning.</p>')
    unflagged = sum(1 for r in report.analysed if not r.metrics.get("warning"))
    if unflagged:
        parts.append(f'<p class="muted">{unflagged} analysed layers have no warning.</p>')
    phases: Counter[str] = Counter(dict(report.diagnostics.get("phase_counts", {})))
    if phases:
        items = ", ".join(f"{esc(k)} {n}" for k, n in phases.most_common())
        parts.append(f"<p>Phases of training: {items}.</p>")
    extra = _not_analysed(report)
    if extra:
        items = "".join(f"<li>{esc(line.strip())}</li>" for line in extra)
        parts.append(details("Not analysed", f'<ul class="tight">{items}</ul>'))
    return "".join(parts)


def _layer_columns(rows: Sequence[Mapping[str, Value]]) -> list[str]:
    cols = ["layer_id", "name", "layer_type", "N", "M", "num_evals"]
    cols += [c for c in schema.html_columns() if c not in cols and any(c in r for r in rows)]
    return cols


def _has_alpha(report: Report) -> bool:
    return any(row_alpha(r) is not None for r in report.analysed)


def _flow_picture(report: Report, dpi: float, figsize: tuple[float, float]) -> Picture:
    from weightspectra.report.plots import plot_correlation_flow

    low, high = alpha_band(report)
    return Picture(
        figure_img(
            lambda ax: plot_correlation_flow(report, ax),
            "correlation flow: α of each layer against its depth, coloured by layer type",
            figsize,
            dpi,
        ),
        f"Correlation flow: α by depth; the band {low:g}–{high:g} is shaded.",
    )


def _hero(report: Report, dpi: float) -> list[Picture]:
    """The first screen's pictures: correlation flow and α histogram."""
    from weightspectra.report.plots import plot_alpha_histogram

    if not _has_alpha(report):
        return []
    histogram = figure_img(
        lambda ax: plot_alpha_histogram(report, ax),
        "histogram of the layers' α, stacked by layer type",
        HERO_FIGSIZE,
        dpi,
    )
    return [
        _flow_picture(report, dpi, HERO_FIGSIZE),
        Picture(histogram, "α of all layers, stacked by layer type; the dashed line is the mean."),
    ]


def _model_plots(report: Report, dpi: float) -> str:
    from weightspectra.report.plots import plot_metric_depth

    if not report.analysed:
        return ""
    fig = figure_img(
        lambda ax: plot_metric_depth(report, "log_spectral_norm", ax),
        "log spectral norm of each layer against its depth",
        HERO_FIGSIZE,
        dpi,
    )
    return f'<div class="plots">{Picture(fig).html()}</div>'


def _layer_plots(report: Report, dpi: float, max_layers: int | None) -> str:
    from weightspectra.report.plots import (
        figure_png,
        layer_figsize,
        layer_grid,
        layer_panels,
        layout_layer_figure,
        new_figure,
        page_style,
        plot_layer,
    )

    rows = report.analysed
    shown = rows if max_layers is None else rows[:max_layers]
    opened = len(rows) <= OPEN_LAYER_PLOTS
    parts = [
        '<p class="muted">Per layer: the ESD on log-log axes as a log-binned density with the '
        "fitted power law (xmin dashed); on linear axes, zoomed to the bulk, with the MP fit, "
        "bulk edge and spikes when computed and the eigenvalues beyond the view counted; the KS "
        "distance D and α for every candidate xmin (a flat, low D near the chosen xmin means a "
        "stable fit); real vs randomised ESD when computed. Colours follow the layer type.</p>"
    ]
    band = alpha_band(report)
    for k, row in enumerate(shown):
        n_panels = len(layer_panels(row))
        cols, grid_rows = layer_grid(n_panels)
        with page_style():
            fig, axs = new_figure(cols, grid_rows, figsize=layer_figsize(n_panels), managed=False)
            layout_layer_figure(fig)
            plot_layer(row, axs[:n_panels], band=band)
            png = figure_png(fig, dpi, tight=False, palette=PALETTE)
        alpha = fmt_value(row.metrics.get("alpha"))
        warning = row.metrics.get("warning")
        flag = f" · {esc(warning)}" if isinstance(warning, str) and warning else ""
        picture = img(png, f"spectra of {row.name}: log-log ESD, linear ESD, fit stability")
        parts.append(
            details(
                f'{esc(row.name)} <span class="muted">({esc(row.layer_type)}, α = '
                f"{esc(alpha)}{flag})</span>",
                f'<div class="plots wide">{picture}</div>',
                open_=opened,
                cls="layer",
                element_id=f"layer-{k}",
            )
        )
    if len(shown) < len(rows):
        parts.append(
            f'<p class="muted">Plots of the first {len(shown)} of {len(rows)} layers '
            "shown (max_layer_plots).</p>"
        )
    return "\n".join(parts)


def _header(report: Report, title: str | None) -> str:
    low, high = alpha_band(report)
    s = report.summary
    heading = esc(title) if title else f"weightspectra report: {source_html(report.source)}"
    meta = [
        f"{s.get('num_layers', len(report.analysed))} layers analysed",
        f"{s.get('num_skipped', len(report.skipped))} not analysed",
        f"α band {low:g}–{high:g}",
        f"weightspectra {esc(report.version)}",
    ]
    return header_html(heading, meta, options_html(report.options))


def report_html(
    report: Report,
    *,
    title: str | None = None,
    plots: bool = True,
    dpi: float = DEFAULT_DPI,
    max_layer_plots: int | None = None,
) -> str:
    """The HTML text of a self-contained report of one analysis.

    The first screen has the verdict (:func:`weightspectra.report.verdict.verdict`), the
    correlation flow and the α histogram; then come the warnings with their layers, the
    summary, the sortable layer table, the model plots and the per-layer plots.

    Parameters
    ----------
    report : Report
        From :func:`weightspectra.analyze`.
    title : str, optional
        Page title (default: ``weightspectra report:`` and the source's file name).
    plots : bool, default True
        Embed the model-level and per-layer plots (needs matplotlib).
    dpi : float, default 100
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
    v = verdict(report)
    rows = report.rows()
    low, high = alpha_band(report)
    table_html = (
        f'<p class="muted">Click a header to sort. α cells: green {low:g}–{high:g}, orange below '
        f'{low:g}, red above {high:g}.</p><div class="scroll">'
        + table(_layer_columns(rows), rows, table_id="layers", row_class=_alpha_classifier(report))
        + "</div>"
    )
    sections = [
        Section("glance", "Warnings", _warnings_section(report, v)),
        Section("summary", "Summary", _summary_section(report)),
        Section("layers-section", f"Layers ({len(rows)})", table_html),
    ]
    if plots:
        sections.append(Section("model-plots", "Model plots", _model_plots(report, dpi)))
        sections.append(
            Section("layer-spectra", "Layer spectra", _layer_plots(report, dpi, max_layer_plots))
        )
    pictures = _hero(report, dpi) if plots else []
    return page_html(
        title=title or f"weightspectra report: {source_name(report.source)}",
        header=_header(report, title),
        verdict=verdict_html(v.tone.value, _verdict_text(v)),
        hero=hero_html(pictures),
        sections=sections,
    )


def report_summary_html(report: Report, *, plot: bool = True, dpi: float = 80) -> str:
    """A compact HTML summary of a report for a notebook (``Report._repr_html_``): the
    verdict, the counts and means, and the correlation flow when matplotlib is installed.

    Raises
    ------
    InputError
        If ``report`` is not a :class:`Report`.
    """
    if not isinstance(report, Report):
        raise InputError(f"expected a weightspectra Report, got {type(report).__name__}")
    v = verdict(report)
    s = report.summary
    items: list[tuple[str, Value]] = [("analysed", s.get("num_layers", 0))]
    items += [(k, s[k]) for k in ("alpha", "alpha_weighted", "log_spectral_norm") if k in s]
    picture = ""
    if plot and _has_alpha(report):
        from weightspectra.errors import MissingDependencyError

        try:
            picture = _flow_picture(report, dpi, HERO_FIGSIZE).html()
        except MissingDependencyError:  # no matplotlib: the summary is still useful
            picture = ""
    return (
        f'<div class="weightspectra-summary"><style>{_scoped_css()}</style>'
        f"<p><b>weightspectra report</b>: {source_html(report.source)}</p>"
        f"{verdict_html(v.tone.value, _verdict_text(v), element_id='')}"
        f'{cards(items)}<div style="max-width:640px">{picture}</div>'
        '<p class="muted">report.to_html("report.html") writes the full report.</p></div>'
    )


def _scoped_css() -> str:
    """The page CSS rules a notebook summary needs, scoped to its own block."""
    rules = (
        ".verdict{margin:.4em 0;padding:.5em .8em;border-radius:6px;border-left:6px solid #999;"
        "background:#f4f4f4}.verdict.good{border-color:#2e7d32;background:#eef7ee}"
        ".verdict.mixed{border-color:#e08a00;background:#fdf4e6}"
        ".verdict.poor{border-color:#c62828;background:#fbecec}"
        ".cards{display:flex;flex-wrap:wrap;gap:.5em}.card{border:1px solid #ddd;"
        "border-radius:6px;padding:.3em .6em}.card b{display:block}"
        "figure{margin:0}figure img{width:100%;height:auto}.muted{color:#555;font-size:.9em}"
        ".src{border-bottom:1px dotted #888}"
    )
    return "".join(
        ".weightspectra-summary " + rule + "}" for rule in rules.split("}") if rule.strip()
    )


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
