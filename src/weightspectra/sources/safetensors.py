"""Safetensors files and sharded folders, read with numpy alone (no torch, no safetensors).

The format: an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the header),
then the raw little-endian data. Tensors are memory-mapped, so one is in memory at a time.

16-bit tensors are handed out as they are stored, without a widened copy: float16 natively,
bfloat16 as :mod:`ml_dtypes`' numpy dtype (the eigenvalue code converts them block by block).
Where ``ml_dtypes`` is missing, bfloat16 is widened to float32 in chunks instead.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.errors import CorruptFileError, InputError
from weightspectra.sources.base import Source, TensorEntry, as_path, in_model_order, merge_files
from weightspectra.sources.mapped import DONTNEED, WILLNEED, MappedFile
from weightspectra.sources.naming import interleaved_gate_up_beside, type_entries

#: A header longer than this is not a real safetensors header (the format caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000


@functools.cache
def bfloat16_dtype() -> Any:
    """:mod:`ml_dtypes`' bfloat16 numpy dtype, or ``None`` where it cannot be imported.

    Looked up when the first bfloat16 tensor is loaded, never at import: importing ml_dtypes
    takes 0.6–1.7 s on this project's machines, which a float32 checkpoint should not pay.
    """
    try:  # a dependency; guarded so that a broken install still reads files
        import ml_dtypes
    except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
        return None
    return ml_dtypes.bfloat16


#: Without ml_dtypes, bfloat16 tensors are widened to float32 in chunks of this many elements,
#: each chunk's mapped pages dropped right after, so the raw and widened copies are never both
#: whole in memory.
CONVERT_CHUNK = 4 * 2**20

_DTYPES: dict[str, tuple[str, str]] = {
    # safetensors dtype -> (canonical name, numpy storage dtype)
    "F64": ("float64", "<f8"),
    "F32": ("float32", "<f4"),
    "F16": ("float16", "<f2"),
    "BF16": ("bfloat16", "<u2"),
    "I64": ("int64", "<i8"),
    "I32": ("int32", "<i4"),
    "I16": ("int16", "<i2"),
    "I8": ("int8", "i1"),
    "U8": ("uint8", "u1"),
    "BOOL": ("bool", "?"),
}


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse and validate the header of a safetensors file.

    Returns
    -------
    (dict, int)
        The tensor table (without ``__metadata__``) and the byte offset where data starts.

    Raises
    ------
    CorruptFileError
        If the file is truncated, the header is not JSON, or a tensor's offsets do not fit.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CorruptFileError(
                f"{path}: {size} bytes is too short for a safetensors file (no header length); "
                "the file is truncated or not safetensors"
            )
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise CorruptFileError(
                f"{path}: header length {length} does not fit a {size}-byte file; the file is "
                "truncated or not safetensors (re-download or re-save it)"
            )
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(
            f"{path}: the safetensors header is not valid JSON ({exc}); the file is corrupt"
        ) from exc
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path}: the safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + length
    for name, info in header.items():
        _check_info(path, name, info, size - data_start)
    return header, data_start


def _check_info(path: Path, name: str, info: Any, data_bytes: int) -> None:
    try:
        dtype = info["dtype"]
        if not isinstance(dtype, str):
            raise TypeError(f"dtype {dtype!r} is not a string")
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CorruptFileError(
            f"{path}: header entry {name!r} lacks dtype/shape/data_offsets or has invalid ones "
            f"({type(exc).__name__}: {exc}); the file is corrupt"
        ) from exc
    if dtype not in _DTYPES:
        return  # reported as an unsupported dtype when listed, not an error for the whole file
    itemsize = np.dtype(_DTYPES[dtype][1]).itemsize
    # Python integers: a lying shape can neither overflow nor wrap the byte count.
    expected = math.prod(shape) * itemsize
    if min(shape, default=0) < 0 or end - begin != expected or begin < 0 or end > data_bytes:
        raise CorruptFileError(
            f"{path}: tensor {name!r} {dtype}{shape} needs {expected} bytes at "
            f"[{begin}, {end}) but the data section has {data_bytes} bytes; the file is "
            "truncated or corrupt (re-download or re-save it)"
        )


def _hooks(
    mapped: MappedFile, data_start: int, info: dict[str, Any]
) -> tuple[Callable[[], None], Callable[[], None]]:
    begin, end = (data_start + int(o) for o in info["data_offsets"])

    def prefetch() -> None:
        mapped.buffer()
        mapped.advise(WILLNEED, begin, end)

    def release() -> None:
        mapped.advise(DONTNEED, begin, end)

    return prefetch, release


def _loader(mapped: MappedFile, data_start: int, info: dict[str, Any]) -> Callable[[], np.ndarray]:
    dtype = info["dtype"]
    storage = np.dtype(_DTYPES[dtype][1])
    shape = tuple(int(s) for s in info["shape"])
    begin, _ = (int(o) for o in info["data_offsets"])
    count = int(np.prod(shape, dtype=np.int64))

    def load() -> np.ndarray:
        raw = np.frombuffer(mapped.buffer(), dtype=storage, count=count, offset=data_start + begin)
        if dtype != "BF16":
            return raw.reshape(shape)
        bfloat16 = bfloat16_dtype()
        if bfloat16 is not None:
            mapped_bf16: np.ndarray = raw.view(bfloat16).reshape(shape)  # zero-copy
            return mapped_bf16
        out = np.empty(count, dtype=np.float32)
        bits = out.view(np.uint32)
        for lo in range(0, count, CONVERT_CHUNK):
            hi = min(lo + CONVERT_CHUNK, count)
            # bfloat16 is the upper half of a float32: shift the bits into place.
            bits[lo:hi] = raw[lo:hi]
            bits[lo:hi] <<= 16
            start = data_start + begin
            mapped.advise(DONTNEED, start + lo * storage.itemsize, start + hi * storage.itemsize)
        return out.reshape(shape)

    return load


def _file_entries(path: Path, names: list[str] | None = None) -> list[TensorEntry]:
    header, data_start = read_header(path)
    mapped = MappedFile(path)
    keys = in_model_order(header) if names is None else names
    out = []
    for key in keys:
        if key not in header:
            raise CorruptFileError(f"{path}: the index lists tensor {key!r} but the file lacks it")
        info = header[key]
        dtype_name, _ = _DTYPES.get(info["dtype"], (str(info["dtype"]).lower(), ""))
        prefetch, release = _hooks(mapped, data_start, info)
        out.append(
            TensorEntry(
                key=key,
                shape=tuple(int(s) for s in info["shape"]),
                dtype=dtype_name,
                load=_loader(mapped, data_start, info) if info["dtype"] in _DTYPES else _no_load,
                prefetch_hook=prefetch,
                release_hook=release,
            )
        )
    return out


def _no_load() -> np.ndarray:
    raise InputError("this tensor's dtype cannot be read as weights")


def open_file(path: Path) -> Source:
    """Open one ``.safetensors`` file (tensors in the model's natural order, typed by naming)."""
    interleaved = interleaved_gate_up_beside(path)
    entries = type_entries(_file_entries(path), interleaved_gate_up=interleaved)
    return Source(description=str(path), entries=entries)


def open_folder(folder: Path) -> Source:
    """Open a folder of (possibly sharded) safetensors files.

    Uses ``*.safetensors.index.json`` when present (every shard it names must exist); otherwise
    every ``*.safetensors`` file in the folder. Tensors come in the natural order of their names
    (``layers.2`` before ``layers.10``), never plain alphabetical.

    Raises
    ------
    InputError
        If the folder holds no safetensors file, or the index names a missing shard.
    CorruptFileError
        If the index is malformed, or a tensor appears in two files.
    """
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        index_path = indexes[0]
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(
                f"{index_path}: not a valid safetensors index (needs a 'weight_map' object)"
            ) from exc
        by_file: dict[str, list[str]] = {}
        for key, fname in weight_map.items():
            by_file.setdefault(str(fname), []).append(str(key))
        parts = []
        for fname, keys in by_file.items():
            shard = folder / fname
            if not shard.is_file():
                raise InputError(
                    f"{index_path} names shard {fname!r}, which is missing from {folder}; "
                    "download the complete checkpoint"
                )
            parts.append((shard, _file_entries(shard, keys)))
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise InputError(
                f"{folder} contains no .safetensors file; point at a model file or a folder "
                "holding model.safetensors (or shards with their index)"
            )
        parts = [(f, _file_entries(f)) for f in files]
    merged = merge_files(folder, parts)
    entries = type_entries(merged, interleaved_gate_up=interleaved_gate_up_beside(folder))
    return Source(description=str(folder), entries=entries)


@dataclass(frozen=True)
class SafetensorsFile:
    """Adapter for one ``.safetensors`` file (numpy only)."""

    name: str = "safetensors-file"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return (
            isinstance(model, Path) and model.is_file() and model.suffix.lower() == ".safetensors"
        )

    def open(self, model: object) -> Source:
        return open_file(as_path(model, self.name))


@dataclass(frozen=True)
class SafetensorsFolder:
    """Adapter for a folder of (sharded) ``.safetensors`` files (numpy only)."""

    name: str = "safetensors-folder"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and model.is_dir() and any(model.glob("*.safetensors"))

    def open(self, model: object) -> Source:
        return open_folder(as_path(model, self.name))
