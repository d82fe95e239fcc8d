"""The 7B-shaped checkpoint on a Dask LocalCluster against the local process pool, same cores,
and a projection of 70B and 405B models on N nodes from the per-matrix times measured here.

    .venv/bin/python benchmarks/make_llama_checkpoint.py --layers 1      # once
    .venv/bin/python benchmarks/bench_cluster.py [--workers 2] [--path bench-data/llama7b]

Both runs analyse the same folder with ``workers`` one-thread workers: ``ws.analyze(path,
workers=N, parallel="processes")`` and ``ws.analyze(path, client=...)`` on a LocalCluster of N
processes started before the clock starts (imports and worker start-up counted on neither
side: the workers import weightspectra before the clock starts, as the pool's forked
processes have). Rows are compared for equality. The scheduling overhead per task is the
difference of the totals over the number of tensors analysed.

The projection fits ``t(N, M) = a·N·M² + b·M³`` (Gram matrix by syrk, then the eigensolver)
to the per-matrix times of the local run (progress marks, one thread), sums it over every
matrix of the model, and divides by the cores of N nodes, assuming: 32 cores per node, one
one-thread worker per core, the checkpoint read at 1 GB/s per node from shared storage in bf16,
no GPU, and perfect packing (the largest matrix bounds the wall time from below).
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import weightspectra as ws  # noqa: E402

#: (name, hidden, intermediate, layers, vocab, kv width) of the projected models.
MODELS = (
    ("Llama-2 7B", 4096, 11008, 32, 32000, 4096),
    ("Llama-3 70B", 8192, 28672, 80, 128256, 1024),
    ("Llama-3.1 405B", 16384, 53248, 126, 128256, 1024),
)
CORES_PER_NODE = 32
READ_GB_PER_S = 1.0


def matrices(hidden: int, inter: int, layers: int, vocab: int, kv: int) -> list[tuple[int, int]]:
    block = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden)]
    block += [(inter, hidden), (inter, hidden), (hidden, inter)]
    return block * layers + [(vocab, hidden), (vocab, hidden)]


def fit_model(times: dict[tuple[int, int], float]) -> tuple[float, float]:
    """Least-squares a, b of t = a·N·M² + b·M³ over (rows, cols) → seconds."""
    rows = []
    target = []
    for (r, c), seconds in times.items():
        n, m = max(r, c), min(r, c)
        rows.append([n * m * m, m**3])
        target.append(seconds)
    (a, b), *_ = np.linalg.lstsq(np.array(rows, float), np.array(target), rcond=None)
    return float(a), float(b)


def _warm_imports() -> None:
    import weightspectra.analysis
    import weightspectra.runtime.cluster
    import weightspectra.sources.safetensors  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, default=_common.BENCH_DATA / "llama7b")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not (args.path / "model.safetensors.index.json").is_file():
        raise SystemExit(f"{args.path}: run benchmarks/make_llama_checkpoint.py --layers 1 first")
    from distributed import Client, LocalCluster

    print(_common.machine_line(THREADS))
    shapes = {e.key: e.shape for e in ws.open_model(args.path).entries}
    marks: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(p: ws.Progress) -> None:
        now = time.perf_counter()
        marks[p.name] = now - last[0]
        last[0] = now

    serial = ws.analyze(args.path, progress=progress)  # per-matrix times, one thread
    start = time.perf_counter()
    local = ws.analyze(args.path, workers=args.workers, parallel="processes")
    local_s = time.perf_counter() - start
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(args.workers)
        # like with like: the local pool forks a process that has imported weightspectra
        client.run(_warm_imports)
        start = time.perf_counter()
        remote = ws.analyze(args.path, client=client)
        cluster_s = time.perf_counter() - start
    same = all(
        _common.same_row(a, b) for a, b in zip(local.layers, remote.layers, strict=True)
    ) and len(local.layers) == len(remote.layers)
    tasks = len(local.analysed)
    print(
        _common.table(
            ["run", "workers", "seconds", "vs local pool", "rows identical"],
            [
                ["local process pool", args.workers, f"{local_s:.1f}", "1.000", "-"],
                [
                    "LocalCluster",
                    args.workers,
                    f"{cluster_s:.1f}",
                    f"{cluster_s / local_s:.3f}",
                    same,
                ],
            ],
        )
    )
    print(
        f"scheduling overhead: {(cluster_s - local_s) / max(1, tasks) * 1e3:.1f} ms per tensor "
        f"({tasks} tensors analysed); serial one-thread total {sum(marks.values()):.1f} s"
    )
    times: dict[tuple[int, int], float] = {}
    for row in serial.analysed:
        shape = shapes[row.key]
        if len(shape) == 2 and row.name in marks:
            times[(int(shape[0]), int(shape[1]))] = marks[row.name]
    a, b = fit_model(times)
    print(f"fit t = a·N·M² + b·M³ on {len(times)} shapes: a = {a:.3e} s, b = {b:.3e} s")
    rows = []
    for name, hidden, inter, layers, vocab, kv in MODELS:
        mats = matrices(hidden, inter, layers, vocab, kv)
        per = [a * max(r, c) * min(r, c) ** 2 + b * min(r, c) ** 3 for r, c in mats]
        size_gb = 2 * sum(r * c for r, c in mats) / 1e9
        for nodes in (1, 4, 16):
            compute = max(sum(per) / (nodes * CORES_PER_NODE), max(per))
            read = size_gb / (READ_GB_PER_S * nodes)
            rows.append(
                [name, f"{size_gb:.0f} GB", nodes, f"{compute / 60:.1f}", f"{read / 60:.1f}",
                 f"{max(compute, read) / 60:.1f}"]
            )  # fmt: skip
    print(
        _common.table(
            ["model", "bf16 matrices", "nodes", "compute min", "read min", "projected min"], rows
        )
    )


if __name__ == "__main__":
    main()
