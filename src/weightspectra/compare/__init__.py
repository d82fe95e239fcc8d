"""Compare models: their summaries side by side, the ranking by each metric, and how well each
metric predicts a known accuracy (least-squares line, RMSE, R², Kendall τ), per series.

Inputs may be models (analysed here), saved reports (JSON from :meth:`Report.to_json`), or CSV
files of per-model summary metrics (one row per model: ``model``, optional ``series``, an
accuracy column such as ``top1``, and metric columns). The statistics are pure functions
(:func:`~weightspectra.compare.stats.ols`,
:func:`~weightspectra.compare.stats.kendall_tau`) on arrays.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightspectra.compare.stats import _pair, kendall_tau, ols
from weightspectra.errors import InputError
from weightspectra.metrics.summary import SUMMARY_COLUMNS
from weightspectra.report.results import Report

__all__ = [
    "ALL_SERIES",
    "Comparison",
    "LinearFit",
    "ModelSummary",
    "compare",
    "fit_metric",
    "kendall_tau",
    "ols",
    "read_summary_csv",
]

if TYPE_CHECKING:
    import pandas as pd

#: Columns recognised as the accuracy, in order of preference, when none is named.
ACCURACY_COLUMNS = ("top1", "top1_accuracy", "accuracy", "acc", "test_accuracy", "top5")
#: Columns of a summary CSV that name a model or its series (never metrics).
NAME_COLUMNS = ("model", "name")
SERIES_COLUMN = "series"
#: Label of the fit over all models together.
ALL_SERIES = "all"
#: Fewest models for a fit (two points always lie on a line).
MIN_FIT_MODELS = 3


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSummary:
    """One model of a comparison.

    Attributes
    ----------
    name : str
    metrics : mapping of str to float
        Model-level metrics (the report summary's means, or a CSV row's metric columns).
    series : str
        The series (architecture family) the model belongs to; '' when unknown.
    accuracy : float, optional
    source : str
        Where the numbers came from (a model path, a report file, a CSV file).
    report : Report, optional
        The full report when the model was analysed or loaded from JSON.
    """

    name: str
    metrics: Mapping[str, float]
    series: str = ""
    accuracy: float | None = None
    source: str = ""
    report: Report | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LinearFit:
    """Least-squares fit of the accuracy on one metric, over one series (or all models)."""

    metric: str
    series: str
    n: int
    slope: float
    intercept: float
    rmse: float
    r2: float
    tau: float
    tau_p: float

    def row(self) -> dict[str, float | int | str]:
        return {
            "series": self.series,
            "metric": self.metric,
            "n": self.n,
            "slope": self.slope,
            "intercept": self.intercept,
            "rmse": self.rmse,
            "r2": self.r2,
            "tau": self.tau,
            "tau_p": self.tau_p,
        }


def fit_metric(metric: str, series: str, x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """:class:`LinearFit` of ``y`` (accuracies) on ``x`` (a metric); NaN statistics when the
    line is undefined (constant metric).

    Raises
    ------
    InputError
        If fewer than :data:`MIN_FIT_MODELS` points, different lengths, or non-finite values.
    """
    xa, ya = _pair(x, y, MIN_FIT_MODELS)
    try:
        slope, intercept, rmse, r2 = ols(xa, ya)
    except InputError:
        slope = intercept = rmse = r2 = math.nan
    tau, p = kendall_tau(xa, ya)
    return LinearFit(metric, series, int(xa.size), slope, intercept, rmse, r2, tau, p)


@dataclass(frozen=True)
class Comparison:
    """Models compared: summaries, rankings, and fits of accuracy on each metric.

    Attributes
    ----------
    models : tuple of ModelSummary
    metrics : tuple of str
        Metrics compared, in display order.
    accuracy_name : str, optional
        Name of the accuracy (``"top1"``, or ``"accuracy"``), ``None`` without accuracies.
    fits : tuple of LinearFit
        Per metric and series (``"all"`` for every model together), when accuracies are known.
    """

    models: tuple[ModelSummary, ...]
    metrics: tuple[str, ...]
    accuracy_name: str | None
    fits: tuple[LinearFit, ...]

    def __repr__(self) -> str:
        """Plain text for a terminal: the models and what tracks accuracy best."""
        from weightspectra.compare.render import comparison_repr

        return comparison_repr(self)

    def _repr_html_(self) -> str:
        """A compact HTML summary with the best fit's plot, for Jupyter."""
        from weightspectra.compare.render import comparison_summary_html

        return comparison_summary_html(self)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def ranking(self, metric: str) -> list[str]:
        """Model names by ascending ``metric`` (smaller first: better for the α- and norm-based
        metrics within a series); models without the metric come last.

        Raises
        ------
        InputError
            If ``metric`` is not compared.
        """
        self._check_metric(metric)

        def key(m: ModelSummary) -> tuple[bool, float]:
            v = m.metrics.get(metric, math.nan)
            return (not math.isfinite(v), v if math.isfinite(v) else 0.0)

        return [m.name for m in sorted(self.models, key=key)]

    @property
    def rankings(self) -> dict[str, list[str]]:
        """:meth:`ranking` of every metric."""
        return {m: self.ranking(m) for m in self.metrics}

    def _check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            raise InputError(
                f"metric {metric!r} is not compared; choose one of {', '.join(self.metrics)}"
            )

    def fit(self, metric: str, series: str = ALL_SERIES) -> LinearFit:
        """The fit of the accuracy on ``metric`` for ``series``.

        Raises
        ------
        InputError
            If there is no such fit (no accuracies, unknown metric or series, too few models).
        """
        self._check_metric(metric)
        for f in self.fits:
            if f.metric == metric and f.series == series:
                return f
        have = sorted({f.series for f in self.fits})
        raise InputError(
            f"no fit for metric {metric!r} and series {series!r}; fits exist for "
            f"series {', '.join(have) or 'none (give accuracies)'}"
        )

    def rows(self) -> list[dict[str, Any]]:
        """One record per model: name, series, accuracy, metrics."""
        out = []
        for m in self.models:
            row: dict[str, Any] = {"model": m.name, "series": m.series}
            if self.accuracy_name is not None:
                row[self.accuracy_name] = m.accuracy
            row.update({k: m.metrics.get(k) for k in self.metrics})
            out.append(row)
        return out

    def fit_rows(self) -> list[dict[str, Any]]:
        return [f.row() for f in self.fits]

    def to_pandas(self, what: str = "models") -> pd.DataFrame:
        """``what="models"``: one row per model; ``"fits"``: one row per (series, metric) fit.

        Raises
        ------
        InputError
            On another ``what``.
        MissingDependencyError
            If pandas is not installed.
        """
        from weightspectra.errors import MissingDependencyError

        if what not in ("models", "fits"):
            raise InputError(f"what={what!r}: choose 'models' or 'fits'")
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingDependencyError("pandas", "pandas", "Comparison.to_pandas()") from exc
        return pd.DataFrame.from_records(self.rows() if what == "models" else self.fit_rows())

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready form: models (with their source), rankings, fits."""
        models = [{**r, "source": m.source} for r, m in zip(self.rows(), self.models, strict=True)]
        return {
            "accuracy_name": self.accuracy_name,
            "metrics": list(self.metrics),
            "models": models,
            "rankings": self.rankings,
            "fits": self.fit_rows(),
        }

    def render(self, fmt: str = "table") -> str:
        """Text in ``fmt``: ``table``, ``markdown``, ``json``, or ``csv`` (the fits when
        accuracies are known, else the models)."""
        from weightspectra.compare.render import render_comparison

        return render_comparison(self, fmt)

    def to_html(self, path: str | Path | None = None, **kwargs: Any) -> str:
        """A self-contained HTML page of the comparison (written to ``path`` when given)."""
        from weightspectra.compare.render import comparison_html
        from weightspectra.report.html import write_html

        text = comparison_html(self, **kwargs)
        if path is not None:
            write_html(text, path)
        return text


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_summary_csv(path: str | Path) -> list[ModelSummary]:
    """Models of a CSV of per-model metrics: a ``model`` (or ``name``) column, an optional
    ``series`` column, and numeric columns (metrics and accuracies, told apart later).

    Raises
    ------
    InputError
        If the file is missing, empty, or has no model-name column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such CSV file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        name_col = next((c for c in header if c.strip().lower() in NAME_COLUMNS), None)
        if name_col is None:
            raise InputError(
                f"{path}: expected a 'model' or 'name' column, found "
                f"{', '.join(header) or 'no header'}"
            )
        series_col = next((c for c in header if c.strip().lower() == SERIES_COLUMN), None)
        out = []
        for row in reader:
            values = {
                c.strip(): _float(v)
                for c, v in row.items()
                if c not in (name_col, series_col) and c is not None
            }
            out.append(
                ModelSummary(
                    name=row[name_col].strip(),
                    metrics=values,
                    series=(row[series_col] or "").strip() if series_col else "",
                    source=str(path),
                )
            )
    if not out:
        raise InputError(f"{path}: the CSV has a header but no models")
    return out


def _summary_of(report: Report, name: str, source: str) -> ModelSummary:
    metrics = {k: float(v) for k, v in report.summary.items() if not k.startswith("num_")}
    return ModelSummary(name=name, metrics=metrics, source=source, report=report)


def _load_item(
    item: object, name: str | None, index: int, analyze_kwargs: Mapping[str, Any]
) -> list[ModelSummary]:
    if isinstance(item, ModelSummary):
        return [item]
    if isinstance(item, Report):
        return [_summary_of(item, name or Path(item.source).stem or f"model{index}", item.source)]
    if isinstance(item, (str, Path)):
        path = Path(item)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            if name is not None:
                raise InputError(f"{path}: a CSV holds its own model names; give no name for it")
            return read_summary_csv(path)
        if suffix == ".json":
            return [_summary_of(Report.from_json(path), name or path.stem, str(path))]
        from weightspectra.analysis import analyze

        report = analyze(path, **analyze_kwargs)
        stem = path.stem if path.stem not in ("model", "pytorch_model") else path.parent.name
        return [_summary_of(report, name or stem or f"model{index}", str(path))]
    from weightspectra.analysis import analyze

    report = analyze(item, **analyze_kwargs)
    return [_summary_of(report, name or f"{type(item).__name__}{index}", report.source)]


def _unique(models: list[ModelSummary]) -> list[ModelSummary]:
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for m in models:
        k = seen.get(m.name, 0) + 1
        seen[m.name] = k
        out.append(m if k == 1 else replace(m, name=f"{m.name}#{k}"))
    return out


def _accuracy_from_file(path: Path) -> dict[str, float]:
    rows = read_summary_csv(path)
    cols = list(rows[0].metrics)
    col = next((c for c in ACCURACY_COLUMNS if c in cols), None)
    if col is None and len(cols) == 1:
        col = cols[0]
    if col is None:
        raise InputError(
            f"{path}: cannot tell the accuracy column among {', '.join(cols)}; "
            f"name it one of {', '.join(ACCURACY_COLUMNS)}, or keep only "
            "model and accuracy columns"
        )
    return {r.name: r.metrics[col] for r in rows}


def _resolve_accuracy(
    models: list[ModelSummary], accuracy: object
) -> tuple[list[ModelSummary], str | None, set[str]]:
    """Attach accuracies; returns the models, the accuracy name, and columns that are not
    metrics (accuracy-like columns of summary CSVs)."""
    from dataclasses import replace

    csv_cols = {c for m in models if m.report is None for c in m.metrics}
    not_metrics = {c for c in csv_cols if c.lower() in ACCURACY_COLUMNS}
    values: dict[str, float] | None = None
    name: str | None = None
    if accuracy is None:
        col = next((c for c in ACCURACY_COLUMNS if c in csv_cols), None)
        if col is not None:
            name, values = col, {m.name: m.metrics.get(col, math.nan) for m in models}
    elif isinstance(accuracy, (str, Path)) and (
        Path(accuracy).is_file() or str(accuracy).lower().endswith(".csv")
    ):
        name, values = "accuracy", _accuracy_from_file(Path(accuracy))
        if any(m.name not in values for m in models):
            missing = [m.name for m in models if m.name not in values]
            raise InputError(
                f"{accuracy}: no accuracy for {', '.join(missing[:10])}; the file's "
                f"models are {', '.join(list(values)[:10])}"
            )
    elif isinstance(accuracy, str):
        if accuracy not in csv_cols:
            raise InputError(
                f"accuracy={accuracy!r} is neither a CSV file nor a column of the "
                f"summary CSVs ({', '.join(sorted(csv_cols)) or 'none given'})"
            )
        name, values = accuracy, {m.name: m.metrics.get(accuracy, math.nan) for m in models}
        not_metrics.add(accuracy)
    elif isinstance(accuracy, Mapping):
        name, values = "accuracy", {str(k): float(v) for k, v in accuracy.items()}
    elif isinstance(accuracy, Sequence) and not isinstance(accuracy, (str, bytes)):
        if len(accuracy) != len(models):
            raise InputError(
                f"{len(accuracy)} accuracies for {len(models)} models; give one "
                "per model, or a mapping {name: accuracy}"
            )
        name, values = "accuracy", {m.name: float(a) for m, a in zip(models, accuracy, strict=True)}
    else:
        raise InputError(
            f"accuracy must be a CSV path, a column name, a mapping or a sequence; "
            f"got {type(accuracy).__name__}"
        )
    if values is None:
        return models, None, not_metrics
    out = [replace(m, accuracy=values.get(m.name)) for m in models]
    return out, name, not_metrics


def _metric_order(
    models: list[ModelSummary], wanted: Sequence[str] | None, not_metrics: set[str]
) -> tuple[str, ...]:
    present: list[str] = []
    for m in models:
        present += [k for k in m.metrics if k not in present]
    if wanted is not None:
        missing = [w for w in wanted if w not in present]
        if missing:
            raise InputError(
                f"metric(s) {', '.join(missing)} not found; the models have {', '.join(present)}"
            )
        return tuple(wanted)
    known = [c for c in SUMMARY_COLUMNS if c in present]
    return tuple(known + [c for c in present if c not in known and c not in not_metrics])


def _fits(models: Sequence[ModelSummary], metrics: Sequence[str]) -> list[LinearFit]:
    groups: dict[str, list[ModelSummary]] = {}
    for m in models:
        if m.series:
            groups.setdefault(m.series, []).append(m)
    groups[ALL_SERIES] = list(models)
    out = []
    for series, members in groups.items():
        for metric in metrics:
            pts = [
                (m.metrics.get(metric, math.nan), m.accuracy)
                for m in members
                if m.accuracy is not None
            ]
            pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
            if len(pts) >= MIN_FIT_MODELS:
                xs, ys = zip(*pts, strict=True)
                out.append(fit_metric(metric, series, xs, ys))
    return out


def compare(
    models: Sequence[object] | object,
    accuracy: object = None,
    *,
    names: Sequence[str | None] | None = None,
    metrics: Sequence[str] | None = None,
    **analyze_kwargs: Any,
) -> Comparison:
    """Compare models by their spectral summaries, and against their accuracies if known.

    Parameters
    ----------
    models : sequence
        Each item a model or path to analyse (anything :func:`weightspectra.analyze` takes), a
        :class:`Report`, a saved report (``.json``), or a CSV of per-model metrics (``.csv``,
        one row per model). A single path is accepted too.
    accuracy : str, path, mapping or sequence, optional
        A CSV of ``model, <accuracy>``; the name of a column of the summary CSVs; a mapping
        ``{model name: accuracy}``; or one value per model. Default: the first column of the
        summary CSVs named one of :data:`ACCURACY_COLUMNS` (``top1``, ``accuracy``, ...).
    names : sequence of str, optional
        Names of the items (default: file stems, or the CSV's names). Repeated names get a
        ``#2`` suffix.
    metrics : sequence of str, optional
        Metrics to compare (default: every summary metric present).
    **analyze_kwargs
        Options for the models analysed here (``min_evals=``, ``pool=``, ...).

    Returns
    -------
    Comparison
        ``.rows()``, ``.rankings``, ``.fits`` (per series and ``"all"``, with at least 3
        models with accuracies), ``.render()``, ``.to_html()``.

    Raises
    ------
    InputError
        On an unreadable input, a missing metric, or accuracies that do not match the models.

    Examples
    --------
    >>> import weightspectra as ws
    >>> cmp = ws.compare(["published_cv_models.csv"])        # doctest: +SKIP
    >>> cmp.fit("alpha_weighted", "VGG").r2                     # doctest: +SKIP
    """
    items: list[object] = (
        [models]
        if isinstance(models, (str, Path, Report)) or not isinstance(models, Sequence)
        else list(models)
    )
    if not items:
        raise InputError("compare needs at least one model, report or CSV")
    if names is not None and len(names) != len(items):
        raise InputError(f"{len(names)} names for {len(items)} inputs; give one name per input")
    loaded: list[ModelSummary] = []
    for i, item in enumerate(items):
        loaded += _load_item(item, None if names is None else names[i], i, analyze_kwargs)
    loaded = _unique(loaded)
    loaded, acc_name, not_metrics = _resolve_accuracy(loaded, accuracy)
    order = _metric_order(loaded, metrics, not_metrics)
    fits = _fits(loaded, order) if acc_name is not None else []
    return Comparison(models=tuple(loaded), metrics=order, accuracy_name=acc_name, fits=tuple(fits))
