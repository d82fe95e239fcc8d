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
6. Same-shape layers batched, 1 thread: the 36 MiniLM-sized Gram matrices (384²) through one
   stacked ``eigvalsh`` vs one call each; a pooled 3×3 convolution's 9 slices (256×256) through
   one stacked Gram + ``eigvalsh`` vs slice by slice (issue #17, item 3).
7. Reading ahead in one process, 1 thread: each tensor's load (the memory-mapped read and the
   source's own conversion, bfloat16 to float32) started on a second thread while the previous
   one is diagonalised,
   vs the serial run, on MiniLM (float32) and on a bfloat16 checkpoint of 8 tensors 2048×5504
   (issue #17, item 3).
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads(["--threads", "2"])

import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import weightspectra as ws  # noqa: E402
from weightspectra.core import eigen  # noqa: E402
from weightspectra.fitting import powerlaw  # noqa: E402
from weightspectra.sources import open_model  # noqa: E402
from weightspectra.sources.base import Source  # noqa: E402

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


def batching() -> list[list[object]]:
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((36, 384, 384))
    grams = stack @ stack.transpose(0, 2, 1)
    conv = rng.standard_normal((9, 256, 256))
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        one_by_one, a = _common.best_of(lambda: [np.linalg.eigvalsh(g) for g in grams], 5)
        stacked, b = _common.best_of(lambda: np.linalg.eigvalsh(grams), 5)
        rows.append(
            [
                "36 × eigvalsh 384²",
                one_by_one,
                stacked,
                one_by_one / stacked,
                bool(np.allclose(np.array(a), b, rtol=1e-12, atol=0)),
            ]
        )
        per_slice, c = _common.best_of(
            lambda: np.sort(np.concatenate([eigen.layer_eigenvalues(m[None]) for m in conv])), 5
        )
        pooled, d = _common.best_of(lambda: eigen.layer_eigenvalues(conv), 5)
        rows.append(
            [
                "conv 9 × 256², Gram + eigvalsh",
                per_slice,
                pooled,
                per_slice / pooled,
                bool(np.allclose(c, d, rtol=1e-12, atol=1e-12 * d.max())),
            ]
        )
    return rows


def _read_ahead(source: Source) -> Source:
    """The source with each tensor's load started on a thread when the previous one is read."""
    pool = ThreadPoolExecutor(1)
    pending: dict[int, Future[np.ndarray]] = {}
    entries = source.entries

    def load(i: int) -> np.ndarray:
        fut = pending.pop(i, None)
        array = fut.result() if fut is not None else entries[i].load()
        if i + 1 < len(entries):
            pending[i + 1] = pool.submit(entries[i + 1].load)
        return array

    return Source(
        source.description,
        tuple(replace(e, load=lambda i=i: load(i), load_rows=None) for i, e in enumerate(entries)),
    )


def _bf16_checkpoint(path: Path) -> Path:
    if not path.exists():
        rng = np.random.default_rng(0)
        tensors = {}
        for i in range(8):
            w = rng.standard_normal((2048, 5504)).astype(np.float32)
            tensors[f"layers.{i}.mlp.up_proj.weight"] = (w.view(np.uint32) >> 16).astype(np.uint16)
        header = {}
        offset = 0
        for k, v in tensors.items():
            header[k] = {
                "dtype": "BF16",
                "shape": list(v.shape),
                "data_offsets": [offset, offset + v.nbytes],
            }
            offset += v.nbytes
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with path.open("wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for v in tensors.values():
                f.write(v.tobytes())
    return path


def read_ahead() -> list[list[object]]:
    rows = []
    models = [
        ("MiniLM float32", _common.minilm_path()),
        ("bf16 8 × 2048×5504", _bf16_checkpoint(_common.BENCH_DATA / "bf16_2048x5504.safetensors")),
    ]
    with threadpool_limits(limits=1, user_api="blas"):
        for label, path in models:
            serial_s = ahead_s = float("inf")
            for _ in range(3):  # alternated: drifting load hits both alike
                t, plain = _common.best_of(lambda p=path: ws.analyze(open_model(str(p))), 1)
                serial_s = min(serial_s, t)
                t, ahead = _common.best_of(
                    lambda p=path: ws.analyze(_read_ahead(open_model(str(p)))), 1
                )
                ahead_s = min(ahead_s, t)
            same = [r.metrics.get("alpha") for r in plain.layers] == [
                r.metrics.get("alpha") for r in ahead.layers
            ]
            rows.append([label, serial_s, ahead_s, serial_s / ahead_s, same])
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
    print("\n6. Same-shape matrices batched, 1 thread")
    print(_common.table(["case", "one by one s", "batched s", "speed-up", "same"], batching()))
    print("\n7. Reading ahead on a second thread in one process, 1 BLAS thread")
    print(_common.table(["model", "serial s", "read ahead s", "speed-up", "same α"], read_ahead()))


if __name__ == "__main__":
    main()
