"""GGUF files (llama.cpp), read with the ``gguf`` package and dequantised block by block.

The format: a little-endian header (magic ``GGUF``, version, tensor count, metadata count), the
metadata key/value pairs, one info record per tensor (name, dimensions, ggml type, offset), then
the aligned data section. Dimensions are stored fastest first (``ne[0]`` is the length of a
row), so a weight written as ``ne = [in, out]`` is our ``(out, in)`` matrix and MoE experts
``ne = [in, out, experts]`` are ``(experts, out, in)``: the reversed list, as numpy reads the
row-major data.

Before :class:`gguf.GGUFReader` sees a file, :func:`check_header` walks the header with bounds
on every count, length and offset (the reader itself trusts them: a count of 2⁶⁴ would loop for
ever, a short file gives confusing shape errors), so a broken file is one
:class:`~weightspectra.errors.CorruptFileError` naming the file and the fix.

Every tensor the installed ``gguf`` can dequantise (F16, BF16, Q8_0, Q4_0 ... the K-quants, the
IQ types) is loaded as float32, a few megabytes of rows at a time, each slice's mapped pages
dropped once converted: memory stays near one float32 tensor. Its matrices can also be read by
rows (``TensorEntry.load_rows``), so a large tall one (the 32000×4096 embeddings and head of a
7B model) is dequantised straight into its Gram matrix and never held whole. F32 tensors are
handed out memory-mapped, without a copy. A type it cannot dequantise is a skipped row naming
the type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.enums import LayerType
from weightspectra.errors import CorruptFileError, UnsupportedInputError
from weightspectra.sources.base import Source, TensorEntry, as_path
from weightspectra.sources.gguf_header import TensorInfo, check_header
from weightspectra.sources.mapped import DONTNEED, WILLNEED, MappedFile

#: Rows are dequantised in slices of about this many float32 bytes (bounds the temporaries).
DEQUANT_CHUNK_BYTES = 16 * 2**20

_FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_ZERO_COPY = {"F32": "<f4", "F64": "<f8"}
_INT_TYPES = {"I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}
_EMBEDDING = re.compile(r"^(token_embd|position_embd|token_types)(\.weight)?$|embed")
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_EXPERTS = re.compile(r"_exps(\.weight)?$")


def layer_type_of(key: str, shape: tuple[int, ...]) -> tuple[LayerType, str]:
    """The layer type of a GGUF tensor from its llama.cpp name and its (reversed) shape.

    Parameters
    ----------
    key : str
        The tensor's GGUF name (``"blk.0.attn_q.weight"``).
    shape : tuple of int
        Its shape in numpy order (``ne`` reversed).

    Returns
    -------
    (LayerType, str)
        The type, and the reason when it is :attr:`LayerType.UNKNOWN` (else ``""``).

    Examples
    --------
    >>> layer_type_of("token_embd.weight", (32000, 4096))[0].value
    'embedding'
    >>> layer_type_of("blk.3.ffn_up_exps.weight", (8, 1408, 2048))[0].value
    'moe_experts'
    >>> layer_type_of("blk.3.attn_q.weight", (4096, 4096))[0].value
    'dense'
    """
    if len(shape) == 3 and _EXPERTS.search(key):
        return LayerType.MOE_EXPERTS, ""
    if len(shape) <= 2:
        if _EMBEDDING.search(key):
            return LayerType.EMBEDDING, ""
        return LayerType.DENSE, ""
    return LayerType.UNKNOWN, (
        f"{len(shape)}-D GGUF tensor {shape} is not named like MoE experts (*_exps); its "
        "llama.cpp layout is not mapped to matrices"
    )


def _order_key(key: str, index: int) -> tuple[int, int, int]:
    """Embeddings first, then blocks in numeric order, then the rest (norm, output); within a
    group, the file's order (llama.cpp writes a block's tensors in forward order)."""
    block = _BLOCK.match(key)
    if block is not None:
        return 1, int(block.group(1)), index
    if _EMBEDDING.search(key):
        return 0, 0, index
    return 2, 0, index


def _loaders(
    mapped: MappedFile, info: TensorInfo, qtype: Any, dequantize: Callable[..., np.ndarray]
) -> tuple[Callable[[], np.ndarray], Callable[[int, int], np.ndarray] | None]:
    """The tensor's ``load`` and, for 2-D converted tensors, its ``load_rows``."""
    shape = tuple(reversed(info.dims))
    row_len = info.dims[0] if info.dims else 1
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    row_bytes = info.n_bytes // rows if rows else 0

    def raw() -> np.ndarray:
        return np.frombuffer(mapped.buffer(), np.uint8, count=info.n_bytes, offset=info.offset)

    def read_rows(lo: int, hi: int) -> np.ndarray:
        part = raw().reshape(rows, row_bytes)[lo:hi]
        if info.type_name == "F16":
            out = part.view("<f2").astype(np.float32)
        else:
            out = dequantize(part, qtype).reshape(hi - lo, row_len).astype(np.float32, copy=False)
        begin = info.offset + lo * row_bytes
        mapped.advise(DONTNEED, begin, begin + (hi - lo) * row_bytes)
        return out

    def load() -> np.ndarray:
        if info.type_name in _ZERO_COPY:
            mapped_wide: np.ndarray = raw().view(_ZERO_COPY[info.type_name]).reshape(shape)
            return mapped_wide  # zero-copy
        out = np.empty((rows, row_len), dtype=np.float32)
        step = max(1, DEQUANT_CHUNK_BYTES // max(1, row_len * 4))
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            out[lo:hi] = read_rows(lo, hi)
        return out.reshape(shape)

    streams = len(shape) == 2 and info.type_name not in _ZERO_COPY
    return load, (read_rows if streams else None)


def _hooks(mapped: MappedFile, info: TensorInfo) -> tuple[Callable[[], None], Callable[[], None]]:
    begin, end = info.offset, info.offset + info.n_bytes

    def prefetch() -> None:
        mapped.buffer()
        mapped.advise(WILLNEED, begin, end)

    def release() -> None:
        mapped.advise(DONTNEED, begin, end)

    return prefetch, release


def _can_dequantize(qtype: Any, type_size: int, dequantize: Callable[..., np.ndarray]) -> bool:
    """Whether the installed ``gguf`` dequantises ``qtype`` (tried on one all-zero block)."""
    try:
        dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _unreadable() -> np.ndarray:
    raise UnsupportedInputError("this GGUF tensor's type cannot be dequantised")


def open_file(path: Path) -> Source:
    """Open one ``.gguf`` file: its tensors in model order, typed by llama.cpp naming.

    Only the header is read; each tensor is dequantised when its ``load`` is called.

    Raises
    ------
    CorruptFileError
        If the header is truncated or inconsistent (see :func:`check_header`), or the ``gguf``
        reader rejects the file.
    """
    header = check_header(path)  # before the reader: it trusts counts and offsets
    import gguf
    from gguf.quants import dequantize

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, KeyError, IndexError, OverflowError, UnicodeDecodeError) as exc:
        raise CorruptFileError(
            f"{path}: the gguf reader rejects the file ({exc}); the file is corrupt or was "
            "written by a newer llama.cpp (re-download or re-convert it, or upgrade gguf)"
        ) from exc
    read = {t.name: (t.tensor_type, int(t.data_offset)) for t in reader.tensors}
    del reader  # the header is all we need of it; the data is mapped by our own map
    mapped = MappedFile(path)
    supported: dict[str, bool] = {}
    entries: list[TensorEntry] = []
    infos = sorted(enumerate(header.tensors), key=lambda p: _order_key(p[1].name, p[0]))
    for _, info in infos:
        qtype, offset = read[info.name]
        if offset != info.offset:
            raise CorruptFileError(
                f"{path}: tensor {info.name!r} is at byte {offset} for the gguf reader but at "
                f"{info.offset} by its header; the file is corrupt (re-download or re-convert it)"
            )
        shape = tuple(reversed(info.dims))
        layer_type, why = layer_type_of(info.name, shape)
        prefetch, release = _hooks(mapped, info)
        common: dict[str, Any] = {
            "key": info.name,
            "shape": shape,
            "prefetch_hook": prefetch,
            "release_hook": release,
        }
        name = info.type_name
        if name in _INT_TYPES:
            entries.append(TensorEntry(dtype=_INT_TYPES[name], load=_unreadable, **common))
            continue
        if name not in supported:
            supported[name] = name in ("F32", "F64", "F16") or _can_dequantize(
                qtype, info.type_size, dequantize
            )
        quantization = "" if name in _FLOAT_TYPES else name
        if not supported[name]:
            version = getattr(gguf, "__version__", "installed")
            layer_type = LayerType.UNKNOWN
            why = (
                f"GGUF tensor type {name}: gguf {version} cannot dequantise it (upgrade gguf, "
                "or re-convert the model to a type it reads)"
            )
        load, load_rows = (
            _loaders(mapped, info, qtype, dequantize) if supported[name] else (_unreadable, None)
        )
        entries.append(
            TensorEntry(
                dtype=_FLOAT_TYPES.get(name, "float32"),
                load=load,
                load_rows=load_rows,
                layer_type=layer_type,
                type_reason=why,
                quantization=quantization,
                **common,
            )
        )
    return Source(description=str(path), entries=tuple(entries))


def has_gguf_magic(path: Path) -> bool:
    """Whether ``path`` starts with the GGUF magic bytes (reads 4 bytes; never imports gguf)."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


@dataclass(frozen=True)
class GgufFile:
    """Adapter for one ``.gguf`` file (llama.cpp), read with the ``gguf`` package."""

    name: str = "gguf-file"
    extra: str | None = "gguf"
    requires: str | None = "gguf"

    def can_open(self, model: object) -> bool:
        if not isinstance(model, Path) or not model.is_file():
            return False
        return model.suffix.lower() == ".gguf" or has_gguf_magic(model)

    def open(self, model: object) -> Source:
        return open_file(as_path(model, self.name))
