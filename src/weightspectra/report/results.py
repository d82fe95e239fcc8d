"""Per-layer results and the model report: frozen, serialisable, framework-free.

A :class:`LayerResult` is serialised in one place (:meth:`LayerResult.to_dict` /
:meth:`LayerResult.from_dict`), which the JSON writer, the result cache and pickling all use;
its metric columns are those declared in :mod:`weightspectra.schema`. A :class:`Report` only
stores: its model-level summary and diagnostics are computed by :mod:`weightspectra.metrics`
when the analysis runs, and renderers read them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra import schema
from weightspectra.enums import Reason, Status
from weightspectra.errors import InputError, MissingDependencyError
from weightspectra.schema import ID_COLUMNS, Value

if TYPE_CHECKING:
    import pandas as pd

#: Version of the JSON layout written by :meth:`Report.to_json` (2: stored model diagnostics,
#: reason codes, randomised ESDs).
SCHEMA_VERSION = 2

#: Fields of :class:`LayerResult` that hold eigenvalue arrays (stored apart by the cache).
ARRAY_FIELDS = ("evals", "rand_evals")

__all__ = ["ID_COLUMNS", "SCHEMA_VERSION", "LayerResult", "Report", "Status", "Value"]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_value(value: Any) -> Value:
    """A cell as strict JSON can hold it: NaN and ±inf as the strings ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``; numpy scalars as Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    out: Value = value
    return out


def decode_metrics(data: Mapping[str, Any]) -> dict[str, Value]:
    """Inverse of the metric encoding of :meth:`LayerResult.to_dict`: the non-finite
    sentinels of numeric columns become floats again (text columns are kept as they are)."""
    out: dict[str, Value] = {}
    for key, value in data.items():
        if isinstance(value, str) and value in _NON_FINITE:
            col = schema.find(key)
            out[key] = value if col is not None and col.dtype is str else _NON_FINITE[value]
        else:
            out[key] = value
    return out


def _array(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.array(value, dtype=np.float64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class LayerResult:
    """One row of a report: a matrix (or pooled group of matrices) and its metrics.

    Attributes
    ----------
    layer_id : int
        Position of the tensor among all tensors of the source, in model order (0-based).
        Rows split from one tensor (Q/K/V, gates, unpooled slices) share it.
    name : str
        Module path of the layer plus a suffix for split rows (``"...in_proj_weight[q]"``).
    key : str
        The tensor's key in the source.
    layer_type : str
        A :class:`~weightspectra.enums.LayerType` value.
    status : Status
    reason : str
        Why the row is skipped or failed ('' when ok).
    reason_code : Reason
        The same as a code (:class:`~weightspectra.enums.Reason`).
    shape : tuple of int
        Shape of the whole tensor.
    N, M, rf, num_evals : int
        Larger and smaller side of each matrix, kernel positions of the layer (1 for
        non-convolutions), and eigenvalues in the ESD (``M·rf`` for a pooled convolution).
    metrics : mapping
        Metric columns (declared in :mod:`weightspectra.schema`); empty unless ``status`` is ok.
    evals : ndarray, optional
        The ESD (ascending, read-only) for ok rows.
    rand_evals : ndarray, optional
        The ESD of the entry-shuffled matrix (ascending, read-only, same units), when the
        analysis ran with ``randomize=True``.
    quantization : str
        How the source stored the tensor when it is quantised ('' otherwise); its ESD is of the
        dequantised weights.
    """

    layer_id: int
    name: str
    key: str
    layer_type: str
    status: Status
    reason: str = ""
    reason_code: Reason = Reason.NONE
    shape: tuple[int, ...] = ()
    N: int = 0
    M: int = 0
    rf: int = 1
    num_evals: int = 0
    metrics: Mapping[str, Value] = field(default_factory=dict)
    evals: np.ndarray | None = field(default=None, repr=False, compare=False)
    rand_evals: np.ndarray | None = field(default=None, repr=False, compare=False)
    quantization: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "status", Status(self.status))
        set_(self, "reason_code", Reason(self.reason_code))
        set_(self, "shape", tuple(int(s) for s in self.shape))
        set_(self, "metrics", MappingProxyType(dict(self.metrics)))
        for name in ARRAY_FIELDS:
            set_(self, name, _array(getattr(self, name)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A mappingproxy does not pickle: rows travel (worker processes, users' pickles) as
        # their one serialised form, arrays kept as arrays.
        return (_restore, (self.to_dict(arrays=False), self.arrays()))

    @property
    def Q(self) -> float:
        return self.N / self.M if self.M else math.nan

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def row(self) -> dict[str, Value]:
        """The flat record of this row: identity columns, then metrics (schema order)."""
        out: dict[str, Value] = {
            "layer_id": self.layer_id,
            "name": self.name,
            "layer_type": self.layer_type,
            "N": self.N,
            "M": self.M,
            "Q": self.Q,
            "rf": self.rf,
            "num_evals": self.num_evals,
            "status": self.status.value,
            "reason": self.reason,
        }
        if self.quantization:
            out["quantization"] = self.quantization
        out.update((k, self.metrics[k]) for k in schema.ordered(self.metrics))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The eigenvalue arrays this row holds, by field name."""
        return {n: a for n in ARRAY_FIELDS if (a := getattr(self, n)) is not None}

    def to_dict(self, *, arrays: bool = True) -> dict[str, Any]:
        """The one serialised form of a row: JSON-ready (non-finite metric values as the
        strings ``"NaN"``/``"Infinity"``); eigenvalue arrays as lists when ``arrays``, left out
        otherwise (the cache stores them apart, see :meth:`arrays`)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ARRAY_FIELDS:
                if arrays:
                    out[f.name] = None if value is None else value.tolist()
            elif f.name == "metrics":
                out[f.name] = {k: encode_value(v) for k, v in value.items()}
            elif isinstance(value, Enum):
                out[f.name] = value.value
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
    ) -> LayerResult:
        """Rebuild a row from :meth:`to_dict` (arrays from ``data`` or from ``arrays``).

        Raises
        ------
        KeyError, ValueError, TypeError
            If ``data`` is not a serialised row.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ARRAY_FIELDS:
                values[f.name] = (arrays or {}).get(f.name, data.get(f.name))
            elif f.name in data:
                values[f.name] = _DECODE[f.name](data[f.name])
        return cls(**values)


_DECODE: dict[str, Callable[[Any], Any]] = {
    "layer_id": int,
    "name": str,
    "key": str,
    "layer_type": str,
    "status": Status,
    "reason": str,
    "reason_code": Reason,
    "shape": lambda s: tuple(int(v) for v in s),
    "N": int,
    "M": int,
    "rf": int,
    "num_evals": int,
    "metrics": decode_metrics,
    "quantization": str,
}


def _restore(record: dict[str, Any], arrays: dict[str, np.ndarray]) -> LayerResult:
    return LayerResult.from_dict(record, arrays)


def _frozen(value: Any) -> Any:
    """A read-only deep copy of plain data (dicts as mappingproxies, lists as tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """The JSON-ready copy of frozen data (inverse of :func:`_frozen`)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return encode_value(value)


@dataclass(frozen=True)
class Report:
    """The result of one analysis: every layer's row, the model summary and diagnostics.

    Made by :func:`weightspectra.analyze` (or :func:`weightspectra.describe`); the model-level
    results are computed there, by :mod:`weightspectra.metrics`, with the thresholds of the
    options, and only stored here.

    Attributes
    ----------
    source : str
        What was analysed.
    options : mapping
        The options used (plain JSON form, :meth:`weightspectra.Options.to_dict`).
    layers : tuple of LayerResult
        Every row, in model order, analysed or not.
    version : str
        weightspectra version that made the report.
    summary : mapping
        Model-level means and counts (:func:`weightspectra.metrics.summary.model_summary`).
    diagnostics : mapping
        Model-level diagnostics: correlation flow, scale collapse, phase and warning counts
        (:func:`weightspectra.metrics.model_diagnostics.model_diagnostics`); read-only.
    """

    source: str
    options: Mapping[str, Any]
    layers: tuple[LayerResult, ...]
    version: str
    summary: Mapping[str, float | int] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _frozen(dict(self.options)))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "summary", MappingProxyType(dict(self.summary)))
        object.__setattr__(self, "diagnostics", _frozen(dict(self.diagnostics)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (
            Report,
            (
                self.source,
                _plain(self.options),
                self.layers,
                self.version,
                dict(self.summary),
                _plain(self.diagnostics),
            ),
        )

    @property
    def analysed(self) -> tuple[LayerResult, ...]:
        """Rows whose spectrum was computed."""
        return tuple(r for r in self.layers if r.status is Status.OK)

    @property
    def skipped(self) -> tuple[LayerResult, ...]:
        """Rows not analysed, each with its reason."""
        return tuple(r for r in self.layers if r.status is Status.SKIPPED)

    @property
    def failed(self) -> tuple[LayerResult, ...]:
        """Rows whose analysis was attempted and failed, each with its reason."""
        return tuple(r for r in self.layers if r.status is Status.FAILED)

    def option(self, name: str, default: Any = None) -> Any:
        """One option of the analysis (its plain value), ``default`` when the report's options
        do not have it (a report written by an older version)."""
        return self.options.get(name, default)

    def __getitem__(self, name: str) -> LayerResult:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r}; names are listed by report.to_pandas()['name']")

    def rows(self, include: str = "analysed") -> list[dict[str, Value]]:
        """Flat records: ``include`` is ``"analysed"`` (ok rows, or planned rows of a
        ``describe`` report), or ``"all"``."""
        if include not in ("analysed", "all"):
            raise InputError(f"include={include!r}: choose 'analysed' or 'all'")
        wanted = (Status.OK, Status.PLANNED)
        chosen = [r for r in self.layers if include == "all" or r.status in wanted]
        return [r.row() for r in chosen]

    def to_pandas(self, include: str = "analysed") -> pd.DataFrame:
        """One DataFrame row per analysed matrix (``include="all"`` adds skipped and failed)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingDependencyError("pandas", "pandas", "Report.to_pandas()") from exc
        return pd.DataFrame.from_records(self.rows(include))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form of the report (:meth:`from_json` reads it back)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "weightspectra_version": self.version,
            "source": self.source,
            "options": _plain(self.options),
            "summary": {k: encode_value(v) for k, v in self.summary.items()},
            "diagnostics": _plain(self.diagnostics),
            "layers": [r.to_dict() for r in self.layers],
        }

    def __repr__(self) -> str:
        """A few lines: the source, the counts and mean α, and the verdict."""
        from weightspectra.report.verdict import verdict

        s = self.summary
        alpha = s.get("alpha")
        mean = f", mean α {alpha:.2f}" if isinstance(alpha, (int, float)) else ""
        counts = (
            f"{len(self.analysed)} analysed, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed{mean}"
        )
        return f"<weightspectra Report of {self.source}: {counts}>\n{verdict(self).line()}"

    def _repr_html_(self) -> str:
        """The compact notebook summary: verdict, means, correlation flow
        (:func:`weightspectra.report.html.report_summary_html`)."""
        from weightspectra.report.html import report_summary_html

        return report_summary_html(self)

    def to_html(self, path: str | Path | None = None, **kwargs: Any) -> str:
        """A self-contained HTML report (written to ``path`` when given); keyword arguments go
        to :func:`weightspectra.report.html.report_html` (``plots``, ``dpi``, ...)."""
        from weightspectra.report.html import report_html, write_html

        text = report_html(self, **kwargs)
        if path is not None:
            write_html(text, path)
        return text

    def plot(self, kind: str = "correlation_flow", ax: Any = None, **kwargs: Any) -> Any:
        """Draw a model-level plot and return its axes: ``"correlation_flow"``, ``"alpha_hist"``
        or ``"depth"`` (``metric=`` any column); see :mod:`weightspectra.report.plots`."""
        from weightspectra.report import plots

        draw: dict[str, Any] = {
            "correlation_flow": plots.plot_correlation_flow,
            "alpha_hist": plots.plot_alpha_histogram,
            "depth": plots.plot_metric_depth,
        }
        if kind not in draw:
            raise InputError(f"plot kind {kind!r} is unknown; choose one of {', '.join(draw)}")
        return draw[kind](self, ax=ax, **kwargs)

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON (written to ``path`` when given); reload with :meth:`from_json`."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Report:
        """Load a report saved by :meth:`to_json` (a path, or the JSON text itself).

        Raises
        ------
        InputError
            If the file is missing, not a report, or of a newer layout than this version reads.
        """
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: no such report file")
            text = path.read_text()
        try:
            data = json.loads(text)
            version = int(data["schema_version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not a weightspectra report JSON ({exc})") from exc
        if version > SCHEMA_VERSION:
            raise InputError(
                f"report schema {version} is newer than this weightspectra understands "
                f"({SCHEMA_VERSION}); upgrade weightspectra"
            )
        try:
            return cls(
                source=str(data["source"]),
                options=dict(data["options"]),
                layers=tuple(LayerResult.from_dict(r) for r in data["layers"]),
                version=str(data["weightspectra_version"]),
                summary=decode_metrics(data.get("summary", {})),  # type: ignore[arg-type]
                diagnostics=_decoded(data.get("diagnostics", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"a malformed weightspectra report JSON ({exc!r})") from exc


def _decoded(value: Any) -> Any:
    """Plain JSON data with the non-finite sentinels turned back into floats."""
    if isinstance(value, Mapping):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value
