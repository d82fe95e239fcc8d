"""Run every benchmark behind docs/performance.md one after another and keep what they print.

    .venv/bin/python benchmarks/regenerate.py [--out docs/performance_run.md] [--only NAME ...]

Each command runs in its own process, in the order below, on a machine that should be otherwise
idle: the file records for each the command line, the CPU model, the core count, the load
average before it started and its wall time, then its output verbatim. docs/performance.md
quotes its figures from that file (the date at its top says which run). Needs the checkpoints
of make_llama_checkpoint.py --layers 2 and make_gguf_checkpoint.py --layers 1 in bench-data/.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
WS = str(Path(sys.executable).with_name("weightspectra"))

#: (name, command, extra environment): the order of the run.
COMMANDS: list[tuple[str, list[str], dict[str, str]]] = [
    (
        "bench-solvers",
        [WS, "bench-solvers", "--orders", "512", "1024", "2048", "4096"],
        {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    ),
    ("bench_floor", [PY, "benchmarks/bench_floor.py", "--quick"], {}),
    ("bench_vs_peer", [PY, "benchmarks/bench_vs_peer.py", "--quick"], {}),
    ("bench_cli", [PY, "benchmarks/bench_cli.py", "--repeats", "3"], {}),
    ("bench_cli_single", [PY, "benchmarks/bench_cli.py", "--single", "2048", "--repeats", "3"], {}),
    ("bench_parallel", [PY, "benchmarks/bench_parallel.py"], {}),
    ("bench_resume", [PY, "benchmarks/bench_resume.py"], {}),
    ("bench_llama", [PY, "benchmarks/bench_llama.py", "--floor"], {}),
    (
        "bench_llama_2threads",
        [PY, "benchmarks/bench_llama.py", "--peer", "none", "--threads", "2"],
        {},
    ),
    (
        "bench_llama_2workers",
        [PY, "benchmarks/bench_llama.py", "--peer", "none", "--workers", "2", "--threads", "2"],
        {},
    ),
    ("bench_gguf", [PY, "benchmarks/bench_gguf.py", "--only", "gguf"], {}),
    ("bench_fast_mode", [PY, "benchmarks/bench_fast_mode.py", "--llama"], {}),
    ("bench_fit", [PY, "benchmarks/bench_fit.py"], {}),
    ("bench_exact_rank", [PY, "benchmarks/bench_exact_rank.py", "--repeats", "5"], {}),
    ("bench_internals", [PY, "benchmarks/bench_internals.py"], {}),
    ("bench_farms", [PY, "benchmarks/bench_farms.py"], {}),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance_run.md")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these commands")
    args = parser.parse_args()
    chosen = [c for c in COMMANDS if args.only is None or c[0] in args.only]
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmark run behind performance.md\n",
        f"Written by `benchmarks/regenerate.py` (started {started}) on {cpu_model()}, "
        f"{os.cpu_count()} cores; each command in its own process, one after another, in this "
        "order. Nothing else of ours ran meanwhile.\n",
    ]
    for name, cmd, env in chosen:
        load = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        shown = " ".join(
            [
                *(f"{k}={v}" for k, v in env.items()),
                *(Path(c).name if c in (PY, WS) else c for c in cmd),
            ]
        )
        parts.append(
            f"## {name}\n\n    {shown}\n\nload average before: {load[0]:.2f} {load[1]:.2f} "
            f"{load[2]:.2f}; wall time {wall:.0f} s; exit code {proc.returncode}\n\n"
            "```text\n" + proc.stdout.rstrip() + "\n```\n"
        )
        if proc.returncode != 0:
            parts.append("stderr:\n\n```text\n" + proc.stderr[-4000:].rstrip() + "\n```\n")
        args.out.write_text("\n".join(parts))  # after each command: a partial run is kept
        print(f"{name}: {wall:.0f} s, exit {proc.returncode}", flush=True)


if __name__ == "__main__":
    main()
