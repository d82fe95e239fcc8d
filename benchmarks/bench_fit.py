"""The power-law fit's share of the work as M grows: fit time vs eigenvalue time.

    .venv/bin/python benchmarks/bench_fit.py [--eig-max 4096] [--threads 1]

For each M, the ESD of an M×2M heavy-tailed matrix is fitted (fit_power_law, vectorised
xmin/KS search); the eigenvalue time is the float64 Gram + eigvalsh of that matrix, measured up
to --eig-max (the 16384 eigensolve takes ~10 minutes on one thread, so by default it is not run:
its time is extrapolated from the largest measured M as M³ — both the Gram product of an M×2M
matrix and the eigensolve are O(M³) — and marked "≈").
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from weightspectra.core.eigen import gram_eigenvalues  # noqa: E402
from weightspectra.fitting.powerlaw import fit_power_law  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eig-max", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(_common.machine_line(THREADS))
    rows = []
    last_eig = float("nan")
    last_m = 0
    for m in (384, 1024, 4096, 16384):
        rng = np.random.default_rng(m)
        if m <= args.eig_max:
            w = (rng.standard_t(4.0, size=(2 * m, m)) * 0.02).astype(np.float32)
            start = time.perf_counter()
            evals = gram_eigenvalues(w)
            last_eig, last_m = time.perf_counter() - start, m
            del w
        else:
            # same kind of spectrum without the eigensolve: squared singular values of a
            # heavy-tailed matrix follow a power-law tail; draw them directly
            evals = np.sort((rng.pareto(2.5, m) + 1.0) * 1e-2)
        t_fit, fit = _common.best_of(lambda evals=evals: fit_power_law(evals), 3)
        eig = last_eig * (m / last_m) ** 3
        eig_note = f"{eig:.3g}" + ("" if last_m == m else f" ≈ (M³ from M={last_m})")
        rows.append([m, t_fit, eig_note, t_fit / eig, round(fit.alpha, 3)])
        print(_common.table(["M", "fit s", "eigen s", "fit/eigen", "alpha"], rows[-1:]), flush=True)
    print()
    print(_common.table(["M", "fit s", "eigen s", "fit/eigen", "alpha"], rows))


if __name__ == "__main__":
    main()
