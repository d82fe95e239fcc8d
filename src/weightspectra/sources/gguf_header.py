"""A bounded walk over a GGUF header, before the ``gguf`` reader trusts any of it.

:func:`check_header` reads the header through a memory map, checking every count, length, type
and offset against the file's size before moving on, so a truncated file, a wrong magic, a
count of 2⁶⁴ or an offset past the end is one :class:`~weightspectra.errors.CorruptFileError`
naming the file and the fix, in time proportional to the header (never to the counts it claims).
"""

from __future__ import annotations

import itertools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from weightspectra.errors import CorruptFileError, UnsupportedInputError

#: The GGUF versions the ``gguf`` reader handles.
VERSIONS = (2, 3)
#: ggml tensors have at most this many dimensions (GGML_MAX_DIMS).
MAX_DIMS = 4
#: Nested metadata arrays deeper than this are not real files.
MAX_ARRAY_DEPTH = 8
DEFAULT_ALIGNMENT = 32

_STRING, _ARRAY = 8, 9
#: Metadata value type -> size in bytes (scalars; strings and arrays have their own layout).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_UINT32 = 4
_FIX = "the file is truncated or corrupt (re-download or re-convert it)"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's record in a GGUF header, checked against the file.

    Attributes
    ----------
    name : str
    dims : tuple of int
        ``ne`` as stored: fastest dimension first (numpy's shape is this reversed).
    type_name : str
        The ggml type's name (``"Q4_K"``).
    block_size, type_size : int
        Elements per quantisation block and bytes per block.
    offset : int
        Absolute byte offset of the data in the file.
    n_bytes : int
        Bytes of data.
    """

    name: str
    dims: tuple[int, ...]
    type_name: str
    block_size: int
    type_size: int
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class Header:
    """A GGUF header, checked: its version, alignment, where data starts, and its tensors."""

    version: int
    alignment: int
    data_start: int
    tensors: tuple[TensorInfo, ...]


class _Cursor:
    """Reads little-endian values from a buffer, each read bounds-checked."""

    def __init__(self, path: Path, buf: mmap.mmap | bytes, size: int) -> None:
        self.path, self.buf, self.size, self.pos = path, buf, size, 0

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.size:
            raise CorruptFileError(
                f"{self.path}: the GGUF header's {what} needs bytes up to {self.pos + n} but the "
                f"file has {self.size}; {_FIX}"
            )
        start = self.pos
        self.pos += n
        return start

    def u32(self, what: str) -> int:
        value: int = struct.unpack_from("<I", self.buf, self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = struct.unpack_from("<Q", self.buf, self.take(8, what))[0]
        return value

    def string(self, what: str) -> str:
        length = self.u64(what)
        start = self.take(length, what)
        try:
            return bytes(self.buf[start : start + length]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptFileError(
                f"{self.path}: the GGUF header's {what} is not UTF-8; {_FIX}"
            ) from exc

    def value(self, vtype: int, what: str, depth: int = 0) -> int | None:
        """Skip one metadata value; return it when it is a UINT32 (for ``general.alignment``)."""
        if vtype in _SCALAR_SIZES:
            start = self.take(_SCALAR_SIZES[vtype], what)
            if vtype == _UINT32:
                found: int = struct.unpack_from("<I", self.buf, start)[0]
                return found
            return None
        if vtype == _STRING:
            self.string(what)
            return None
        if vtype != _ARRAY:
            raise CorruptFileError(
                f"{self.path}: the GGUF header's {what} has value type {vtype}, which no GGUF "
                f"version defines; {_FIX}"
            )
        if depth >= MAX_ARRAY_DEPTH:
            raise CorruptFileError(f"{self.path}: the GGUF header's {what} nests too deep; {_FIX}")
        itype = self.u32(what)
        count = self.u64(what)
        smallest = _SCALAR_SIZES.get(itype, 8 if itype == _STRING else 12)
        if count * smallest > self.size - self.pos:
            raise CorruptFileError(
                f"{self.path}: the GGUF header's {what} claims {count} items, more than the "
                f"{self.size - self.pos} bytes left hold; {_FIX}"
            )
        if itype in _SCALAR_SIZES:
            self.take(count * _SCALAR_SIZES[itype], what)
        else:
            for _ in range(count):
                self.value(itype, what, depth + 1)
        return None


def check_header(path: Path) -> Header:
    """Walk and check the header of the GGUF file at ``path`` (reads only the header).

    Returns
    -------
    Header
        The version, alignment, start of the data section and every tensor's checked record.

    Raises
    ------
    CorruptFileError
        If the magic is wrong, the file is truncated, a count, length or type is impossible, a
        tensor's data lies outside the data section or overlaps another's, or a name repeats.
    UnsupportedInputError
        If the file is big-endian or of a GGUF version the reader does not handle.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    size = path.stat().st_size
    if size < 24:
        raise CorruptFileError(
            f"{path}: {size} bytes is too short for a GGUF file (24-byte fixed header); {_FIX}"
        )
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(path, buf, size)
        magic = bytes(buf[0:4])
        if magic != b"GGUF":
            raise CorruptFileError(
                f"{path}: starts with {magic!r}, not the GGUF magic b'GGUF'; the file is not GGUF "
                "(or is corrupt): check the path"
            )
        cur.take(4, "magic")
        version = cur.u32("version")
        if version & 0xFFFF == 0 and version:
            raise UnsupportedInputError(
                f"{path}: a big-endian GGUF file; weightspectra reads little-endian GGUF only "
                "(convert the model on a little-endian machine)"
            )
        if version not in VERSIONS:
            raise UnsupportedInputError(
                f"{path}: GGUF version {version}; the gguf reader handles versions "
                f"{VERSIONS} (re-convert the model with a current llama.cpp)"
            )
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        # the smallest metadata pair is 13 bytes, the smallest tensor record 24
        if n_kv * 13 + n_tensors * 24 > size - cur.pos:
            raise CorruptFileError(
                f"{path}: the GGUF header claims {n_tensors} tensors and {n_kv} metadata pairs, "
                f"more than its {size} bytes can hold; {_FIX}"
            )
        alignment = DEFAULT_ALIGNMENT
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            vtype = cur.u32(f"metadata {key!r}")
            found = cur.value(vtype, f"metadata {key!r}")
            if key == "general.alignment":
                if found is None or found == 0 or found & (found - 1):
                    raise CorruptFileError(
                        f"{path}: general.alignment must be a power-of-two UINT32, got type "
                        f"{vtype} value {found}; {_FIX}"
                    )
                alignment = found
        records = []
        names: set[str] = set()
        for i in range(n_tensors):
            name = cur.string(f"tensor {i} name")
            n_dims = cur.u32(f"tensor {name!r} rank")
            if n_dims > MAX_DIMS:
                raise CorruptFileError(
                    f"{path}: tensor {name!r} claims {n_dims} dimensions (ggml has at most "
                    f"{MAX_DIMS}); {_FIX}"
                )
            dims = tuple(cur.u64(f"tensor {name!r} dimensions") for _ in range(n_dims))
            type_id = cur.u32(f"tensor {name!r} type")
            offset = cur.u64(f"tensor {name!r} offset")
            if name in names:
                raise CorruptFileError(f"{path}: tensor {name!r} appears twice; {_FIX}")
            names.add(name)
            records.append((name, dims, type_id, offset))
        data_start = -(-cur.pos // alignment) * alignment
        data_bytes = size - data_start
        tensors = []
        for name, dims, type_id, offset in records:
            try:
                qtype = GGMLQuantizationType(type_id)
            except ValueError as exc:
                raise CorruptFileError(
                    f"{path}: tensor {name!r} has ggml type id {type_id}, unknown to the "
                    "installed gguf; upgrade gguf (pip install -U gguf) or the file is corrupt"
                ) from exc
            block, nbytes_block = GGML_QUANT_SIZES[qtype]
            row = dims[0] if dims else 1
            if row % block:
                raise CorruptFileError(
                    f"{path}: tensor {name!r} ({qtype.name}) has rows of {row} elements, not a "
                    f"multiple of its block of {block}; {_FIX}"
                )
            elements = 1
            for d in dims:
                elements *= d
            n_bytes = elements // block * nbytes_block
            if offset % alignment or offset + n_bytes > data_bytes:
                raise CorruptFileError(
                    f"{path}: tensor {name!r} {qtype.name}{list(dims)} needs {n_bytes} bytes at "
                    f"offset {offset} (alignment {alignment}) but the data section has "
                    f"{max(data_bytes, 0)} bytes; {_FIX}"
                )
            tensors.append(
                TensorInfo(
                    name, dims, qtype.name, block, nbytes_block, data_start + offset, n_bytes
                )
            )
    by_offset = sorted(tensors, key=lambda t: t.offset)
    for before, after in itertools.pairwise(by_offset):
        if after.offset < before.offset + before.n_bytes and after.n_bytes and before.n_bytes:
            raise CorruptFileError(
                f"{path}: tensors {before.name!r} and {after.name!r} overlap in the data "
                f"section; {_FIX}"
            )
    return Header(version, alignment, data_start, tuple(tensors))
