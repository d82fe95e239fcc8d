"""A lazily opened, read-only memory map of one weights file, shared by its tensors.

Memory-mapped readers (safetensors, GGUF) hand out tensors as views of the map and give the
kernel hints through it: read a tensor ahead (``MADV_WILLNEED``) and drop its pages from this
process once analysed (``MADV_DONTNEED``), so memory stays near one tensor.
"""

from __future__ import annotations

import mmap
from pathlib import Path

#: ``madvise`` options, ``None`` where the platform lacks them (the hints are then skipped).
WILLNEED: int | None = getattr(mmap, "MADV_WILLNEED", None)
DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


class MappedFile:
    """The read-only map of ``path``, opened on first use.

    Parameters
    ----------
    path : Path
        The file to map.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None

    def buffer(self) -> mmap.mmap:
        """The map (opened now if it is not yet)."""
        if self._map is None:
            with self.path.open("rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def advise(self, option: int | None, begin: int, end: int) -> None:
        """``madvise`` the pages of bytes [begin, end) (no-op where unsupported or unmapped).

        :data:`DONTNEED` takes only the pages wholly inside the range (a neighbouring tensor may
        still be in use); read-only shared file pages are only unmapped from this process, and a
        later access reads them again from the page cache or the file. Other options take every
        page the range touches.
        """
        if option is None or self._map is None or not hasattr(self._map, "madvise"):
            return
        page = mmap.PAGESIZE
        if option == DONTNEED:
            lo, hi = -(-begin // page) * page, end // page * page
        else:
            lo, hi = begin // page * page, min(end, len(self._map))
        if hi > lo:
            self._map.madvise(option, lo, hi - lo)
