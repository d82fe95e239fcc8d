"""``weightspectra.allocate``: per-layer sparsity, bits or LoRA ranks from a report's spectra.

The published allocations this re-implements share one shape: a layer metric from the ESD
(α, or the aspect-ratio-corrected FARMS α) is mapped to a per-layer value around the budget,
then the values are shifted so that their mean over the model's weights meets the budget.
AlphaPruning (NeurIPS 2024) maps α linearly to a band of sparsities, a larger α (a less well
trained layer) getting more; the same rule gives fewer bits and, as in AlphaLoRA, more LoRA
rank to such layers. See docs/allocation.md.

Steps (each a pure function of :mod:`weightspectra.allocation.solve`): the report's rows are
grouped into tensors (split rows of one tensor share its value; their metric is the
parameter-weighted mean); pinned and excluded tensors are set aside; the metric is mapped to
centred offsets; the one shift meeting the budget within the bounds is solved exactly; integer
kinds are rounded down to integers that keep the mean at or below the budget.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightspectra.allocation.plan import AllocationPlan, LayerAllocation
from weightspectra.allocation.solve import (
    AllocationError,
    integer_values,
    offsets,
    solve_shift,
    weighted_mean,
)
from weightspectra.enums import (
    AllocationKind,
    AllocationMapping,
    Estimator,
    LayerType,
    Reason,
    Status,
    parse_enum,
)
from weightspectra.report.results import LayerResult, Report

#: Bounds of each kind when none are given.
DEFAULT_BOUNDS: dict[AllocationKind, tuple[float, float]] = {
    AllocationKind.SPARSITY: (0.0, 0.99),
    AllocationKind.BITS: (2.0, 8.0),
    AllocationKind.RANK: (1.0, math.inf),
}

#: Width of the offsets when none is given (for rank: this times the budget).
DEFAULT_SPREAD: dict[AllocationKind, float] = {
    AllocationKind.SPARSITY: 0.2,
    AllocationKind.BITS: 2.0,
    AllocationKind.RANK: 1.0,
}

#: An ESD with fewer eigenvalues than this gives an unreliable α (a small head): its note says so.
FEW_EVALS = 32

#: A larger metric (α: less well trained) gets more sparsity, fewer bits, more rank.
DIRECTION: dict[AllocationKind, int] = {
    AllocationKind.SPARSITY: 1,
    AllocationKind.BITS: -1,
    AllocationKind.RANK: 1,
}


@dataclass
class _Tensor:
    key: str
    name: str
    shape: tuple[int, ...]
    layer_type: str
    metric: float | None
    num_evals: int = 0
    role: str = "allocated"
    note: str = ""
    value: float | None = None


def _base_name(row: LayerResult) -> str:
    return row.name.split("[", 1)[0]


def _tensors(report: Report, metric: str) -> list[_Tensor]:
    """The report's tensors that are matrices, in model order, with their metric."""
    by_key: dict[str, list[LayerResult]] = {}
    for row in report.layers:
        usable = row.status is Status.OK or row.reason_code is Reason.TOO_FEW_EVALS
        if usable and len(row.shape) >= 2:
            by_key.setdefault(row.key, []).append(row)
    out = []
    for key, rows in by_key.items():
        num, den = 0.0, 0.0
        for r in rows:
            value = r.metrics.get(metric) if r.status is Status.OK else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                size = max(r.N * r.M * max(r.rf, 1), 1)
                num, den = num + float(value) * size, den + size
        first = rows[0]
        out.append(
            _Tensor(
                key=key,
                name=_base_name(first),
                shape=tuple(first.shape),
                layer_type=first.layer_type,
                metric=num / den if den else None,
                num_evals=min(r.num_evals for r in rows),
                note="" if first.status is Status.OK else f"not analysed: {first.reason}",
            )
        )
    return out


def _weight(kind: AllocationKind, shape: tuple[int, ...]) -> float:
    if kind is AllocationKind.RANK:  # LoRA parameters per unit of rank: in + out features
        return float(shape[0] + math.prod(shape[1:]))
    return float(math.prod(shape))


def is_report_json(path: Path) -> bool:
    """Whether ``path`` names a report written as JSON (a ``.json`` file; reading it says
    whether it is one, with :meth:`Report.from_json`'s message if not)."""
    return path.suffix.lower() == ".json" and path.is_file()


def _load(report: object, metric: str) -> Report:
    """The report to plan from: itself, read from its JSON, or the analysis of a model."""
    if isinstance(report, Report):
        return report
    if isinstance(report, (str, Path)) and is_report_json(Path(report)):
        return Report.from_json(report)
    from weightspectra.analysis import analyze

    estimator = Estimator.FARMS if metric.endswith("_farms") else Estimator.PLAIN
    return analyze(report, estimator=estimator)


def allocate(
    report: Report | str | Path | object,
    budget: float,
    kind: AllocationKind | str = AllocationKind.SPARSITY,
    metric: str = "alpha",
    mapping: AllocationMapping | str = AllocationMapping.LINEAR,
    bounds: tuple[float, float] | None = None,
    spread: float | None = None,
    pin: Mapping[str, float] | None = None,
    exclude: Sequence[str] | str = (),
    include_embeddings: bool = False,
    candidates: Sequence[int] | None = None,
    group: str | None = None,
) -> AllocationPlan:
    r"""A per-layer plan of sparsity, bit widths or LoRA ranks from a report's layer metric.

    Parameters
    ----------
    report : Report, path or model
        From :func:`weightspectra.analyze`, or its JSON (``report.to_json(path)``,
        ``weightspectra analyze MODEL -f json -o PATH``); ``metric="alpha_farms"`` needs
        ``estimator="farms"``. Anything else (a model path, an ``nn.Module``, a state dict) is
        analysed first with default options (``estimator="farms"`` for a ``*_farms`` metric).
    budget : float
        The mean over the planned tensors' weights: the share of weights pruned (sparsity),
        the average bits per weight (bits) or the average rank weighted by in + out features,
        i.e. the LoRA parameter count of that uniform rank (rank).
    kind : {"sparsity", "bits", "rank"}
        What is allocated.
    metric : str, default "alpha"
        A numeric report column; a larger value means a less well trained layer (as α).
    mapping : {"linear", "rank", "uniform"}, default "linear"
        Offsets linear in the metric (AlphaPruning), in its rank among the layers, or none
        (every layer gets the budget: the uniform baseline).
    bounds : (float, float), optional
        Lowest and highest value of any layer. Default: sparsity (0, 0.99), bits (2, 8), rank
        (1, the layer's smaller side).
    spread : float, optional
        The value gap between the layers with the smallest and the largest metric before
        clipping. Default: 0.2 (sparsity, as AlphaPruning's ±0.1 band), 2 bits, and the budget
        itself for rank.
    pin : mapping of str to float, optional
        Fixed values by layer name or tensor key; pinned layers count in the budget's mean.
    exclude : regex or sequence of regexes
        Layers whose name or key matches are left out of the plan and of the budget's mean.
    include_embeddings : bool, default False
        Plan embedding tables too (by default they are excluded).
    candidates : sequence of int, optional
        The values an integer kind may take (e.g. hardware widths ``(2, 3, 4, 8)``); default
        every integer within the bounds. Each layer chooses among the two candidates at or
        below its continuous value and the two at or above it.
    group : regex, optional
        Layers whose names give the same match (its first group when it has one, e.g.
        ``r"layers\.(\d+)\."``) share their parameter-weighted mean metric, so a block of a
        transformer gets one value per kind (AlphaPruning's block-wise allocation).

    Returns
    -------
    AllocationPlan
        ``achieved`` equals ``budget`` to rounding for sparsity. For bits and ranks (integers)
        it is the largest weighted mean ≤ ``budget`` the allowed integers reach, and among the
        plans reaching it the one nearest the continuous values (an integer programme).

    Raises
    ------
    AllocationError
        If the budget cannot be met within the bounds with the pins (the message gives the
        range that can), if nothing is left to plan, or the metric is missing.
    OptionError
        On a kind or mapping that does not exist.

    Examples
    --------
    >>> import numpy as np, weightspectra as ws
    >>> rng = np.random.default_rng(0)
    >>> model = {f"l{i}.weight": rng.standard_t(2 + i, (64, 32)) for i in range(3)}
    >>> plan = ws.allocate(ws.analyze(model), budget=0.7)
    >>> round(plan.achieved, 12)
    0.7
    """
    rep = _load(report, metric)
    kind_e = parse_enum(AllocationKind, kind, "kind")
    mapping_e = parse_enum(AllocationMapping, mapping, "mapping")
    if not isinstance(budget, (int, float)) or not math.isfinite(budget):
        raise AllocationError(f"budget must be a finite number, got {budget!r}")
    lo, hi = DEFAULT_BOUNDS[kind_e] if bounds is None else (float(bounds[0]), float(bounds[1]))
    if not lo <= hi:
        raise AllocationError(f"bounds must be (low, high) with low ≤ high, got {bounds!r}")
    if kind_e is AllocationKind.SPARSITY and not (lo >= 0.0 and hi < 1.0):
        raise AllocationError(f"sparsity bounds must lie in [0, 1), got ({lo:g}, {hi:g})")
    tensors = _tensors(rep, metric)
    if not any(t.metric is not None for t in tensors):
        fix = (
            " (analyse with estimator='farms', CLI --estimator farms)" if "farms" in metric else ""
        )
        raise AllocationError(
            f"no analysed layer of {rep.source!r} has a value of {metric!r}{fix}; "
            "pass a numeric report column such as 'alpha'"
        )
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    compiled = [re.compile(p) for p in patterns]
    pins = dict(pin or {})
    for t in tensors:
        if any(p.search(t.name) or p.search(t.key) for p in compiled):
            t.role, t.note = "excluded", "excluded by pattern"
        elif t.layer_type == LayerType.EMBEDDING.value and not include_embeddings:
            t.role, t.note = "excluded", "embedding (include_embeddings=True plans it)"
        elif t.name in pins or t.key in pins:
            t.role, t.value = "pinned", float(pins.pop(t.name, pins.pop(t.key, math.nan)))
            t.note = "pinned"
    if pins:
        raise AllocationError(
            f"pin names {sorted(pins)}, which are not planned layers of {rep.source!r}; "
            f"layers: {[t.name for t in tensors][:8]}..."
        )
    planned = [t for t in tensors if t.role != "excluded"]
    free = [t for t in planned if t.role == "allocated"]
    if not free:
        raise AllocationError(
            "nothing left to allocate: every layer is excluded or pinned; drop an exclusion"
        )
    for t in planned:
        integral = kind_e is AllocationKind.SPARSITY or float(t.value or 0.0).is_integer()
        if t.role == "pinned" and not integral:
            raise AllocationError(
                f"layer {t.name} is pinned to {t.value:g}; {kind_e.value} values are integers"
            )
        if t.role == "pinned" and not lo <= (t.value or 0.0) <= hi:
            raise AllocationError(
                f"layer {t.name} is pinned to {t.value:g}, outside the bounds ({lo:g}, {hi:g})"
            )
    known = np.array([t.metric for t in free if t.metric is not None], dtype=np.float64)
    fill = float(np.median(known))
    for t in free:
        if t.metric is None:
            t.note = _join(t.note, f"no {metric}: given the median {fill:.4g}")
        elif 0 < t.num_evals < FEW_EVALS:
            t.note = _join(t.note, f"only {t.num_evals} eigenvalues: {metric} unreliable")
    metric_v = np.array([fill if t.metric is None else t.metric for t in free])
    w_free = np.array([_weight(kind_e, t.shape) for t in free])
    if group is not None:
        metric_v = _grouped(free, metric_v, w_free, re.compile(group))
    w_all = np.array([_weight(kind_e, t.shape) for t in planned])
    pinned_total = sum(
        _weight(kind_e, t.shape) * float(t.value or 0.0) for t in planned if t.role == "pinned"
    )
    target = float(budget) * float(np.sum(w_all)) - pinned_total
    width = DEFAULT_SPREAD[kind_e] * (float(budget) if kind_e is AllocationKind.RANK else 1.0)
    spread_v = width if spread is None else float(spread)
    if not math.isfinite(spread_v) or spread_v < 0:
        raise AllocationError(f"spread must be a finite number ≥ 0, got {spread!r}")
    off = offsets(metric_v, mapping_e, spread=spread_v, direction=DIRECTION[kind_e], weights=w_free)
    lo_v = np.full(len(free), lo)
    hi_v = np.full(len(free), hi)
    if kind_e is AllocationKind.RANK:
        hi_v = np.minimum(hi_v, [float(min(t.shape[0], math.prod(t.shape[1:]))) for t in free])
    try:
        values = solve_shift(off, lo_v, hi_v, w_free, target)
    except AllocationError as exc:
        total = float(np.sum(w_all))
        low = (float(np.sum(w_free * lo_v)) + pinned_total) / total
        high = (float(np.sum(w_free * hi_v)) + pinned_total) / total
        pinned = " and the pins" if pinned_total or any(t.role == "pinned" for t in planned) else ""
        raise AllocationError(
            f"a {kind_e.value} budget of {budget:g} cannot be met within the bounds "
            f"({lo:g}, {hi:g}){pinned}; budgets from {low:.6g} to {high:.6g} can"
        ) from exc
    if kind_e is not AllocationKind.SPARSITY:
        values = integer_values(values, w_free, _allowed(values, lo_v, hi_v, candidates), target)
    for t, v in zip(free, values, strict=True):
        t.value = float(v)
    achieved = weighted_mean(np.array([float(t.value or 0.0) for t in planned]), w_all)
    return AllocationPlan(
        kind=kind_e,
        budget=float(budget),
        achieved=achieved,
        metric=metric,
        mapping=mapping_e,
        spread=spread_v,
        bounds=(lo, hi),
        layers=tuple(
            LayerAllocation(
                key=t.key,
                name=t.name,
                shape=t.shape,
                metric=t.metric,
                weight=_weight(kind_e, t.shape),
                value=None if t.role == "excluded" else t.value,
                role=t.role,
                note=t.note,
            )
            for t in tensors
        ),
        source=rep.source,
    )


def _allowed(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, candidates: Sequence[int] | None
) -> list[np.ndarray]:
    """Each layer's integer choices: the two allowed values at or below its continuous value
    and the two at or above it, within its bounds."""
    out = []
    for v, a, b in zip(values, lo, hi, strict=True):
        top = b if math.isfinite(b) else math.ceil(v) + 2
        pool = (
            np.arange(math.ceil(a - 1e-9), math.floor(top + 1e-9) + 1, dtype=np.float64)
            if candidates is None
            else np.array(sorted({float(c) for c in candidates if a - 1e-9 <= c <= top + 1e-9}))
        )
        if pool.size == 0:
            raise AllocationError(
                f"no candidate value lies within the bounds ({a:g}, {b:g}); candidates "
                f"{sorted(candidates or [])}"
            )
        below, above = pool[pool <= v + 1e-9][-2:], pool[pool >= v - 1e-9][:2]
        near = np.unique(np.concatenate([below, above]))
        out.append(near)  # never empty: pool is, and v lies below, within or above it
    return out


def _grouped(
    free: list[_Tensor], metric: np.ndarray, weights: np.ndarray, pattern: re.Pattern[str]
) -> np.ndarray:
    """Each tensor's metric replaced by the weighted mean of its group (unmatched: alone)."""
    keys: list[str] = []
    for t in free:
        m = pattern.search(t.name)
        keys.append(t.name if m is None else (m.group(1) if m.groups() else m.group(0)))
    out = metric.copy()
    for key in set(keys):
        idx = [i for i, k in enumerate(keys) if k == key]
        out[idx] = float(np.sum(weights[idx] * metric[idx]) / np.sum(weights[idx]))
    return out


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
