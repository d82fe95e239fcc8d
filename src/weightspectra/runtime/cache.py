"""A content-keyed, crash-safe store of per-tensor results, so an interrupted run can resume.

One file per analysed tensor, named by a SHA-256 over: the tensor's bytes, dtype and shape; its
key, layer id and type; every option that can change its rows (all options except those listed
in :data:`NON_RESULT_OPTIONS`, so an option added later enters the key by default); the spectrum
backend (numpy and torch differ in round-off); the weightspectra version; the fingerprint of the
report's columns (:func:`weightspectra.schema.fingerprint`, so a column added since, built in or
registered, is never served from an older entry); and :data:`CACHE_FORMAT`. A file is written
to a temporary name in the same folder and renamed over the final name (``os.replace``, atomic
on POSIX and Windows), so a killed run leaves either a complete entry or none; a stray temporary
file is ignored and overwritten. An entry that cannot be read is treated as missing and
recomputed. Rows are stored in their one serialised form (:meth:`LayerResult.to_dict`), their
eigenvalue arrays beside them.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import socket
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra import schema
from weightspectra._version import __version__
from weightspectra.errors import OptionError
from weightspectra.report.results import LayerResult

#: Version of the entry layout (the file format, not the columns: those are fingerprinted);
#: bump it when the layout or a metric's meaning changes.
CACHE_FORMAT = 2
#: Options that never change a tensor's rows (where and how fast, not what is computed).
NON_RESULT_OPTIONS = frozenset({"workers", "parallel", "cache", "device", "layers", "exclude"})
_SUFFIX = ".wsc.npz"
#: This machine's name as it may appear in a file name (temporary files are swept per host).
_HOST = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)  # e.g. a path-like option value: its text identifies it


class ResultCache:
    """Per-tensor result files in one folder.

    Parameters
    ----------
    folder : str or path-like
        Created if missing.

    Raises
    ------
    OptionError
        If ``folder`` exists as a file or cannot be created.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> cache = ResultCache(tempfile.mkdtemp())
    >>> key = cache.key(np.ones((2, 2)), {"key": "w"}, {"min_evals": 8}, "numpy")
    >>> cache.get(key) is None
    True
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(
                f"cache={str(folder)!r} cannot be used as a cache folder ({exc}); pass a "
                "writable folder path"
            ) from exc
        if not self.folder.is_dir():
            raise OptionError(f"cache={str(folder)!r} is not a folder; pass a folder path")
        self._sweep_orphans()

    def _sweep_orphans(self) -> None:
        """Delete temporary files left by writers of this host that no longer run (a worker
        killed in the middle of :meth:`put` cannot clean up after itself)."""
        prefix = f".tmp-{_HOST}-"
        for path in self.folder.glob(f"{prefix}*{_SUFFIX}"):
            pid = path.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)

    def key(
        self,
        tensor: np.ndarray,
        identity: Mapping[str, Any],
        options: Mapping[str, Any],
        backend: str,
    ) -> str:
        """The entry name for one tensor: a hex SHA-256 of its content and context.

        Parameters
        ----------
        tensor : ndarray
            The loaded tensor (its bytes are hashed; a non-contiguous one is copied first).
        identity : mapping
            Key, layer id, layer type... of the tensor (JSON-serialisable).
        options : mapping
            ``Options.to_dict()``; the entries in :data:`NON_RESULT_OPTIONS` are left out.
        backend : str
            Name of the spectrum backend.
        """
        return self.streamed_key([tensor], tuple(tensor.shape), identity, options, backend)

    def streamed_key(
        self,
        parts: Iterable[np.ndarray],
        shape: tuple[int, ...],
        identity: Mapping[str, Any],
        options: Mapping[str, Any],
        backend: str,
    ) -> str:
        """:meth:`key` of a tensor given as its consecutive row blocks ``parts`` (one dtype,
        together of ``shape``): the same key as for the whole tensor, without holding it."""
        blocks = iter(parts)
        first = next(blocks, None)
        if first is None:
            raise ValueError(f"a cache key needs the tensor's content; no block of {shape} came")
        dtype = first.dtype
        context = {
            "format": CACHE_FORMAT,
            "columns": schema.fingerprint(),
            "version": __version__,
            "backend": backend,
            "dtype": str(dtype),
            "shape": list(shape),
            "identity": dict(identity),
            "options": {k: v for k, v in options.items() if k not in NON_RESULT_OPTIONS},
        }
        digest = hashlib.sha256(json.dumps(context, sort_keys=True, default=_json_default).encode())
        for part in itertools.chain([first], blocks):
            if part.dtype != dtype:
                raise ValueError(f"a block of dtype {part.dtype} in a {dtype} tensor's key")
            raw_bytes = np.ascontiguousarray(part).view(np.uint8)  # any dtype, bfloat16 too
            digest.update(raw_bytes.data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """File of the entry ``key``."""
        return self.folder / f"{key}{_SUFFIX}"

    def get(self, key: str) -> list[LayerResult] | None:
        """The stored rows of ``key``, or ``None`` if absent or unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                records = json.loads(bytes(data["rows"]).decode())
                arrays = {name: np.array(data[name]) for name in data.files if name != "rows"}
            return [LayerResult.from_dict(r, _arrays_of(arrays, i)) for i, r in enumerate(records)]
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return None  # damaged by something other than us: recompute and overwrite

    def put(self, key: str, rows: Sequence[LayerResult]) -> None:
        """Store ``rows`` under ``key`` atomically (temporary file, then ``os.replace``)."""
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "rows": np.frombuffer(
                json.dumps([r.to_dict(arrays=False) for r in rows], default=_json_default).encode(),
                dtype=np.uint8,
            )
        }
        for i, row in enumerate(rows):
            for name, array in row.arrays().items():
                arrays[f"{name}.{i}"] = array
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        # The writer's host and pid in the name let a later run remove it if we are killed.
        prefix = f".tmp-{_HOST}-{os.getpid()}-"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=prefix, suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            # On any failure, interruption included, drop the partial file and re-raise.
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob(f"[0-9a-f]*{_SUFFIX}"))


def _arrays_of(arrays: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """The arrays of the ``i``-th row of an entry (stored as ``"<field>.<i>"``)."""
    suffix = f".{i}"
    return {k[: -len(suffix)]: v for k, v in arrays.items() if k.endswith(suffix)}
