"""A drop-in for the peer's API: ``from weightspectra.compat import WeightWatcher``.

An existing notebook that does ::

    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    summary = watcher.get_summary(details)

runs unchanged, on weightspectra's engine, and gets DataFrames with the peer's column names,
layer ids, short names, layer-type names and ``layers=`` semantics. Where the peer is wrong (a
failed fit reported as α = −1, the uncentred CKA, the ``W + BA`` spectrum truncated to the LoRA
rank, deltas paired by position) the facade gives the right answer; ``docs/compat.md`` lists
every difference. Options the peer has and this layer does not run are accepted at their
default value and otherwise refused in one line naming the alternative.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra.analysis import analyze as ws_analyze
from weightspectra.analysis import describe as ws_describe
from weightspectra.compat.frames import (
    DESCRIBE_COLUMNS,
    DETAILS_COLUMNS,
    PEER_OVER_TRAINED,
    PEER_UNDER_TRAINED,
    SUMMARY_KEYS,
    PeerNaming,
    describe_frame,
    details_frame,
    module_id,
    pandas,
    peer_naming,
    peer_warning,
    split_slice,
)
from weightspectra.compat.options import FITS, PeerCall, shown, supported, translate
from weightspectra.compat.selection import entry_selector, parse_layers
from weightspectra.compat.vectors import vector_metrics as _vector_metrics
from weightspectra.errors import InputError, OptionError
from weightspectra.options import Options
from weightspectra.report.results import LayerResult, Report
from weightspectra.sources import Source, open_model

if TYPE_CHECKING:
    import pandas as pd

    from weightspectra.surgery import SurgeryResult

__all__ = [
    "DESCRIBE_COLUMNS",
    "DETAILS_COLUMNS",
    "PEER_OVER_TRAINED",
    "PEER_UNDER_TRAINED",
    "SUMMARY_KEYS",
    "SUPPORTED_METHODS",
    "WeightWatcher",
    "details_frame",
    "peer_layer_ids",
    "peer_warning",
]

#: The frameworks the peer names (``framework=`` is checked against them, then not needed:
#: the input's kind is detected from the object or file).
FRAMEWORKS = (
    "pytorch",
    "keras",
    "tensorflow",
    "onnx",
    "pystatedict",
    "safetensors",
    "ww_flatfiles",
    "pytorch_bins",
)
#: The peer's smoothing methods → :class:`weightspectra.surgery.SmoothRule`.
SMOOTHING = {"detX": "detx", "detx": "detx", "svd": "fraction", "rmt": "mp", "alpha_min": "tail"}


def peer_layer_ids(model: object) -> dict[str, int]:
    """The peer's layer ids of an ``nn.Module``: each module's index in ``named_modules()``
    (empty for any other input)."""
    return dict(peer_naming(model).ids) if hasattr(model, "named_modules") else {}


class WeightWatcher:
    """The peer's ``WeightWatcher`` object, backed by :func:`weightspectra.analyze`.

    Parameters
    ----------
    model : nn.Module, state dict, mapping or path, optional
        Anything :func:`weightspectra.analyze` accepts (also given later to :meth:`analyze`).
    framework : str, optional
        Accepted for compatibility (one of :data:`FRAMEWORKS`); the input's kind is detected.
    base_model : model, optional
        Every matrix becomes ``W − W_base``, paired by *name* (the peer pairs by position).
    log_level : optional
        Accepted for compatibility and ignored: weightspectra configures no logging.

    Raises
    ------
    OptionError
        If ``framework`` names no framework the peer knows.

    Examples
    --------
    >>> from weightspectra.compat import WeightWatcher
    >>> watcher = WeightWatcher(model=model)           # doctest: +SKIP
    >>> details = watcher.analyze()                    # doctest: +SKIP
    >>> watcher.get_summary(details)["alpha"]          # doctest: +SKIP
    """

    def __init__(
        self,
        model: object = None,
        framework: str | None = None,
        base_model: object = None,
        log_level: object = None,
    ) -> None:
        if framework is not None and str(framework).lower() not in FRAMEWORKS:
            raise OptionError(
                f"framework={shown(framework)} is not one the peer knows "
                f"({', '.join(FRAMEWORKS)}); leave it out: the input's kind is detected"
            )
        self.model = model
        self.framework = framework
        self.base_model = base_model
        self.details: pd.DataFrame | None = None
        self.report: Report | None = None
        self.last_edit: SurgeryResult | None = None

    # -- options -------------------------------------------------------------------------------

    def _model(self, model: object) -> object:
        chosen = model if model is not None else self.model
        if chosen is None:
            raise InputError("no model: pass WeightWatcher(model=...) or analyze(model=...)")
        return chosen

    def _source(self, model: object, call: PeerCall) -> Source:
        """The source analysed: the model, its delta from a base, or a PEFT adapter."""
        base = call.handled.get("base_model")
        base = base if base is not None else self.base_model
        peft = call.handled.get("peft", False)
        source = open_model(model)
        from weightspectra.sources.peft import AdapterSource

        is_adapter = isinstance(source, AdapterSource)
        if peft and not is_adapter:
            raise OptionError(
                f"peft={peft!r} needs a PEFT adapter folder (adapter_config.json beside its "
                f"weights); got {shown(model)}: pass the adapter's folder"
            )
        if base is None:
            if peft == "with_base":
                raise OptionError("peft='with_base' needs base_model=: the model it adapts")
            return source
        if is_adapter and peft != "with_base" and peft:
            return source  # the adapter's ΔW alone, as the peer's peft=True
        from weightspectra.deltas import with_base

        if base is model:
            raise InputError(
                "base_model is the model itself: every delta would be zero; pass the base "
                "model the fine-tune started from"
            )
        return with_base(source, open_model(base))

    def _options(self, source: Source, call: PeerCall, model: object) -> Options:
        ours = dict(call.ours)
        layers = call.handled.get("layers") or []
        filters = parse_layers(layers)
        naming = self._naming(model, source)
        max_n = call.handled.get("max_N")
        if not filters.empty or max_n is not None:
            plan = [
                r for r in ws_describe(source, Options.from_kwargs(**ours)).layers if r.N or r.M
            ]
            if not filters.empty:
                ours["layers"] = entry_selector(plan, filters, naming)
            if max_n is not None:
                big = {r.key.removesuffix(".weight") for r in plan if max_n < r.N}
                if big:
                    ours["exclude"] = tuple(f"^{_escape(n)}$" for n in sorted(big))
        return Options.from_kwargs(**ours)

    @staticmethod
    def _naming(model: object, source: Source) -> PeerNaming:
        return peer_naming(model, [e.key for e in source.entries])

    def _run(
        self, model: object, layers: object, kwargs: Mapping[str, Any]
    ) -> tuple[Source, Options, PeerCall]:
        chosen = self._model(model)
        call = translate({"layers": layers, **kwargs})
        source = self._source(chosen, call)
        return source, self._options(source, call, chosen), call

    # -- the peer's methods ---------------------------------------------------------------------

    def analyze(self, model: object = None, layers: object = (), **kwargs: Any) -> pd.DataFrame:
        """Analyse the model; returns the per-layer ``details`` DataFrame (peer column names).

        Parameters
        ----------
        model : optional
            Overrides the model given at construction.
        layers : list, optional
            The peer's selection: ids to keep (negative ids to drop), exact names (``'-name'``
            to drop), layer types (``'dense'``, ``'conv1d'``, ...); ids win over types and names
            over both.
        **kwargs
            The peer's options (see ``docs/compat.md``): ``min_evals``, ``max_evals``,
            ``max_N``, ``pool``, ``conv2d_norm``, ``plot``, ``savefig``, ``fit``, ``mp_fit``,
            ``randomize``, ``detX``, ``fix_fingers``, ``base_model``, ``peft``, and the peer's
            defaults spelled out.

        Raises
        ------
        OptionError
            On an unknown or unsupported option (one line, naming the alternative).
        InputError
            If no model is given or it cannot be read.
        MissingDependencyError
            If pandas (or, with ``plot=True``, matplotlib) is not installed.
        """
        chosen = self._model(model)
        source, options, call = self._run(chosen, layers, kwargs)
        report = ws_analyze(source, options)  # a delta's low-rank rows are flagged there
        self.report = report
        self.details = details_frame(report, self._naming(chosen, source))
        # the peer's summary has mp_softrank only when the MP fit was asked for
        self.details.attrs["mp_fit"] = bool(call.handled.get("mp_fit", False))
        if call.handled.get("plot"):
            from weightspectra.report.plots import save_report_plots

            savefig = call.handled.get("savefig", "ww-img")
            target = savefig if isinstance(savefig, (str, Path)) else "ww-img"
            save_report_plots(report, target)
        return self.details

    def describe(self, model: object = None, layers: object = (), **kwargs: Any) -> pd.DataFrame:
        """Layers that :meth:`analyze` would analyse (ids, names, types, shapes, and
        ``slice_id`` with ``pool=False``); computes nothing.

        Raises
        ------
        OptionError, InputError, MissingDependencyError
            As :meth:`analyze`.
        """
        chosen = self._model(model)
        source, options, _ = self._run(chosen, layers, kwargs)
        return describe_frame(ws_describe(source, options), self._naming(chosen, source))

    def get_details(self) -> pd.DataFrame | None:
        """The ``details`` of the last :meth:`analyze`, or None before any (as the peer)."""
        return self.details

    def get_summary(self, details: pd.DataFrame | None = None) -> dict[str, float]:
        """Means of the peer's summary metrics over the layers of ``details`` (default: the last
        :meth:`analyze`; ``{}`` before any). ``mp_softrank`` appears only when the MP fit ran.
        Failed fits (NaN α, where the peer has −1) are left out of the α-based means."""
        frame = self.details if details is None else details
        out: dict[str, float] = {}
        if frame is None:
            return out
        asked = frame.attrs.get("mp_fit", True)
        for key in SUMMARY_KEYS:
            if key == "mp_softrank" and not asked:
                continue
            if key in frame.columns:
                col = frame[key].astype(float)
                col = col[np.isfinite(col)]
                if len(col):
                    out[key] = float(col.mean())
        return out

    def get_ESD(
        self,
        model: object = None,
        layer: int | str | None = None,
        random: bool = False,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Eigenvalues (ascending) of one layer: ``layer`` is a ``layer_id`` of ``details``, or
        a name / longname. Uses the last analysis when it has the layer, else analyses it.
        ``random=True`` gives the ESD of the entry-shuffled matrix (seeded).

        Raises
        ------
        InputError
            If the layer is not found among the analysed ones.
        """
        if layer is None:
            raise InputError("get_ESD needs layer=<layer_id or name>; see get_details()")
        chosen = self._model(model)
        options = {**(params or {}), **kwargs}
        report = self.report
        stale = random and report is not None and not report.option("randomize", False)
        if report is None or model is not None or stale or options:
            source, opts, _ = self._run(chosen, (), options)
            report = ws_analyze(source, opts.replace(randomize=opts.randomize or random))
            naming = self._naming(chosen, source)
        else:
            naming = self._naming(chosen, open_model(chosen))
        row = _find(report, layer, naming)
        values = row.rand_evals if random else row.evals
        if values is None:
            what = "randomised eigenvalues" if random else "eigenvalues"
            raise InputError(f"layer {row.name!r} has no {what} kept")
        return np.sort(np.array(values))

    def get_Weights(
        self, model: object = None, layer: int | str | None = None, params: object = None
    ) -> list[np.ndarray]:
        """The weight matrices of one layer as the analysis sees them: ``[W]`` for a dense
        layer, one ``out × in`` matrix per kernel position for a convolution.

        Raises
        ------
        InputError
            If the layer is not found.
        """
        if layer is None:
            raise InputError("get_Weights needs layer=<layer_id or name>; see describe()")
        chosen = self._model(model)
        source = open_model(chosen)
        naming = self._naming(chosen, source)
        plan = ws_describe(source)
        row = _find_in(plan.layers, layer, naming, planned=True)
        entry = next(e for e in source.entries if e.key == row.key)
        w = np.asarray(entry.load())
        if w.ndim == 4:
            return [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
        if w.ndim == 3:
            return [w[:, :, i] for i in range(w.shape[2])]
        return [w]

    def distances(
        self,
        model_1: object,
        model_2: object,
        method: str = "raw",
        layers: object = (),
        start_ids: int = 0,
        pool: bool = True,
        channels: object = None,
    ) -> tuple[float, float, pd.DataFrame]:
        """``(avg_delta_W, avg_delta_b, details)`` as the peer's: per paired layer, ``delta_W``
        is ‖W₁ − W₂‖_F (``raw``: on the tensors; ``euclidean``: on the matrices, averaged
        over a convolution's slices) or, with ``cka``, the *centred* linear CKA (the peer's is
        uncentred). Layers are paired by name, not position. For everything else per layer
        (principal angles, ESD distance, Δα), see :func:`weightspectra.distances`.

        Raises
        ------
        OptionError
            On another method.
        """
        from weightspectra.compat.edits import peer_distances

        if method not in ("raw", "euclidean", "cka"):
            raise OptionError(f"method={shown(method)}: choose 'raw', 'euclidean' or 'cka'")
        return peer_distances(self, model_1, model_2, method, layers)

    def SVDSmoothing(
        self,
        model: object = None,
        percent: float = 0.8,
        pool: bool = True,
        layers: object = (),
        method: str = "detX",
        fit: str = "PL",
        plot: bool = False,
        start_ids: int = 0,
        svd_method: str = "fast",
        inplace: bool = False,
    ) -> Any:
        """A smoothed model: each 2-D weight keeps its top components (``detX``: the detX
        count; ``svd``: ``percent`` of its rank; ``rmt``: the MP spikes; ``alpha_min``: the
        power-law tail). Returns an edited *copy* of an ``nn.Module`` (the peer edits the
        model in place; ``inplace=True`` does that) or the edited state (numpy arrays) for
        other inputs; :attr:`last_edit` says per layer what was removed.

        Raises
        ------
        OptionError
            On another method, or a percent outside (0, 1].
        """
        from weightspectra.surgery import smooth

        if method not in SMOOTHING:
            raise OptionError(f"method={shown(method)}: choose one of {sorted(SMOOTHING)}")
        if fit not in FITS:
            raise OptionError(f"fit={shown(fit)}: choose 'PL'")
        chosen = self._model(model)
        source, options, _ = self._run(chosen, layers, {"pool": pool})
        result = smooth(source, SMOOTHING[method], fraction=percent, options=options)
        return self._edited(chosen, result, inplace)

    def SVDSharpness(
        self,
        model: object = None,
        pool: bool = True,
        layers: object = (),
        plot: bool = False,
        start_ids: int = 0,
        inplace: bool = False,
    ) -> Any:
        """A sharpened model: each 2-D weight's singular values above its MP bulk edge clipped
        to the edge. Returns a copy (or ``inplace=True``), as :meth:`SVDSmoothing`."""
        from weightspectra.surgery import clip_spikes

        chosen = self._model(model)
        source, options, _ = self._run(chosen, layers, {"pool": pool})
        return self._edited(chosen, clip_spikes(source, options), inplace)

    def _edited(self, model: object, result: SurgeryResult, inplace: bool) -> Any:
        self.last_edit = result
        if hasattr(model, "named_parameters"):
            target = model if inplace else copy.deepcopy(model)
            return result.apply_to(target)
        if inplace:
            raise OptionError(
                "inplace=True edits an nn.Module; for a file or state dict use the returned "
                "state (or weightspectra.surgery's to_safetensors)"
            )
        return dict(result.state)

    def vector_metrics(self, vectors: object = None, params: object = None) -> pd.DataFrame:
        """Per-vector metrics (``length``, ``entropy``, ``discrete_entropy``,
        ``localization_ratio``, ``participation_ratio``) of a vector, a list of vectors or the
        rows of a 2-D array (see :func:`weightspectra.compat.vectors.vector_metrics`)."""
        return _vector_metrics(vectors)

    def fit_powerlaw(
        self, evals: Sequence[float] | np.ndarray, xmin: float | None = None, **kwargs: Any
    ) -> tuple[Any, ...]:
        """Fit a power law to ``evals``; returns the peer's tuple ``(alpha, Lambda, xmin, xmax,
        D, sigma, num_pl_spikes, num_fingers, raw_alpha, status, warning)``. A failed fit gives
        NaN numbers and ``status='failed'`` (the peer: −1). ``Lambda`` (the TPL's) is NaN.

        Raises
        ------
        OptionError
            If ``xmin`` is given (the xmin scan always chooses it here).
        """
        from weightspectra.fitting.powerlaw import FitError, fit_power_law

        if xmin is not None:
            raise OptionError("fit_powerlaw(xmin=...) is not run: the KS scan chooses xmin")
        try:
            fit = fit_power_law(np.asarray(evals, dtype=np.float64))
        except FitError as exc:
            nan = math.nan
            return (nan, nan, nan, nan, nan, nan, 0, 0, nan, "failed", str(exc))
        warning = peer_warning(fit.alpha)
        return (
            fit.alpha,
            math.nan,
            fit.xmin,
            fit.xmax,
            fit.D,
            fit.sigma,
            fit.num_pl_spikes,
            0,
            fit.alpha,
            "success",
            warning,
        )

    def get_framework_layer(
        self, model: object = None, layer: int | str | None = None, params: object = None
    ) -> Any:
        """The ``nn.Module`` of one layer (by the peer's id or name).

        Raises
        ------
        InputError
            If the model is not an ``nn.Module`` or has no such layer.
        """
        chosen = self._model(model)
        named = getattr(chosen, "named_modules", None)
        if named is None:
            raise InputError(
                f"get_framework_layer needs an nn.Module, got {shown(chosen)}; use get_Weights "
                "for the matrices of other inputs"
            )
        for i, (name, module) in enumerate(named()):
            if layer in (i, name) or (isinstance(layer, str) and name.rsplit(".", 1)[-1] == layer):
                return module
        raise InputError(f"the model has no layer {shown(layer)} (ids or module names)")

    @staticmethod
    def matrix_distance(w1: np.ndarray, w2: np.ndarray, method: str = "euclidean") -> float:
        """‖W₁ − W₂‖_F (``raw``/``euclidean``) or the centred linear CKA (``cka``; the peer's
        is uncentred) of two arrays of one shape.

        Raises
        ------
        OptionError
            On another method.
        InputError
            If the shapes differ.
        """
        from weightspectra.compat.edits import delta_w

        if method not in ("raw", "euclidean", "cka"):
            raise OptionError(f"method={shown(method)}: choose 'raw', 'euclidean' or 'cka'")
        a, b = np.asarray(w1), np.asarray(w2)
        if a.shape != b.shape:
            raise InputError(f"the two arrays have different shapes: {a.shape} vs {b.shape}")
        return delta_w(a, b, "raw" if a.ndim < 2 else method)

    def same_models(self, model_1: object, model_2: object) -> bool:
        """Whether every weight of the two models, paired by name, is equal."""
        from weightspectra.sources.delta import paired_entries

        pairs = paired_entries(open_model(model_1), open_model(model_2))
        return bool(pairs) and all(
            partner is not None and np.array_equal(entry.load(), partner.load())
            for entry, partner, _ in pairs
        )

    @staticmethod
    def valid_framework(framework: object) -> bool:
        """Whether ``framework`` is one of the peer's framework names (:data:`FRAMEWORKS`)."""
        return isinstance(framework, str) and framework.lower() in FRAMEWORKS

    @staticmethod
    def infer_framework(model: object) -> str:
        """The peer's framework name of ``model`` (detected as weightspectra opens it)."""
        if hasattr(model, "named_modules"):
            return "pytorch"
        if isinstance(model, Mapping):
            return "pystatedict"
        if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
            return "onnx"
        if isinstance(model, (str, Path)):
            return (
                "safetensors"
                if Path(model).suffix == ".safetensors" or Path(model).is_dir()
                else "pystatedict"
            )
        if type(model).__module__.startswith(("keras", "tensorflow")):
            return "keras"
        raise InputError(f"cannot tell the framework of {shown(model)}")


#: The peer's public methods the facade runs (checked against the peer's class in the tests).
SUPPORTED_METHODS = (
    "analyze",
    "describe",
    "get_details",
    "get_summary",
    "get_ESD",
    "get_Weights",
    "distances",
    "SVDSmoothing",
    "SVDSharpness",
    "vector_metrics",
    "fit_powerlaw",
    "infer_framework",
    "get_framework_layer",
    "matrix_distance",
    "same_models",
    "valid_framework",
)


def _escape(name: str) -> str:
    import re

    return re.escape(name)


def _find(report: Report, layer: int | str, naming: PeerNaming) -> LayerResult:
    return _find_in(report.analysed, layer, naming)


def _find_in(
    rows: Sequence[LayerResult], layer: int | str, naming: PeerNaming, planned: bool = False
) -> LayerResult:
    candidates = [r for r in rows if (r.status.value == "planned") or not planned]
    for row in candidates:
        longname = split_slice(row.name)[0]
        if isinstance(layer, int) and not isinstance(layer, bool):
            if naming.layer_id(row) == layer:
                return row
        elif layer in (row.name, longname, naming.name(longname)) or (
            isinstance(layer, str) and longname.rsplit(".", 1)[-1] == layer
        ):
            return row
    names = ", ".join(f"{naming.layer_id(r)}:{r.name}" for r in candidates[:8])
    raise InputError(f"layer {shown(layer)} is not among the analysed layers ({names}, …)")


# kept for callers of the old module
_module_id = module_id
_pandas = pandas
_supported = supported
