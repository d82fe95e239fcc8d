"""A self-contained HTML page of a run: the summary, the pictures of
:mod:`~weightspectra.training.plots` (embedded PNG), the alarms and the last step's layers."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from weightspectra.training import plots
from weightspectra.training.render import _num
from weightspectra.training.run import Run

__all__ = ["run_html", "write_run_html"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.meta { color: #555; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def run_html(run: Run, *, title: str | None = None, dpi: float = 90) -> str:
    """The page as a string.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    """
    steps = run.step_numbers
    config = run.meta.get("config", {})
    head = title or f"weightspectra run: {run.path.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(head)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(head)}</h1>",
        f'<p class="meta">{html.escape(str(run.path))} · {config.get("producer", "?")} · '
        f"{len(steps)} steps recorded"
        + (f" ({steps[0]} … {steps[-1]})" if steps else "")
        + f" · {len(run.layer_names)} layers · precision {run.options.get('precision')}</p>",
    ]
    if steps:
        pictures = [
            ("α per layer and step", plots.alpha_heatmap(run)),
            ("α against step", plots.alpha_lines(run)),
            ("Correlation flow over training", plots.correlation_flow(run)),
            ("Phase per layer and step", plots.phase_map(run)),
            ("MP soft rank and stable rank", plots.rank_lines(run)),
        ]
        scalars = plots.scalar_lines(run)
        if scalars is not None:
            pictures.append(("Logged training numbers", scalars))
        for caption, fig in pictures:
            parts.append(f"<h2>{html.escape(caption)}</h2>")
            parts.append(_img(plots.figure_png(fig, dpi), caption))
    parts.append(f"<h2>Alarms ({len(run.events)})</h2>")
    if run.events:
        parts.append(
            "<table><tr><th>first step</th><th>kind</th><th>layer</th><th>detail</th></tr>"
        )
        for a in run.events:
            parts.append(
                f'<tr><td class="num">{a.step}</td><td>{html.escape(a.kind.value)}</td>'
                f"<td>{html.escape(a.layer)}</td><td>{html.escape(a.detail)}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    if steps:
        last = [r for r in run.layers if int(r["step"]) == steps[-1]]
        parts.append(f"<h2>Layers at step {steps[-1]}</h2>")
        columns = ("alpha", "phase", "mp_softrank", "stable_rank", "num_spikes", "num_traps")
        parts.append(
            "<table><tr><th>layer</th>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
        )
        for r in last:
            cells = []
            for c in columns:
                v = r.get(c)
                text = _num(v, ".3g") if not isinstance(v, str) else v
                cells.append(f'<td class="num">{html.escape(text)}</td>')
            parts.append(f"<tr><td>{html.escape(str(r['name']))}</td>{''.join(cells)}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_run_html(
    run: Run, path: str | os.PathLike[str], *, title: str | None = None, dpi: float = 90
) -> Path:
    """Write :func:`run_html` to ``path`` (folders created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(run_html(run, title=title, dpi=dpi), encoding="utf-8")
    return target
