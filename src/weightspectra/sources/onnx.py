"""ONNX model files (``.onnx``), with their weights inline or in external data files.

The graph is read with the ``onnx`` package (imported only when such a file is opened) without
its external data; each weight is read when its row is computed, memory-mapped from its data
file. Weights are typed by the graph, not by their names, so an opaque initializer name
(``onnx::MatMul_1023``) still gets the right layer type:

* ``MatMul``: a constant second input ``B`` of shape (in, out) is a dense weight, handed out as
  (out, in) (our layout, torch's); a constant first input is already (out, in).
* ``Gemm``: ``B`` is (out, in) when ``transB=1``, else (in, out) and transposed.
* ``Conv`` / ``ConvTranspose``: the kernel as stored, (out, in/groups, k...) and
  (in, out/groups, k...), the layouts torch uses.
* ``Gather`` on a 2-D float constant along axis 0: an embedding.
* A ``MatMul``/``Gemm`` whose output (directly or after adding a bias) is ``Split`` into three
  equal parts along its last axis (``-1``, or a positive axis shape inference shows is the
  last): fused q/k/v, given as three entries ``<name>[q]``, ``[k]``, ``[v]`` (one row each,
  whatever the ``split_fused_qkv`` option says: the graph shows the split).

A weight may reach its node through ``Identity``, a 2-D ``Transpose``, or quantisation:
an int8/uint8 constant read by ``DequantizeLinear`` is dequantised (per-tensor or per-axis
scale and zero point; block quantisation is skipped with its reason), and a float constant
passed through ``QuantizeLinear`` → ``DequantizeLinear`` is analysed as the float weight it is.

Every other constant becomes a skipped row saying what it feeds ("initializer used as the shape
of Reshape 'r'", "bias of Conv 'c'", "scale of LayerNormalization 'ln'" ...). Constants are
initializers and the ``value`` tensors of ``Constant`` nodes (exporters such as Paddle2ONNX keep
every weight in those); weights inside subgraphs (``If``/``Loop`` bodies) are not read.

Names: the initializer's name, unless it is opaque (``onnx::...``, a bare number, ``..._output_0``)
and the node reading it has a name; then the node's path (``/encoder/layer.0/query/MatMul`` →
``encoder.layer.0.query``).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightspectra.errors import CorruptFileError, InputError, UnsafeFileError
from weightspectra.sources.base import Source, TensorEntry, as_path
from weightspectra.sources.onnx_graph import Dequantize, Graph, find_role

if TYPE_CHECKING:  # the onnx package is imported only inside ``open``
    from onnx import ModelProto, TensorProto

#: ONNX data type → (canonical dtype name, numpy storage dtype). Others are listed, not read.
_DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"),
    2: ("uint8", "u1"),
    3: ("int8", "i1"),
    4: ("uint16", "<u2"),
    5: ("int16", "<i2"),
    6: ("int32", "<i4"),
    7: ("int64", "<i8"),
    9: ("bool", "?"),
    10: ("float16", "<f2"),
    11: ("float64", "<f8"),
    12: ("uint32", "<u4"),
    13: ("uint64", "<u8"),
    16: ("bfloat16", "<u2"),
}
#: Where inline values live when ``raw_data`` is not used (the ONNX spec's typed fields).
_TYPED_FIELD = {
    1: "float_data",
    7: "int64_data",
    11: "double_data",
    12: "uint64_data",
    13: "uint64_data",
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def dtype_name(data_type: int) -> str:
    """Canonical dtype name of an ONNX data type code.

    Examples
    --------
    >>> dtype_name(1), dtype_name(7)
    ('float32', 'int64')
    """
    if data_type in _DTYPES:
        return _DTYPES[data_type][0]
    from onnx import TensorProto

    try:
        return str(TensorProto.DataType.Name(data_type)).lower()
    except ValueError:
        return f"onnx-type-{data_type}"


def _count(dims: tuple[int, ...]) -> int:
    return math.prod(dims)  # exact: a lying dim must not wrap around in int64


@dataclass(frozen=True)
class _External:
    """Where one tensor's bytes lie in an external data file (checked at open time)."""

    path: Path
    offset: int
    length: int


def _external(path: Path, name: str, tensor: TensorProto) -> _External:
    """Resolve and check a tensor's external data: inside the model's folder, bytes that fit."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not isinstance(location, str) or not location:
        raise CorruptFileError(
            f"{path}: tensor {name!r} says its data is external but names no location; the "
            "file is corrupt (re-export it)"
        )
    folder = path.parent.resolve()
    target = (folder / location).resolve()
    if not target.is_relative_to(folder):
        raise UnsafeFileError(
            f"{path}: tensor {name!r} points at external data {location!r}, which resolves "
            f"to {target}, outside the model's folder {folder}: refused (path traversal); "
            "keep the model's data files next to it and name them by relative path"
        )
    if not target.is_file():
        raise InputError(
            f"{path}: tensor {name!r} keeps its data in {location!r}, which is missing from "
            f"{folder}; copy that file next to the model (it is part of the model)"
        )
    size = target.stat().st_size
    itemsize = np.dtype(_DTYPES[tensor.data_type][1]).itemsize
    needed = _count(tuple(tensor.dims)) * itemsize
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(needed)))
    except ValueError as exc:
        raise CorruptFileError(
            f"{path}: tensor {name!r} has a non-numeric external offset/length ({exc}); the "
            "file is corrupt (re-export it)"
        ) from exc
    if length != needed or offset < 0 or offset + length > size:
        raise CorruptFileError(
            f"{path}: tensor {name!r} {dtype_name(tensor.data_type)}{list(tensor.dims)} needs "
            f"{needed} bytes, but its external data says {length} bytes at offset {offset} of "
            f"{location!r} ({size} bytes); the model and its data file do not match (copy "
            "both from the same export)"
        )
    return _External(target, offset, length)


def _check_inline(path: Path, name: str, tensor: TensorProto) -> None:
    """The inline values must match the tensor's dims."""
    count = _count(tuple(tensor.dims))
    storage = np.dtype(_DTYPES[tensor.data_type][1])
    if tensor.HasField("raw_data"):
        have = len(tensor.raw_data)
        need = count * storage.itemsize
    else:
        field = _TYPED_FIELD.get(tensor.data_type, "int32_data")
        have = len(getattr(tensor, field))
        need = count
    if have != need:
        raise CorruptFileError(
            f"{path}: tensor {name!r} {dtype_name(tensor.data_type)}{list(tensor.dims)} holds "
            f"{have} values/bytes where its dims need {need}; the file is corrupt (re-export it)"
        )


def _raw_loader(path: Path, name: str, tensor: TensorProto) -> Callable[[], np.ndarray]:
    """A loader of the tensor as stored (checked now, read later)."""
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise CorruptFileError(
            f"{path}: tensor {name!r} has negative dims {list(dims)}; the file is corrupt "
            "(re-export it)"
        )
    data_type = int(tensor.data_type)
    storage = np.dtype(_DTYPES[data_type][1])
    if tensor.data_location == _EXTERNAL:
        where = _external(path, name, tensor)

        def load_external() -> np.ndarray:
            if where.length == 0:
                return np.zeros(dims, dtype=storage)
            mapped = np.memmap(where.path, dtype=storage, mode="r", offset=where.offset, shape=dims)
            if data_type != 16:
                return mapped
            import ml_dtypes  # only for a bfloat16 tensor: keep it out of the import

            bf16: np.ndarray = mapped.view(ml_dtypes.bfloat16)
            return bf16

        return load_external
    _check_inline(path, name, tensor)

    def load_inline() -> np.ndarray:
        from onnx import numpy_helper

        array: np.ndarray = numpy_helper.to_array(tensor)
        return array

    return load_inline


def _dequantized(
    raw: Callable[[], np.ndarray], dq: Dequantize, constants: dict[str, Callable[[], np.ndarray]]
) -> Callable[[], np.ndarray]:

    def load() -> np.ndarray:
        values = raw().astype(np.float32)
        scale = constants[dq.scale]().astype(np.float32)
        zero = (
            constants[dq.zero_point]().astype(np.float32) if dq.zero_point else np.zeros_like(scale)
        )
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * values.ndim
            shape[dq.axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (values - zero) * scale

    return load


def _oriented(load: Callable[[], np.ndarray], transpose: bool) -> Callable[[], np.ndarray]:
    if not transpose:
        return load

    def transposed() -> np.ndarray:
        array: np.ndarray = load().T
        return array

    return transposed


def _rows(load: Callable[[], np.ndarray], part: int, height: int) -> Callable[[], np.ndarray]:
    def take() -> np.ndarray:
        array: np.ndarray = load()[part * height : (part + 1) * height]
        return array

    return take


def _no_load() -> np.ndarray:
    raise InputError("this ONNX tensor's data type cannot be read as weights")


def read_model(path: Path) -> ModelProto:
    """Parse an ONNX file's graph and tensor metadata (external data is not read).

    Raises
    ------
    CorruptFileError
        If the file is not an ONNX protobuf (truncated, or another kind of file), or has no
        graph.
    """
    import onnx

    # protobuf ships no type stubs; its DecodeError is what a truncated or foreign file raises
    decode_error: type[Exception] = importlib.import_module("google.protobuf.message").DecodeError
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (decode_error, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(
            f"{path}: not a valid ONNX protobuf ({exc}); the file is truncated or not ONNX "
            "(re-download or re-export it)"
        ) from exc
    if not model.HasField("graph") or not model.graph.node:
        raise CorruptFileError(
            f"{path}: parses as protobuf but holds no ONNX graph nodes; the file is truncated "
            "or not an ONNX model (re-download or re-export it)"
        )
    return model


def open_file(path: Path) -> Source:
    """Open one ``.onnx`` file: its weights, typed by the graph, in the order nodes use them.

    Parameters
    ----------
    path : Path
        The model file; external data files must lie in its folder (or below).

    Returns
    -------
    Source
        One entry per constant tensor (three for a fused q/k/v weight); nothing read yet.

    Raises
    ------
    CorruptFileError
        If the file is not ONNX, a node reads a tensor nothing provides, or a tensor's data
        does not match its dims (inline, or at its external offset and length).
    UnsafeFileError
        If external data lies outside the model's folder.
    InputError
        If an external data file is missing.
    """
    model = read_model(path)
    graph = Graph.build(model.graph, path, model)
    loaders: dict[str, Callable[[], np.ndarray]] = {}
    for name, tensor in graph.tensors.items():
        readable = tensor.data_type in _DTYPES
        loaders[name] = _raw_loader(path, name, tensor) if readable else _no_load
    entries: list[TensorEntry] = []
    keys: set[str] = set()
    for name in graph.order():
        tensor = graph.tensors[name]
        dims = tuple(int(d) for d in tensor.dims)
        role = find_role(graph, name, dims, dtype_name(tensor.data_type))
        load = loaders[name]
        dtype = dtype_name(tensor.data_type)
        if role.dequantize is not None:
            load, dtype = _dequantized(load, role.dequantize, loaders), "float32"
        load = _oriented(load, role.transpose)
        shape = (dims[1], dims[0]) if role.transpose else dims
        key = role.key if role.key and role.key not in keys else name
        keys.add(key)
        if role.qkv:
            stem = key.removesuffix(".weight")
            height = shape[0] // 3
            for part, label in enumerate("qkv"):
                entries.append(
                    TensorEntry(
                        key=f"{stem}[{label}]",
                        shape=(height, *shape[1:]),
                        dtype=dtype,
                        load=_rows(load, part, height),
                        layer_type=role.layer_type,
                    )
                )
            continue
        entries.append(
            TensorEntry(
                key=key,
                shape=shape,
                dtype=dtype,
                load=load,
                layer_type=role.layer_type,
                type_reason=role.reason,
                type_code=role.code,
            )
        )
    return Source(description=str(path), entries=tuple(entries))


_ONNX_SUFFIX = re.compile(r"\.onnx$", re.IGNORECASE)


@dataclass(frozen=True)
class OnnxFile:
    """Adapter for one ``.onnx`` file (needs the ``onnx`` package: the ``onnx`` extra).

    Examples
    --------
    >>> from pathlib import Path
    >>> OnnxFile().can_open(Path("missing.onnx"))  # only files that exist
    False
    """

    name: str = "onnx-file"
    extra: str | None = "onnx"
    requires: str | None = "onnx"

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and model.is_file() and bool(_ONNX_SUFFIX.search(model.name))

    def open(self, model: object) -> Source:
        return open_file(as_path(model, self.name))
