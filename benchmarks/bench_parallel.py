"""One worker vs two, on MiniLM and on one Llama-7B-shaped block, all in one process.

    .venv/bin/python benchmarks/bench_parallel.py [--quick]

Columns: 1 worker × 1 BLAS thread (the one-thread time), 1 worker × 2 BLAS threads, and
``workers=2`` as forked processes and as threads (each budgets 1 BLAS thread per worker). The
process starts with 2 BLAS threads allowed; the one-thread column limits them with
threadpoolctl, so every column runs in the same process on the same data. The 7B block is the
7 matrices of one decoder block (q, k, v, o 4096×4096; gate, up 11008×4096; down 4096×11008),
random, held in memory; ``--quick`` uses one 4096×4096 and one 11008×4096 matrix instead of the
full block.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads(["--threads", "2"])

import argparse  # noqa: E402

from threadpoolctl import threadpool_limits  # noqa: E402

import weightspectra as ws  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(_common.machine_line(THREADS).replace("pinned to 2", "allowed up to 2"))
    block_shapes = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
    if args.quick:
        block_shapes = [(4096, 4096), (11008, 4096)]
    block = {f"layers.0.m{i}.weight": _common.synthetic(s, i) for i, s in enumerate(block_shapes)}
    cases = [
        ("MiniLM", _common.minilm_path(), 5),
        ("7B block" + (" (2 matrices)" if args.quick else ""), block, 1),
    ]
    headers = [
        "case",
        "1w×1t s",
        "1w×2t s",
        "2 procs s",
        "2 threads s",
        "1w×2t / 1w×1t",
        "2 procs / 1w×1t",
        "2 threads / 1w×1t",
        "best efficiency",
        "identical",
    ]
    rows = []
    for name, model, reps in cases:
        ws.analyze(model) if reps > 1 else None
        with threadpool_limits(limits=1, user_api="blas"):
            t1, r1 = _common.best_of(lambda model=model: ws.analyze(model), reps)
        t12, _ = _common.best_of(lambda model=model: ws.analyze(model), reps)
        t2p, r2p = _common.best_of(
            lambda model=model: ws.analyze(model, workers=2, parallel="processes"), reps
        )
        t2t, r2t = _common.best_of(
            lambda model=model: ws.analyze(model, workers=2, parallel="threads"), reps
        )
        same = all(
            _common.same_row(a, b) and _common.same_row(a, c)
            for a, b, c in zip(r1.layers, r2p.layers, r2t.layers, strict=True)
        )
        best = min(t12, t2p, t2t)
        rows.append(
            [name, t1, t12, t2p, t2t, t12 / t1, t2p / t1, t2t / t1, f"{t1 / (2 * best):.0%}", same]
        )
        print(_common.table(headers, rows[-1:]), flush=True)
    print()
    print(_common.table(headers, rows))


if __name__ == "__main__":
    main()
