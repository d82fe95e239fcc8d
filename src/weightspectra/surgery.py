"""Spectral model surgery: edit weight matrices through their SVD, guided by their spectra.

:func:`smooth` keeps, per layer, the top ``k`` singular components of ``W = U S Vᵀ`` and drops
the rest, with ``k`` chosen by one rule (:class:`SmoothRule`):

* ``mp``: the Marchenko–Pastur spike count (``num_spikes``: eigenvalues above the fitted bulk
  edge plus its Tracy–Widom margin), i.e. the signal above the noise;
* ``tail``: the power-law tail (``num_pl_spikes``: eigenvalues ≥ ``xmin``);
* ``detx``: the detX condition (``detX_num``);
* ``fraction``: ``ceil(fraction · rank)``.

:func:`remove_traps` drops the top ``num_traps`` components of each layer whose entry-shuffled
matrix has eigenvalues beyond its own MP edge (correlation traps, ``randomize=True``);
:func:`clip_spikes` clips every singular value above the MP bulk edge to the edge (the
"sharpness" edit). Each returns a :class:`SurgeryResult`: new arrays, never the input edited
(unless :meth:`SurgeryResult.apply_to` is called on a module), and per layer what was removed.
Only 2-D weights are edited (a convolution's slices would each need their own rule); the
others are listed with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.analysis import analyze
from weightspectra.enums import parse_enum
from weightspectra.errors import InputError, MissingDependencyError, OptionError
from weightspectra.options import Options
from weightspectra.report.results import LayerResult
from weightspectra.sources import Source, TensorEntry, open_model


class SmoothRule(Enum):
    """How :func:`smooth` chooses the number of components kept."""

    MP = "mp"
    TAIL = "tail"
    DETX = "detx"
    FRACTION = "fraction"


#: The row column that gives ``k`` for each rule (``fraction`` uses the rank).
_RULE_COLUMN = {SmoothRule.MP: "num_spikes", SmoothRule.TAIL: "num_pl_spikes"}


@dataclass(frozen=True)
class LayerEdit:
    """What surgery did to one weight.

    Attributes
    ----------
    key : str
    shape : tuple of int
    rank : int
        Numerical rank before the edit.
    kept, removed : int
        Singular components kept and removed (clipped, for :func:`clip_spikes`).
    removed_norm_rel : float
        ``‖W − W'‖_F / ‖W‖_F``.
    reason : str
        Why the weight was left alone (empty when edited).
    """

    key: str
    shape: tuple[int, ...]
    rank: int = 0
    kept: int = 0
    removed: int = 0
    removed_norm_rel: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class SurgeryResult:
    """The edited weights and the record of each edit.

    Attributes
    ----------
    state : mapping
        Every floating-point tensor of the model by key, the edited ones new arrays, the others
        as read (same dtype as read); integer buffers are not included.
    edits : tuple of LayerEdit
        One per weight the analysis reached, in model order.
    method : str
    """

    state: Mapping[str, np.ndarray]
    edits: tuple[LayerEdit, ...]
    method: str = ""
    description: str = field(default="")

    @property
    def edited(self) -> tuple[LayerEdit, ...]:
        """The edits that changed a weight."""
        return tuple(e for e in self.edits if not e.reason and e.removed)

    def to_safetensors(self, path: str | Path) -> Path:
        """Write :attr:`state` as a ``.safetensors`` file.

        Raises
        ------
        MissingDependencyError
            If the ``safetensors`` package is not installed.
        """
        try:
            from safetensors.numpy import save_file
        except ImportError as exc:
            raise MissingDependencyError("safetensors", "safetensors", "to_safetensors") from exc
        target = Path(path)
        save_file({k: np.ascontiguousarray(v) for k, v in self.state.items()}, str(target))
        return target

    def apply_to(self, module: Any) -> Any:
        """Copy the edited weights into an ``nn.Module`` (in place, as asked) and return it.

        Raises
        ------
        InputError
            If the module has no parameter of an edited key, or one of another shape.
        """
        import torch

        params = dict(module.named_parameters())
        with torch.no_grad():
            for edit in self.edited:
                param = params.get(edit.key)
                if param is None or tuple(param.shape) != edit.shape:
                    raise InputError(
                        f"the module has no parameter {edit.key!r} of shape {edit.shape}; apply "
                        "the edits to the model they were computed from"
                    )
                param.copy_(torch.from_numpy(np.asarray(self.state[edit.key])).to(param.dtype))
        return module

    def table(self) -> list[dict[str, Any]]:
        """The edits as plain records (for a DataFrame or a markdown table)."""
        return [
            {
                "key": e.key,
                "shape": "×".join(map(str, e.shape)),
                "rank": e.rank,
                "kept": e.kept,
                "removed": e.removed,
                "removed_norm_rel": e.removed_norm_rel,
                "reason": e.reason,
            }
            for e in self.edits
        ]


def truncate(w: np.ndarray, k: int) -> np.ndarray:
    """``w`` with only its top ``k`` singular components (``0 ≤ k``).

    >>> w = np.diag([3.0, 2.0, 1.0])
    >>> np.diag(truncate(w, 2)).tolist()
    [3.0, 2.0, 0.0]
    """
    u, s, vt = np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)
    k = max(0, min(k, s.size))
    out: np.ndarray = (u[:, :k] * s[:k]) @ vt[:k]
    return out


def drop_top(w: np.ndarray, k: int) -> np.ndarray:
    """``w`` without its top ``k`` singular components.

    >>> np.diag(drop_top(np.diag([3.0, 2.0, 1.0]), 1)).tolist()
    [0.0, 2.0, 1.0]
    """
    u, s, vt = np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)
    k = max(0, min(k, s.size))
    out: np.ndarray = (u[:, k:] * s[k:]) @ vt[k:]
    return out


def clip_singular_values(w: np.ndarray, ceiling: float) -> tuple[np.ndarray, int]:
    """``w`` with every singular value above ``ceiling`` set to ``ceiling``; and how many.

    >>> out, n = clip_singular_values(np.diag([3.0, 2.0, 1.0]), 1.5)
    >>> np.diag(out).tolist(), n
    ([1.5, 1.5, 1.0], 2)
    """
    u, s, vt = np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)
    clipped = int(np.sum(s > ceiling))
    return (u * np.minimum(s, ceiling)) @ vt, clipped


def _rank(w: np.ndarray) -> int:
    s = np.linalg.svd(w, compute_uv=False)
    return int(np.sum(s > s[0] * max(w.shape) * np.finfo(np.float64).eps)) if s.size else 0


def _edit(
    source: Source,
    rows: tuple[LayerResult, ...],
    method: str,
    plan: Callable[[LayerResult, np.ndarray], tuple[np.ndarray, int, int, str]],
) -> SurgeryResult:
    """Apply ``plan(row, W) -> (W', kept, removed, reason)`` to each analysed 2-D weight."""
    entries: dict[str, TensorEntry] = {e.key: e for e in source.entries}
    by_key: dict[str, LayerResult] = {}
    for analysed in rows:
        by_key.setdefault(analysed.key, analysed)
    state: dict[str, np.ndarray] = {}
    edits: list[LayerEdit] = []
    for key, entry in entries.items():
        if not entry.is_float:
            continue
        array = np.asarray(entry.load())
        state[key] = array
        row = by_key.get(key)
        if row is None:
            continue
        if not row.ok:
            edits.append(LayerEdit(key, entry.shape, reason=f"not analysed: {row.reason}"))
            continue
        if array.ndim != 2 or row.name != entry.name:
            why = f"{array.ndim}-D weight (only 2-D weights are edited)"
            edits.append(LayerEdit(key, entry.shape, reason=why))
            continue
        w = array.astype(np.float64)
        new, kept, removed, reason = plan(row, w)
        if reason:
            edits.append(LayerEdit(key, entry.shape, rank=_rank(w), reason=reason))
            continue
        norm = float(np.linalg.norm(w))
        rel = float(np.linalg.norm(w - new)) / norm if norm > 0 else 0.0
        state[key] = new.astype(array.dtype)
        edits.append(LayerEdit(key, entry.shape, _rank(w), kept, removed, rel))
    return SurgeryResult(state, tuple(edits), method, source.description)


def _open(model: object) -> Source:
    return model if isinstance(model, Source) else open_model(model)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def smooth(
    model: object,
    rule: SmoothRule | str = SmoothRule.TAIL,
    *,
    fraction: float = 0.8,
    options: Options | None = None,
    **kwargs: Any,
) -> SurgeryResult:
    """Keep the top ``k`` singular components of each 2-D weight (see the module docstring).

    Parameters
    ----------
    model : model
        Anything :func:`weightspectra.analyze` accepts; it is never modified.
    rule : SmoothRule or str, default "tail"
        ``mp``, ``tail``, ``detx`` or ``fraction``.
    fraction : float, default 0.8
        For ``rule="fraction"``: the share of the rank kept, in (0, 1].
    options : Options, optional
        Analysis options (keyword arguments on top), e.g. ``layers=`` to edit some layers only.

    Returns
    -------
    SurgeryResult

    Raises
    ------
    OptionError
        On an unknown rule or a fraction outside (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal((100, 50))
    >>> result = smooth({"fc.weight": w}, "fraction", fraction=0.5)
    >>> result.edits[0].kept, result.edits[0].removed
    (25, 25)
    """
    chosen = parse_enum(SmoothRule, rule, "rule")
    if not 0.0 < fraction <= 1.0:
        raise OptionError(f"fraction={fraction!r} must lie in (0, 1]; e.g. 0.8 keeps 80 %")
    source = _open(model)
    opts = options.replace(**kwargs) if options is not None else Options.from_kwargs(**kwargs)
    if chosen is SmoothRule.MP:
        opts = opts.replace(mp_fit=True)
    if chosen is SmoothRule.DETX:
        opts = opts.replace(detx=True)
    report = analyze(source, opts)

    def plan(row: LayerResult, w: np.ndarray) -> tuple[np.ndarray, int, int, str]:
        rank = _rank(w)
        if chosen is SmoothRule.FRACTION:
            k: int | None = math.ceil(fraction * rank)
        elif chosen is SmoothRule.DETX:
            k = _int(row.metrics.get("detX_num"))
        else:
            k = _int(row.metrics.get(_RULE_COLUMN[chosen]))
        if k is None:
            return w, 0, 0, f"no {chosen.value} count for this layer (its fit failed)"
        k = min(k, rank)
        return truncate(w, k), k, rank - k, ""

    return _edit(source, report.analysed, f"smooth-{chosen.value}", plan)


def remove_traps(model: object, options: Options | None = None, **kwargs: Any) -> SurgeryResult:
    """Drop the top ``num_traps`` singular components of each 2-D weight whose shuffled ESD
    shows correlation traps (``randomize=True``, seeded by ``options.seed``).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal((200, 100))
    >>> w[3, 5] = 80.0  # one huge entry: a trap
    >>> remove_traps({"fc.weight": w}).edits[0].removed >= 1
    True
    """
    source = _open(model)
    opts = options.replace(**kwargs) if options is not None else Options.from_kwargs(**kwargs)
    report = analyze(source, opts.replace(randomize=True))

    def plan(row: LayerResult, w: np.ndarray) -> tuple[np.ndarray, int, int, str]:
        traps = _int(row.metrics.get("num_traps"))
        rank = _rank(w)
        if traps is None:
            return w, 0, 0, "the shuffled matrix's MP fit failed: no trap count"
        return drop_top(w, traps), rank - min(traps, rank), min(traps, rank), ""

    return _edit(source, report.analysed, "remove-traps", plan)


def clip_spikes(model: object, options: Options | None = None, **kwargs: Any) -> SurgeryResult:
    """Clip each 2-D weight's singular values above its MP bulk edge to the edge
    (``√bulk_max`` of the fitted MP law, in the units of W).
    """
    source = _open(model)
    opts = options.replace(**kwargs) if options is not None else Options.from_kwargs(**kwargs)
    opts = opts.replace(mp_fit=True)
    report = analyze(source, opts)

    def plan(row: LayerResult, w: np.ndarray) -> tuple[np.ndarray, int, int, str]:
        edge = row.metrics.get("bulk_max")
        if not isinstance(edge, float) or not math.isfinite(edge) or edge <= 0:
            return w, 0, 0, "no MP bulk edge for this layer (its MP fit failed)"
        s = np.linalg.svd(w, compute_uv=False)
        # bulk_max is in the report's units: λ of WᵀW times the row's eigenvalue scale
        lambda_max = row.metrics.get("lambda_max")
        top = float(s[0] ** 2)
        scale = (float(lambda_max) if isinstance(lambda_max, float) else top) / top
        new, clipped = clip_singular_values(w, math.sqrt(edge / scale))
        return new, _rank(w) - clipped, clipped, ""

    return _edit(source, report.analysed, "clip-spikes", plan)


__all__ = [
    "LayerEdit",
    "SmoothRule",
    "SurgeryResult",
    "clip_singular_values",
    "clip_spikes",
    "drop_top",
    "remove_traps",
    "smooth",
    "truncate",
]
