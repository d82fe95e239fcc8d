"""The peer's ``distances`` table, computed from pairs by name with the centred CKA."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra.analysis import describe as ws_describe
from weightspectra.compat.frames import pandas, peer_naming
from weightspectra.compat.selection import entry_selector, parse_layers
from weightspectra.distances import linear_cka
from weightspectra.errors import InputError
from weightspectra.options import Options
from weightspectra.sources import open_model
from weightspectra.sources.delta import pair_keys

if TYPE_CHECKING:
    import pandas as pd

    from weightspectra.compat import WeightWatcher

COLUMNS = ("layer_id", "name", "longname", "method", "M", "N", "delta_W", "b_shape", "delta_b")


def _matrices(w: np.ndarray) -> list[np.ndarray]:
    if w.ndim == 4:
        return [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
    if w.ndim == 3:
        return [w[:, :, i] for i in range(w.shape[2])]
    return [w.reshape(w.shape[0], -1)]


def delta_w(w1: np.ndarray, w2: np.ndarray, method: str) -> float:
    """The peer's ``delta_W`` of two tensors of one shape (CKA centred, see module doc)."""
    a, b = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    if method == "raw":
        return float(np.linalg.norm(a - b))
    pairs = list(zip(_matrices(a), _matrices(b), strict=True))
    if method == "euclidean":
        return float(np.mean([np.linalg.norm(x - y) for x, y in pairs]))
    return float(np.mean([linear_cka(x, y) for x, y in pairs]))


def peer_distances(
    watcher: WeightWatcher, model_1: object, model_2: object, method: str, layers: object
) -> tuple[float, float, pd.DataFrame]:
    """``(avg_delta_W, avg_delta_b, details)`` for :meth:`WeightWatcher.distances`.

    Raises
    ------
    InputError
        If no analysed layer of ``model_1`` has a partner of its shape in ``model_2``.
    """
    src1, src2 = open_model(model_1), open_model(model_2)
    naming = peer_naming(model_1, [e.key for e in src1.entries])
    plan = [r for r in ws_describe(src1).layers if r.status.value == "planned"]
    filters = parse_layers(layers or [])
    if not filters.empty:
        chosen = set(entry_selector(plan, filters, naming))
        plan = [
            r
            for r in ws_describe(src1, Options.from_kwargs(layers=tuple(chosen))).layers
            if r.status.value == "planned"
        ]
    entries1 = {e.key: e for e in src1.entries}
    entries2 = {e.key: e for e in src2.entries}
    keys = [r.key for r in plan]
    bias_keys = [k.removesuffix("weight") + "bias" for k in keys]
    pairs = pair_keys(keys + [b for b in bias_keys if b in entries1], entries2)
    records: list[dict[str, Any]] = []
    for row in plan:
        partner = entries2.get(pairs.get(row.key, ""))
        w1 = entries1[row.key]
        if partner is None or partner.shape != w1.shape:
            continue
        bias = row.key.removesuffix("weight") + "bias"
        b1, b2 = entries1.get(bias), entries2.get(pairs.get(bias, ""))
        record: dict[str, Any] = {
            "layer_id": naming.layer_id(row),
            "name": naming.name(row.name),
            "longname": row.name,
            "method": method,
            "M": row.M,
            "N": row.N,
            "delta_W": delta_w(w1.load(), partner.load(), method),
            "b_shape": "UNKNOWN",
            "delta_b": 0.0,
        }
        if b1 is not None and b2 is not None and b1.shape == b2.shape:
            record["b_shape"] = b1.shape
            diff = np.asarray(b1.load(), np.float64) - np.asarray(b2.load(), np.float64)
            record["delta_b"] = float(np.linalg.norm(diff)) if method != "cka" else math.nan
        records.append(record)
    if not records:
        raise InputError(
            "the two models share no analysed layer of the same name and shape; compare a "
            "model with its own fine-tune or checkpoint"
        )
    frame = pandas().DataFrame.from_records(records, columns=list(COLUMNS))
    delta_b = frame["delta_b"].to_numpy(float)
    avg_db = float(np.nanmean(delta_b)) if np.isfinite(delta_b).any() else math.nan
    return float(frame["delta_W"].mean()), avg_db, frame
