"""``weightspectra bench-solvers``: time the CPU eigensolvers here, print and store the table
that runs then choose from (:mod:`weightspectra.backends.solvers`)."""

from __future__ import annotations

import argparse
from typing import TextIO

from weightspectra.backends.solvers import (
    SIZE_CLASSES,
    SolverTable,
    available_solvers,
    load_table,
    measure,
    save_table,
    table_path,
)
from weightspectra.enums import Precision, Solver


def add_bench_solvers_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench-solvers",
        help="time the eigensolvers on this machine; runs use the fastest (stored table)",
    )
    p.add_argument(
        "--orders",
        type=int,
        nargs="+",
        default=list(SIZE_CLASSES),
        metavar="N",
        help=f"Gram matrix orders to time (default: {' '.join(map(str, SIZE_CLASSES))})",
    )
    p.add_argument(
        "--precision",
        choices=["float64", "float32", "both"],
        default="both",
        help="precisions to time (default: both)",
    )
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs (default 2)")
    p.add_argument("--no-mkl", action="store_true", help="leave torch's MKL out (no torch import)")
    p.add_argument("--no-save", action="store_true", help="print the table only; do not store it")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS threads while timing (default: as set, e.g. by OPENBLAS_NUM_THREADS)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def format_table(table: SolverTable) -> str:
    """The table as text: one line per precision and order, seconds per solver, the fastest
    and its speed-up over numpy."""
    solvers = [
        s for s in Solver if any(s in by for o in table.seconds.values() for by in o.values())
    ]
    header = ["precision", "order", *(f"{s.value} s" for s in solvers), "fastest", "vs numpy"]
    lines = [header]
    for precision in (Precision.FLOAT64, Precision.FLOAT32):
        for order in table.classes(precision):
            seconds = table.seconds[precision][order]
            if not seconds:
                continue
            fastest = min(seconds, key=lambda s: seconds[s])
            numpy_s = seconds.get(Solver.NUMPY)
            ratio = f"{numpy_s / seconds[fastest]:.2f}x" if numpy_s else "-"
            cells = [f"{seconds[s]:.4f}" if s in seconds else "-" for s in solvers]
            lines.append([precision.value, str(order), *cells, fastest.value, ratio])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines
    )
    imports = ", ".join(f"{s.value} {t:.2f} s" for s, t in table.import_seconds.items())
    return text + (f"\nimport cost: {imports}" if imports else "") + "\n"


def run_bench_solvers(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from weightspectra.runtime.parallel import blas_threads_now

    if any(o < 2 for o in args.orders) or args.repeats < 1:
        stderr.write("weightspectra: error: --orders must be ≥ 2 and --repeats ≥ 1\n")
        return 2
    precisions = (
        (Precision.FLOAT64, Precision.FLOAT32)
        if args.precision == "both"
        else (Precision(args.precision),)
    )
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=args.threads, user_api="blas")
    else:
        limits = None
    try:
        threads = blas_threads_now()
        names = ", ".join(s.value for s in available_solvers(with_mkl=not args.no_mkl))
        stderr.write(f"weightspectra: timing {names} on {threads} BLAS thread(s)\n")

        def progress(order: int, precision: Precision) -> None:
            stderr.write(f"  order {order} {precision.value} ...\n")

        table = measure(
            args.orders,
            precisions,
            threads=threads,
            repeats=args.repeats,
            with_mkl=not args.no_mkl,
            base=None if args.no_save else load_table(threads),
            progress=progress,
        )
    finally:
        if limits is not None:
            limits.unregister()
    stdout.write(format_table(table))
    if not args.no_save:
        where = save_table(table)
        stderr.write(
            f"weightspectra: stored the table in {where}\n"
            if where is not None
            else f"weightspectra: could not write {table_path(table.key)}; not stored\n"
        )
    return 0
