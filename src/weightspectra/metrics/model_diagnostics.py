"""Model-level random-matrix diagnostics from per-layer rows (metrics.md §5).

Input is a plain sequence of per-layer mappings (the report's rows; no pandas): correlation flow
(α against depth, per layer type), scale collapse (layers whose spectral norm is abnormally small
for their type and shape), and counts of layers per phase and per warning label.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weightspectra.errors import OptionError

#: Robust z-score (median / MAD) below which a layer's log spectral norm is "collapsed".
SCALE_COLLAPSE_Z = 3.5
#: ... and it must also lie this many decades below its group's median.
SCALE_COLLAPSE_DECADES = 0.5
#: Smallest group (same type and shape) in which scale collapse is judged.
SCALE_COLLAPSE_MIN_GROUP = 3
#: MAD → standard deviation for a normal distribution.
_MAD_TO_SD = 1.4826


def model_diagnostics(
    rows: Sequence[Mapping[str, object]],
    *,
    collapse_z: float = SCALE_COLLAPSE_Z,
    collapse_decades: float = SCALE_COLLAPSE_DECADES,
    min_group: int = SCALE_COLLAPSE_MIN_GROUP,
) -> dict[str, Any]:
    """Aggregate per-layer diagnostics into model-level ones.

    Parameters
    ----------
    rows : sequence of mappings
        One per layer, in depth order. Keys used when present: ``layer_id`` (depth; the
        position in ``rows`` otherwise), ``name``, ``layer_type``, ``N``, ``M``, ``alpha``
        (None/NaN for failed fits), ``log_spectral_norm`` (or ``spectral_norm`` /
        ``lambda_max``), ``phase``, ``warning`` (comma-separated labels).
    collapse_z : float, default 3.5
        Robust z-score threshold of scale collapse (positive).
    collapse_decades : float, default 0.5
        Minimum distance, in decades, below the group median (≥ 0).
    min_group : int, default 3
        Groups smaller than this are not judged (≥ 2).

    Returns
    -------
    dict with keys
        ``num_layers``; ``correlation_flow``: {layer_type: {"depth": [...], "alpha": [...],
        "name": [...], "slope": float | None}} (slope of α per unit of depth, least squares,
        None with fewer than 2 fitted layers); ``scale_collapse``: list of {"name", "layer_id",
        "layer_type", "shape", "log_spectral_norm", "group_median", "z"}; ``phase_counts`` and
        ``warning_counts``: {label: count}; ``num_failed_fits``.

    Raises
    ------
    OptionError
        On a threshold out of range.

    Examples
    --------
    >>> rows = [{"layer_type": "dense", "alpha": a, "phase": "heavy-tailed"} for a in (2, 3)]
    >>> round(model_diagnostics(rows)["correlation_flow"]["dense"]["slope"], 6)
    1.0
    """
    if not (_finite(collapse_z) and collapse_z > 0):
        raise OptionError(f"collapse_z must be a positive number, got {collapse_z!r}")
    if not (_finite(collapse_decades) and collapse_decades >= 0):
        raise OptionError(f"collapse_decades must be a number ≥ 0, got {collapse_decades!r}")
    if isinstance(min_group, bool) or not isinstance(min_group, int) or min_group < 2:
        raise OptionError(f"min_group must be an integer ≥ 2, got {min_group!r}")

    flow: dict[str, dict[str, Any]] = {}
    phases: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    failed = 0
    for pos, row in enumerate(rows):
        ltype = str(row.get("layer_type") or "unknown")
        depth = _number(row.get("layer_id"))
        depth = float(pos) if depth is None else depth
        alpha = _number(row.get("alpha"))
        entry = flow.setdefault(ltype, {"depth": [], "alpha": [], "name": [], "slope": None})
        if alpha is not None:
            entry["depth"].append(depth)
            entry["alpha"].append(alpha)
            entry["name"].append(str(row.get("name", pos)))
        phase = row.get("phase")
        if phase:
            phases[str(phase)] += 1
        labels = [w.strip() for w in str(row.get("warning") or "").split(",") if w.strip()]
        warnings.update(labels)
        if "fit-failed" in labels:
            failed += 1
    for entry in flow.values():
        if len(entry["alpha"]) >= 2 and len(set(entry["depth"])) >= 2:
            d = np.asarray(entry["depth"])
            a = np.asarray(entry["alpha"])
            entry["slope"] = float(np.polyfit(d, a, 1)[0])
    return {
        "num_layers": len(rows),
        "correlation_flow": flow,
        "scale_collapse": scale_collapse(
            rows, collapse_z=collapse_z, collapse_decades=collapse_decades, min_group=min_group
        ),
        "phase_counts": dict(phases),
        "warning_counts": dict(warnings),
        "num_failed_fits": failed,
    }


def scale_collapse(
    rows: Sequence[Mapping[str, object]],
    *,
    collapse_z: float = SCALE_COLLAPSE_Z,
    collapse_decades: float = SCALE_COLLAPSE_DECADES,
    min_group: int = SCALE_COLLAPSE_MIN_GROUP,
) -> list[dict[str, Any]]:
    """Layers with abnormally small spectral norms for their type and shape.

    Layers are grouped by (``layer_type``, ``N``, ``M``); in a group of at least ``min_group``,
    a layer is flagged when its log10 spectral norm is more than ``collapse_decades`` below the
    group median *and* its robust z-score (median / 1.4826·MAD, the MAD taken without the layer
    itself so one outlier cannot hide) is below −``collapse_z``. When the rest of the group
    agrees exactly (MAD 0), the decades criterion alone decides.
    """
    groups: dict[tuple[str, object, object], list[tuple[int, float]]] = {}
    for pos, row in enumerate(rows):
        value = _log_spectral_norm(row)
        if value is None:
            continue
        key = (str(row.get("layer_type") or "unknown"), row.get("N"), row.get("M"))
        groups.setdefault(key, []).append((pos, value))
    flagged: list[dict[str, Any]] = []
    for (ltype, n, m), members in groups.items():
        if len(members) < min_group:
            continue
        values = np.array([v for _, v in members])
        for i, (pos, value) in enumerate(members):
            others = np.delete(values, i)
            med = float(np.median(others))
            mad = float(np.median(np.abs(others - med))) * _MAD_TO_SD
            gap = med - value
            z = -gap / mad if mad > 0.0 else (-math.inf if gap > 0.0 else 0.0)
            if gap > collapse_decades and z < -collapse_z:
                row = rows[pos]
                flagged.append(
                    {
                        "name": row.get("name"),
                        "layer_id": row.get("layer_id"),
                        "layer_type": ltype,
                        "shape": (n, m),
                        "log_spectral_norm": value,
                        "group_median": med,
                        "z": z,
                    }
                )
    return flagged


def _finite(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _log_spectral_norm(row: Mapping[str, object]) -> float | None:
    value = _number(row.get("log_spectral_norm"))
    if value is not None:
        return value
    for key in ("spectral_norm", "lambda_max"):
        raw = _number(row.get(key))
        if raw is not None and raw > 0.0:
            return math.log10(raw)
    return None
