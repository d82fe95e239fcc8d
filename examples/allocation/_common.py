"""Shared helpers of the allocation examples: the API in one place, machine line, tables."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import weightspectra as ws
from weightspectra.allocation import apply_masks

allocate = ws.allocate
analyze = ws.analyze

__all__ = [
    "allocate",
    "analyze",
    "apply_masks",
    "machine",
    "mean_sd",
    "pipe_table",
    "set_threads",
]


def set_threads() -> None:
    """One BLAS thread: the examples share a 2-core machine and should be reproducible."""
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def machine() -> str:
    """One line: CPU model, cores, load average now, torch and weightspectra versions."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return (
        f"machine: {model}, {os.cpu_count()} cores, load average {' '.join(load)} at start; "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)"
        f"; weightspectra {ws.__version__}"
    )


def mean_sd(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd`` (sample sd, ddof=1; a single value has no sd)."""
    a = np.asarray(list(values), dtype=float) * scale
    if a.size < 2:
        return f"{a.mean():.{digits}f}"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"


def pipe_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], right: int | None = None
) -> str:
    """A markdown pipe table; columns from index ``right`` on are right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "|"
        + "|".join(
            "---:" if right is not None and i >= right else "---" for i in range(len(header))
        )
        + "|"
    )
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
