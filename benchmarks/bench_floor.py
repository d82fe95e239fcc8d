"""Ours vs the linear-algebra floor on the same matrices, one process, BLAS threads pinned.

    .venv/bin/python benchmarks/bench_floor.py [--quick] [--threads 1]

Columns, each the best of a few runs:
  floor f64   bare numpy: W.astype(float64); G = WᵀW (syrk); eigvalsh(G)   (no checks, no fit)
  floor mkl   the same, but eigvalsh by torch's MKL where ours uses it (Gram order ≥ 1536, torch
              installed): the floor of the libraries ours actually calls
  ours f64    weightspectra.analyze(...) default options (checks, fit, every metric)
  floor f32   bare float32 Gram + eigvalsh
  ours f32    analyze(..., precision="float32")
  svd f64     numpy full SVD (singular values only), float64 (the peer's method)
MiniLM: its 39 analysed matrices, loaded once (analyze() reads them from the file itself).
A second table compares looping over Conv2D slices with numpy's batched matmul/eigvalsh.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import weightspectra as ws  # noqa: E402
from weightspectra.sources import open_model  # noqa: E402


def bare(mats: list[np.ndarray], dtype: type, solver: object = np.linalg.eigvalsh) -> None:
    for m in mats:
        a = np.asarray(m, dtype=dtype)
        if a.shape[0] < a.shape[1]:
            a = a.T
        solver(a.T @ a)  # type: ignore[operator]


def mkl_where_ours_uses_it(g: np.ndarray) -> None:
    import torch

    from weightspectra.backends import MKL_MIN_ORDER

    if g.shape[0] >= MKL_MIN_ORDER:
        torch.linalg.eigvalsh(torch.from_numpy(g))
    else:
        np.linalg.eigvalsh(g)


def svd(mats: list[np.ndarray]) -> None:
    for m in mats:
        np.linalg.svd(np.asarray(m, dtype=np.float64), compute_uv=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="skip 4096×11008 and the SVD of 4096-sized layers"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(_common.machine_line(THREADS))
    try:
        import torch

        torch.set_num_threads(THREADS)
        has_torch = True
    except ImportError:
        has_torch = False
    headers = [
        "case",
        "floor f64 s",
        "floor mkl s",
        "ours f64 s",
        "ours/floor",
        "ours/floor mkl",
        "floor f32 s",
        "ours f32 s",
        "ours f32/floor f64",
        "svd f64 s",
        "svd/ours",
    ]
    rows = []

    path = _common.minilm_path()
    plans = [r for r in ws.describe(path).layers if r.status.value == "planned"]
    keys = {r.key for r in plans}
    mats = [e.load() for e in open_model(path).entries if e.key in keys]
    cases: list[tuple[str, list[np.ndarray], object]] = [("MiniLM (39 matrices)", mats, path)]
    shapes = [(768, 3072), (2048, 2048), (4096, 4096)] + ([] if args.quick else [(4096, 11008)])
    for seed, shape in enumerate(shapes):
        w = _common.synthetic(shape, seed)
        cases.append((f"{shape[0]}×{shape[1]}", [w], {"layer.weight": w}))

    for name, mats, model in cases:
        big = mats[0].size >= 4096 * 4096
        reps = 1 if big else 3
        ws.analyze(model)  # warm-up (page cache, code paths)
        t_floor, _ = _common.best_of(lambda m=mats: bare(m, np.float64), reps)
        t_mkl = float("nan")
        if has_torch:
            t_mkl, _ = _common.best_of(
                lambda m=mats: bare(m, np.float64, mkl_where_ours_uses_it), reps
            )
        t_ours, _ = _common.best_of(lambda m=model: ws.analyze(m), reps)
        t_floor32, _ = _common.best_of(lambda m=mats: bare(m, np.float32), reps)
        t_ours32, _ = _common.best_of(lambda m=model: ws.analyze(m, precision="float32"), reps)
        if big and args.quick:
            t_svd = float("nan")
        else:
            t_svd, _ = _common.best_of(lambda m=mats: svd(m), 1)
        rows.append(
            [
                name,
                t_floor,
                t_mkl,
                t_ours,
                t_ours / t_floor,
                t_ours / t_mkl,
                t_floor32,
                t_ours32,
                t_ours32 / t_floor,
                t_svd,
                t_svd / t_ours,
            ]
        )
        print(_common.table(headers, rows[-1:]), flush=True)
    print()
    print(_common.table(headers, rows))

    print("\nConv2D slices (k, rows, cols): numpy loop over slices vs batched matmul + eigvalsh")
    conv_rows = []
    rng = np.random.default_rng(0)
    for shape in [(9, 64, 64), (9, 256, 256), (9, 512, 512), (25, 64, 32)]:
        stack = rng.standard_normal(shape).astype(np.float32)

        def loop(stack: np.ndarray = stack) -> None:
            for m in stack:
                a = m.astype(np.float64)
                np.linalg.eigvalsh(a.T @ a)

        def batched(stack: np.ndarray = stack) -> None:
            a = stack.astype(np.float64)
            np.linalg.eigvalsh(np.matmul(a.transpose(0, 2, 1), a))

        t_loop, _ = _common.best_of(loop, 5)
        t_batch, _ = _common.best_of(batched, 5)
        conv_rows.append([str(shape), t_loop, t_batch, t_batch / t_loop])
    print(_common.table(["stack", "loop s", "batched s", "batched/loop"], conv_rows))

    if not has_torch:
        return
    print(
        "\nEigensolver alone on a float64 Gram matrix: numpy (OpenBLAS LAPACK) vs torch "
        "(its bundled LAPACK) on the CPU, same thread count"
    )
    solver_rows = []
    for m in (1024, 1536, 2048, 4096):
        a = _common.synthetic((m, m), m).astype(np.float64)
        g = a.T @ a
        t_np, e_np = _common.best_of(lambda g=g: np.linalg.eigvalsh(g), 2)
        tg = torch.from_numpy(g)
        t_t, e_t = _common.best_of(lambda tg=tg: torch.linalg.eigvalsh(tg).numpy(), 2)
        rel = float(np.abs(e_np - e_t).max() / e_np[-1])
        solver_rows.append([f"{m}×{m}", t_np, t_t, t_np / t_t, f"{rel:.1e}"])
    print(_common.table(["Gram", "numpy s", "torch s", "numpy/torch", "max rel diff"], solver_rows))


if __name__ == "__main__":
    main()
