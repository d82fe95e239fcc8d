"""Small shared table helpers for result objects: a pipe table and a pandas DataFrame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from weightspectra.errors import MissingDependencyError


def short_value(value: Any, digits: int = 4) -> str:
    """A cell in ``digits`` significant figures ('-' for None)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pipe_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4
) -> str:
    """Markdown pipe table of ``rows`` (columns: ``columns`` or the first row's keys).

    Examples
    --------
    >>> pipe_table([{"a": 1, "b": 0.123456}]).splitlines()
    ['| a | b      |', '|---|--------|', '| 1 | 0.1235 |']
    """
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0])
    cells = [cols] + [[short_value(r.get(c), digits) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def records_frame(records: Sequence[Mapping[str, Any]], purpose: str) -> Any:
    """``records`` as a :class:`pandas.DataFrame`.

    Raises
    ------
    MissingDependencyError
        If pandas is not installed (``purpose`` names the call in the message).
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError("pandas", "pandas", purpose) from exc
    return pd.DataFrame.from_records(list(records))
