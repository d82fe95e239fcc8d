"""A mapping of names to numpy arrays (handy for tests and for other frameworks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from weightspectra.errors import UnsupportedInputError
from weightspectra.sources.base import Source, TensorEntry


def _array_loader(array: np.ndarray) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if array.dtype == np.float16:
            return array.astype(np.float32)
        return array

    return load


def dtype_name(dtype: np.dtype) -> str:
    """Canonical dtype name of a numpy dtype."""
    return "bool" if dtype == np.bool_ else str(dtype)


def open_arrays(arrays: Mapping[str, object], description: str = "dict of numpy arrays") -> Source:
    """Open a ``{name: ndarray}`` mapping; insertion order is taken as the model's order.

    Raises
    ------
    UnsupportedInputError
        If a value is not a numpy array.
    """
    entries = []
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise UnsupportedInputError(
                f"{description}: value of {key!r} is a {type(value).__name__}, expected a numpy "
                "array; convert it with numpy.asarray(...) first"
            )
        entries.append(
            TensorEntry(
                key=str(key),
                shape=tuple(int(s) for s in value.shape),
                dtype=dtype_name(value.dtype),
                load=_array_loader(value),
            )
        )
    return Source(description=description, entries=tuple(entries))
