"""JAX/Flax inputs: ``flax.serialization`` msgpack checkpoints and in-memory pytrees of arrays.

Neither jax nor flax is needed to read a file. ``flax.serialization.to_bytes(tree)`` writes the
state dict of ``tree`` (nested string-keyed maps) with the ``msgpack`` package; every array leaf
is a msgpack *ext* value whose code is 1 (``ndarray``; 3, ``npscalar``, for a numpy scalar) and
whose payload is itself msgpack: the array ``[shape, dtype name, C-order bytes]``. Code 2 is a
Python complex, ``[real, imag]``. Arrays over 1 GiB are split by flax into a map
``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": ..., ...}}``
of flattened pieces (tuples are maps keyed by position). (This layout is taken from flax's
public source, ``flax/serialization.py``: ``_MsgpackExtType``, ``_ndarray_to_bytes`` and
``_chunk``; it is decoded here with ``msgpack`` alone.) msgpack has no index, so the file is
parsed once when opened; each array's bytes are kept as read and become a numpy array only when
its entry is loaded.

Layouts are converted to torch's, which the rest of weightspectra assumes: a Dense ``kernel``
(in, out) becomes (out, in), a Conv ``kernel`` (k..., in, out) becomes (out, in, k...), an Embed
``embedding`` (vocab, dim) is kept. A kernel's entry is keyed by its module path (the leaf name
``kernel`` dropped, as torch's ``.weight`` is dropped from layer names): the tree
``{"params": {"encoder": {"query": {"kernel": ...}}}}`` gives the layer
``params.encoder.query``. Other leaves keep their whole path and are typed by the Hugging Face /
PyTorch naming (``bias`` and ``scale`` are 1-D and so skipped as usual).

Plain scalar leaves (a ``TrainState``'s ``step``: ints, floats, booleans, ``None``, complex) are
not tensors and are left out; a ``TrainState``'s ``opt_state`` arrays (Adam's moments mirror the
parameters) are skipped rows saying so; any other leaf (a string, bytes, an unknown ext code) is
an error naming its path. Orbax checkpoint folders are not read: their arrays live in
TensorStore (zarr / OCDBT) files whose reading needs tensorstore and orbax's own metadata;
restore them with orbax and pass the tree of arrays instead.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.enums import LayerType
from weightspectra.errors import CorruptFileError, UnsupportedInputError
from weightspectra.sources.base import Source, TensorEntry, as_path
from weightspectra.sources.naming import infer_layer_type


def _ml_dtypes() -> Any:
    """:mod:`ml_dtypes` (bfloat16 and float8 as numpy dtypes), imported only when a tensor of
    such a dtype is met; ``None`` in a broken install (those dtypes are then unknown)."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a dependency of weightspectra
        return None
    return ml_dtypes


#: Suffixes of flax msgpack checkpoints (``flax_model.msgpack`` in Hugging Face repositories).
MSGPACK_SUFFIXES = (".msgpack",)
#: The ext codes of ``flax.serialization`` (its ``_MsgpackExtType``).
EXT_NDARRAY = 1
EXT_COMPLEX = 2
EXT_NPSCALAR = 3
#: Trees nest a few levels (module paths); deeper is a corrupt file or a cyclic object.
MAX_DEPTH = 64
#: The marker key of an array flax split into chunks.
CHUNKED_MARKER = "__msgpack_chunked_array__"
#: Module names under which a 3-D kernel is a DenseGeneral attention projection (heads split
#: out: (in, heads, dim) or (heads, dim, out)), not a Conv1d kernel.
_ATTENTION_NAMES = frozenset(
    {"query", "key", "value", "out", "q", "k", "v", "o", "qkv", "q_proj", "k_proj", "v_proj"}
)
_PLAIN_DTYPES = (
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
    "complex64",
    "complex128",
)
_SCALAR_LEAVES = (bool, int, float, complex, type(None))


def storage_dtype(name: str) -> np.dtype[Any] | None:
    """The numpy dtype of a flax dtype name (``"float32"``, ``"bfloat16"`` ...), or ``None``.

    >>> storage_dtype("bfloat16").itemsize, storage_dtype("object")
    (2, None)
    """
    if name in _PLAIN_DTYPES:
        return np.dtype(name)
    extra = _ml_dtypes() if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2") else None
    if extra is not None:
        extended: np.dtype[Any] = np.dtype(getattr(extra, name))
        return extended
    return None


@dataclass(frozen=True)
class _Stored:
    """An array as read from a file: its shape, dtype and bytes (C order), not yet an array."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[bytes, ...]

    def array(self) -> np.ndarray:
        if len(self.chunks) == 1:
            flat = np.frombuffer(self.chunks[0], dtype=self.dtype)
        else:
            flat = np.concatenate([np.frombuffer(c, dtype=self.dtype) for c in self.chunks])
        return flat.reshape(self.shape)


@dataclass(frozen=True)
class _Bad:
    """A leaf that cannot be read, with why (reported with its path by the tree walk)."""

    reason: str


def _msgpack() -> Any:
    """The ``msgpack`` module, imported only when a file is read (the ``flax`` extra)."""
    import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

    return msgpack


def _decode_ndarray(payload: bytes) -> _Stored | _Bad:
    msgpack = _msgpack()

    try:
        fields = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        return _Bad(f"its array payload is not msgpack ({exc})")
    if not isinstance(fields, list) or len(fields) != 3:
        return _Bad("its array payload is not [shape, dtype, bytes]")
    shape, name, data = fields
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        return _Bad(f"its shape {shape!r} is not a list of non-negative integers")
    if not isinstance(name, str) or not isinstance(data, bytes):
        return _Bad("its array payload is not [shape, dtype name, bytes]")
    dtype = storage_dtype(name)
    if dtype is None:
        return _Bad(f"its dtype {name!r} is not one weightspectra reads")
    if math.prod(max(s, 1) for s in shape) * dtype.itemsize >= 2**63:
        return _Bad(f"its shape {shape} is too large for any array")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for huge claims
    if len(data) != expected:
        return _Bad(
            f"its {name}{shape} array needs {expected} bytes but the payload holds {len(data)}"
        )
    return _Stored(tuple(shape), dtype, (data,))


def _ext_hook(code: int, payload: bytes) -> object:
    msgpack = _msgpack()

    if code in (EXT_NDARRAY, EXT_NPSCALAR):
        return _decode_ndarray(payload)
    if code == EXT_COMPLEX:
        try:
            real, imag = msgpack.unpackb(payload)
            return complex(real, imag)
        except (ValueError, TypeError, msgpack.UnpackException):
            return _Bad("its complex payload is not [real, imag]")
    return _Bad(f"it is a msgpack ext value of code {code}, which flax does not write")


def _numbered(node: object) -> list[object] | None:
    """The values of a map keyed ``"0"``, ``"1"``, ... in order (flax's tuples), else ``None``."""
    if not isinstance(node, Mapping):
        return None
    values = [node.get(str(i), _MISSING) for i in range(len(node))]
    return None if any(v is _MISSING for v in values) else values


_MISSING = object()


def _chunked(node: Mapping[str, Any]) -> _Stored | _Bad:
    shape = _numbered(node.get("shape"))
    pieces = _numbered(node.get("chunks"))
    if shape is None or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        return _Bad(
            f"its chunked-array shape {node.get('shape')!r} is not a map '0', '1', ... of "
            "non-negative integers"
        )
    if not pieces or not all(isinstance(p, _Stored) for p in pieces):
        return _Bad("its chunks are not a map '0', '1', ... of arrays")
    stored = [p for p in pieces if isinstance(p, _Stored)]
    dims = [s for s in shape if isinstance(s, int)]
    if math.prod(max(s, 1) for s in dims) * stored[0].dtype.itemsize >= 2**63:
        return _Bad(f"its chunked-array shape {tuple(dims)} is too large for any array")
    total = sum(math.prod(p.shape) for p in stored)
    if len({p.dtype for p in stored}) != 1 or total != math.prod(dims):
        return _Bad(f"its chunks do not add up to one array of shape {tuple(dims)}")
    return _Stored(tuple(dims), stored[0].dtype, tuple(p.chunks[0] for p in stored))


def read_msgpack(path: Path) -> dict[str, Any]:
    """Parse a flax msgpack checkpoint into a nested dict whose array leaves are not loaded.

    Returns
    -------
    dict
        The state dict; array leaves are internal records read by :func:`open_msgpack`.

    Raises
    ------
    CorruptFileError
        If the file is not complete msgpack, or its top level is not a map.
    """
    msgpack = _msgpack()

    data = path.read_bytes()
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptFileError(
            f"{path}: not a complete msgpack file ({type(exc).__name__}: {exc}); the file is "
            "truncated or not a flax.serialization.to_bytes checkpoint (re-save it)"
        ) from exc
    if not isinstance(tree, dict):
        raise CorruptFileError(
            f"{path}: the msgpack top level is a {type(tree).__name__}, expected the map that "
            "flax.serialization.to_bytes writes"
        )
    return tree


def _walk(tree: Mapping[Any, Any]) -> Iterator[tuple[str, object]]:
    """Every leaf of ``tree`` with its dotted path, in order (iterative: no recursion limit, and
    a cyclic or absurdly deep tree ends in a bad leaf instead of a hang)."""
    stack: list[tuple[str, int, Iterator[tuple[Any, Any]]]] = [("", 0, iter(tree.items()))]
    while stack:
        prefix, depth, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        key, value = item
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (list, tuple)):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, Mapping) and value.get(CHUNKED_MARKER) is True:
            yield path, _chunked(value)
        elif isinstance(value, Mapping) and depth + 1 >= MAX_DEPTH:
            yield path, _Bad(f"the tree nests deeper than {MAX_DEPTH} levels there")
        elif isinstance(value, Mapping):
            stack.append((path, depth + 1, iter(value.items())))
        else:
            yield path, value


def _layout(
    path: str, shape: tuple[int, ...]
) -> tuple[str, LayerType | None, str, tuple[int, ...]]:
    """Key, type (``None``: by naming), reason and axis order of a leaf in torch's layout."""
    parts = path.split(".")
    leaf = parts[-1]
    rank = len(shape)
    if leaf == "kernel" and rank >= 2:
        key = ".".join(parts[:-1]) or path
        if rank == 2:
            return key, LayerType.DENSE, "", (1, 0)
        if rank == 3 and len(parts) > 1 and parts[-2].lower() in _ATTENTION_NAMES:
            return (
                key,
                LayerType.UNKNOWN,
                f"3-D kernel {shape} of an attention projection (DenseGeneral, heads as "
                "their own axes): which axes are inputs is not stored; reshape it to 2-D "
                "(in, out) and pass the tree",
                tuple(range(rank)),
            )
        conv = {3: LayerType.CONV1D, 4: LayerType.CONV2D, 5: LayerType.CONV3D}.get(rank)
        if conv is None:
            return (
                key,
                LayerType.UNKNOWN,
                f"a {rank}-D kernel has no matrix form",
                tuple(range(rank)),
            )
        return key, conv, "", (rank - 1, rank - 2, *range(rank - 2))
    if leaf == "embedding" and rank == 2:
        return path, LayerType.EMBEDDING, "", (0, 1)
    return path, None, "", tuple(range(rank))


def _floating(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and array.dtype.itemsize >= 4:
        return array
    if array.dtype.kind in "fV" or array.dtype.name.startswith(("bfloat", "float8")):
        return array.astype(np.float32)
    return array


def _loader(get: Callable[[], np.ndarray], axes: tuple[int, ...]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        array = get()
        if axes != tuple(range(array.ndim)):
            array = np.ascontiguousarray(array.transpose(axes))
        return _floating(array)

    return load


def _entry(
    path: str, shape: tuple[int, ...], dtype: str, get: Callable[[], np.ndarray]
) -> TensorEntry:
    key, layer_type, reason, axes = _layout(path, shape)
    torch_shape = tuple(shape[a] for a in axes)
    if path.split(".", 1)[0] == "opt_state":
        layer_type = LayerType.UNKNOWN
        reason = f"optimizer state of a TrainState ({path}), not a weight of the model"
    if layer_type is None:
        layer_type, reason = infer_layer_type(key, torch_shape)
    return TensorEntry(
        key=key,
        shape=torch_shape,
        dtype=dtype,
        load=_loader(get, axes),
        layer_type=layer_type,
        type_reason=reason,
    )


def _jax_array_type() -> type | None:
    """``jax.Array`` if the caller has imported jax, else ``None`` (never imports it)."""
    jax = sys.modules.get("jax")
    array_type = getattr(jax, "Array", None) if jax is not None else None
    return array_type if isinstance(array_type, type) else None


def _is_array(value: object, jax_array: type | None) -> bool:
    return isinstance(value, np.ndarray) or (jax_array is not None and isinstance(value, jax_array))


def _in_memory_loader(value: Any) -> Callable[[], np.ndarray]:
    def get() -> np.ndarray:
        return np.asarray(value)

    return get


def _stored_loader(stored: _Stored) -> Callable[[], np.ndarray]:
    return stored.array


def _checked_entries(
    leaves: Sequence[tuple[str, TensorEntry | None]], description: str
) -> tuple[TensorEntry, ...]:
    entries = [e for _, e in leaves if e is not None]
    seen: dict[str, str] = {}
    for path, entry in leaves:
        if entry is None:
            continue
        if entry.key in seen:
            raise CorruptFileError(
                f"{description}: leaves {seen[entry.key]!r} and {path!r} both map to the key "
                f"{entry.key!r}; rename one of them"
            )
        seen[entry.key] = path
    return tuple(entries)


def open_msgpack(path: Path) -> Source:
    """Open a ``flax.serialization.to_bytes`` checkpoint (a ``.msgpack`` file).

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    Source
        Its tensors in file order, in torch's layouts, typed by the Flax leaf names.

    Raises
    ------
    CorruptFileError
        If the file is truncated or not msgpack, an array's payload does not match its shape
        and dtype, or a leaf is neither an array nor a plain scalar.

    Examples
    --------
    >>> import msgpack, numpy as np, tempfile, pathlib
    >>> arr = np.ones((3, 2), np.float32)  # a Dense kernel (in=3, out=2)
    >>> ext = msgpack.ExtType(1, msgpack.packb([[3, 2], "float32", arr.tobytes()]))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.msgpack"
    >>> _ = path.write_bytes(msgpack.packb({"params": {"fc": {"kernel": ext}}}))
    >>> [(e.key, e.shape) for e in open_msgpack(path).entries]
    [('params.fc', (2, 3))]
    """
    tree = read_msgpack(path)
    leaves: list[tuple[str, TensorEntry | None]] = []
    for leaf_path, value in _walk(tree):
        if isinstance(value, _Bad):
            raise CorruptFileError(
                f"{path}: leaf {leaf_path!r} cannot be read: {value.reason}; the file is "
                "corrupt or not a flax.serialization.to_bytes checkpoint"
            )
        if isinstance(value, _Stored):
            leaves.append(
                (leaf_path, _entry(leaf_path, value.shape, value.dtype.name, _stored_loader(value)))
            )
        elif not isinstance(value, _SCALAR_LEAVES):
            raise CorruptFileError(
                f"{path}: leaf {leaf_path!r} is a {type(value).__name__}, not an array; a "
                "flax checkpoint holds arrays and plain scalars only"
            )
    return Source(description=str(path), entries=_checked_entries(leaves, str(path)))


def open_pytree(tree: Mapping[str, Any], description: str = "pytree of arrays") -> Source:
    """Open an in-memory pytree: nested mappings of numpy or jax arrays (Flax ``params``).

    A linen ``variables``/``params`` dict, or an nnx state as nested dicts
    (``nnx.state(model).to_pure_dict()``). Lists and tuples are nodes keyed by index.

    Parameters
    ----------
    tree : mapping
        The tree; its insertion order is taken as the model's order.
    description : str, default "pytree of arrays"
        How the source is named in reports and messages.

    Raises
    ------
    UnsupportedInputError
        If a leaf is neither an array nor a plain scalar.

    Examples
    --------
    >>> import numpy as np
    >>> tree = {"params": {"conv": {"kernel": np.zeros((3, 3, 4, 8))}, "emb": {"embedding":
    ...     np.zeros((10, 4))}}}
    >>> [(e.key, e.shape, e.layer_type.value) for e in open_pytree(tree).entries]
    [('params.conv', (8, 4, 3, 3), 'conv2d'), ('params.emb.embedding', (10, 4), 'embedding')]
    """
    jax_array = _jax_array_type()
    leaves: list[tuple[str, TensorEntry | None]] = []
    for leaf_path, value in _walk(tree):
        if isinstance(value, _Bad):
            raise UnsupportedInputError(f"{description}: leaf {leaf_path!r}: {value.reason}")
        if _is_array(value, jax_array):
            array: Any = value
            shape = tuple(int(s) for s in array.shape)
            dtype = np.dtype(array.dtype).name
            leaves.append((leaf_path, _entry(leaf_path, shape, dtype, _in_memory_loader(array))))
        elif not isinstance(value, _SCALAR_LEAVES):
            raise UnsupportedInputError(
                f"{description}: leaf {leaf_path!r} is a {type(value).__name__}, expected a "
                "numpy or jax array; for an nnx State pass state.to_pure_dict(), and convert "
                "other leaves with numpy.asarray(...)"
            )
    return Source(description=description, entries=_checked_entries(leaves, description))


@dataclass(frozen=True)
class FlaxMsgpackFile:
    """Adapter for a ``flax.serialization.to_bytes`` checkpoint (a ``.msgpack`` file)."""

    name: str = "flax-msgpack"
    extra: str | None = "flax"
    requires: str | None = "msgpack"

    def can_open(self, model: object) -> bool:
        return (
            isinstance(model, Path) and model.is_file() and model.suffix.lower() in MSGPACK_SUFFIXES
        )

    def open(self, model: object) -> Source:
        return open_msgpack(as_path(model, self.name))


@dataclass(frozen=True)
class FlaxPytree:
    """Adapter for a pytree of arrays: a mapping that nests, or holds jax arrays.

    A flat mapping of numpy arrays is left to the ``numpy-dict`` adapter; a mapping holding any
    torch tensor is left to the torch adapters.
    """

    name: str = "flax-pytree"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        if not isinstance(model, Mapping) or not model:
            return False
        jax_array = _jax_array_type()
        torch = sys.modules.get("torch")
        tensor = getattr(torch, "Tensor", None) if torch is not None else None
        nested = any(isinstance(v, (Mapping, list, tuple)) for v in model.values())
        arrays = False
        has_jax = False
        for _, leaf in _walk(model):
            if isinstance(tensor, type) and isinstance(leaf, tensor):
                return False
            if _is_array(leaf, jax_array):
                arrays = True
                has_jax = has_jax or not isinstance(leaf, np.ndarray)
        return arrays and (nested or has_jax)

    def open(self, model: object) -> Source:
        if not isinstance(model, Mapping):
            raise UnsupportedInputError(
                f"the {self.name!r} source opens mappings, got a {type(model).__name__}; call "
                "weightspectra.open_model(model), which picks the adapter"
            )
        return open_pytree(model)


__all__ = [
    "FlaxMsgpackFile",
    "FlaxPytree",
    "open_msgpack",
    "open_pytree",
    "read_msgpack",
    "storage_dtype",
]
