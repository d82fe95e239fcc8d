"""Resume after a kill: a run killed half-way and restarted with the same --cache finishes in about
the time of the remaining half, with the same numbers as an uninterrupted run.

    .venv/bin/python benchmarks/bench_resume.py [--layers 12] [--size 1536] [--threads 1]

A synthetic safetensors checkpoint of ``--layers`` float32 matrices ``size × size`` (heavy-tailed
random weights, written once under bench-data/, git-ignored) is analysed by whole
``weightspectra analyze --cache DIR`` processes:

1. an uninterrupted run with an empty cache (the reference time and report);
2. a run with another empty cache, killed with SIGKILL once half of the layers are in the cache
   (it never gets to clean up: whatever it was writing is left as it was);
3. the restart with that cache: its wall time next to the remaining half of (1), and its report
   next to the reference, number for number;
4. a rerun with the complete cache (everything read back, nothing computed).
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

CACHE_SUFFIX = ".wsc.npz"


def checkpoint(layers: int, size: int) -> Path:
    path = _common.BENCH_DATA / f"resume_{layers}x{size}.safetensors"
    if path.exists():
        return path
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {
        f"layers.{i}.weight": (rng.standard_t(4.0, size=(size, size)) / size).astype(np.float32)
        for i in range(layers)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def command(model: Path, cache: Path, out: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("weightspectra"))
    return [
        exe,
        "analyze",
        str(model),
        "--cache",
        str(cache),
        "-f",
        "json",
        "-o",
        str(out),
        "--no-progress",
    ]


def entries(cache: Path) -> int:
    # finished entries only: a write in progress is a hidden ".tmp-*" file until renamed
    return sum(1 for _ in cache.glob(f"[0-9a-f]*{CACHE_SUFFIX}")) if cache.exists() else 0


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=os.environ.copy())
    return time.perf_counter() - start


def kill_at(cmd: list[str], cache: Path, done: int) -> tuple[float, int]:
    """Start ``cmd``, SIGKILL it once ``done`` entries are in ``cache``; (seconds, entries)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    while entries(cache) < done and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - start, entries(cache)


def layer_values(path: Path) -> dict[str, dict[str, object]]:
    data = json.loads(path.read_text())
    return {row["name"]: row["metrics"] for row in data["layers"] if row["status"] == "ok"}


def same(a: dict[str, dict[str, object]], b: dict[str, dict[str, object]]) -> bool:
    def eq(x: object, y: object) -> bool:
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        return x == y or both_nan

    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(eq(a[k][m], b[k][m]) for m in a[k]) for k in a
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(_common.machine_line(THREADS))
    model = checkpoint(args.layers, args.size)
    work = _common.BENCH_DATA / "resume-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    full = timed(command(model, work / "cache-full", work / "full.json"))
    half = args.layers // 2
    killed_after, stored = kill_at(
        command(model, work / "cache-resume", work / "killed.json"), work / "cache-resume", half
    )
    resumed = timed(command(model, work / "cache-resume", work / "resumed.json"))
    cached = timed(command(model, work / "cache-resume", work / "cached.json"))
    reference = layer_values(work / "full.json")
    remaining = (args.layers - stored) / args.layers
    headers = ["run", "seconds", "vs uninterrupted", "layers computed", "same numbers"]
    rows = [
        ["uninterrupted", full, 1.0, args.layers, True],
        [f"killed (SIGKILL at {stored} stored)", killed_after, killed_after / full, stored, ""],
        [
            "restart with the cache",
            resumed,
            resumed / full,
            args.layers - stored,
            same(reference, layer_values(work / "resumed.json")),
        ],
        [
            "rerun, cache complete",
            cached,
            cached / full,
            0,
            same(reference, layer_values(work / "cached.json")),
        ],
    ]
    print(
        f"{args.layers} float32 matrices {args.size}×{args.size}; whole processes "
        "(imports included)"
    )
    print(_common.table(headers, rows))
    print(
        f"\nrestart / uninterrupted = {resumed / full:.3f}; the remaining share of the layers "
        f"was {remaining:.3f}, so the restart took {resumed / (remaining * full):.2f}× the "
        "time of the remaining part (the extra is process start and reading the cache)"
    )


if __name__ == "__main__":
    main()
