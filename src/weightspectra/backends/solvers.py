"""The CPU eigensolver of each Gram matrix, chosen by measurement on this machine.

Three candidates compute the same eigenvalues (to ~1e-14 relative, tested): numpy's LAPACK
``syevd``; LAPACK's two-stage ``syevd_2stage``, which the OpenBLAS bundled with numpy exports
(called through :mod:`ctypes`: nothing to install); and Intel MKL's ``syevd`` through torch,
where torch is installed with MKL. Which is fastest depends on the machine, the matrix order
and the thread count (on one of this project's machines numpy equals MKL at order 2048 and MKL
leads from ~4096), so a fixed threshold is wrong somewhere.

:func:`measure` times every available candidate at a few orders (the size classes) and
precisions; the table is stored in the user cache folder (``$WEIGHTSPECTRA_CACHE_DIR``, else
``$XDG_CACHE_HOME/weightspectra``, else ``~/.cache/weightspectra``) under a key of the
library versions, the CPU and the BLAS thread count, so it is measured once per machine.
``weightspectra bench-solvers`` measures and prints it. A :class:`SolverPolicy` (one per run)
then picks, for each Gram matrix, the fastest candidate at the nearest size class, and counts
torch's import time against the time MKL would save on the matrices the run has left: torch is
imported only when that saving is larger. Without a stored table, a run of many large matrices
measures the size classes it needs before it starts (:meth:`SolverPolicy.prepare`); otherwise
the rule used before measurements existed applies (MKL from order
:data:`STATIC_MKL_MIN_ORDER`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.core.eigen import lapack_eigvalsh
from weightspectra.core.threads import numpy_blas_threads
from weightspectra.enums import Precision, Solver
from weightspectra.errors import LayerError

#: Orders at which the candidates are timed by default.
SIZE_CLASSES = (512, 1024, 2048, 4096)

#: Gram matrices below this order always go to numpy (a choice would cost more than it saves).
SMALLEST_CHOICE = 384

#: Without a measured table, MKL is used from this order (the rule measured on one machine:
#: 2.02× faster at 1536, 0.96× at 1024, one thread; benchmarks/bench_floor.py).
STATIC_MKL_MIN_ORDER = 1536

#: A run measures a missing size class itself when its matrices of that class would take at
#: least this many times the measurement (each candidate timed once on one matrix).
MEASURE_WHEN_WORK_EXCEEDS = 10.0

#: Largest size class a run measures by itself (timing 8192 takes ~2 minutes on one thread);
#: larger orders use the ranking of the largest class measured.
LARGEST_AUTO_CLASS = 4096

#: Eigenvalues of the candidates must agree with numpy's to this relative tolerance
#: (``|Δλ| ≤ tol · λ_max``); a candidate that does not is left out of the table.
AGREEMENT = 1e-12

FLOAT32_EPS = float(np.finfo(np.float32).eps)

#: 2: torch's import is the median of :data:`IMPORT_REPEATS` fresh processes (1 timed one, which
#: could be a cold first import, 4.3 s against 0.9 s warm, and kept torch out of runs it speeds up).
_TABLE_FORMAT = 2

_LAYOUT_COL_MAJOR = 102


@functools.cache
def _two_stage_routines() -> dict[str, Callable[..., int]] | None:
    """LAPACKE's ``dsyevd_2stage``/``ssyevd_2stage`` from numpy's bundled OpenBLAS, or None."""
    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib_path in sorted(folder.glob("libscipy_openblas*.so*")):
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError:
            continue
        found: dict[str, Callable[..., int]] = {}
        ilp64 = "64_" in lib_path.name
        index = ctypes.c_int64 if ilp64 else ctypes.c_int32
        for letter in ("d", "s"):
            name = f"scipy_LAPACKE_{letter}syevd_2stage{'64_' if ilp64 else ''}"
            routine = getattr(lib, name, None)
            if routine is None:
                break
            routine.restype = index
            routine.argtypes = [
                ctypes.c_int,
                ctypes.c_char,
                ctypes.c_char,
                index,
                ctypes.c_void_p,
                index,
                ctypes.c_void_p,
            ]
            found[letter] = routine
        if len(found) == 2:
            return found
    return None


def two_stage_eigvalsh(gram: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of ``gram`` (lower triangle read) with LAPACK's two-stage
    ``syevd_2stage`` from numpy's OpenBLAS; float32 input stays float32.

    Raises
    ------
    LayerError
        If the routine is missing or reports a failure.
    """
    routines = _two_stage_routines()
    if routines is None:
        raise LayerError("LAPACK's syevd_2stage is not exported by numpy's OpenBLAS here")
    single = gram.dtype == np.float32
    work = np.array(gram, dtype=np.float32 if single else np.float64, order="F", copy=True)
    n = work.shape[0]
    evals = np.empty(n, dtype=work.dtype)
    info = routines["s" if single else "d"](
        _LAYOUT_COL_MAJOR, b"N", b"L", n, work.ctypes.data, max(1, n), evals.ctypes.data
    )
    if info != 0:
        raise LayerError(
            f"LAPACK syevd_2stage failed on a {gram.shape} Gram matrix (info={info}); retry "
            "with eig_method='svd'"
        )
    return evals


def _mkl_eigvalsh(gram: np.ndarray) -> np.ndarray:
    from weightspectra.backends import torch_backend
    from weightspectra.runtime.parallel import blas_threads_now

    return torch_backend.host_eigvalsh(gram, blas_threads_now())


def _torch_installed() -> bool:
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def _torch_loaded() -> bool:
    """Whether torch is imported already (then MKL costs no import)."""
    return "torch" in sys.modules


def _mkl_usable() -> bool:
    if not _torch_installed():
        return False
    from weightspectra.backends import torch_backend

    return torch_backend.mkl_available()


#: The routine of each candidate.
ROUTINES: dict[Solver, Callable[[np.ndarray], np.ndarray]] = {
    Solver.NUMPY: lapack_eigvalsh,
    Solver.TWO_STAGE: two_stage_eigvalsh,
    Solver.MKL: _mkl_eigvalsh,
}


def available_solvers(*, with_mkl: bool = True) -> list[Solver]:
    """The candidates usable in this process (MKL checked by importing torch, so only when
    ``with_mkl``)."""
    found = [Solver.NUMPY]
    if _two_stage_routines() is not None:
        found.append(Solver.TWO_STAGE)
    if with_mkl and _mkl_usable():
        found.append(Solver.MKL)
    return found


#: A measured class stands for orders at most this factor away from it.
ESTIMATE_MAX_RATIO = 2.0


@dataclass(frozen=True)
class SolverTable:
    """Measured seconds of each candidate per size class and precision, on one machine.

    Attributes
    ----------
    key : str
        The machine key it was measured under (:func:`machine_key`).
    threads : int
        BLAS threads during the measurement.
    seconds : mapping
        ``{precision: {order: {solver: seconds}}}``.
    import_seconds : mapping
        Seconds to import what a candidate needs, measured in a fresh process (torch for MKL).
    """

    key: str
    threads: int
    seconds: Mapping[Precision, Mapping[int, Mapping[Solver, float]]]
    import_seconds: Mapping[Solver, float] = field(default_factory=dict)

    def classes(self, precision: Precision) -> list[int]:
        """The measured orders for ``precision``, ascending."""
        return sorted(self.seconds.get(precision, {}))

    def estimate(self, solver: Solver, order: int, precision: Precision) -> float | None:
        """Seconds ``solver`` takes on a Gram matrix of ``order``: the nearest measured class
        (in log order), scaled by ``(order / class)³``; None if not measured, or if the
        nearest class is more than :data:`ESTIMATE_MAX_RATIO` times off (which solver is
        fastest changes with the order: numpy's at 2048 here, the two-stage one at 4096)."""
        classes = self.classes(precision)
        if not classes:
            return None
        nearest = min(classes, key=lambda c: abs(math.log(order / c)))
        if max(order / nearest, nearest / order) > ESTIMATE_MAX_RATIO:
            return None
        measured = self.seconds[precision][nearest].get(solver)
        if measured is None:
            return None
        return measured * (order / nearest) ** 3

    def with_class(
        self, precision: Precision, order: int, seconds: Mapping[Solver, float]
    ) -> SolverTable:
        """A copy with one more (or a replaced) measured class."""
        table = {p: dict(by_order) for p, by_order in self.seconds.items()}
        table.setdefault(precision, {})[order] = dict(seconds)
        return SolverTable(self.key, self.threads, table, dict(self.import_seconds))

    def to_json(self) -> dict[str, object]:
        return {
            "format": _TABLE_FORMAT,
            "key": self.key,
            "threads": self.threads,
            "seconds": {
                p.value: {str(o): {s.value: t for s, t in by.items()} for o, by in orders.items()}
                for p, orders in self.seconds.items()
            },
            "import_seconds": {s.value: t for s, t in self.import_seconds.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SolverTable:
        """Inverse of :meth:`to_json`.

        Raises
        ------
        ValueError
            If ``data`` is not a table of this format.
        """
        if data.get("format") != _TABLE_FORMAT:
            raise ValueError(
                f"solver table format {data.get('format')!r}, expected {_TABLE_FORMAT}"
            )
        raw = data["seconds"]
        imports = data.get("import_seconds", {})
        if not isinstance(raw, dict) or not isinstance(imports, dict):
            raise ValueError("solver table: 'seconds' and 'import_seconds' must be objects")
        seconds = {
            Precision(p): {
                int(o): {Solver(s): float(t) for s, t in by.items()} for o, by in orders.items()
            }
            for p, orders in raw.items()
        }
        return cls(
            key=str(data["key"]),
            threads=int(str(data["threads"])),
            seconds=seconds,
            import_seconds={Solver(s): float(t) for s, t in imports.items()},
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_key(threads: int) -> str:
    """What a measurement depends on, hashed: numpy, scipy and torch versions, the CPU model,
    its core count and the BLAS thread count (no package is imported)."""
    parts = {
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "threads": threads,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cache_folder() -> Path:
    """Where solver tables are stored (see the module docstring)."""
    explicit = os.environ.get("WEIGHTSPECTRA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "weightspectra"


def table_path(key: str) -> Path:
    return cache_folder() / f"solvers-{key}.json"


def load_table(threads: int) -> SolverTable | None:
    """The stored table for this machine at ``threads`` BLAS threads, or None (also when the
    file is unreadable: it is then measured anew)."""
    key = machine_key(threads)
    try:
        data = json.loads(table_path(key).read_text())
        table = SolverTable.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return table if table.key == key else None


def save_table(table: SolverTable) -> Path | None:
    """Store ``table`` (atomically); None where the cache folder cannot be written."""
    path = table_path(table.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(table.to_json(), indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError:
        return None
    return path


def seeded_gram(order: int, precision: Precision, seed: int = 0) -> np.ndarray:
    """A seeded Gram matrix ``XᵀX`` of ``order`` (X of shape (1.25·order, order)), the shape
    of the matrices timed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((order + order // 4, order))
    gram = x.T @ x
    return gram.astype(np.float32) if precision is Precision.FLOAT32 else gram


def time_class(
    order: int, precision: Precision, solvers: Iterable[Solver], repeats: int = 2
) -> dict[Solver, float]:
    """Best-of-``repeats`` seconds of each solver on one seeded Gram matrix of ``order``.

    A solver whose eigenvalues differ from numpy's by more than :data:`AGREEMENT`·λ_max (or
    that fails) is left out.
    """
    gram = seeded_gram(order, precision)
    reference = lapack_eigvalsh(gram).astype(np.float64)
    # float32 routines differ among themselves by up to ~order·eps32 of λ_max
    relative = AGREEMENT if precision is Precision.FLOAT64 else 10 * order * FLOAT32_EPS
    tolerance = relative * float(reference[-1])
    out: dict[Solver, float] = {}
    for solver in solvers:
        best = math.inf
        try:
            ROUTINES[solver](seeded_gram(8, precision))  # untimed: loads and initialises it
            for _ in range(repeats):
                start = time.perf_counter()
                evals = ROUTINES[solver](gram)
                best = min(best, time.perf_counter() - start)
        except LayerError:
            continue
        if np.max(np.abs(evals.astype(np.float64) - reference)) <= tolerance:
            out[solver] = best
    return out


_IMPORT_TORCH = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"


#: Fresh processes timed for torch's import; their median is stored. The first import after a
#: boot reads torch's libraries from disk (measured 4.3 s, against 0.9 s once they are in the
#: page cache); a table is measured once and used by every later run, which finds them cached.
IMPORT_REPEATS = 3


def torch_import_seconds(repeats: int = IMPORT_REPEATS) -> float | None:
    """Median seconds ``import torch`` takes in a fresh process, over ``repeats`` processes
    (None if it fails)."""
    seconds: list[float] = []
    for _ in range(max(1, repeats)):
        try:
            done = subprocess.run(
                [sys.executable, "-c", _IMPORT_TORCH],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            seconds.append(float(done.stdout.strip().splitlines()[-1]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None
    return sorted(seconds)[len(seconds) // 2]  # the median (odd repeats; upper one if even)


def measure(
    orders: Iterable[int] = SIZE_CLASSES,
    precisions: Iterable[Precision] = (Precision.FLOAT64, Precision.FLOAT32),
    *,
    threads: int,
    repeats: int = 2,
    with_mkl: bool = True,
    base: SolverTable | None = None,
    progress: Callable[[int, Precision], None] | None = None,
) -> SolverTable:
    """Time every available candidate at ``orders`` and ``precisions`` (added to ``base``).

    Parameters
    ----------
    orders, precisions
        The size classes to time.
    threads : int
        BLAS threads in effect (the table's key).
    repeats : int
        Each timing is the best of this many runs.
    with_mkl : bool
        Whether to time MKL (imports torch) and the import of torch (in a fresh process).
    base : SolverTable, optional
        An earlier table of the same machine to extend.
    progress : callable, optional
        Called with each (order, precision) before it is timed.
    """
    solvers = available_solvers(with_mkl=with_mkl)
    table = base or SolverTable(machine_key(threads), threads, {}, {})
    imports = dict(table.import_seconds)
    if Solver.MKL in solvers and Solver.MKL not in imports:
        seconds = torch_import_seconds()
        if seconds is not None:
            imports[Solver.MKL] = seconds
    table = SolverTable(table.key, table.threads, table.seconds, imports)
    for precision in precisions:
        for order in orders:
            if progress is not None:
                progress(order, precision)
            table = table.with_class(
                precision, order, time_class(order, precision, solvers, repeats)
            )
    return table


class SolverPolicy:
    """The :data:`~weightspectra.core.eigen.SymmetricSolver` of one run: each Gram matrix goes
    to the candidate measured fastest at its size class, torch's import counted against the
    saving on the matrices the run has left.

    Parameters
    ----------
    work : mapping of int to int, optional
        How many Gram matrices of each order the run will diagonalise (its plan); each call
        takes one off.
    load : callable, optional
        Returns the stored table for a thread count (default :func:`load_table`; tests pass
        their own).
    """

    def __init__(
        self,
        work: Mapping[int, int] | None = None,
        load: Callable[[int], SolverTable | None] = load_table,
    ) -> None:
        self._work: Counter[int] = Counter(work or {})
        self._load = load
        self._tables: dict[int, SolverTable | None] = {}
        self.chosen: Counter[Solver] = Counter()  # what was used, for benchmarks and tests
        self._controller: Any = None
        self._modules_seen = -1

    def _blas_threads(self) -> int:
        """BLAS threads now (as :func:`~weightspectra.runtime.parallel.blas_threads_now`), from
        a threadpoolctl controller kept while no module is imported: asking a known library
        costs ~1 µs, finding the libraries again ~1 ms (4 % of MiniLM's run when done for each
        matrix)."""
        if self._controller is None or self._modules_seen != len(sys.modules):
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
            self._modules_seen = len(sys.modules)
        # numpy's OpenBLAS runs the solvers; scipy's (syrk only) may be set otherwise
        return numpy_blas_threads(self._controller)

    def table(self, threads: int) -> SolverTable | None:
        if threads not in self._tables:
            self._tables[threads] = self._load(threads)
        return self._tables[threads]

    def has_choices(self) -> bool:
        """Whether the run has a Gram matrix large enough for a choice of solver."""
        return any(order >= SMALLEST_CHOICE and n > 0 for order, n in self._work.items())

    def prepare(
        self, threads: int, precision: Precision = Precision.FLOAT64, *, save: bool = True
    ) -> SolverTable | None:
        """Measure the size classes this run needs that the stored table lacks, where the run's
        matrices of a class would take :data:`MEASURE_WHEN_WORK_EXCEEDS` times the
        measurement (about one matrix per candidate); store the result. Returns the table now
        in use (None: nothing stored or measured)."""
        table = self.table(threads)
        per_class: Counter[int] = Counter()
        for order, count in self._work.items():
            if order < SMALLEST_CHOICE:
                continue
            nearest = min(SIZE_CLASSES, key=lambda c: abs(math.log(order / c)))
            cls = min(nearest, LARGEST_AUTO_CLASS)
            per_class[cls] += round(count * (order / cls) ** 3)
        known = set(table.classes(precision)) if table is not None else set()
        candidates = len(available_solvers(with_mkl=False)) + int(_torch_installed())
        needed = sorted(
            cls
            for cls, equivalent in per_class.items()
            if cls not in known and equivalent >= MEASURE_WHEN_WORK_EXCEEDS * candidates
        )
        if not needed:
            return table
        table = measure(needed, (precision,), threads=threads, repeats=1, base=table)
        if save:
            save_table(table)
        self._tables[threads] = table
        return table

    def choose(
        self, order: int, precision: Precision, threads: int, *, allow_mkl: bool = True
    ) -> Solver:
        """The candidate for one Gram matrix of ``order`` (see the class docstring)."""
        if order < SMALLEST_CHOICE:
            return Solver.NUMPY
        table = self.table(threads)
        if table is None or not table.classes(precision):
            static_mkl = allow_mkl and order >= STATIC_MKL_MIN_ORDER and _mkl_usable()
            return Solver.MKL if static_mkl else Solver.NUMPY
        estimates = {
            s: t
            for s in Solver
            if (allow_mkl or s is not Solver.MKL)
            and (t := table.estimate(s, order, precision)) is not None
        }
        if not estimates:
            return Solver.NUMPY
        best = min(estimates, key=lambda s: estimates[s])
        if best is Solver.MKL and not _torch_loaded():
            others = {s: t for s, t in estimates.items() if s is not Solver.MKL}
            runner_up = min(others, key=lambda s: others[s]) if others else Solver.NUMPY
            import_cost = table.import_seconds.get(Solver.MKL, math.inf)
            if self._saving_left(table, precision, runner_up) < import_cost:
                return runner_up
        return best

    def _saving_left(self, table: SolverTable, precision: Precision, other: Solver) -> float:
        """Seconds MKL would save over ``other`` on the matrices the run has left."""
        saving = 0.0
        for order, count in self._work.items():
            if order < SMALLEST_CHOICE or count <= 0:
                continue
            mkl = table.estimate(Solver.MKL, order, precision)
            alternative = table.estimate(other, order, precision)
            if mkl is not None and alternative is not None:
                saving += count * max(0.0, alternative - mkl)
        return saving

    def __call__(self, gram: np.ndarray) -> np.ndarray:
        order = gram.shape[0]
        precision = Precision.FLOAT32 if gram.dtype == np.float32 else Precision.FLOAT64
        from weightspectra.runtime.parallel import in_worker_process

        threads = self._blas_threads() if order >= SMALLEST_CHOICE else 1
        # OpenMP thread pools inherited through fork are not safe to start in a worker
        allow_mkl = threads == 1 or not in_worker_process()
        solver = self.choose(order, precision, threads, allow_mkl=allow_mkl)
        if self._work[order] > 0:
            self._work[order] -= 1
        self.chosen[solver] += 1
        return ROUTINES[solver](gram)
