"""The contract every source follows.

A *source adapter* (:class:`SourceAdapter`) recognises one kind of input cheaply and opens it as
a :class:`Source`: an ordered tuple of :class:`TensorEntry`, each known by key, shape, dtype and
layer type before anything is loaded, with a lazy loader. Adapters are found through the
registry (:mod:`weightspectra.sources.registry`); :func:`~weightspectra.sources.open_model` only
dispatches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from weightspectra.core.layers import GateUpSplit
from weightspectra.enums import LayerType, Reason
from weightspectra.errors import CorruptFileError, UnsupportedInputError

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
        The tensor's type, filled by the adapter at open time (from the module class, or from
        the key naming of the format); ``None`` only in a hand-built :class:`Source`, which
        :func:`~weightspectra.sources.open_model` types by the Hugging Face / PyTorch naming.
    type_reason : str, default ""
        Why the type is :attr:`LayerType.UNKNOWN` (the skipped row's reason); empty otherwise.
    type_code : Reason, default Reason.NONE
        The same as a code: :attr:`Reason.PARAMETRIZATION` for a factor of a parametrised
        weight (analysed as the effective weight instead), else the plain unknown-type code.
    gate_up : GateUpSplit, optional
        For fused MoE ``gate_up_proj`` experts: where each expert's gate and up halves lie.
    quantization : str, default ""
        How the source stores a quantised tensor (``"Q4_K"``, ``"gptq-4bit-g128"``, ...): the
        loader returns the dequantised weights, and each row of the tensor says this in its
        ``quantization`` column. Empty for unquantised tensors.
    tied_to : str, optional
        Key of the first tensor sharing this one's storage (tied weights are analysed once).
    prefetch_hook, release_hook : callable, optional
        Memory-mapped sources: ask the OS to start reading the tensor ahead of :attr:`load`, and
        to drop its pages from this process once it has been analysed (bounded memory).
    load_rows : callable, optional
        For a 2-D tensor whose every load is a conversion (dequantisation): ``load_rows(lo, hi)``
        returns rows ``lo:hi`` as the float32 or float64 array ``load()[lo:hi]`` would hold,
        converting only those. A large tall matrix is then summed into its Gram matrix block by
        block and never held whole (the analysis decides when; :attr:`load` stays the
        reference). ``None``: the tensor is always loaded whole.
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray]
    layer_type: LayerType | None = None
    type_reason: str = ""
    type_code: Reason = Reason.NONE
    gate_up: GateUpSplit | None = None
    quantization: str = ""
    tied_to: str | None = None
    prefetch_hook: Callable[[], None] | None = None
    release_hook: Callable[[], None] | None = None
    load_rows: Callable[[int, int], np.ndarray] | None = None

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
        Every tensor, in model order, typed by the adapter that opened it.
    """

    description: str
    entries: tuple[TensorEntry, ...]


class SourceAdapter(Protocol):
    """One kind of input weightspectra can open: the contract of every source module.

    An adapter is a small object (the built-in ones are frozen dataclasses without fields) with:

    * ``name``: a short unique name (``"safetensors-file"``), used by the registry;
    * ``extra`` and ``requires``: the optional package :meth:`open` imports (``"torch"``) and
      the weightspectra extra that installs it, or ``None`` for numpy-only adapters;
      :func:`~weightspectra.sources.open_model` checks it before calling :meth:`open`;
    * :meth:`can_open`: cheap, and never imports a framework: a path's suffix or first bytes,
      or, for in-memory objects, a ``sys.modules`` check (an object can only be a torch tensor
      if the caller has imported torch);
    * :meth:`open`: the :class:`Source`, each entry typed (``layer_type``, and
      ``type_reason`` when it is unknown) by the adapter's own naming rules; nothing loaded.

    Paths reach both methods as :class:`pathlib.Path` objects that exist (and, for files, are not
    empty).

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import dataclass
    >>> from weightspectra.sources import Registry, Source, open_model
    >>> from weightspectra.sources.arrays import open_arrays
    >>> @dataclass(frozen=True)
    ... class Pairs:  # a list of (name, array) pairs
    ...     name: str = "pairs"
    ...     extra: str | None = None
    ...     requires: str | None = None
    ...     def can_open(self, model: object) -> bool:
    ...         return isinstance(model, list) and all(isinstance(p, tuple) for p in model)
    ...     def open(self, model: object) -> Source:
    ...         return open_arrays(dict(model), description="pairs")
    >>> registry = Registry([Pairs()])
    >>> [e.key for e in open_model([("fc.weight", np.eye(3))], registry=registry).entries]
    ['fc.weight']
    """

    @property
    def name(self) -> str:
        """Short unique name of the adapter."""
        ...

    @property
    def extra(self) -> str | None:
        """The weightspectra extra that installs :attr:`requires` (``None``: none needed)."""
        ...

    @property
    def requires(self) -> str | None:
        """Top-level module :meth:`open` imports (``None``: numpy only)."""
        ...

    def can_open(self, model: object) -> bool:
        """Whether this adapter reads ``model`` (cheap; never imports a framework)."""
        ...

    def open(self, model: object) -> Source:
        """Open ``model`` as a :class:`Source` with typed entries (nothing loaded yet)."""
        ...


def as_path(model: object, adapter: str) -> Path:
    """``model`` as the path an adapter's :meth:`~SourceAdapter.open` expects.

    Raises
    ------
    UnsupportedInputError
        If ``model`` is not a :class:`pathlib.Path` (``open`` was called without ``can_open``).
    """
    if not isinstance(model, Path):
        raise UnsupportedInputError(
            f"the {adapter!r} source opens paths, got a {type(model).__name__}; call "
            "weightspectra.open_model(model), which picks the adapter"
        )
    return model


def merge_files(
    folder: Path, parts: Iterable[tuple[Path, Iterable[TensorEntry]]]
) -> tuple[TensorEntry, ...]:
    """The entries of a checkpoint's files, in model order, each key from exactly one file.

    The one policy for shards: the same key in two files is an error naming both files, in every
    adapter that reads folders (shards never overwrite each other silently).

    Raises
    ------
    CorruptFileError
        If a key appears in two files.
    """
    entries: dict[str, TensorEntry] = {}
    origin: dict[str, Path] = {}
    for path, part in parts:
        for entry in part:
            if entry.key in entries:
                raise CorruptFileError(
                    f"tensor {entry.key!r} appears in two files of {folder}: "
                    f"{origin[entry.key].name} and {path.name}; a folder must hold one "
                    "checkpoint, so move the other checkpoint's files out of it (or pass one "
                    "file)"
                )
            entries[entry.key] = entry
            origin[entry.key] = path
    return tuple(entries[k] for k in in_model_order(entries))


_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``layers.2`` before ``layers.10`` (numeric parts as numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _NUM.split(name) if p)


def in_model_order(names: Iterable[str]) -> list[str]:
    """Names sorted by :func:`natural_key`: the model's block order, never plain alphabetical."""
    return sorted(names, key=natural_key)
