"""The terminal table in colour: the same text as :func:`weightspectra.report.render.to_table`,
with α cells coloured by the analysis' band as in the HTML report (green inside, orange below,
red above), warnings and failures marked, and the verdict added in its tone.

Builds a :class:`rich.text.Text` and writes nothing: the CLI prints it when its output is a
terminal, and prints the plain text otherwise. rich is imported inside the function only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightspectra.report.render import table_cells, to_table
from weightspectra.report.results import Report
from weightspectra.report.verdict import Tone, alpha_band, alpha_class, verdict

if TYPE_CHECKING:
    from rich.text import Text

#: rich styles of the α classes (:func:`weightspectra.report.verdict.alpha_class`), the same
#: meaning as the HTML table's cell colours.
ALPHA_STYLES = {"good": "green", "heavy": "dark_orange", "under": "red", "nofit": "dim"}
#: rich styles of the verdict's tones.
TONE_STYLES = {
    Tone.GOOD: "bold green",
    Tone.MIXED: "bold dark_orange",
    Tone.POOR: "bold red",
    Tone.NONE: "bold",
}
_STATUS_STYLES = {"failed": "red", "skipped": "dim"}
_LINE_STYLES = {
    "Model summary": "bold",
    "Plan (": "bold",
    "Warnings:": "yellow",
    "Scale collapse:": "red",
    "No α for": "yellow",
    "Not analysed by rule:": "dim",
}


def styled_table(report: Report, include: str = "analysed") -> Text:
    """The terminal table of ``report`` with colour, and the verdict as a last line.

    The characters are those of :func:`~weightspectra.report.render.to_table` (plus the
    verdict); only styles are added.

    rich is a requirement of weightspectra, imported here only: ``import weightspectra`` and
    piped CLI runs never load it.
    """
    from rich.text import Text

    plain = to_table(report, include)
    text = Text(plain)
    lines = plain.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    cells = table_cells(report, include)
    band = alpha_band(report)
    spans = cells.spans()
    if cells.rows:
        text.stylize("bold", 0, len(lines[0]))
        for i, row in enumerate(cells.rows):
            base = starts[i + 2]
            for j, col in enumerate(cells.columns):
                style = None
                if col == "alpha":
                    style = ALPHA_STYLES[alpha_class(row.get(col), band)]
                elif col == "warning" and row.get(col):
                    style = "yellow"
                elif col == "status":
                    style = _STATUS_STYLES.get(str(row.get(col)))
                if style is not None:
                    text.stylize(style, base + spans[j][0], base + spans[j][1])
    summary_alpha = f"  {'alpha':18s} "
    for k, line in enumerate(lines):
        style = next((st for head, st in _LINE_STYLES.items() if line.startswith(head)), None)
        if line.startswith(summary_alpha):
            style = ALPHA_STYLES[alpha_class(report.summary.get("alpha"), band)]
        if style is not None:
            text.stylize(style, starts[k], starts[k] + len(line))
    if "num_planned" not in report.summary:
        v = verdict(report)
        text.append("\n")
        text.append(v.line(), style=TONE_STYLES[v.tone])
        text.append("\n")
    return text
