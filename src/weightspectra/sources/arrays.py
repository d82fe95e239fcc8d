"""Numpy inputs: a mapping of names to arrays (handy for tests and other frameworks), ``.npz``.

Keys follow the Hugging Face / PyTorch naming (:mod:`weightspectra.sources.naming`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightspectra.errors import InputError, UnsupportedInputError
from weightspectra.sources.base import Source, TensorEntry, as_path
from weightspectra.sources.naming import interleaved_gate_up_beside, type_entries


def _array_loader(array: np.ndarray) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if array.dtype == np.float16:
            return array.astype(np.float32)
        return array

    return load


def dtype_name(dtype: np.dtype) -> str:
    """Canonical dtype name of a numpy dtype."""
    return "bool" if dtype == np.bool_ else str(dtype)


def open_arrays(
    arrays: Mapping[str, object],
    description: str = "dict of numpy arrays",
    *,
    interleaved_gate_up: bool = False,
) -> Source:
    """Open a ``{name: ndarray}`` mapping; insertion order is taken as the model's order.

    Parameters
    ----------
    arrays : mapping of str to ndarray
        The tensors, by key.
    description : str, default "dict of numpy arrays"
        How the source is named in reports and messages.
    interleaved_gate_up : bool, default False
        Fused MoE gate/up experts alternate gate and up (GPT-OSS).

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
    typed = type_entries(entries, interleaved_gate_up=interleaved_gate_up)
    return Source(description=description, entries=typed)


def open_npz(path: Path) -> Source:
    """Open a ``.npz`` file of plain arrays (read whole: numpy cannot map its members).

    Raises
    ------
    InputError
        If the file holds pickled objects or is not a valid ``.npz``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise InputError(f"{path}: not a plain .npz of arrays ({exc})") from exc
    return open_arrays(
        data, description=str(path), interleaved_gate_up=interleaved_gate_up_beside(path)
    )


@dataclass(frozen=True)
class NumpyArrays:
    """Adapter for a non-empty mapping whose values are all numpy arrays."""

    name: str = "numpy-dict"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return (
            isinstance(model, Mapping)
            and bool(model)
            and all(isinstance(v, np.ndarray) for v in model.values())
        )

    def open(self, model: object) -> Source:
        if not isinstance(model, Mapping):
            raise UnsupportedInputError(
                f"the {self.name!r} source opens mappings, got a {type(model).__name__}; call "
                "weightspectra.open_model(model), which picks the adapter"
            )
        return open_arrays(model)


@dataclass(frozen=True)
class NpzFile:
    """Adapter for a ``.npz`` file."""

    name: str = "npz"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and model.is_file() and model.suffix.lower() == ".npz"

    def open(self, model: object) -> Source:
        return open_npz(as_path(model, self.name))
