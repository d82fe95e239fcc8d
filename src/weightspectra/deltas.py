"""What :func:`weightspectra.analyze` does with ``base=``: the delta or merged source, and the
true-rank check of a delta's rows.

A fine-tune against its base gives ``W − W_base``
(:func:`~weightspectra.sources.delta.delta_source`); a PEFT adapter against its base gives the
merged ``W + ΔW`` (:func:`~weightspectra.sources.peft.merge_adapter`). A delta (or an adapter's
``ΔW``) is often of low rank: a row with fewer non-zero eigenvalues than ``min_evals`` keeps its
norms, its rank and its ESD, but no power-law fit (``warning`` is ``low-rank``, ``fit_error``
says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from weightspectra import schema
from weightspectra.report.results import LayerResult
from weightspectra.sources.base import Source
from weightspectra.sources.delta import DeltaSource, delta_source
from weightspectra.sources.peft import AdapterSource, merge_adapter

#: The ``warning`` of a low-rank delta row.
LOW_RANK = "low-rank"


def with_base(source: Source, base: Source) -> Source:
    """The source :func:`weightspectra.analyze` analyses for ``model`` with ``base``: a PEFT
    adapter merged into the base, anything else as its difference from the base."""
    if isinstance(source, AdapterSource):
        return merge_adapter(source, base)
    return delta_source(source, base)


def _fit_columns() -> tuple[str, ...]:
    return tuple(c.name for c in schema.columns() if c.group is schema.Group.FIT)


def flag_low_rank(
    source: Source, rows: Sequence[LayerResult], min_evals: int
) -> tuple[LayerResult, ...]:
    """Rows of ``source`` with the fits of low-rank delta rows removed and flagged.

    Only a :class:`~weightspectra.sources.delta.DeltaSource` (a delta or an adapter's ``ΔW``)
    is checked; any other source's rows come back unchanged.
    """
    if not isinstance(source, DeltaSource) or not source.low_rank_check:
        return tuple(rows)
    fit = _fit_columns()
    out: list[LayerResult] = []
    for row in rows:
        rank = row.metrics.get("matrix_rank")
        if not row.ok or not isinstance(rank, int) or rank >= min_evals:
            out.append(row)
            continue
        metrics: dict[str, Any] = {k: (None if k in fit else v) for k, v in row.metrics.items()}
        metrics["alpha"] = None
        metrics["fit_error"] = (
            f"rank {rank} < min_evals={min_evals}: a low-rank update (of its {row.num_evals} "
            "eigenvalues only these are non-zero), so no power law is fitted; analyse it "
            "merged with its base (base=...) for a full spectrum"
        )
        metrics["warning"] = LOW_RANK
        out.append(replace(row, metrics=metrics))
    return tuple(out)
