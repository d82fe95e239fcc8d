"""Layer selectors (the ``layers`` and ``exclude`` options): layer ids, layer types and regular
expressions searched in layer names."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from weightspectra.enums import LayerType
from weightspectra.errors import OptionError

__all__ = ["as_selector", "selects"]


def as_selector(
    values: Iterable[int | str | LayerType] | int | str | LayerType, option: str
) -> tuple[int | str | LayerType, ...]:
    """``values`` (one item or several) as a tuple of layer ids, :class:`LayerType` members and
    compiled-checked name patterns, for the option ``option`` (named in errors)."""
    single = isinstance(values, (int, str, LayerType))
    items: Sequence[Any] = [values] if single else list(values)  # type: ignore[arg-type]
    out: list[int | str | LayerType] = []
    type_names = {t.value for t in LayerType}
    for item in items:
        if isinstance(item, LayerType):
            out.append(item)
        elif isinstance(item, bool):
            raise OptionError(f"{option}: {item!r} is not a layer id, type or name pattern")
        elif isinstance(item, int):
            if item < 0:
                raise OptionError(
                    f"{option}: layer id {item} is negative; use exclude=[{-item}] to drop a layer"
                )
            out.append(item)
        elif isinstance(item, str):
            if item.lower() in type_names:
                out.append(LayerType(item.lower()))
            else:
                try:
                    re.compile(item)
                except re.error as exc:
                    raise OptionError(
                        f"{option}: {item!r} is neither a layer type "
                        f"({', '.join(sorted(type_names))}) nor a valid regular expression: {exc}"
                    ) from exc
                out.append(item)
        else:
            raise OptionError(
                f"{option}: {item!r} ({type(item).__name__}) is not a layer id (int), "
                "layer type or name pattern (str)"
            )
    return tuple(out)


def selects(
    selector: tuple[int | str | LayerType, ...], layer_id: int, name: str, layer_type: LayerType
) -> bool:
    """True if a layer matches any item of ``selector`` (id, type, or regex searched in name)."""
    for item in selector:
        if isinstance(item, LayerType):
            if item is layer_type:
                return True
        elif isinstance(item, int):
            if item == layer_id:
                return True
        elif re.search(item, name):
            return True
    return False
