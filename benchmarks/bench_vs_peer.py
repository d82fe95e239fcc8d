"""Ours vs the peer (weightwatcher 0.7.7, in its own process): MiniLM (default and fast mode)
and single LLM-shaped layers, default options on both sides, BLAS threads pinned identically.

    .venv/bin/python benchmarks/bench_vs_peer.py [--quick] [--threads 1]

Times are the best of a few ``analyze()`` calls (imports and file loading excluded on both
sides; see bench_cli.py for whole processes). ``--quick`` skips the 4096×11008 layer.
"""

from __future__ import annotations

import _common  # first: pins BLAS threads before numpy loads

THREADS = _common.pin_threads()

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import weightspectra as ws  # noqa: E402

SHAPES = [(768, 3072), (2048, 2048), (4096, 4096), (4096, 11008)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 4096×11008 layer")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (both sides)")
    args = parser.parse_args()
    print(_common.machine_line(THREADS))
    rows = []

    path = _common.minilm_path()
    ws.analyze(path)  # warm the page cache and the code paths
    ours_t, report = _common.best_of(lambda: ws.analyze(path), 5)
    peer = _common.peer_seconds({"kind": "safetensors", "path": str(path), "repeats": 3})
    ours_alpha = sorted(r.metrics["alpha"] for r in report.analysed)
    dalpha = max(abs(a - b) for a, b in zip(ours_alpha, sorted(peer["alpha"]), strict=True))
    rows.append(
        ["MiniLM (39 matrices)", ours_t, peer["seconds"], peer["seconds"] / ours_t, f"{dalpha:.1e}"]
    )
    print(
        _common.table(["case", "ours s", "peer s", "peer/ours", "max |Δα|"], rows[-1:]), flush=True
    )
    # the opt-in fast mode on the same model, in the same run; |Δα| is against our default
    fast_t, fast = _common.best_of(lambda: ws.analyze(path, precision="float32"), 5)
    fast_alpha = sorted(r.metrics["alpha"] for r in fast.analysed)
    dfast = max(abs(a - b) for a, b in zip(fast_alpha, ours_alpha, strict=True))
    rows.append(
        [
            "MiniLM, precision=float32",
            fast_t,
            peer["seconds"],
            peer["seconds"] / fast_t,
            f"{dfast:.1e} (vs f64)",
        ]
    )
    print(
        _common.table(["case", "ours s", "peer s", "peer/ours", "max |Δα|"], rows[-1:]), flush=True
    )

    shapes = SHAPES[:-1] if args.quick else SHAPES
    for seed, shape in enumerate(shapes):
        w = _common.synthetic(shape, seed)
        repeats = 3 if shape[0] * shape[1] <= 2048 * 2048 else 1
        ours_t, report = _common.best_of(lambda w=w: ws.analyze({"layer.weight": w}), repeats)
        peer = _common.peer_seconds(
            {"kind": "synthetic", "shape": list(shape), "seed": seed, "repeats": repeats}
        )
        dalpha = abs(report.analysed[0].metrics["alpha"] - peer["alpha"][0])
        rows.append(
            [
                f"{shape[0]}×{shape[1]}",
                ours_t,
                peer["seconds"],
                peer["seconds"] / ours_t,
                f"{dalpha:.1e}",
            ]
        )
        print(
            _common.table(["case", "ours s", "peer s", "peer/ours", "max |Δα|"], rows[-1:]),
            flush=True,
        )
        del w
    print()
    print(_common.table(["case", "ours s", "peer s", "peer/ours", "max |Δα|"], rows))
    _ = np  # numpy is imported here so its BLAS reads the pinned environment


if __name__ == "__main__":
    main()
