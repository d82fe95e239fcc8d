"""Distances between two models, layer by layer: how far a fine-tune (or a checkpoint) moved.

Per pair of weights of the same name (:func:`~weightspectra.sources.delta.pair_keys`) and shape:

* ``frobenius``: ``‖W_b − W_a‖_F``; ``frobenius_rel``: the same over ``‖W_a‖_F``;
* ``cka``: centred linear CKA of the two matrices, rows as samples (each output unit's weights),
  ``‖Ãᵀ B̃‖_F² / (‖Ãᵀ Ã‖_F ‖B̃ᵀ B̃‖_F)`` with column means removed: 1 for equal matrices, and
  invariant to an orthogonal rotation or a scaling of either (the peer's is uncentred);
* ``esd_w1``: the Wasserstein-1 distance between the two ESDs in ``log10 λ`` (eigenvalues above
  ``λ_max · 1e-12``), in decades: 0 for equal spectra, ``|log10 c²|`` for ``W_b = c W_a``;
* ``delta_alpha``: ``α_b − α_a`` (NaN where either fit failed), and ``delta_log_spectral_norm``;
* ``overlap_out`` / ``overlap_in``: the mean squared cosine of the principal angles between the
  top-``k`` left (output) and right (input) singular subspaces: 1 for the same subspace, about
  ``k / n`` for random ones.

Weights are flattened to 2-D as ``(shape[0], prod(shape[1:]))`` for the matrix measures; the
ESDs and α are those of :func:`weightspectra.analyze` (conv scaling and pooling as its options).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra.analysis import analyze
from weightspectra.errors import InputError, OptionError
from weightspectra.options import Options
from weightspectra.report.results import LayerResult, Report
from weightspectra.sources import Source, open_model
from weightspectra.sources.delta import paired_entries
from weightspectra.sources.peft import AdapterSource, merge_adapter

if TYPE_CHECKING:
    import pandas as pd

#: Eigenvalues below ``λ_max`` times this are left out of the log-ESD distance (exact zeros).
LOG_ESD_FLOOR = 1e-12
#: Default number of top singular directions compared.
TOP_K = 10
#: Columns of a distance row, in order.
COLUMNS = (
    "name",
    "shape",
    "frobenius",
    "frobenius_rel",
    "cka",
    "esd_w1",
    "alpha_a",
    "alpha_b",
    "delta_alpha",
    "delta_log_spectral_norm",
    "overlap_out",
    "overlap_in",
    "top_k",
    "reason",
)
#: Columns averaged into the model-level row.
MEAN_COLUMNS = (
    "frobenius",
    "frobenius_rel",
    "cka",
    "esd_w1",
    "delta_alpha",
    "delta_log_spectral_norm",
    "overlap_out",
    "overlap_in",
)


# ---------------------------------------------------------------------------------------------
# The measures: pure functions on arrays
# ---------------------------------------------------------------------------------------------


def _as_2d(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w.reshape(w.shape[0], -1) if w.ndim != 2 else w


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Centred linear CKA of two ``n × p`` and ``n × q`` matrices (rows are the samples).

    Returns NaN when either centred matrix is zero.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((50, 8))
    >>> round(linear_cka(x, 3.0 * x @ np.linalg.qr(rng.standard_normal((8, 8)))[0]), 12)
    1.0
    """
    x, y = _as_2d(a), _as_2d(b)
    if x.shape[0] != y.shape[0]:
        raise InputError(f"CKA needs the same number of rows (samples): {x.shape} vs {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    if x.shape[0] < x.shape[1] + y.shape[1]:  # the n × n Gram matrices are the smaller route
        kx, ky = x @ x.T, y @ y.T
        cross, nx, ny = float(np.sum(kx * ky)), float(np.sum(kx * kx)), float(np.sum(ky * ky))
    else:
        cross = float(np.sum((x.T @ y) ** 2))
        nx, ny = float(np.sum((x.T @ x) ** 2)), float(np.sum((y.T @ y) ** 2))
    if nx == 0.0 or ny == 0.0:
        return math.nan
    return cross / math.sqrt(nx * ny)


def log_esd_w1(evals_a: np.ndarray, evals_b: np.ndarray) -> float:
    """Wasserstein-1 distance between two ESDs in ``log10 λ`` (decades).

    Eigenvalues at or below ``λ_max · LOG_ESD_FLOOR`` are left out (exact zeros of a
    rank-deficient matrix); NaN when either side has none left.

    >>> log_esd_w1(np.array([1.0, 10.0]), np.array([100.0, 1000.0]))
    2.0
    """
    from scipy.stats import wasserstein_distance

    logs = []
    for ev in (evals_a, evals_b):
        ev = np.asarray(ev, dtype=np.float64)
        ev = ev[np.isfinite(ev)]
        top = float(ev.max()) if ev.size else 0.0
        kept = ev[ev > top * LOG_ESD_FLOOR] if top > 0 else ev[:0]
        if kept.size == 0:
            return math.nan
        logs.append(np.log10(kept))
    return float(wasserstein_distance(logs[0], logs[1]))


def subspace_overlap(u_a: np.ndarray, u_b: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between the spans of two orthonormal
    ``n × k`` bases (``‖U_aᵀ U_b‖_F² / k``).

    >>> e = np.eye(4)
    >>> subspace_overlap(e[:, :2], e[:, 1:3])
    0.5
    """
    k = min(u_a.shape[1], u_b.shape[1])
    if k == 0:
        return math.nan
    cosines = np.linalg.svd(u_a.T @ u_b, compute_uv=False)
    return float(np.sum(np.clip(cosines, 0.0, 1.0) ** 2) / k)


def matrix_distances(a: np.ndarray, b: np.ndarray, top_k: int = TOP_K) -> dict[str, float | int]:
    """Frobenius (absolute, relative), centred CKA and top-``k`` subspace overlaps of two
    weights of the same shape.

    Raises
    ------
    InputError
        If the shapes differ.
    """
    x, y = _as_2d(a), _as_2d(b)
    if x.shape != y.shape:
        raise InputError(f"the two weights have different shapes: {x.shape} vs {y.shape}")
    frob = float(np.linalg.norm(y - x))
    ref = float(np.linalg.norm(x))
    ua, sa, vta = np.linalg.svd(x, full_matrices=False)
    ub, sb, vtb = np.linalg.svd(y, full_matrices=False)
    tol_a = sa[0] * max(x.shape) * np.finfo(np.float64).eps if sa.size else 0.0
    tol_b = sb[0] * max(y.shape) * np.finfo(np.float64).eps if sb.size else 0.0
    k = min(top_k, int(np.sum(sa > tol_a)), int(np.sum(sb > tol_b)))
    return {
        "frobenius": frob,
        "frobenius_rel": frob / ref if ref > 0 else math.nan,
        "cka": linear_cka(x, y),
        "overlap_out": subspace_overlap(ua[:, :k], ub[:, :k]),
        "overlap_in": subspace_overlap(vta[:k].T, vtb[:k].T),
        "top_k": k,
    }


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distances:
    """Layer-by-layer distances between model ``a`` and model ``b``.

    Attributes
    ----------
    a, b : str
        What the two models were.
    rows : tuple of dict
        One per weight of ``a`` (:data:`COLUMNS`); unpaired ones carry a ``reason`` and NaNs.
    summary : dict
        Means of :data:`MEAN_COLUMNS` over the paired rows, and ``num_paired`` /
        ``num_unpaired``.
    """

    a: str
    b: str
    rows: tuple[Mapping[str, Any], ...]
    summary: Mapping[str, float] = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        """The rows as a DataFrame (columns :data:`COLUMNS`).

        Raises
        ------
        MissingDependencyError
            If pandas is not installed.
        """
        from weightspectra.report.tables import records_frame

        return records_frame(self.rows, "Distances.to_pandas")[list(COLUMNS)]

    def render(self, fmt: str = "table") -> str:
        """The rows as text: ``table`` (aligned, then the model-level means), ``csv`` or
        ``json``.

        Raises
        ------
        OptionError
            On another ``fmt``.
        """
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows([{c: _cell(r[c], 10) for c in COLUMNS} for r in self.rows])
            return out.getvalue()
        if fmt == "json":
            return json.dumps(
                {"a": self.a, "b": self.b, "summary": self.summary, "rows": list(self.rows)},
                default=str,
                indent=1,
            ).replace("NaN", "null")
        if fmt != "table":
            raise OptionError(f"format {fmt!r} is not valid; choose one of 'table', 'csv', 'json'")
        return _table(self)

    def plot(self, path: str | Path) -> Any:
        """Per-layer relative Frobenius distance, CKA, output-subspace overlap and Δα of the
        paired layers, in model order; written to ``path`` (png, svg, pdf) and returned.

        Raises
        ------
        MissingDependencyError
            If matplotlib is not installed.
        """
        from weightspectra.report.plots import new_figure, save_figure

        fig, axes = new_figure(2, 2, (10, 6), managed=False)
        paired = [r for r in self.rows if not r["reason"]]
        x = np.arange(len(paired))
        for ax, col in zip(axes, PLOT_COLUMNS, strict=True):
            ax.plot(x, [float(r[col]) for r in paired], "o-", ms=3)
            ax.set_title(col)
            ax.set_xlabel("paired layer (model order)")
        fig.suptitle(f"{self.a} → {self.b}", fontsize=8)
        fig.tight_layout()
        save_figure(fig, path)
        return fig

    def verdict(self) -> tuple[str, str]:
        """The page's tone and one line: how far ``b`` moved from ``a``, and where most."""
        paired = [r for r in self.rows if not r["reason"]]
        if not paired:
            return "poor", "No layer of the two models could be paired by name."
        moved = [r for r in paired if math.isfinite(float(r["frobenius_rel"]))]
        top = sorted(moved, key=lambda r: -float(r["frobenius_rel"]))[:3]
        where = ", ".join(f"{r['name']} ({float(r['frobenius_rel']):.1%})" for r in top)
        mean_rel = self.summary.get("frobenius_rel", math.nan)
        mean_cka = self.summary.get("cka", math.nan)
        unpaired = len(self.rows) - len(paired)
        tone = "good" if unpaired == 0 else "mixed"
        line = (
            f"{len(paired)} layers paired"
            + (f", {unpaired} unpaired" if unpaired else "")
            + f"; weights moved by {mean_rel:.1%} on average (relative Frobenius), centred CKA "
            f"{mean_cka:.3f}. Most changed: {where}."
        )
        return tone, line

    def to_html(self, path: str | Path | None = None, *, dpi: float = 100) -> str:
        """A self-contained page in the shared page shape (:mod:`weightspectra.report.layout`):
        the verdict, the relative change and Δα per layer by depth, then the table; written
        to ``path`` if given.

        Raises
        ------
        MissingDependencyError
            If matplotlib is not installed.
        """
        from weightspectra.report.layout import (
            Picture,
            Section,
            esc,
            figure_img,
            header_html,
            hero_html,
            page_html,
            table,
            verdict_html,
        )

        paired = [r for r in self.rows if not r["reason"]]
        x = np.arange(len(paired))

        def by_depth(column: str, label: str) -> Any:
            def draw(ax: Any) -> None:
                ax.plot(x, [float(r[column]) for r in paired], "o-", ms=3)
                ax.set_xlabel("paired layer (model order)")
                ax.set_ylabel(label)
                ax.set_title(f"{label} per layer")

            return draw

        pictures = []
        if paired:
            for column, label in (("frobenius_rel", "‖ΔW‖ / ‖W‖"), ("delta_alpha", "Δα")):
                alt = f"{label} of each paired layer against its depth"
                pictures.append(Picture(figure_img(by_depth(column, label), alt, dpi=dpi), alt))
        tone, line = self.verdict()
        rows = [{c: r[c] for c in TABLE_COLUMNS} for r in self.rows]
        page = page_html(
            title=f"weightspectra diff: {Path(self.a).name} → {Path(self.b).name}",
            header=header_html(
                esc(f"{Path(self.a).name} → {Path(self.b).name}"),
                [f'<span title="{esc(self.a)}">a</span>', f'<span title="{esc(self.b)}">b</span>'],
            ),
            verdict=verdict_html(tone, esc(line)),
            hero=hero_html(pictures, min_width=400),
            sections=[
                Section("layers", "Layers", table(list(TABLE_COLUMNS), rows, table_id="diff"))
            ],
        )
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(page, encoding="utf-8")
        return page


#: What :meth:`Distances.plot` draws.
PLOT_COLUMNS = ("frobenius_rel", "cka", "overlap_out", "delta_alpha")
#: Columns of the text table (the rest are in csv/json).
TABLE_COLUMNS = (
    "name",
    "frobenius",
    "frobenius_rel",
    "cka",
    "esd_w1",
    "delta_alpha",
    "overlap_out",
    "overlap_in",
    "reason",
)


def _cell(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _table(d: Distances) -> str:
    body = [[_cell(r[c]) for c in TABLE_COLUMNS] for r in d.rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(TABLE_COLUMNS)]
    left = {0, len(TABLE_COLUMNS) - 1}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [f"a: {d.a}", f"b: {d.b}", "", line(TABLE_COLUMNS), line(["-" * w for w in widths])]
    lines += [line(b) for b in body]
    s = d.summary
    lines += [
        "",
        f"{int(s['num_paired'])} paired layers, {int(s['num_unpaired'])} unpaired; means: "
        + ", ".join(f"{c} {_cell(s[c])}" for c in MEAN_COLUMNS),
    ]
    return "\n".join(lines) + "\n"


def _open(model: object, other: Source | None = None) -> Source:
    source = model if isinstance(model, Source) else open_model(model)
    if isinstance(source, AdapterSource) and other is not None:
        return merge_adapter(source, other)
    return source


def _rows_by_name(report: Report) -> dict[str, LayerResult]:
    return {r.key: r for r in report.analysed if r.name == r.key.removesuffix(".weight")}


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and value is not None else math.nan


def distances(
    a: object,
    b: object,
    options: Options | None = None,
    *,
    top_k: int = TOP_K,
    **kwargs: Any,
) -> Distances:
    """Layer-by-layer distances from model ``a`` to model ``b`` (see the module docstring).

    Parameters
    ----------
    a, b : model
        Anything :func:`weightspectra.analyze` accepts, in any two formats; ``b`` may be a
        PEFT adapter folder, which is merged into ``a`` first (so the distances are those of
        the fine-tune from its base).
    options : Options, optional
        Analysis options for the ESDs and α (keyword arguments on top).
    top_k : int, default 10
        Singular directions compared by the subspace overlaps.

    Returns
    -------
    Distances

    Raises
    ------
    InputError
        If the two models share no weight of the same name and shape.

    Examples
    --------
    >>> import numpy as np, weightspectra as ws
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((200, 100))
    >>> d = ws.distances({"fc.weight": w}, {"fc.weight": 2 * w})
    >>> round(d.rows[0]["frobenius_rel"], 6), round(d.rows[0]["cka"], 6)
    (1.0, 1.0)
    """
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    src_a = _open(a)
    src_b = _open(b, src_a)
    opts = options if options is not None else Options.from_kwargs(**kwargs)
    if options is not None and kwargs:
        opts = options.replace(**kwargs)
    pairs = paired_entries(src_a, src_b)
    if not any(partner is not None for _, partner, _ in pairs):
        raise InputError(
            f"{src_a.description} and {src_b.description} share no weight of the same name "
            f"and shape (first keys: {[e.key for e, _, _ in pairs[:3]]}); compare a model with "
            "its own fine-tune or checkpoint"
        )
    rows_a = _rows_by_name(analyze(src_a, opts))
    rows_b = _rows_by_name(analyze(src_b, opts))
    rows = []
    for entry, partner, why in pairs:
        row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
        row.update(name=entry.name, shape="×".join(map(str, entry.shape)), reason=why, top_k=0)
        if partner is not None:
            row.update(matrix_distances(entry.load(), partner.load(), top_k))
            ra, rb = rows_a.get(entry.key), rows_b.get(partner.key)
            if ra is not None and rb is not None and ra.evals is not None and rb.evals is not None:
                row["esd_w1"] = log_esd_w1(ra.evals, rb.evals)
                row["alpha_a"] = _number(ra.metrics.get("alpha"))
                row["alpha_b"] = _number(rb.metrics.get("alpha"))
                row["delta_alpha"] = row["alpha_b"] - row["alpha_a"]
                row["delta_log_spectral_norm"] = _number(
                    rb.metrics.get("log_spectral_norm")
                ) - _number(ra.metrics.get("log_spectral_norm"))
        rows.append(row)
    return Distances(
        a=src_a.description, b=src_b.description, rows=tuple(rows), summary=_summary(rows)
    )


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {
        "num_paired": float(sum(1 for r in rows if not r["reason"])),
        "num_unpaired": float(sum(1 for r in rows if r["reason"])),
    }
    for col in MEAN_COLUMNS:
        values = [float(r[col]) for r in rows if not r["reason"] and math.isfinite(r[col])]
        out[col] = float(np.mean(values)) if values else math.nan
    return out


@dataclass(frozen=True)
class SeriesStep:
    """One checkpoint of a series: its distances from the first and from the previous one."""

    index: int
    model: str
    from_first: Distances
    from_previous: Distances


def distance_series(
    models: Sequence[object], options: Options | None = None, *, top_k: int = TOP_K
) -> tuple[SeriesStep, ...]:
    """Distances of each checkpoint of a series from the first and from the previous one.

    Raises
    ------
    InputError
        If fewer than two models are given.
    """
    if len(models) < 2:
        raise InputError(f"a series needs at least two checkpoints, got {len(models)}")

    def steps() -> Iterator[SeriesStep]:
        for i in range(1, len(models)):
            first = distances(models[0], models[i], options, top_k=top_k)
            previous = (
                first if i == 1 else distances(models[i - 1], models[i], options, top_k=top_k)
            )
            yield SeriesStep(i, first.b, first, previous)

    return tuple(steps())
