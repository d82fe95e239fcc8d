"""Whole processes on MiniLM: `weightspectra analyze` vs a whole peer process doing the same.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 3] [--threads 1] [--single 2048]

Wall time from process start to exit, imports and file loading included, best of --repeats,
the two sides alternating. Ours: ``weightspectra analyze MODEL -f json -o FILE`` (all layers,
metrics written as JSON). The peer: ``python -c`` that imports weightwatcher, loads the same
safetensors file into a dict of torch tensors, runs ``analyze()`` and writes the details CSV.
``--single N`` runs both on a file holding one seeded N×N float32 matrix instead of MiniLM
(written to bench-data/ once): the first-call latency of one large layer, imports counted.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

PEER = (
    "import sys, weightwatcher as ww\n"
    "from safetensors.torch import load_file\n"
    "d = ww.WeightWatcher(model=load_file(sys.argv[1])).analyze()\n"
    "d.to_csv(sys.argv[2])\n"
)


def single_layer(n: int) -> Path:
    """bench-data/single_N.safetensors: one seeded N×N float32 matrix (written once)."""
    path = _common.BENCH_DATA / f"single_{n}.safetensors"
    if not path.exists():
        import numpy as np
        from safetensors.numpy import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        save_file({"layer.weight": w}, str(path))
    return path


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=os.environ.copy())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, metavar="N", help="one N×N layer instead of MiniLM")
    args = parser.parse_args()
    print(_common.machine_line(THREADS))
    model = str(_common.minilm_path() if args.single is None else single_layer(args.single))
    print(f"model: {model}")
    exe = str(Path(sys.executable).with_name("weightspectra"))
    out = Path(tempfile.mkdtemp())
    variants = {
        "ours (default)": [exe, "analyze", model, "-f", "json", "-o", str(out / "o.json")],
        "ours --workers 2": [
            exe,
            "analyze",
            model,
            "-f",
            "json",
            "-o",
            str(out / "o2.json"),
            "--workers",
            "2",
        ],
        "ours --precision float32": [
            exe,
            "analyze",
            model,
            "-f",
            "json",
            "-o",
            str(out / "o3.json"),
            "--precision",
            "float32",
        ],
    }
    peer_cmd = [sys.executable, "-c", PEER, model, str(out / "peer.csv")]
    wall(peer_cmd)  # warm the page cache of both sides' imports
    wall(variants["ours (default)"])
    times: dict[str, float] = {name: float("inf") for name in [*variants, "peer"]}
    for _ in range(args.repeats):
        for name, cmd in variants.items():
            times[name] = min(times[name], wall(cmd))
        times["peer"] = min(times["peer"], wall(peer_cmd))
    rows = [[name, times[name], times["peer"], times["peer"] / times[name]] for name in variants]
    print(_common.table(["process", "ours s", "peer s", "peer/ours"], rows))


if __name__ == "__main__":
    main()
