"""The report's columns, declared once.

Every column a report row can carry is one :class:`Column` here: its name, a one-line meaning,
its group, its value type, and where it is shown (the terminal table, the model summary, the
HTML layer table, the peer-compatible ``details``). Renderers, the JSON/CSV writers, the
peer facade, the result cache's fingerprint and the column list of ``docs/metrics.md`` are all
derived from this table, so a new metric is one function and one entry here.

This module imports nothing of weightspectra but :mod:`weightspectra.enums` and
:mod:`weightspectra.errors`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from weightspectra.errors import OptionError

#: A cell of a report row.
Value = float | int | str | None


class Group(str, Enum):
    """What a column describes."""

    IDENTITY = "identity"  # which matrix the row is, and what happened to it
    SOURCE = "source"  # how the source stored it (present only when it says something)
    NORM = "norm"  # norms, ranks and entropy of the whole ESD
    FIT = "fit"  # the power-law fit of the tail and the metrics built on α
    DIAGNOSTIC = "diagnostic"  # random-matrix diagnostics (MP fit, phases, traps, ...)
    EXTRA = "extra"  # registered by a user or a plugin (:func:`register_column`)


@dataclass(frozen=True)
class Column:
    """One column of a report row.

    Attributes
    ----------
    name : str
        Key of the column in rows, CSV headers and JSON.
    doc : str
        One-line meaning (rendered in ``docs/metrics.md`` and the API reference).
    group : Group
    dtype : type
        ``int``, ``float`` or ``str``: the type of a present value (any cell may be None).
    table : int or None
        Position in the terminal table and markdown (None: not shown there).
    summary : int or None
        Position in the model summary, where its mean over analysed layers is shown (None: not
        averaged).
    html : bool
        Shown in the HTML layer table (every ``table`` column is, too).
    peer : int or None
        Position among the leading columns of the peer-compatible ``details`` (None: it follows
        them, as one of our extra columns).
    short : str
        Header in the terminal table ('' for the name itself).
    """

    name: str
    doc: str
    group: Group
    dtype: type = float
    table: int | None = None
    summary: int | None = None
    html: bool = False
    peer: int | None = None
    short: str = ""

    @property
    def header(self) -> str:
        """Header of the column in the terminal table."""
        return self.short or self.name

    @property
    def left(self) -> bool:
        """Text columns are left-aligned, numbers right-aligned."""
        return self.dtype is str


def _c(name: str, doc: str, group: Group, dtype: type = float, **shown: Any) -> Column:
    return Column(name, doc, group, dtype, **shown)


_I, _N, _F, _D = Group.IDENTITY, Group.NORM, Group.FIT, Group.DIAGNOSTIC

#: The built-in columns, in report order.
BUILTIN_COLUMNS: tuple[Column, ...] = (
    _c(
        "layer_id", "position of the tensor in the source, in model order", _I, int, peer=0, table=0
    ),
    _c(
        "name",
        "module path of the layer, plus [q], [i,j]... for split rows",
        _I,
        str,
        peer=1,
        table=1,
    ),
    _c(
        "layer_type",
        "dense, embedding, conv2d, ... (how the tensor became matrices)",
        _I,
        str,
        peer=3,
        short="type",
        table=2,
    ),
    _c("N", "larger side of each matrix", _I, int, peer=4, table=3),
    _c("M", "smaller side of each matrix", _I, int, peer=5, table=4),
    _c("Q", "aspect ratio N/M", _I, float, peer=6),
    _c("rf", "kernel positions of the layer (1 for non-convolutions)", _I, int, peer=7),
    _c(
        "num_evals",
        "eigenvalues in the ESD (M·rf for a pooled convolution)",
        _I,
        int,
        peer=8,
        short="evals",
        table=5,
    ),
    _c("status", "ok, skipped, failed or planned", _I, str),
    _c("reason", "why the row is skipped or failed ('' when ok)", _I, str),
    _c(
        "quantization",
        "how the source stored a quantised tensor (Q4_K, gptq-4bit-g128, ...); the ESD is of "
        "its dequantised weights. Only in rows of quantised tensors",
        Group.SOURCE,
        str,
        html=True,
    ),
    _c("lambda_max", "largest eigenvalue λ_max = σ_max²", _N, peer=16),
    _c("sv_max", "largest singular value", _N, peer=19),
    _c("sv_min", "smallest singular value of the whole ESD", _N, peer=20),
    _c("norm", "Frobenius norm squared, Σλ", _N, peer=17),
    _c("log_norm", "log10 Σλ", _N, peer=13, table=9, summary=0),
    _c("spectral_norm", "λ_max (‖W‖₂²)", _N, peer=18),
    _c("log_spectral_norm", "log10 λ_max", _N, peer=14, table=10, summary=1),
    _c("stable_rank", "Σλ / λ_max", _N, peer=15, table=11, summary=5),
    _c(
        "matrix_rank",
        "numerical rank (exact SVD where the Gram path cannot resolve it)",
        _N,
        int,
        peer=21,
    ),
    _c("rank_loss", "num_evals minus matrix_rank", _N, int, peer=22),
    _c(
        "weak_rank_loss",
        "eigenvalues < 1e-6 in the ESD as reported (the peer's tolerance)",
        _N,
        int,
        peer=23,
    ),
    _c("entropy", "normalised spectral entropy, −Σ p ln p / ln rank", _N, peer=24),
    _c(
        "alpha",
        "power-law exponent of the ESD tail (None when the fit failed)",
        _F,
        html=True,
        peer=10,
        table=6,
        summary=2,
    ),
    _c("alpha_weighted", "α · log10 λ_max", _F, peer=11, table=7, summary=3),
    _c("log_alpha_norm", "log10 Σ λᵢ^α (Schatten α-norm)", _F, peer=12, table=8, summary=4),
    _c("xmin", "start of the fitted tail", _F, peer=25),
    _c("xmax", "end of the fitted tail (λ_max)", _F, peer=26),
    _c("D", "Kolmogorov–Smirnov distance of the tail fit", _F, peer=27, table=12),
    _c("sigma", "standard error of α, (α − 1)/√m", _F, peer=28),
    _c(
        "num_pl_spikes",
        "tail size m: eigenvalues ≥ xmin",
        _F,
        int,
        peer=29,
        short="spikes",
        table=13,
    ),
    _c("num_fit_evals", "eigenvalues that entered the fit (> 1e-5)", _F, int),
    _c("fit_error", "why the power-law fit failed (None when it succeeded)", _F, str),
    _c(
        "sigma_mp",
        "fitted entry std σ of the MP bulk (normalised units, incl. conv scaling)",
        _D,
        html=True,
    ),
    _c("bulk_min", "MP lower edge λ₋ in the report's eigenvalue units", _D),
    _c("bulk_max", "MP upper edge λ₊ in the report's eigenvalue units", _D),
    _c("tw_margin", "Tracy–Widom margin above λ₊ (multiplier × TW scale), report units", _D),
    _c("num_spikes", "eigenvalues above λ₊ + tw_margin", _D, int, html=True),
    _c("spike_share", "num_spikes / number of eigenvalues", _D),
    _c("mp_softrank", "λ₊ / λ_max, at most 1", _D, html=True, summary=6),
    _c("mp_fit_D", "KS distance between the bulk (nonzero, non-spike) and the fitted MP law", _D),
    _c("zero_share", "share of numerically zero eigenvalues", _D),
    _c(
        "phase",
        "phase of training: random-like, bleeding-out, bulk+spikes, bulk-decay, "
        "heavy-tailed, rank-collapse",
        _D,
        str,
        table=14,
    ),
    _c("phase_reason", "the rule of the phase table that fired, with its numbers", _D, str),
    _c(
        "num_traps",
        "shuffled-matrix eigenvalues beyond the shuffled MP edge (randomize=True)",
        _D,
        int,
    ),
    _c(
        "max_rand_eval",
        "largest eigenvalue of the shuffled matrix, report units (randomize=True)",
        _D,
    ),
    _c(
        "rand_distance",
        "Jensen–Shannon distance of log10-eigenvalue densities, real vs shuffled",
        _D,
    ),
    _c("detX_num", "eigenvalues above λ_detX (ERG condition)", _D, int),
    _c(
        "detX_val",
        "λ_detX: where the running product of top (mean-1) eigenvalues drops below 1",
        _D,
    ),
    _c("detX_gap", "log10(xmin / λ_detX): 0 when the ERG and power-law tail starts coincide", _D),
    _c(
        "warning",
        "comma-separated fit labels: fit-failed, over-trained, under-trained, "
        "spurious-fit, low-confidence",
        _D,
        str,
        peer=31,
        table=15,
    ),
    _c("warning_detail", "the reason for each warning label", _D, str),
    _c("alpha_ci_low", "lower end of the seeded bootstrap interval of α (bootstrap > 0)", _D),
    _c("alpha_ci_high", "upper end of the seeded bootstrap interval of α (bootstrap > 0)", _D),
    _c("num_fingers", "top eigenvalues removed by the fingers fix (fingers=True)", _D, int),
    _c("alpha_fingers", "α after the fingers fix (None when nothing was removed)", _D),
    _c(
        "best_fit",
        "power_law, truncated_power_law, lognormal or exponential (compare_fits=True)",
        _D,
        str,
    ),
    _c(
        "alpha_farms",
        "FARMS α: the fit of the pooled ESD of fixed-aspect-ratio windows (estimator=farms)",
        _F,
        html=True,
        table=6,
        short="alpha_farms",
    ),
    _c("alpha_weighted_farms", "alpha_farms · log10 λ_max (estimator=farms)", _F),
    _c("log_alpha_norm_farms", "log10 Σ λᵢ^alpha_farms over the layer's ESD (estimator=farms)", _F),
    _c("xmin_farms", "start of the tail fitted to the pooled window ESD (estimator=farms)", _F),
    _c("D_farms", "KS distance of the FARMS tail fit (estimator=farms)", _F),
    _c("num_farms_windows", "windows pooled into the FARMS ESD (estimator=farms)", _F, int),
    _c("farms_error", "why there is no FARMS α (None when there is one)", _F, str),
    _c("alpha_tpl", "α of the truncated power law fit (compare_fits=True)", _D),
    _c(
        "Lambda",
        "cut-off rate Λ of the truncated power law, 1/report units (compare_fits=True)",
        _D,
    ),
    _c(
        "lr_exponential",
        "Σ log-likelihood ratio power law − exponential (> 0 favours the power law)",
        _D,
    ),
    _c("p_exponential", "Vuong p-value of lr_exponential", _D),
    _c("lr_lognormal", "Σ log-likelihood ratio power law − log-normal", _D),
    _c("p_lognormal", "Vuong p-value of lr_lognormal", _D),
    _c("lr_tpl", "Σ log-likelihood ratio power law − truncated power law (≤ 0, nested)", _D),
    _c("p_tpl", "Wilks p-value (½χ²₀ + ½χ²₁) of lr_tpl", _D),
)

#: Row columns that are not metrics (identity and status), first in every rendering.
ID_COLUMNS: tuple[str, ...] = tuple(c.name for c in BUILTIN_COLUMNS if c.group is Group.IDENTITY)

#: A per-layer metric added from outside the package: it receives the layer's eigenvalues
#: (ascending, report units), N, M and the metric columns computed so far, and returns the
#: value of its column.
LayerMetric = Callable[["LayerSpectrum"], Value]


@dataclass(frozen=True)
class LayerSpectrum:
    """What a registered per-layer metric is given.

    Attributes
    ----------
    evals : ndarray
        The ESD, ascending, in the report's units.
    N, M : int
        Matrix sides.
    metrics : mapping
        The built-in metric columns of the layer (alpha, log_norm, ...).
    """

    evals: Any
    N: int
    M: int
    metrics: Mapping[str, Value]


@dataclass(frozen=True)
class _Registered:
    column: Column
    compute: LayerMetric


# The registry of extra columns: empty unless a user or a plugin registers a metric. Like a
# backend registry it is process-wide on purpose; tests register and unregister explicitly.
_EXTRA: dict[str, _Registered] = {}


def register_column(column: Column, compute: LayerMetric) -> None:
    """Add a per-layer metric: ``compute`` fills ``column`` on every analysed row.

    The column then appears in every rendering where its flags say, in JSON and CSV, in the
    peer facade, and in the result cache's fingerprint (a cache written without it is never
    reused).

    Raises
    ------
    OptionError
        If a column of that name exists already.

    Examples
    --------
    >>> col = Column("log_mean_eval", "log10 mean eigenvalue", Group.EXTRA, table=99)
    >>> register_column(col, lambda s: float(s.evals.mean()))  # doctest: +SKIP
    """
    if column.name in _BY_NAME or column.name in _EXTRA:
        raise OptionError(f"a report column named {column.name!r} exists already; pick another")
    _EXTRA[column.name] = _Registered(column, compute)


def unregister_column(name: str) -> None:
    """Remove a column added by :func:`register_column` (no-op if absent)."""
    _EXTRA.pop(name, None)


def registered_metrics() -> tuple[tuple[Column, LayerMetric], ...]:
    """The registered extra columns and their functions, in registration order."""
    return tuple((r.column, r.compute) for r in _EXTRA.values())


_BY_NAME: Mapping[str, Column] = MappingProxyType({c.name: c for c in BUILTIN_COLUMNS})


def columns() -> tuple[Column, ...]:
    """Every column, built-in then registered, in report order."""
    return BUILTIN_COLUMNS + tuple(r.column for r in _EXTRA.values())


def find(name: str) -> Column | None:
    """The column called ``name``, or ``None`` if there is none."""
    return _BY_NAME.get(name) or (_EXTRA[name].column if name in _EXTRA else None)


def column(name: str) -> Column:
    """The column called ``name``.

    Raises
    ------
    KeyError
        If there is none (the message lists the valid names).
    """
    found = find(name)
    if found is None:
        raise KeyError(f"no report column {name!r}; columns are {', '.join(names())}")
    return found


def names(where: Callable[[Column], bool] | None = None) -> tuple[str, ...]:
    """Names of the columns (those for which ``where`` is true), in report order."""
    return tuple(c.name for c in columns() if where is None or where(c))


def _by_position(position: Callable[[Column], int | None]) -> tuple[str, ...]:
    # Registered columns come after the built-in ones, in registration order.
    placed = [(p, i, c.name) for i, c in enumerate(columns()) if (p := position(c)) is not None]
    return tuple(name for _, _, name in sorted(placed))


def table_columns() -> tuple[str, ...]:
    """Columns of the terminal table and markdown, in their order there."""
    return _by_position(lambda c: c.table)


def html_columns() -> tuple[str, ...]:
    """Columns of the HTML layer table: the table's, then the other ``html`` ones."""
    table = table_columns()
    return table + tuple(c.name for c in columns() if c.html and c.name not in table)


def summary_columns() -> tuple[str, ...]:
    """Columns averaged into the model summary, in display order."""
    return _by_position(lambda c: c.summary)


def peer_columns() -> tuple[str, ...]:
    """Our columns that lead the peer-compatible ``details``, in the peer's order."""
    return _by_position(lambda c: c.peer)


def ordered(keys: Iterable[str]) -> list[str]:
    """``keys`` in report order (unknown keys last, in the order given)."""
    wanted = list(dict.fromkeys(keys))
    known = [n for n in names() if n in wanted]
    return known + [k for k in wanted if k not in known]


def fingerprint() -> str:
    """A short hash of every column's name, group and type: it changes whenever a column is
    added, removed, renamed or retyped (the result cache keys on it)."""
    text = ";".join(f"{c.name}:{c.group.value}:{c.dtype.__name__}" for c in columns())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def markdown_table(groups: Iterable[Group] | None = None) -> str:
    """The column list as a markdown table (``docs/metrics.md`` embeds it)."""
    chosen = set(groups) if groups is not None else set(Group)
    lines = ["| column | group | type | meaning |", "|---|---|---|---|"]
    for c in columns():
        if c.group in chosen:
            doc = c.doc.replace("|", "\\|")
            lines.append(f"| `{c.name}` | {c.group.value} | {c.dtype.__name__} | {doc} |")
    return "\n".join(lines) + "\n"


def iter_groups() -> Iterator[tuple[Group, tuple[Column, ...]]]:
    """The columns grouped, in report order."""
    for group in Group:
        cols = tuple(c for c in columns() if c.group is group)
        if cols:
            yield group, cols


DOC_BEGIN = "<!-- columns: generated by `python -m weightspectra.schema`; do not edit -->"
DOC_END = "<!-- end of columns -->"


def update_doc(path: str) -> bool:
    """Rewrite the column table between :data:`DOC_BEGIN` and :data:`DOC_END` in the markdown
    file ``path``; returns whether it changed.

    Raises
    ------
    OptionError
        If the file lacks the markers.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise OptionError(f"{path} lacks the column markers {DOC_BEGIN!r} ... {DOC_END!r}")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    new = f"{head}{DOC_BEGIN}\n\n{markdown_table()}\n{DOC_END}{tail}"
    if new != text:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return new != text


__all__ = [
    "BUILTIN_COLUMNS",
    "ID_COLUMNS",
    "Column",
    "Group",
    "LayerMetric",
    "LayerSpectrum",
    "Value",
    "column",
    "columns",
    "find",
    "fingerprint",
    "html_columns",
    "markdown_table",
    "names",
    "ordered",
    "peer_columns",
    "register_column",
    "registered_metrics",
    "summary_columns",
    "table_columns",
    "unregister_column",
]


if __name__ == "__main__":  # python -m weightspectra.schema [docs/metrics.md]
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "docs/metrics.md"
    changed = update_doc(target)
    sys.stderr.write(f"{target}: {'updated' if changed else 'already up to date'}\n")
