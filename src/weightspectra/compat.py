"""A drop-in for the peer's everyday API: ``from weightspectra.compat import WeightWatcher``.

An existing notebook that does ::

    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    summary = watcher.get_summary(details)

runs unchanged, on weightspectra's engine, and gets DataFrames with the peer's column names.
Where the results differ on purpose (a failed fit is NaN with status ``failed``, not α = −1;
no silent size caps; plots are written, never shown) ``docs/reports.md`` says so. Options the
peer has and this layer does not map raise :class:`~weightspectra.errors.OptionError` naming the
supported ones, unless they are given their default value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra import schema
from weightspectra.analysis import analyze as ws_analyze
from weightspectra.analysis import describe as ws_describe
from weightspectra.errors import InputError, MissingDependencyError, OptionError
from weightspectra.options import Options
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
#: Columns of ``describe()``.
DESCRIBE_COLUMNS = ("layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals")
#: The peer's warning thresholds on α (its whole warning vocabulary, see :func:`peer_warning`).
PEER_OVER_TRAINED = 2.0
PEER_UNDER_TRAINED = 6.0
#: Keys of ``get_summary()``: the summary columns of :mod:`weightspectra.schema`
#: (``mp_softrank`` only when the MP fit ran).
SUMMARY_KEYS = schema.summary_columns()
#: Our row columns that are not metrics, left out of ``details``.
_NOT_DETAILS = {"reason", "status"}

#: Peer options mapped onto weightspectra options (peer name → our name).
_MAPPED = {
    "min_evals": "min_evals",
    "max_evals": "max_evals",
    "pool": "pool",
    "conv2d_norm": "conv_scaling",
    "normalize": "normalize",
}
#: Peer options handled by this layer itself.
_HANDLED = ("layers", "max_N", "plot", "savefig", "fit", "svd_method", "model")
#: Peer options passed through when this weightspectra's Options has them (diagnostics).
_PASS_THROUGH = {"mp_fit": "mp_fit", "randomize": "randomize", "detX": "detx"}
#: Peer options not supported here, accepted only at their default value(s).
_DEFAULT_ONLY: dict[str, tuple[object, ...]] = {
    "glorot_fix": (False,),
    "ww2x": (False,),
    "conv2d_fft": (False,),
    "fft": (False,),
    "deltas": (False,),
    "intra": (False,),
    "vectors": (False,),
    "channels": (None,),
    "stacked": (False,),
    "fix_fingers": (None, False),
    "xmax": (None,),
    "base_model": (None,),
    "peft": (False, None),
    "min_size": (None,),
    "max_size": (None,),
    "start_ids": (0,),
    "sparsify": (True,),
    "tolerance": (None,),
    "pl_package": (None, "powerlaw", "ww"),
    "xmin_max": (None,),
    "max_fingers": (None,),
    "inverse": (False,),
    "evecs": (False,),
    "params": (None,),
}
_FITS = ("PL", "POWER_LAW", "power_law", "pl")
_SVD_METHODS = ("full", "accurate", "FULL", "ACCURATE")


def _supported() -> str:
    names = sorted({*_MAPPED, *_HANDLED, *_PASS_THROUGH})
    return ", ".join(names)


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError("pandas", "pandas", "weightspectra.compat") from exc
    return pd


def peer_layer_ids(model: object) -> dict[str, int]:
    """The peer's layer ids of an ``nn.Module``: each module's index in ``named_modules()``.

    Returns an empty mapping for any other input (our own ids are used then).
    """
    named = getattr(model, "named_modules", None)
    if named is None or not callable(named):
        return {}
    return {name: i for i, (name, _) in enumerate(named())}


def _module_id(key: str, ids: Mapping[str, int]) -> int | None:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in ids:
            return ids[prefix]
    return None


def details_frame(
    report: Report, ids: Mapping[str, int] | None = None, columns: Sequence[str] = DETAILS_COLUMNS
) -> pd.DataFrame:
    """The peer-style ``details`` DataFrame of a report: one row per analysed matrix.

    Parameters
    ----------
    report : Report
    ids : mapping, optional
        Module path → peer layer id (:func:`peer_layer_ids`); our ids when missing.
    columns : sequence of str
        Leading columns, in order; every other column of ours follows.

    Raises
    ------
    MissingDependencyError
        If pandas is not installed.
    """
    pd = _pandas()
    records = [_peer_row(row, ids or {}) for row in report.analysed]
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=list(columns))
    lead = [c for c in columns if c in frame.columns]
    rest = [c for c in frame.columns if c not in lead]
    return frame[lead + rest].sort_values("layer_id", kind="stable").reset_index(drop=True)


def _peer_row(row: LayerResult, ids: Mapping[str, int]) -> dict[str, Any]:
    module_id = _module_id(row.key, ids) if ids else None
    out: dict[str, Any] = {
        "layer_id": row.layer_id if module_id is None else module_id,
        "name": row.name.rsplit(".", 1)[-1],
        "longname": row.name,
        "layer_type": row.layer_type,
        "N": row.N,
        "M": row.M,
        "Q": row.Q,
        "rf": row.rf,
        "num_evals": row.num_evals,
        "has_esd": row.evals is not None,
    }
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
    return out


def peer_warning(alpha: float) -> str:
    """The peer's warning vocabulary for a fitted α: ``over-trained`` below 2,
    ``under-trained`` above 6, else ''. weightspectra's own, richer label is ``ws_warning``."""
    if alpha < PEER_OVER_TRAINED:
        return "over-trained"
    if alpha > PEER_UNDER_TRAINED:
        return "under-trained"
    return ""


class WeightWatcher:
    """The peer's ``WeightWatcher`` object, backed by :func:`weightspectra.analyze`.

    Parameters
    ----------
    model : nn.Module, state dict, mapping or path, optional
        Anything :func:`weightspectra.analyze` accepts (also given later to :meth:`analyze`).
    log_level : optional
        Accepted for compatibility and ignored: weightspectra configures no logging.

    Examples
    --------
    >>> from weightspectra.compat import WeightWatcher
    >>> watcher = WeightWatcher(model=model)           # doctest: +SKIP
    >>> details = watcher.analyze()                    # doctest: +SKIP
    >>> watcher.get_summary(details)["alpha"]          # doctest: +SKIP
    """

    def __init__(self, model: object = None, log_level: object = None) -> None:
        self.model = model
        self.details: pd.DataFrame | None = None
        self.report: Report | None = None

    # -- options -------------------------------------------------------------------------------

    def _model(self, model: object) -> object:
        chosen = model if model is not None else self.model
        if chosen is None:
            raise InputError("no model: pass WeightWatcher(model=...) or analyze(model=...)")
        return chosen

    def _options(self, model: object, kwargs: Mapping[str, Any]) -> tuple[Options, dict[str, Any]]:
        """Our Options from the peer's keyword arguments, and the handled ones (plot, ...)."""
        ours: dict[str, Any] = {}
        handled: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in _MAPPED:
                if value is not None or key == "max_evals":
                    ours[_MAPPED[key]] = value
            elif key in _HANDLED:
                handled[key] = value
            elif key in _PASS_THROUGH:
                name = _PASS_THROUGH[key]
                try:
                    Options.from_kwargs(**{name: value})
                except OptionError as exc:
                    if value:
                        raise OptionError(
                            f"{key}={value!r}: this weightspectra cannot run it ({exc}); drop "
                            f"the option (supported options: {_supported()})"
                        ) from exc
                else:
                    ours[name] = value
            elif key in _DEFAULT_ONLY:
                if not any(value is d or value == d for d in _DEFAULT_ONLY[key]):
                    raise OptionError(
                        f"{key}={value!r} is not supported by weightspectra.compat (only its "
                        f"default {_DEFAULT_ONLY[key][0]!r}); supported options: "
                        f"{_supported()}"
                    )
            else:
                raise OptionError(
                    f"unknown option {key}={value!r}; supported options: {_supported()}"
                )
        fit = handled.get("fit", "PL")
        if fit not in _FITS:
            raise OptionError(f"fit={fit!r}: only the power law ('PL') is supported here")
        svd = handled.get("svd_method", "full")
        if svd not in _SVD_METHODS:
            raise OptionError(
                f"svd_method={svd!r}: only 'full' is supported here (the "
                "eigenvalues are exact to float64 precision)"
            )
        layers = handled.get("layers") or []
        keep, drop = self._layer_selectors(model, layers)
        max_n = handled.get("max_N")
        if max_n is not None:
            plan = ws_describe(model, Options.from_kwargs(**ours))
            drop += [f"^{re.escape(r.name)}$" for r in plan.layers if max_n < r.N]
        if keep:
            ours["layers"] = tuple(keep)
        if drop:
            ours["exclude"] = tuple(drop)
        return Options.from_kwargs(**ours), handled

    def _layer_selectors(self, model: object, layers: object) -> tuple[list[Any], list[Any]]:
        items = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
        ids = peer_layer_ids(model)
        keep: list[Any] = []
        drop: list[Any] = []
        by_id: dict[int, list[str]] = {}
        if ids and any(isinstance(i, int) and not isinstance(i, bool) for i in items):
            for row in ws_describe(model).layers:
                mid = _module_id(row.key, ids)
                if mid is not None:
                    by_id.setdefault(mid, []).append(f"^{re.escape(row.name)}$")
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                target = drop if item < 0 else keep
                if ids:
                    target += by_id.get(abs(item), ["^(?!)$"])  # an unknown id selects nothing
                else:
                    target.append(abs(item))
            elif isinstance(item, str):
                keep.append(item)
            elif hasattr(item, "name") and isinstance(item.name, str):  # the peer's LAYER_TYPE
                keep.append(item.name.lower())
            else:
                raise OptionError(f"layers: {item!r} is not a layer id, name or type")
        return keep, drop

    # -- the peer's methods ---------------------------------------------------------------------

    def analyze(self, model: object = None, layers: object = (), **kwargs: Any) -> pd.DataFrame:
        """Analyse the model; returns the per-layer ``details`` DataFrame (peer column names).

        Parameters
        ----------
        model : optional
            Overrides the model given at construction.
        layers : list, optional
            Peer-style selection: ids to keep (negative ids to drop), names, layer types.
        **kwargs
            The peer's options: ``min_evals``, ``max_evals``, ``max_N``, ``pool``,
            ``conv2d_norm``, ``plot``, ``savefig``, ``fit='PL'``, and ``mp_fit`` /
            ``randomize`` / ``detX`` when this weightspectra has those diagnostics.

        Raises
        ------
        OptionError
            On an unknown or unsupported option (the message lists the supported ones).
        InputError
            If no model is given or it cannot be read.
        MissingDependencyError
            If pandas (or, with ``plot=True``, matplotlib) is not installed.
        """
        chosen = self._model(model)
        options, handled = self._options(chosen, {"layers": layers, **kwargs})
        report = ws_analyze(chosen, options)
        self.report = report
        self.details = details_frame(report, peer_layer_ids(chosen))
        if handled.get("plot"):
            from weightspectra.report.plots import save_report_plots

            savefig = handled.get("savefig", "ww-img")
            target = savefig if isinstance(savefig, (str, Path)) else "ww-img"
            save_report_plots(report, target)
        return self.details

    def get_details(self) -> pd.DataFrame:
        """The ``details`` of the last :meth:`analyze`.

        Raises
        ------
        InputError
            If nothing was analysed yet.
        """
        if self.details is None:
            raise InputError("nothing analysed yet: call analyze() first")
        return self.details

    def get_summary(self, details: pd.DataFrame | None = None) -> dict[str, float]:
        """Means of the summary metrics over the layers of ``details`` (default: the last
        :meth:`analyze`). Failed fits (NaN α) are left out of the α-based means.

        Raises
        ------
        InputError
            If nothing was analysed and no ``details`` is given.
        """
        frame = self.get_details() if details is None else details
        out: dict[str, float] = {}
        for key in SUMMARY_KEYS:
            if key in frame.columns:
                col = frame[key].astype(float)
                col = col[np.isfinite(col)]
                if len(col):
                    out[key] = float(col.mean())
        return out

    def describe(self, model: object = None, layers: object = (), **kwargs: Any) -> pd.DataFrame:
        """Layers that :meth:`analyze` would analyse (ids, names, types, shapes); computes
        nothing.

        Raises
        ------
        OptionError, InputError, MissingDependencyError
            As :meth:`analyze`.
        """
        chosen = self._model(model)
        options, _ = self._options(chosen, {"layers": layers, **kwargs})
        report = ws_describe(chosen, options)
        ids = peer_layer_ids(chosen)
        pd = _pandas()
        records = [
            {k: v for k, v in _peer_row(r, ids).items() if k in DESCRIBE_COLUMNS}
            for r in report.layers
            if r.status.value == "planned"
        ]
        frame = pd.DataFrame.from_records(records, columns=list(DESCRIBE_COLUMNS))
        return frame.sort_values("layer_id", kind="stable").reset_index(drop=True)

    def get_ESD(
        self,
        model: object = None,
        layer: int | str | None = None,
        random: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """Eigenvalues (ascending) of one layer: ``layer`` is a ``layer_id`` of ``details``, or
        a name / longname. Uses the last analysis when it has the layer, else analyses it.

        Raises
        ------
        InputError
            If the layer is not found among the analysed ones, or ``random=True`` and no
            randomised eigenvalues were computed.
        """
        if layer is None:
            raise InputError("get_ESD needs layer=<layer_id or name>; see get_details()")
        chosen = self._model(model)
        report = self.report
        stale = random and report is not None and not report.option("randomize", False)
        if report is None or model is not None or stale:
            # no analysis yet, another model, or one that kept no shuffled ESD: analyse now
            options, _ = self._options(chosen, kwargs)
            report = ws_analyze(chosen, options.replace(randomize=options.randomize or random))
        row = self._find(report, layer, peer_layer_ids(chosen))
        if random:
            if row.rand_evals is None:
                raise InputError(
                    f"layer {row.name!r} has no randomised eigenvalues (its "
                    "matrix could not be shuffled)"
                )
            return np.array(row.rand_evals)
        if row.evals is None:
            raise InputError(f"layer {row.name!r} was analysed without keeping its eigenvalues")
        return np.array(row.evals)

    @staticmethod
    def _find(report: Report, layer: int | str, ids: Mapping[str, int]) -> LayerResult:
        for row in report.analysed:
            mid = _module_id(row.key, ids) if ids else row.layer_id
            if layer in (mid, row.name) or (
                isinstance(layer, str) and row.name.rsplit(".", 1)[-1] == layer
            ):
                return row
        names = ", ".join(
            f"{_module_id(r.key, ids) if ids else r.layer_id}:{r.name}" for r in report.analysed[:8]
        )
        raise InputError(f"layer {layer!r} is not among the analysed layers ({names}, …)")
