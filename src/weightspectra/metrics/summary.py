"""Model-level summary: means of per-layer metrics over analysed layers (metrics.md §4)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from weightspectra import schema

#: The built-in columns averaged into the model summary, in display order (declared in
#: :mod:`weightspectra.schema`; registered columns may add to them).
SUMMARY_COLUMNS = schema.summary_columns()


def model_summary(rows: Iterable[Mapping[str, object]]) -> dict[str, float | int]:
    """Mean of each summary column over analysed layers, and layer counts.

    Layers whose power-law fit failed carry no α and are left out of the α-based means (the
    peer averages them in as −1); they are counted in ``num_fit_failed``.

    Parameters
    ----------
    rows : iterable of mappings
        One mapping per report row, with at least ``status`` and the metric columns.

    Returns
    -------
    dict
        ``num_layers`` (analysed), ``num_skipped``, ``num_failed``, ``num_fit_failed``, and the
        mean of every summary column (:func:`weightspectra.schema.summary_columns`) present in
        at least one analysed row.
    """
    columns = schema.summary_columns()
    counts = {"num_layers": 0, "num_skipped": 0, "num_failed": 0, "num_fit_failed": 0}
    sums: dict[str, float] = {}
    ns: dict[str, int] = {}
    for row in rows:
        status = row.get("status")
        if status == "skipped":
            counts["num_skipped"] += 1
            continue
        if status == "failed":
            counts["num_failed"] += 1
            continue
        if status == "planned":
            counts["num_planned"] = counts.get("num_planned", 0) + 1
            continue
        if status != "ok":
            continue
        counts["num_layers"] += 1
        if row.get("alpha") is None:
            counts["num_fit_failed"] += 1
        for col in columns:
            value = row.get(col)
            if isinstance(value, (int, float)) and math.isfinite(value):
                sums[col] = sums.get(col, 0.0) + float(value)
                ns[col] = ns.get(col, 0) + 1
    out: dict[str, float | int] = dict(counts)
    for col in columns:
        if ns.get(col):
            out[col] = sums[col] / ns[col]
    return out
