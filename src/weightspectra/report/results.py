"""Per-layer results and the model report: frozen, serialisable, framework-free."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra.errors import InputError, MissingDependencyError
from weightspectra.metrics.model_diagnostics import model_diagnostics
from weightspectra.metrics.summary import model_summary

if TYPE_CHECKING:
    import pandas as pd

#: Version of the JSON layout written by :meth:`Report.to_json`.
SCHEMA_VERSION = 1

Value = float | int | str | None

#: Identity columns, first in every rendering.
ID_COLUMNS = (
    "layer_id",
    "name",
    "layer_type",
    "N",
    "M",
    "Q",
    "rf",
    "num_evals",
    "status",
    "reason",
)


class Status(str, Enum):
    """What happened to a layer."""

    OK = "ok"  # spectrum computed (its fit may still have failed: see `warning`)
    SKIPPED = "skipped"  # not analysed, by rule or option (reason says which)
    FAILED = "failed"  # analysis attempted and impossible (reason says why)
    PLANNED = "planned"  # `describe`: would be analysed, nothing computed


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
        A :class:`~weightspectra.options.LayerType` value.
    status : Status
    reason : str
        Why the row is skipped or failed ('' when ok).
    shape : tuple of int
        Shape of the whole tensor.
    N, M, rf, num_evals : int
        Larger and smaller side of each matrix, kernel positions of the layer (1 for
        non-convolutions), and eigenvalues in the ESD (``M·rf`` for a pooled convolution).
    metrics : mapping
        Metric columns (see the docs); empty unless ``status`` is ok.
    evals : ndarray, optional
        The ESD (ascending, read-only) for ok rows.
    """

    layer_id: int
    name: str
    key: str
    layer_type: str
    status: Status
    reason: str = ""
    shape: tuple[int, ...] = ()
    N: int = 0
    M: int = 0
    rf: int = 1
    num_evals: int = 0
    metrics: Mapping[str, Value] = field(default_factory=dict)
    evals: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        if self.evals is not None:
            evals = np.array(self.evals, dtype=np.float64)
            evals.setflags(write=False)
            object.__setattr__(self, "evals", evals)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A mappingproxy does not pickle; rebuild from a plain dict (worker processes send
        # rows back this way, and users pickle reports).
        values = tuple(getattr(self, f.name) for f in fields(self))
        names = [f.name for f in fields(self)]
        state = dict(zip(names, values, strict=True))
        state["metrics"] = dict(self.metrics)
        return (_rebuild_row, (state,))

    @property
    def Q(self) -> float:
        return self.N / self.M if self.M else math.nan

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def row(self) -> dict[str, Value]:
        """The flat record of this row: identity columns, then metrics."""
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
        out.update(self.metrics)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (evals included as a list when present)."""
        return {
            "layer_id": self.layer_id,
            "name": self.name,
            "key": self.key,
            "layer_type": self.layer_type,
            "status": self.status.value,
            "reason": self.reason,
            "shape": list(self.shape),
            "N": self.N,
            "M": self.M,
            "rf": self.rf,
            "num_evals": self.num_evals,
            "metrics": {k: _json_value(v) for k, v in self.metrics.items()},
            "evals": None if self.evals is None else self.evals.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerResult:
        metrics = {k: (math.nan if v == "NaN" else v) for k, v in data["metrics"].items()}
        return cls(
            layer_id=int(data["layer_id"]),
            name=str(data["name"]),
            key=str(data["key"]),
            layer_type=str(data["layer_type"]),
            status=Status(data["status"]),
            reason=str(data["reason"]),
            shape=tuple(int(s) for s in data["shape"]),
            N=int(data["N"]),
            M=int(data["M"]),
            rf=int(data["rf"]),
            num_evals=int(data["num_evals"]),
            metrics=metrics,
            evals=None if data.get("evals") is None else np.asarray(data["evals"]),
        )


def _rebuild_row(state: dict[str, Any]) -> LayerResult:
    return LayerResult(**state)


def _json_value(value: Value) -> Value:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, np.generic):
        item: Value = value.item()
        return item
    return value


@dataclass(frozen=True)
class Report:
    """The result of one analysis: every layer's row, and the model summary.

    Attributes
    ----------
    source : str
        What was analysed.
    options : mapping
        The options used (plain JSON form).
    layers : tuple of LayerResult
        Every row, in model order, analysed or not.
    version : str
        weightspectra version that made the report.
    """

    source: str
    options: Mapping[str, Any]
    layers: tuple[LayerResult, ...]
    version: str

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

    @cached_property
    def summary(self) -> dict[str, float | int]:
        """Model-level means and counts (see :func:`.metrics.summary.model_summary`)."""
        return model_summary(r.row() for r in self.layers)

    @cached_property
    def diagnostics(self) -> dict[str, Any]:
        """Model-level diagnostics: correlation flow (α against depth per layer type), scale
        collapse, and counts of layers per phase and per warning (see
        :func:`~weightspectra.metrics.model_diagnostics.model_diagnostics`)."""
        return model_diagnostics(self.rows())

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
        return {
            "schema_version": SCHEMA_VERSION,
            "weightspectra_version": self.version,
            "source": self.source,
            "options": dict(self.options),
            "summary": {k: _json_value(v) for k, v in self.summary.items()},
            "layers": [r.to_dict() for r in self.layers],
        }

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
        """Load a report saved by :meth:`to_json` (a path, or the JSON text itself)."""
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
        return cls(
            source=str(data["source"]),
            options=dict(data["options"]),
            layers=tuple(LayerResult.from_dict(r) for r in data["layers"]),
            version=str(data["weightspectra_version"]),
        )
