"""Per-layer quantization sensitivity: Hessian-based (HAWQ-V2) and data-free (α), side by side.

Hessian rule (curvature.md): Ω_i(b) = (Tr(H_ii) / n_i) · ‖Q_b(W_i) − W_i‖², with H_ii the block of
the loss Hessian on layer i's weight (n_i entries), its trace estimated by Hutchinson.

Data-free rule: the layer's power-law exponent α (from its weight spectrum, no data) is mapped
linearly, as in AlphaPruning, to an importance factor in ``[1 − spread, 1 + spread]`` (the
smallest α, i.e. the most heavy-tailed, best-trained layer, gets ``1 + spread``), and

    Ω^α_i(b) = importance_i · ‖Q_b(W_i) − W_i‖² / ‖W_i‖²,

the relative squared error of the layer (a proxy for the relative perturbation of its output).
A layer with few eigenvalues (a small classifier head) has an unreliable α; its row says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import nn

from weightspectra.core.eigen import layer_eigenvalues
from weightspectra.curvature.operator import Engine, HessianOperator, LossFn, Mode
from weightspectra.curvature.solvers import trace
from weightspectra.enums import parse_enum
from weightspectra.errors import InputError, NumericalWarning, OptionError
from weightspectra.fitting.powerlaw import SMALL_SAMPLE, FitError, fit_power_law
from weightspectra.quantize.fake import (
    check_bits,
    layer_weight,
    quantizable_layers,
    quantization_error,
)
from weightspectra.report.tables import pipe_table, records_frame

#: Default candidate widths.
DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 8)


class Sensitivity(str, Enum):
    """Which sensitivity drives a bit plan."""

    HESSIAN = "hessian"
    ALPHA = "alpha"


@dataclass(frozen=True)
class LayerSensitivity:
    """Sensitivity of one layer.

    Attributes
    ----------
    name : str
    shape : tuple of int
        Weight shape.
    n_params : int
        Weight entries ``n_i``.
    qerror : dict of int to float
        ``‖Q_b(W) − W‖²`` per width.
    weight_norm2 : float
        ``‖W‖²``.
    trace, trace_stderr : float or None
        Hutchinson estimate of Tr(H_ii) (None when no data were given).
    alpha : float
        Power-law α of the weight spectrum (NaN when the fit failed).
    n_evals : int
        Eigenvalues behind α.
    note : str
        Why α (or the trace) should be read with care, or empty.
    """

    name: str
    shape: tuple[int, ...]
    n_params: int
    qerror: dict[int, float]
    weight_norm2: float
    trace: float | None
    trace_stderr: float | None
    alpha: float
    n_evals: int
    note: str = ""
    importance: float = field(default=float("nan"))

    def omega_hessian(self, bits: int) -> float:
        """``(max(Tr, 0) / n_i) · ‖Q_b(W) − W‖²``; NaN without a trace."""
        if self.trace is None:
            return float("nan")
        return max(self.trace, 0.0) / self.n_params * self.qerror[bits]

    def omega_alpha(self, bits: int) -> float:
        """``importance · ‖Q_b(W) − W‖² / ‖W‖²``."""
        return self.importance * self.qerror[bits] / self.weight_norm2


@dataclass(frozen=True)
class SensitivityTable:
    """Sensitivities of every quantizable layer at every candidate width.

    Attributes
    ----------
    layers : tuple of LayerSensitivity
    bits : tuple of int
        Candidate widths, ascending.
    spread : float
        Half-width of the α importance map.
    trace_probes : int
        Hutchinson probes used (0 without data).
    hvp_count : int
    seed : int
    """

    layers: tuple[LayerSensitivity, ...]
    bits: tuple[int, ...]
    spread: float
    trace_probes: int = 0
    hvp_count: int = 0
    seed: int = 0

    @property
    def names(self) -> list[str]:
        """Layer names, in order."""
        return [layer.name for layer in self.layers]

    @property
    def sizes(self) -> np.ndarray:
        """Weight entries per layer, shape ``(L,)``, int64."""
        return np.array([layer.n_params for layer in self.layers], dtype=np.int64)

    @property
    def has_hessian(self) -> bool:
        """Whether Hessian traces were measured."""
        return all(layer.trace is not None for layer in self.layers)

    def omega(self, kind: Sensitivity | str = Sensitivity.HESSIAN) -> np.ndarray:
        """Ω as an array of shape ``(L, K)`` (layers × candidate widths).

        Raises
        ------
        InputError
            If the Hessian kind is asked of a data-free table.
        """
        k = parse_enum(Sensitivity, kind, "sensitivity")
        if k is Sensitivity.HESSIAN and not self.has_hessian:
            raise InputError(
                "this table has no Hessian traces (it was built without data); pass loss_fn and "
                "batches to sensitivity_table, or use sensitivity='alpha'"
            )
        f = (
            LayerSensitivity.omega_hessian
            if k is Sensitivity.HESSIAN
            else LayerSensitivity.omega_alpha
        )
        return np.array([[f(layer, b) for b in self.bits] for layer in self.layers])

    def rows(self) -> list[dict[str, Any]]:
        """One flat dictionary per layer (Ω columns named ``omega_h@b`` and ``omega_a@b``)."""
        out = []
        for layer in self.layers:
            row: dict[str, Any] = {
                "layer": layer.name,
                "shape": "x".join(map(str, layer.shape)),
                "n": layer.n_params,
                "trace": layer.trace,
                "trace_se": layer.trace_stderr,
                "alpha": layer.alpha,
                "importance": layer.importance,
            }
            for b in self.bits:
                row[f"omega_h@{b}"] = layer.omega_hessian(b)
            for b in self.bits:
                row[f"omega_a@{b}"] = layer.omega_alpha(b)
            row["note"] = layer.note
            out.append(row)
        return out

    def table(self) -> str:
        """Markdown pipe table of :meth:`rows`."""
        return pipe_table(self.rows(), digits=3)

    def to_pandas(self) -> Any:
        """:meth:`rows` as a :class:`pandas.DataFrame`.

        Raises
        ------
        MissingDependencyError
            If pandas is not installed.
        """
        return records_frame(self.rows(), "SensitivityTable.to_pandas")


def weight_alpha(w: torch.Tensor) -> tuple[float, int, str]:
    """Power-law α of a Linear (2-D) or Conv (≥ 3-D) weight's spectrum, data-free.

    Returns
    -------
    alpha : float
        NaN when the fit is impossible.
    n_evals : int
    note : str
        Empty, or why α is unreliable.
    """
    a = w.detach().to(torch.float64).cpu().numpy()
    stack = a[None] if a.ndim == 2 else np.moveaxis(a.reshape(a.shape[0], a.shape[1], -1), 2, 0)
    evals = layer_eigenvalues(stack, what="weight")
    try:
        fit = fit_power_law(evals)
    except FitError as exc:
        return float("nan"), int(evals.size), f"α fit failed ({exc}); treated as most sensitive"
    note = ""
    if evals.size < SMALL_SAMPLE or fit.small_sample:
        note = f"only {evals.size} eigenvalues: α unreliable (small head)"
    return float(fit.alpha), int(evals.size), note


def alpha_importance(alphas: np.ndarray, spread: float) -> np.ndarray:
    """AlphaPruning-style linear map of α to ``[1 − spread, 1 + spread]``, smallest α highest.

    NaN α (failed fit) gets ``1 + spread``; equal α everywhere gives 1.

    Parameters
    ----------
    alphas : ndarray of shape (L,)
    spread : float in [0, 1)

    Returns
    -------
    ndarray of shape (L,)
    """
    a = np.asarray(alphas, dtype=np.float64)
    ok = np.isfinite(a)
    out = np.full(a.shape, 1.0 + spread)
    if ok.any():
        lo, hi = float(a[ok].min()), float(a[ok].max())
        t = (a[ok] - lo) / (hi - lo) if hi > lo else np.full(int(ok.sum()), 0.5)
        out[ok] = 1.0 + spread - 2.0 * spread * t
    return out


def sensitivity_table(
    model: nn.Module,
    bits: Sequence[int] = DEFAULT_BITS,
    loss_fn: LossFn | None = None,
    batches: Iterable[Any] | None = None,
    layers: Sequence[str] | None = None,
    spread: float = 0.5,
    seed: int = 0,
    mode: Mode | str = Mode.EVAL,
    dtype: torch.dtype | None = None,
    engine: Engine | str = Engine.DOUBLE_BACKWARD,
    trace_options: Mapping[str, Any] | None = None,
) -> SensitivityTable:
    """Hessian-based and α-based sensitivities of the Linear/Conv layers of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
    bits : sequence of int, default (2, 3, 4, 8)
        Candidate widths.
    loss_fn, batches : optional
        With both, per-layer Hessian traces are estimated (one Hutchinson run gives all layers);
        without, the table is data-free (α only).
    layers : sequence of str, optional
        Restrict to these layer names (default: every Linear/Conv layer).
    spread : float, default 0.5
        Half-width of the α importance map, in ``[0, 1)``.
    seed : int, default 0
    mode, dtype, engine
        As for :class:`~weightspectra.curvature.HessianOperator`.
    trace_options : mapping, optional
        Keyword arguments for :func:`~weightspectra.curvature.trace`; default
        ``{"rtol": 0.02, "layer_rtol": 0.1, "max_probes": 200}``.

    Returns
    -------
    SensitivityTable

    Raises
    ------
    InputError
        If only one of ``loss_fn``/``batches`` is given or a layer name is unknown.
    OptionError
        On invalid widths or ``spread``.

    Warns
    -----
    NumericalWarning
        When a layer's trace estimate is negative (the Hessian rule then uses 0 for it).
    """
    widths = tuple(sorted({check_bits(b, "bits") for b in bits}))
    if not widths:
        raise OptionError("bits is empty; give candidate widths such as (2, 3, 4, 8)")
    if not (isinstance(spread, (int, float)) and 0 <= spread < 1):
        raise OptionError(f"spread must be in [0, 1), got {spread!r}")
    if (loss_fn is None) != (batches is None):
        raise InputError(
            "give both loss_fn and batches for Hessian sensitivities, or neither for the "
            "data-free (α) table"
        )
    all_layers = quantizable_layers(model)
    names = list(all_layers) if layers is None else list(layers)
    unknown = [n for n in names if n not in all_layers]
    if unknown:
        raise InputError(
            f"layers {unknown} are not Linear/Conv layers; choose from {list(all_layers)}"
        )

    traces: dict[str, tuple[float, float]] = {}
    probes = hvps = 0
    if loss_fn is not None and batches is not None:
        H = HessianOperator(
            model,
            loss_fn,
            batches,
            params=[f"{n}.weight" for n in names],
            mode=mode,
            dtype=dtype,
            engine=engine,
        )
        options: dict[str, Any] = {"rtol": 0.02, "layer_rtol": 0.1, "max_probes": 200}
        options.update(trace_options or {})
        est = trace(H, seed=seed, **options)
        traces = est.layers
        probes, hvps = est.n_probes, est.hvp_count
        negative = [n for n in names if traces[n][0] < 0]
        if negative:
            warnings.warn(
                f"negative Hessian trace estimates for layers {negative} (the model is not at a "
                "minimum, or the estimate is noisy); the Hessian rule uses 0 for them",
                NumericalWarning,
                stacklevel=2,
            )

    records = []
    for n in names:
        w = layer_weight(all_layers[n])
        alpha, n_evals, note = weight_alpha(w)
        tr = traces.get(n)
        records.append(
            LayerSensitivity(
                name=n,
                shape=tuple(w.shape),
                n_params=int(w.numel()),
                qerror={b: quantization_error(w, b) for b in widths},
                weight_norm2=float((w.detach().double() ** 2).sum()),
                trace=None if tr is None else tr[0],
                trace_stderr=None if tr is None else tr[1],
                alpha=alpha,
                n_evals=n_evals,
                note=note,
            )
        )
    importance = alpha_importance(np.array([r.alpha for r in records]), float(spread))
    records = [_with_importance(r, float(v)) for r, v in zip(records, importance, strict=True)]
    return SensitivityTable(
        layers=tuple(records),
        bits=widths,
        spread=float(spread),
        trace_probes=probes,
        hvp_count=hvps,
        seed=seed,
    )


def _with_importance(r: LayerSensitivity, value: float) -> LayerSensitivity:
    from dataclasses import replace

    return replace(r, importance=value)
