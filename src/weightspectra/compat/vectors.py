"""The peer's ``vector_metrics``: how spread out or localised each vector is.

Per vector ``v`` of length ``n``:

* ``length``: ``n``;
* ``entropy``: the Shannon entropy of ``p_i = v_i² / ‖v‖²`` over ``log n`` (1 for a flat
  vector, 0 for one non-zero entry). The peer's "entropy" is ``exp(−‖v‖/2)/√(2π)``, a function
  of the norm only, so the two differ (``docs/compat.md``);
* ``discrete_entropy``: the entropy (nats) of the 100-bin histogram of ``|v| − mean|v|``,
  normalised to probabilities;
* ``localization_ratio``: ``‖v‖₁ / ‖v‖_∞``;
* ``participation_ratio``: ``‖v‖₂ / ‖v‖₄``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra.compat.frames import pandas
from weightspectra.compat.options import shown
from weightspectra.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("length", "entropy", "discrete_entropy", "localization_ratio", "participation_ratio")
#: Histogram bins of ``discrete_entropy``.
BINS = 100


def _vectors(vectors: object) -> list[np.ndarray]:
    if vectors is None:
        raise InputError("vector_metrics needs vectors: a vector, a list of them or a 2-D array")
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        return [np.asarray(v, dtype=np.float64) for v in vectors]
    if isinstance(vectors, np.ndarray) and vectors.ndim == 1:
        return [vectors.astype(np.float64)]
    if isinstance(vectors, (list, tuple)):
        out = []
        for v in vectors:
            a = np.asarray(v, dtype=np.float64)
            if a.ndim != 1:
                raise InputError(f"each vector must be 1-D, got shape {a.shape}")
            out.append(a)
        return out
    raise InputError(f"vector_metrics: {shown(vectors)} is no vector, list of vectors or 2-D array")


def metrics_of(v: np.ndarray) -> dict[str, float]:
    """The metrics of one vector (see the module docstring).

    >>> m = metrics_of(np.ones(16))
    >>> m["entropy"], m["localization_ratio"], m["participation_ratio"]
    (1.0, 16.0, 2.0)
    """
    n = v.size
    norm2 = float(np.sum(v * v))
    if n == 0 or norm2 == 0.0 or not np.all(np.isfinite(v)):
        nan = math.nan
        return {"length": float(n), "entropy": nan, "discrete_entropy": nan,
                "localization_ratio": nan, "participation_ratio": nan}  # fmt: skip
    p = v * v / norm2
    nz = p[p > 0]
    entropy = float(-np.sum(nz * np.log(nz)) / math.log(n)) if n > 1 else 0.0
    a = np.abs(v)
    hist = np.histogram(a - a.mean(), bins=BINS)[0].astype(np.float64)
    q = hist[hist > 0] / hist.sum()
    return {
        "length": float(n),
        "entropy": entropy,
        "discrete_entropy": float(-np.sum(q * np.log(q))),
        "localization_ratio": float(np.sum(a) / np.max(a)),
        "participation_ratio": float(math.sqrt(norm2) / float(np.sum(v**4)) ** 0.25),
    }


def vector_metrics(vectors: object) -> pd.DataFrame:
    """One row of :data:`COLUMNS` per vector.

    Raises
    ------
    InputError
        If ``vectors`` is not a vector, a list of 1-D vectors or a 2-D array.
    """
    rows: list[dict[str, Any]] = [metrics_of(v) for v in _vectors(vectors)]
    return pandas().DataFrame.from_records(rows, columns=list(COLUMNS))
