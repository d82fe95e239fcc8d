"""Text renderings of a report: aligned table, CSV, JSON, markdown. Pure string functions."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from weightspectra import schema
from weightspectra.enums import Status, parse_enum
from weightspectra.report.results import LayerResult, Report
from weightspectra.schema import ID_COLUMNS, Value


class Format(str, Enum):
    """Output formats of :func:`render`."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    MARKDOWN = "markdown"


#: Layers whose power-law fit failed listed by name (with the cause) under the summary; the rest
#: are counted.
MAX_FIT_FAILURES_LISTED = 20


def table_columns(rows: list[dict[str, Value]]) -> list[str]:
    """The terminal table's columns (:func:`weightspectra.schema.table_columns`) that these
    rows have (the identity columns always)."""
    return [c for c in schema.table_columns() if c in ID_COLUMNS or any(c in r for r in rows)]


def _header(name: str) -> str:
    col = schema.find(name)
    return col.header if col is not None else name


def _is_left(name: str) -> bool:
    col = schema.find(name)
    return col is not None and col.left


def fmt_value(value: Value) -> str:
    """Compact, stable text form of a cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def csv_columns(rows: list[dict[str, Value]]) -> list[str]:
    """Identity columns first, then every column the rows have, in schema order."""
    present = [key for row in rows for key in row]
    return schema.ordered([*ID_COLUMNS, *present])


def to_csv(report: Report, include: str = "analysed") -> str:
    """Every column of every row, ``repr``-exact floats (round-trips through pandas)."""
    rows = report.rows(include)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def grid_widths(header: list[str], body: list[list[str]]) -> list[int]:
    """Width of each column of an aligned text grid (:func:`_grid`)."""
    return [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]


#: What separates the columns of an aligned text grid.
GRID_SEP = "  "


def _grid(header: list[str], body: list[list[str]], left: set[int]) -> list[str]:
    widths = grid_widths(header, body)

    def line(cells: list[str]) -> str:
        return GRID_SEP.join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]


def _not_analysed(report: Report) -> list[str]:
    """Lines summarising skipped and failed rows: routine skips counted, others listed."""
    routine: Counter[str] = Counter()
    listed: list[LayerResult] = []
    for r in report.layers:
        if r.status is Status.SKIPPED and r.reason_code.routine:
            routine[r.reason_code.routine] += 1
        elif r.status in (Status.SKIPPED, Status.FAILED):
            listed.append(r)
    lines = []
    if routine:
        parts = ", ".join(f"{n} {what}" for what, n in routine.items())
        lines.append(f"Not analysed by rule: {parts}.")
    for r in listed:
        lines.append(f"  {r.status.value:7s} {r.name}: {r.reason}")
    return lines


def _summary_lines(report: Report) -> list[str]:
    s = report.summary
    if "num_planned" in s:
        return [
            f"Plan ({report.source}): {s['num_planned']} matrices to analyse, "
            f"{s['num_skipped']} tensors skipped"
        ]
    counts = (
        f"{s['num_layers']} analysed, {s['num_skipped']} skipped, "
        f"{s['num_failed']} failed, {s['num_fit_failed']} power-law fits failed"
    )
    lines = [f"Model summary ({report.source}): {counts}"]
    for key, value in s.items():
        if not key.startswith("num_"):
            lines.append(f"  {key:18s} {fmt_value(value)}")
    return lines + _diagnostic_lines(report)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.items())


def _diagnostic_lines(report: Report) -> list[str]:
    """Phases, warnings and scale collapse at a glance (empty when nothing was analysed)."""
    d = report.diagnostics
    lines = []
    if d.get("phase_counts"):
        lines.append(f"Phases: {_counts(d['phase_counts'])}.")
    if d.get("warning_counts"):
        lines.append(f"Warnings: {_counts(d['warning_counts'])}.")
    for item in d.get("scale_collapse", []):
        lines.append(
            f"Scale collapse: {item['name']} has log spectral norm "
            f"{fmt_value(item['log_spectral_norm'])} against {fmt_value(item['group_median'])} "
            f"for {item['layer_type']} layers of its shape"
        )
    failed = [r for r in report.analysed if isinstance(r.metrics.get("fit_error"), str)]
    for r in failed[:MAX_FIT_FAILURES_LISTED]:
        lines.append(f"No α for {r.name}: {r.metrics['fit_error']}")
    if len(failed) > MAX_FIT_FAILURES_LISTED:
        lines.append(f"... and {len(failed) - MAX_FIT_FAILURES_LISTED} more layers without α")
    return ["", *lines] if lines else []


@dataclass(frozen=True)
class TableCells:
    """The cells of the terminal table before they are aligned: its column names, header,
    body (text cells, one list per row), the rows they came from, and the left-aligned
    columns. :func:`to_table` aligns them; a colour renderer finds each cell by
    :meth:`spans`."""

    columns: list[str]
    header: list[str]
    body: list[list[str]]
    rows: list[dict[str, Value]]
    left: set[int]

    def spans(self) -> list[tuple[int, int]]:
        """(start, end) character offsets of each column within a line of the table."""
        out, pos = [], 0
        for w in grid_widths(self.header, self.body):
            out.append((pos, pos + w))
            pos += w + len(GRID_SEP)
        return out


def table_cells(report: Report, include: str = "analysed") -> TableCells:
    """The cells of :func:`to_table`'s layer table."""
    rows = report.rows(include)
    cols = table_columns(rows)
    if include == "all":
        cols += ["status", "reason"]
    return TableCells(
        columns=cols,
        header=[_header(c) for c in cols],
        body=[[fmt_value(r.get(c)) for c in cols] for r in rows],
        rows=rows,
        left={i for i, c in enumerate(cols) if _is_left(c)},
    )


def to_table(report: Report, include: str = "analysed") -> str:
    """Aligned text table of the main columns, the model summary, and what was not analysed."""
    cells = table_cells(report, include)
    rows = cells.rows
    out = _grid(cells.header, cells.body, cells.left) if rows else ["(no layer was analysed)"]
    out += ["", *_summary_lines(report)]
    extra = _not_analysed(report)
    if extra:
        out += ["", *extra]
    return "\n".join(out) + "\n"


def to_markdown(report: Report, include: str = "analysed") -> str:
    """GitHub-flavoured markdown: the layer table, then the summary table."""
    rows = report.rows(include)
    cols = table_columns(rows)
    lines = [f"## weightspectra report: {report.source}", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if _is_left(c) else "---:" for c in cols) + "|")
    for r in rows:
        lines.append(
            "| " + " | ".join(fmt_value(r.get(c)).replace("|", "\\|") for c in cols) + " |"
        )
    lines += ["", "| summary | value |", "|---|---:|"]
    lines += [f"| {k} | {fmt_value(v)} |" for k, v in report.summary.items()]
    extra = _not_analysed(report)
    if extra:
        lines += ["", *(f"- {ln.strip()}" for ln in extra)]
    return "\n".join(lines) + "\n"


def render(report: Report, fmt: Format | str = Format.TABLE, include: str = "analysed") -> str:
    """Render ``report`` as text in ``fmt`` (table, csv, json or markdown)."""

    fmt = parse_enum(Format, fmt, "format")
    if fmt is Format.CSV:
        return to_csv(report, include)
    if fmt is Format.JSON:
        return report.to_json() + "\n"
    if fmt is Format.MARKDOWN:
        return to_markdown(report, include)
    return to_table(report, include)
