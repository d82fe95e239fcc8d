"""The measurements behind design choices in the code, each side by side in one run.

    .venv/bin/python benchmarks/bench_internals.py

The process allows 2 BLAS threads; parts marked "1 thread" limit them with threadpoolctl.

1. Small LAPACK calls in parallel: 20 × eigvalsh of a 384² matrix per worker, serial vs two
   threads vs two forked processes (why ``workers`` uses processes: runtime/parallel.py).
2. Row-block size of the blocked Gram matrix, 1 thread: 4 MiB vs 64 MiB blocks on MiniLM-sized
   30522×384 and 11008×4096 float32 matrices (core/eigen.py, GRAM_BLOCK_BYTES).
3. Two OpenBLAS libraries: MiniLM with 2 BLAS threads when every matrix over 4 MiB takes the
   blocked (scipy syrk) path vs only those over 64 MiB (core/eigen.py, GRAM_BLOCKED_ABOVE_BYTES).
4. Setting the BLAS limit inside a forked child: CPU time the child burns while idle for 0.3 s
   (runtime/parallel.py, _child_init).
5. Power-law fit, 1 thread: 64-candidate KS blocks vs one block, same results
   (fitting/powerlaw.py, _BLOCK_ROWS).
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads(["--threads", "2"])

import multiprocessing  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import weightspectra as ws  # noqa: E402
from weightspectra.core import eigen  # noqa: E402
from weightspectra.fitting import powerlaw  # noqa: E402

_GRAM = np.random.default_rng(0).standard_normal((384, 384))
_GRAM = _GRAM @ _GRAM.T


def _eig_batch(_: int = 0) -> None:
    for _ in range(20):
        np.linalg.eigvalsh(_GRAM)


def small_lapack_in_parallel() -> list[list[object]]:
    with threadpool_limits(limits=1, user_api="blas"):
        _eig_batch()
        serial, _ = _common.best_of(lambda: (_eig_batch(), _eig_batch()), 3)
        with ThreadPoolExecutor(2) as pool:
            threads, _ = _common.best_of(lambda: list(pool.map(_eig_batch, [0, 1])), 3)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_eig_batch, [0, 1]))
            procs, _ = _common.best_of(lambda: list(pool.map(_eig_batch, [0, 1])), 3)
    return [
        ["2 × 20 eigvalsh 384², serial", serial, 1.0],
        ["… on 2 threads", threads, threads / serial],
        ["… on 2 forked processes", procs, procs / serial],
    ]


def block_size() -> list[list[object]]:
    rows = []
    for shape in [(30522, 384), (11008, 4096)]:
        w = _common.synthetic(shape, 1)
        times = {}
        with threadpool_limits(limits=1, user_api="blas"):
            for mib in (4, 64):
                eigen.GRAM_BLOCK_BYTES = mib * 2**20
                times[mib], _ = _common.best_of(
                    lambda w=w: eigen._blocked_gram_eigenvalues(
                        w, np.dtype(np.float64), "w", eigen.lapack_eigvalsh
                    ),
                    3 if shape[1] < 1000 else 1,
                )
        eigen.GRAM_BLOCK_BYTES = 4 * 2**20
        rows.append([f"{shape[0]}×{shape[1]}", times[4], times[64], times[4] / times[64]])
    return rows


def two_openblas() -> list[list[object]]:
    path = _common.minilm_path()
    ws.analyze(path)
    times = {}
    for mib in (4, 64, 4, 64):
        eigen.GRAM_BLOCKED_ABOVE_BYTES = mib * 2**20
        t, _ = _common.best_of(lambda: ws.analyze(path), 3)
        times[mib] = min(times.get(mib, float("inf")), t)
    eigen.GRAM_BLOCKED_ABOVE_BYTES = 64 * 2**20
    return [["MiniLM, 2 BLAS threads", times[4], times[64], times[4] / times[64]]]


def _idle_cpu(limit_in_child: bool) -> float:
    if limit_in_child:
        threadpool_limits(limits=1, user_api="blas")
    np.linalg.eigvalsh(_GRAM)
    before = os.times()
    time.sleep(0.3)
    after = os.times()
    return (after.user - before.user) + (after.system - before.system)


def limit_in_child() -> list[list[object]]:
    np.linalg.eigvalsh(_GRAM)  # the parent's pool exists, as in a real run
    out = []
    with threadpool_limits(limits=1, user_api="blas"):  # the parent's budget, set before fork
        for again in (False, True):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                cpu = pool.submit(_idle_cpu, again).result()
            out.append(["limit set again in the child" if again else "limit inherited only", cpu])
    return out


def fit_blocks() -> list[list[object]]:
    rows = []
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=1, user_api="blas"):
        for n in (384, 1024, 4096):
            evals = np.sort(rng.pareto(2.0, n) + 1.0)
            times, fits = {}, {}
            for block in (10**9, 64):
                powerlaw._BLOCK_ROWS = block
                times[block], fits[block] = _common.best_of(
                    lambda e=evals: powerlaw.fit_power_law(e), 5 if n < 4096 else 2
                )
            powerlaw._BLOCK_ROWS = 64
            rows.append(
                [n, times[10**9], times[64], times[10**9] / times[64], fits[64] == fits[10**9]]
            )
    return rows


def main() -> None:
    print(_common.machine_line(THREADS).replace("pinned to 2", "allowed up to 2"))
    print("\n1. Small LAPACK calls in parallel (1 BLAS thread each)")
    print(_common.table(["run", "s", "vs serial"], small_lapack_in_parallel()))
    print("\n2. Blocked Gram + eigvalsh, 1 thread: 4 MiB vs 64 MiB row blocks")
    print(_common.table(["matrix", "4 MiB s", "64 MiB s", "4/64"], block_size()))
    print("\n3. Blocked path above 4 MiB vs above 64 MiB (numpy + scipy OpenBLAS alternating)")
    print(_common.table(["case", "above 4 MiB s", "above 64 MiB s", "ratio"], two_openblas()))
    print("\n4. CPU burnt by a forked child idle for 0.3 s")
    print(_common.table(["child", "CPU s"], limit_in_child()))
    print("\n5. Power-law fit, 1 thread: one KS block vs 64-candidate blocks")
    print(
        _common.table(["n", "one block s", "64-row blocks s", "speed-up", "same fit"], fit_blocks())
    )


if __name__ == "__main__":
    main()
