"""The peer's ``layers=`` semantics, turned into weightspectra's exact-name selection.

The peer reads ``layers`` as three filters applied in turn, each one overriding the last:
layer-type strings (``'dense'``, ``'conv1d'``, ``'conv2d'``, ``'embedding'``, ``'norm'``) keep
that type; integers keep those layer ids (all ≥ 0) or drop them (all < 0); other strings keep
the layer whose *name* equals one exactly (``'query'``), or, all prefixed with ``-``, drop
them. So ids win over types, and names over both. Mixed signs, or keep and drop names mixed,
are errors here (the peer logs them and carries on).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from weightspectra.compat.frames import PeerNaming, split_slice
from weightspectra.errors import OptionError
from weightspectra.report.results import LayerResult

#: The peer's layer-type names accepted in ``layers=``.
PEER_TYPES = ("conv2d", "conv1d", "dense", "embedding", "norm")
#: A selector that selects nothing.
NOTHING = "^(?!)$"


@dataclass(frozen=True)
class PeerFilters:
    """``layers=`` split into the peer's three filters."""

    types: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.types or self.ids or self.names)


def parse_layers(layers: object) -> PeerFilters:
    """The peer's filters of ``layers`` (a list, or one item).

    Raises
    ------
    OptionError
        On an item that is no id, name or type; on ids of both signs; on keep and drop names
        mixed.
    """
    items = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
    types: list[str] = []
    ids: list[int] = []
    names: list[str] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, bool):
            raise OptionError(f"layers: {item!r} is not a layer id, name or type")
        if isinstance(item, int):
            ids.append(item)
        elif isinstance(item, str) and item.lower() in PEER_TYPES:
            types.append(item.lower())
        elif isinstance(item, str):
            names.append(item)
        elif hasattr(item, "name") and isinstance(item.name, str):  # the peer's LAYER_TYPE
            types.append(item.name.lower())
        else:
            raise OptionError(
                f"layers: a {type(item).__name__} is not a layer id, name or type; pass ids "
                f"(negative to drop), names ('-name' to drop) or one of {PEER_TYPES}"
            )
    if ids and min(ids) < 0 <= max(ids):
        raise OptionError(
            f"layers={sorted(ids)}: ids must all be ≥ 0 (keep) or all < 0 (drop), not mixed"
        )
    drops = [n.startswith("-") for n in names]
    if any(drops) and not all(drops):
        raise OptionError(
            f"layers={names}: names must all keep ('query') or all drop ('-query'), not mixed"
        )
    return PeerFilters(tuple(types), tuple(ids), tuple(names))


def kept(row: LayerResult, filters: PeerFilters, naming: PeerNaming) -> bool:
    """Whether the peer keeps ``row`` under ``filters``."""
    keep = True
    if filters.types:
        keep = naming.layer_type(row) in filters.types
    if filters.ids:
        layer_id = naming.layer_id(row)
        keep = layer_id in filters.ids if min(filters.ids) >= 0 else -layer_id not in filters.ids
    if filters.names:
        name = naming.name(split_slice(row.name)[0])
        if filters.names[0].startswith("-"):
            keep = f"-{name}" not in filters.names
        else:
            keep = name in filters.names
    return keep


def entry_selector(
    rows: Sequence[LayerResult], filters: PeerFilters, naming: PeerNaming
) -> tuple[str, ...]:
    """Exact-name selectors (``^name$`` on the tensor's name) of the rows the peer keeps;
    :data:`NOTHING` when it keeps none."""
    names = {row.key.removesuffix(".weight") for row in rows if kept(row, filters, naming)}
    if not names:
        return (NOTHING,)
    return tuple(f"^{re.escape(n)}$" for n in sorted(names))
