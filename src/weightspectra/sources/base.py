"""The contract every source follows: an ordered list of tensors with lazy loaders."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from weightspectra.enums import LayerType

_FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a model, known by name and shape before anything is loaded.

    Attributes
    ----------
    key : str
        The tensor's key in the source (e.g. ``"encoder.layer.0.attention.self.query.weight"``).
    shape : tuple of int
    dtype : str
        Canonical dtype name (``"float32"``, ``"bfloat16"``, ``"int64"`` ...).
    load : callable
        Returns the tensor as a floating numpy array (float32 or float64), reading it only then.
    layer_type : LayerType, optional
        Known type (module sources); ``None`` when it must be inferred from key and shape.
    tied_to : str, optional
        Key of the first tensor sharing this one's storage (tied weights are analysed once).
    prefetch_hook, release_hook : callable, optional
        Memory-mapped sources: ask the OS to start reading the tensor ahead of :attr:`load`, and
        to drop its pages from this process once it has been analysed (bounded memory).
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray]
    layer_type: LayerType | None = None
    tied_to: str | None = None
    prefetch_hook: Callable[[], None] | None = None
    release_hook: Callable[[], None] | None = None

    def prefetch(self) -> None:
        """Hint that the tensor will be loaded soon (no-op for in-memory sources)."""
        if self.prefetch_hook is not None:
            self.prefetch_hook()

    def release(self) -> None:
        """Hint that the tensor is done with (no-op for in-memory sources)."""
        if self.release_hook is not None:
            self.release_hook()

    @property
    def name(self) -> str:
        """Layer name: the key without a trailing ``.weight`` (the module path)."""
        return self.key[: -len(".weight")] if self.key.endswith(".weight") else self.key

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


@dataclass(frozen=True)
class Source:
    """A model opened for analysis: a description and its tensors in model order.

    Attributes
    ----------
    description : str
        What was opened (a path, or the type of an in-memory object), for reports and messages.
    entries : tuple of TensorEntry
        Every tensor, in model order.
    """

    description: str
    entries: tuple[TensorEntry, ...]


_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``layers.2`` before ``layers.10`` (numeric parts as numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _NUM.split(name) if p)


def in_model_order(names: Iterable[str]) -> list[str]:
    """Names sorted by :func:`natural_key`: the model's block order, never plain alphabetical."""
    return sorted(names, key=natural_key)
