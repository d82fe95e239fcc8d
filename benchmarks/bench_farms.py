"""FARMS α: what it costs against the plain fit, and the aspect-ratio bias it removes.

    .venv/bin/python benchmarks/bench_farms.py [--repeats 3] [--threads 1] [--seeds 20]

1. Cost: ``ws.analyze(MiniLM)`` with ``estimator="farms"`` against the plain run, alternated in
   this process on the same pinned BLAS threads (best of ``--repeats`` after one untimed run of
   each, so imports and the page cache are warm for both), and the same with the word
   embedding left out (``exclude=["embeddings"]``), whose 30522 × 384 matrix has 159 windows.
2. Bias: Student-t matrices from one generating process at Q = 1, 2, 4, 8, ``--seeds`` each:
   the median plain α and FARMS α per Q and their spread across Q, for (Q·128) × 128 matrices
   (the short side fixed; default windows, the seeds of ``tests/metrics/test_farms.py``) and for
   matrices of about 256² entries each (Q·M × M, M = 256/√Q; one window size for all, 64).
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import platform  # noqa: E402

import numpy as np  # noqa: E402

import weightspectra as ws  # noqa: E402
from weightspectra.core.eigen import layer_eigenvalues  # noqa: E402
from weightspectra.core.farms import farms_eigenvalues  # noqa: E402
from weightspectra.fitting.powerlaw import fit_power_law  # noqa: E402


def cost(repeats: int) -> None:
    path = str(_common.minilm_path())
    rows = []
    for label, extra in (
        ("all 39 matrices", {}),
        ("embeddings excluded", {"exclude": ["embeddings"]}),
    ):
        run_plain = lambda extra=extra: ws.analyze(path, **extra)  # noqa: E731
        run_farms = lambda extra=extra: ws.analyze(path, estimator="farms", **extra)  # noqa: E731
        run_plain(), run_farms()  # warm both
        plain_s = farms_s = float("inf")
        for _ in range(repeats):  # alternated, so drifting load hits both alike
            plain_s = min(plain_s, _common.best_of(run_plain, 1)[0])
            farms_s = min(farms_s, _common.best_of(run_farms, 1)[0])
        windows = sum(int(r.metrics.get("num_farms_windows") or 0) for r in run_farms().analysed)
        rows.append([label, windows, plain_s, farms_s, f"{farms_s / plain_s:.2f}x"])
    print(_common.table(["MiniLM", "windows", "plain s", "farms s", "farms / plain"], rows))


def _spread_table(
    design: str,
    shapes: dict[int, tuple[int, int]],
    df: float,
    seeds: int,
    window: int | None,
    seed_base: int,
) -> list[list[str]]:
    plain, farms = [], []
    for q, shape in shapes.items():
        p, f = [], []
        for s in range(seeds):
            w = np.random.default_rng(seed_base + 1000 * q + s).standard_t(df, shape)
            p.append(fit_power_law(layer_eigenvalues(w[None])).alpha)
            f.append(fit_power_law(farms_eigenvalues(w, window=window)[0]).alpha)
        plain.append(float(np.median(p)))
        farms.append(float(np.median(f)))
    how = "largest window" if window is None else f"windows {window}×{window}"
    return [
        [design, f"t({df:g})", "plain α", *[f"{v:.2f}" for v in plain], f"{np.ptp(plain):.2f}"],
        [
            design,
            f"t({df:g})",
            f"FARMS α ({how})",
            *[f"{v:.2f}" for v in farms],
            f"{np.ptp(farms):.2f}",
        ],
    ]


def bias(seeds: int) -> None:
    """Medians over ``seeds`` matrices per Q, Student-t entries (one generating process)."""
    rows = []
    tall = {q: (q * 128, 128) for q in (1, 2, 4, 8)}  # the short side fixed
    rows += _spread_table("(Q·128)×128", tall, 3.0, seeds, None, 0)
    same = {q: (q * round(256 / q**0.5), round(256 / q**0.5)) for q in (1, 2, 4, 8)}  # ~65k
    for df in (2.5, 3.0, 4.0):
        rows += _spread_table("N·M ≈ 256², Q·M × M", same, df, seeds, 64, 7777)
    head = ["matrices", "entries", "estimator", "Q=1", "Q=2", "Q=4", "Q=8", "spread"]
    print(_common.table(head, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}; {_common.machine_line(THREADS)}\n")
    cost(args.repeats)
    print()
    bias(args.seeds)


if __name__ == "__main__":
    main()
