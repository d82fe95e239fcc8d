"""The torch engine on a GPU vs the CPU default, on the same matrices, side by side in one run.

    .venv/bin/python benchmarks/bench_gpu.py                      # on a machine with CUDA
    .venv/bin/python benchmarks/bench_gpu.py --engine-device cpu --scale 8   # smoke run, no GPU

Each case is one Llama-7B-shaped layer (q/k/v/o 4096×4096, gate/up 11008×4096, down 4096×11008,
embed/head 32000×4096), random heavy-tailed float32 weights; "bf16" rows hand the same values
over as bfloat16, as the safetensors reader does for a bf16 checkpoint. Both sides run the whole
per-tensor pipeline (``analysis.analyze_tensor``: Gram matrix, eigenvalues, power-law fit, every
metric): the CPU side with the default backend (numpy + MKL, ``--threads`` BLAS threads, default
all cores), the other with the torch engine on ``--engine-device``, in float64 (the default
precision) and float32. Best of ``--repeats`` after one warm-up (CUDA start, cuSOLVER handles).

Printed per case: both times, CPU/device, |Δα| and the largest eigenvalue difference relative
to λ_max; then the full 7B model projected from the layer times:
32 × (4·q + 2·gate + down) + embed + head. ``--scale k`` divides every dimension by k.
Exits 0 without measuring anything if the engine device is CUDA and torch sees none.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads(["--threads", str(_common.cores())])

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from weightspectra.analysis import analyze_tensor, plan  # noqa: E402
from weightspectra.backends import Backend, resolve_backend  # noqa: E402
from weightspectra.options import Device, Options  # noqa: E402
from weightspectra.sources import open_model  # noqa: E402

SHAPES = {
    "q (4096×4096)": (4096, 4096),
    "gate (11008×4096)": (11008, 4096),
    "down (4096×11008)": (4096, 11008),
    "embed/head (32000×4096)": (32000, 4096),
}


def run_layer(matrix: np.ndarray, options: Options, backend: Backend) -> tuple[float, np.ndarray]:
    (tp,) = plan(open_model({"layer.weight": matrix}), options)
    (row,) = analyze_tensor(tp, options, backend=backend)
    if not row.ok:
        raise RuntimeError(f"{backend.name}: {row.reason}")
    assert row.evals is not None
    return float(row.metrics["alpha"]), row.evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine-device", default="cuda")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=_common.cores())
    parser.add_argument("--no-bf16", action="store_true")
    args = parser.parse_args()
    import torch

    from weightspectra.backends import torch_backend

    if args.engine_device.startswith("cuda") and not torch_backend.cuda_available():
        print(
            "torch sees no CUDA device: nothing to measure (use --engine-device cpu for a "
            "smoke run of this script)"
        )
        return
    print(_common.machine_line(THREADS))
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    device = Backend(
        f"torch-{args.engine_device}",
        torch_backend.make_engine(args.engine_device),
        on_host=args.engine_device == "cpu",
    )
    cpu = resolve_backend(Device.CPU)
    headers = ["case", "precision", "cpu s", "device s", "cpu/device", "|Δα|", "max Δλ/λmax"]
    rows = []
    times: dict[tuple[str, str], float] = {}
    warm = _common.synthetic((256, 128), 0)
    for precision in ("float64", "float32"):
        run_layer(warm, Options(precision=precision), device)  # CUDA context, solver handles
    for seed, (name, shape) in enumerate(SHAPES.items()):
        shape = (shape[0] // args.scale, shape[1] // args.scale)
        w = _common.synthetic(shape, seed)
        inputs = [("f32", w)]
        if not args.no_bf16:
            import ml_dtypes

            inputs.append(("bf16", w.astype(ml_dtypes.bfloat16)))
        for kind, matrix in inputs:
            for precision in ("float64", "float32"):
                options = Options(precision=precision)
                t_cpu, (a_cpu, ev_cpu) = _common.best_of(
                    lambda m=matrix, o=options: run_layer(m, o, cpu), args.repeats
                )
                t_dev, (a_dev, ev_dev) = _common.best_of(
                    lambda m=matrix, o=options: run_layer(m, o, device), args.repeats
                )
                diff = float(np.abs(ev_cpu - ev_dev).max() / ev_cpu[-1])
                label = f"{name.split()[0]} ({shape[0]}×{shape[1]}) {kind}"
                rows.append(
                    [
                        label,
                        precision,
                        t_cpu,
                        t_dev,
                        t_cpu / t_dev,
                        f"{abs(a_cpu - a_dev):.1e}",
                        f"{diff:.1e}",
                    ]
                )
                times[(name, kind + precision)] = t_dev
                print(_common.table(headers, rows[-1:]), flush=True)
    print()
    print(_common.table(headers, rows))
    if torch.cuda.is_available() and args.engine_device.startswith("cuda"):
        print(f"\npeak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(
        "\nLlama-7B projected on the device, 32 × (4·q + 2·gate + down) + embed + head "
        f"(layers {args.scale}× smaller per side if --scale > 1):"
    )
    names = list(SHAPES)
    proj_rows = []
    for kind in ["f32"] + ([] if args.no_bf16 else ["bf16"]):
        for precision in ("float64", "float32"):
            t = {n: times[(n, kind + precision)] for n in names}
            total = 32 * (4 * t[names[0]] + 2 * t[names[1]] + t[names[2]]) + 2 * t[names[3]]
            proj_rows.append([kind, precision, total / 60])
    print(_common.table(["input", "precision", "projected minutes"], proj_rows))


if __name__ == "__main__":
    sys.exit(main())
