"""The peer's tables from weightspectra's reports: ``details`` and ``describe`` DataFrames, with
the peer's layer ids, short names, layer-type names and ``slice_id`` rows."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightspectra import schema
from weightspectra.errors import MissingDependencyError
from weightspectra.report.results import LayerResult, Report

if TYPE_CHECKING:
    import pandas as pd

#: Columns only the facade has, at their position among the peer's columns: the peer's short
#: ``name`` (ours becomes ``longname``), whether the ESD is kept, and the peer's ``status``.
_FACADE_ONLY = {"longname": 2, "has_esd": 9, "status": 30}


def _details_columns() -> tuple[str, ...]:
    cols = list(schema.peer_columns())
    for name, position in sorted(_FACADE_ONLY.items(), key=lambda item: item[1]):
        cols.insert(position, name)
    return tuple(cols)


#: The power-law fit's numeric columns among the peer's (NaN in ``details`` when a fit failed).
_FIT_NUMBERS = tuple(
    c.name
    for c in schema.columns()
    if c.group is schema.Group.FIT and c.dtype is not str and c.peer is not None
)

#: Columns of ``details``, in the peer's order (extra columns of ours follow them); derived
#: from the ``peer`` positions of :mod:`weightspectra.schema`.
DETAILS_COLUMNS = _details_columns()
#: Columns of ``describe()`` (``slice_id`` is added after ``name`` for unpooled slices).
DESCRIBE_COLUMNS = ("layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals")
#: The peer's warning thresholds on α (its whole warning vocabulary, see :func:`peer_warning`).
PEER_OVER_TRAINED = 2.0
PEER_UNDER_TRAINED = 6.0
#: Keys of ``get_summary()``, as the peer's (``mp_softrank`` only when the MP fit ran).
SUMMARY_KEYS = (
    "log_norm",
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "log_spectral_norm",
    "stable_rank",
    "mp_softrank",
)
#: Our row columns that are not metrics, left out of ``details``.
_NOT_DETAILS = {"reason", "status"}
#: An unpooled slice's suffix on our row names: ``conv[1,2]``.
_SLICE = re.compile(r"^(?P<name>.+)\[(?P<i>\d+),(?P<j>\d+)\]$")


def pandas() -> Any:
    """The pandas module.

    Raises
    ------
    MissingDependencyError
        If pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError("pandas", "pandas", "weightspectra.compat") from exc
    return pd


@dataclass(frozen=True)
class PeerNaming:
    """How the peer names the layers of one input.

    Attributes
    ----------
    ids : mapping
        Module path → the peer's layer id.
    types : mapping
        Module path → the peer's layer-type name where it differs from ours (GPT-2's HF
        ``Conv1D`` is ``conv1d`` to the peer).
    short_names : bool
        The peer's ``name`` is the module's own name (``query``) for modules and checkpoint
        files, the whole dotted path for in-memory state dicts.
    """

    ids: Mapping[str, int]
    types: Mapping[str, str]
    short_names: bool = True

    def layer_id(self, row: LayerResult) -> int:
        found = module_id(row.key, self.ids) if self.ids else None
        return row.layer_id if found is None else found

    def name(self, longname: str) -> str:
        return longname.rsplit(".", 1)[-1] if self.short_names else longname

    def layer_type(self, row: LayerResult) -> str:
        return self.types.get(row.key.removesuffix(".weight"), row.layer_type)


def peer_naming(model: object, keys: Sequence[str] = ()) -> PeerNaming:
    """The peer's ids, names and types for ``model``.

    An ``nn.Module``: each module's index in ``named_modules()``, its own name, and ``conv1d``
    for Hugging Face's ``Conv1D``. A state dict or array mapping: ids from 1 by layer prefix
    in key order (``keys``), the dotted prefix as the name. Anything else (a path): our ids and
    short names.
    """
    named = getattr(model, "named_modules", None)
    if named is not None and callable(named):
        ids: dict[str, int] = {}
        types: dict[str, str] = {}
        for i, (name, module) in enumerate(named()):
            ids[name] = i
            if type(module).__name__ == "Conv1D":
                types[name] = "conv1d"
        return PeerNaming(ids, types)
    if isinstance(model, Mapping):
        prefixes: dict[str, int] = {}
        for key in keys:
            prefix = key.rsplit(".", 1)[0] if "." in key else key
            prefixes.setdefault(prefix, len(prefixes) + 1)
        return PeerNaming(prefixes, {}, short_names=False)
    return PeerNaming({}, {})


def module_id(key: str, ids: Mapping[str, int]) -> int | None:
    """The id of the longest module path in ``ids`` that prefixes ``key``."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in ids:
            return ids[prefix]
    return None


def split_slice(name: str) -> tuple[str, tuple[int, int] | None]:
    """``("conv", (1, 2))`` for an unpooled slice row ``conv[1,2]``; ``(name, None)`` else."""
    m = _SLICE.match(name)
    if m is None:
        return name, None
    return m["name"], (int(m["i"]), int(m["j"]))


def peer_row(row: LayerResult, naming: PeerNaming, slice_id: int | None) -> dict[str, Any]:
    """One ``details`` record: the peer's identity columns, then our metrics."""
    longname, _ = split_slice(row.name)
    out: dict[str, Any] = {
        "layer_id": naming.layer_id(row),
        "name": naming.name(longname),
        "longname": longname,
        "layer_type": naming.layer_type(row),
        "N": row.N,
        "M": row.M,
        "Q": row.Q,
        "rf": row.rf,
        "num_evals": row.num_evals,
        "has_esd": row.evals is not None,
    }
    if slice_id is not None:
        out["slice_id"] = slice_id
    metrics = {k: v for k, v in row.metrics.items() if k not in _NOT_DETAILS}
    alpha = metrics.get("alpha")
    fitted = isinstance(alpha, (int, float)) and math.isfinite(alpha)
    for col in _FIT_NUMBERS:  # the peer shows NaN where a fit failed, never an empty cell
        if metrics.get(col) is None:
            metrics[col] = math.nan
    out.update(metrics)
    if row.ok:
        out["status"] = "success" if fitted else "failed"
    else:
        out["status"] = row.status.value
    ours = metrics.get("warning")
    out["ws_warning"] = ours if isinstance(ours, str) else ""
    out["warning"] = peer_warning(float(alpha)) if fitted else ""  # type: ignore[arg-type]
    out["ws_layer_type"] = row.layer_type
    return out


def _records(
    rows: Sequence[LayerResult], naming: PeerNaming, unpooled: bool = False
) -> list[dict[str, Any]]:
    counters: dict[str, int] = {}
    records = []
    for row in rows:
        longname, position = split_slice(row.name)
        slice_id = None
        if position is not None or unpooled:
            # with pool=False the peer numbers every layer's slices 0, 1, ... (a dense layer
            # or a 1×1 convolution is slice 0)
            slice_id = counters.get(longname, 0)
            counters[longname] = slice_id + 1
        records.append(peer_row(row, naming, slice_id))
    return records


def details_frame(
    report: Report, naming: PeerNaming | None = None, columns: Sequence[str] = DETAILS_COLUMNS
) -> pd.DataFrame:
    """The peer-style ``details`` DataFrame of a report: one row per analysed matrix.

    Parameters
    ----------
    report : Report
    naming : PeerNaming, optional
        The peer's ids and names (:func:`peer_naming`); our ids and short names when missing.
    columns : sequence of str
        Leading columns, in order; every other column of ours follows.

    Raises
    ------
    MissingDependencyError
        If pandas is not installed.
    """
    pd = pandas()
    unpooled = report.option("pool", True) is False
    records = _records(report.analysed, naming or PeerNaming({}, {}), unpooled)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=list(columns))
    lead = [c for c in columns if c in frame.columns]
    if "slice_id" in frame.columns:
        lead.insert(lead.index("name") + 1, "slice_id")
    rest = [c for c in frame.columns if c not in lead]
    return frame[lead + rest].sort_values("layer_id", kind="stable").reset_index(drop=True)


def describe_frame(report: Report, naming: PeerNaming) -> pd.DataFrame:
    """The peer-style ``describe`` DataFrame of a planned report (nothing computed)."""
    pd = pandas()
    planned = [r for r in report.layers if r.status.value == "planned"]
    records = _records(planned, naming, report.option("pool", True) is False)
    sliced = any("slice_id" in r for r in records)
    cols = list(DESCRIBE_COLUMNS)
    if sliced:
        cols.insert(2, "slice_id")
    frame = pd.DataFrame.from_records([{k: r.get(k) for k in cols} for r in records], columns=cols)
    return frame.sort_values("layer_id", kind="stable").reset_index(drop=True)


def peer_warning(alpha: float) -> str:
    """The peer's warning vocabulary for a fitted α: ``over-trained`` below 2,
    ``under-trained`` above 6, else ''. weightspectra's own, richer label is ``ws_warning``."""
    if alpha < PEER_OVER_TRAINED:
        return "over-trained"
    if alpha > PEER_UNDER_TRAINED:
        return "under-trained"
    return ""
