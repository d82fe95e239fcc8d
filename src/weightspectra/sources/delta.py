"""Deltas against a base model: a :class:`Source` whose matrices are ``W − W_base``.

Tensors are paired by *name*, never by position (:func:`pair_keys`): a key of the fine-tune
equals a key of the base once the wrappers' prefixes are set aside (``base_model.model.`` of
PEFT, ``module.`` of DistributedDataParallel, ``_orig_mod.`` of ``torch.compile``), or, failing
that, one of them is the other with a leading path (``bert.encoder.layer.0...`` against
``encoder.layer.0...``) and no other key matches. A tensor without a partner, or whose partner
has another shape, stays a row with the reason; nothing is zero-filled.

The two sources may be of different formats (a safetensors base and a ``.pt`` fine-tune): each
entry loads through its own source's reader, one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace

import numpy as np

from weightspectra.enums import LayerType, Reason
from weightspectra.sources.base import Source, TensorEntry

#: Prefixes that wrappers put before a model's own keys (PEFT, DDP, torch.compile).
WRAPPER_PREFIXES = ("base_model.model.", "module.", "_orig_mod.")


@dataclass(frozen=True)
class DeltaSource(Source):
    """A source of differences (or of an adapter's updates): its rows are checked for their true
    rank (:attr:`low_rank_check`) by :func:`weightspectra.analyze`, since a delta is often of
    low rank and a power law fitted to a handful of non-zero eigenvalues means nothing.

    Attributes
    ----------
    base_description : str
        What the base was (a path, or the type of an in-memory object).
    low_rank_check : bool
        Whether rows with fewer non-zero eigenvalues than ``min_evals`` are flagged.
    """

    base_description: str = ""
    low_rank_check: bool = True


def canonical_key(key: str) -> str:
    """``key`` without the wrappers' prefixes (:data:`WRAPPER_PREFIXES`), repeatedly.

    >>> canonical_key("base_model.model.module.encoder.layer.0.weight")
    'encoder.layer.0.weight'
    """
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def pair_keys(keys: Iterable[str], base_keys: Iterable[str]) -> dict[str, str]:
    """Pair each key of a model with a key of its base, by name.

    A pair is an exact match of the canonical keys (:func:`canonical_key`), or else a unique
    match where one canonical key ends with ``"." +`` the other (a model saved with a leading
    ``bert.`` or ``model.``). Each base key is paired at most once.

    Returns
    -------
    dict
        Model key → base key, for the keys that have a partner.

    Examples
    --------
    >>> pair_keys(["bert.fc.weight", "head.weight"], ["fc.weight", "other.weight"])
    {'bert.fc.weight': 'fc.weight'}
    """
    base = {canonical_key(k): k for k in base_keys}
    pairs: dict[str, str] = {}
    unmatched: list[tuple[str, str]] = []
    for key in keys:
        canon = canonical_key(key)
        if canon in base:
            pairs[key] = base[canon]
        else:
            unmatched.append((key, canon))
    used = set(pairs.values())
    free = [c for c, k in base.items() if k not in used]
    for key, canon in unmatched:
        hits = [c for c in free if canon.endswith("." + c) or c.endswith("." + canon)]
        if len(hits) == 1:
            pairs[key] = base[hits[0]]
            free.remove(hits[0])
    return pairs


def _difference(
    load: Callable[[], np.ndarray], base_load: Callable[[], np.ndarray]
) -> Callable[[], np.ndarray]:
    def difference() -> np.ndarray:
        return np.asarray(load(), dtype=np.float64) - np.asarray(base_load(), dtype=np.float64)

    return difference


def with_load(entry: TensorEntry, load: Callable[[], np.ndarray], **changes: object) -> TensorEntry:
    """``entry`` loading through ``load`` instead: the source's own read hooks (prefetch,
    release, row-block loading) are dropped, since they read the original tensor."""
    hooks = ("prefetch_hook", "release_hook", "load_rows")
    names = {f.name for f in fields(entry)}
    cleared: dict[str, object] = {h: None for h in hooks if h in names}
    return replace(entry, load=load, **cleared, **changes)  # type: ignore[arg-type]


def _unpaired(entry: TensorEntry, why: str, code: Reason) -> TensorEntry:
    return replace(
        entry,
        layer_type=LayerType.UNKNOWN,
        type_reason=why,
        type_code=code,
        gate_up=None,
        tied_to=None,
    )


def _is_matrix(entry: TensorEntry) -> bool:
    return entry.is_float and len(entry.shape) >= 2 and not entry.key.endswith("bias")


def delta_source(model: Source, base: Source) -> DeltaSource:
    """The source of ``W − W_base`` for every weight of ``model`` paired by name in ``base``.

    Parameters
    ----------
    model, base : Source
        Opened sources (:func:`~weightspectra.sources.open_model`), of any formats.

    Returns
    -------
    DeltaSource
        The model's entries in its order, each weight matrix loading as its difference from
        the base's tensor of the same name (float64); a weight without a partner, or with a
        partner of another shape, is a skipped row saying so (``unknown-type`` /
        ``bad-shape``); weights only the base has follow, as skipped rows.

    Examples
    --------
    >>> import numpy as np
    >>> from weightspectra.sources.arrays import open_arrays
    >>> a = open_arrays({"fc.weight": np.ones((3, 2))})
    >>> b = open_arrays({"module.fc.weight": np.zeros((3, 2))})
    >>> delta_source(b, a).entries[0].load().sum()
    np.float64(-6.0)
    """
    base_entries = {e.key: e for e in base.entries}
    pairs = pair_keys([e.key for e in model.entries], base_entries)
    entries: list[TensorEntry] = []
    for entry in model.entries:
        if not _is_matrix(entry):
            entries.append(entry)
            continue
        partner = base_entries.get(pairs.get(entry.key, ""))
        if partner is None:
            why = f"unpaired: the base ({base.description}) has no tensor named like {entry.key!r}"
            entries.append(_unpaired(entry, why, Reason.UNPAIRED))
        elif partner.shape != entry.shape:
            why = (
                f"shape {entry.shape} differs from the base's {partner.key!r} {partner.shape}: "
                "no difference can be taken (it is never zero-filled)"
            )
            entries.append(_unpaired(entry, why, Reason.BAD_SHAPE))
        else:
            entries.append(with_load(entry, _difference(entry.load, partner.load), dtype="float64"))
    paired_base = set(pairs.values())
    for key, entry in base_entries.items():
        if key not in paired_base and _is_matrix(entry):
            why = f"only in the base ({base.description}): the model has no tensor named {key!r}"
            entries.append(_unpaired(entry, why, Reason.UNPAIRED))
    return DeltaSource(
        description=f"{model.description} − base {base.description}",
        entries=tuple(entries),
        base_description=base.description,
    )


def paired_entries(
    model: Source, base: Source
) -> list[tuple[TensorEntry, TensorEntry | None, str]]:
    """Each weight matrix of ``model`` with its partner in ``base`` (or ``None`` and why).

    Used by :func:`weightspectra.distances`; the pairing is :func:`pair_keys`.
    """
    base_entries: Mapping[str, TensorEntry] = {e.key: e for e in base.entries}
    pairs = pair_keys([e.key for e in model.entries], base_entries)
    out: list[tuple[TensorEntry, TensorEntry | None, str]] = []
    for entry in model.entries:
        if not _is_matrix(entry):
            continue
        partner = base_entries.get(pairs.get(entry.key, ""))
        if partner is None:
            out.append((entry, None, "unpaired"))
        elif partner.shape != entry.shape:
            out.append((entry, None, f"shape {entry.shape} vs {partner.shape}"))
        else:
            out.append((entry, partner, ""))
    return out
