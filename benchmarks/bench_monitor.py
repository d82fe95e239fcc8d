"""Cost of the training monitor at its default cadence, on the training example of the docs.

    .venv/bin/python benchmarks/bench_monitor.py [--epochs 3] [--repeats 2] [--threads 1]

The MiniAlexNet-like model of ``examples/training`` (convolutions of 16 and 32 channels, FC1
384 × 512) is trained on 5000 Fashion-MNIST images at batch size 32 (SGD, MSE on one-hot
labels), without a monitor and with :class:`weightspectra.training.Monitor` in several settings.
The overhead is measured inside each run, so that a change of machine load between runs does
not enter it: the monitor's share of the run is the time the training loop waited in
``Monitor.step`` (``seconds_blocking``, which includes the copy of the weights) over the run's
wall time, and the cost per call is that wait per analysed step; "analysis per call" is the
analysis itself (on the worker thread in the background). Each configuration is run
``--repeats`` times, interleaved, and the run with the smallest share is kept; the wall times
of the runs with and without a monitor are shown too, but on a shared machine they move with
its load more than with the monitor.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(_common.REPO / "examples" / "training"))
from _fashion import MiniAlexNet, fashion_mnist, train  # noqa: E402

from weightspectra import Options  # noqa: E402
from weightspectra.training import Monitor, read_run  # noqa: E402
from weightspectra.training.monitor import analyse_source, snapshot  # noqa: E402

CONFIGS: dict[str, dict[str, Any] | None] = {
    "no monitor": None,
    "every 100 (default: float32, randomize)": {"every": 100},
    "every 100, background worker": {"every": 100, "background": True},
    "every 100, randomize off": {"every": 100, "options": Options(precision="float32")},
    "every 10": {"every": 10},
}


def one(
    config: dict[str, Any] | None, data: tuple[torch.Tensor, ...], epochs: int
) -> dict[str, Any]:
    x, y = data[0], data[1]
    torch.manual_seed(0)
    model = MiniAlexNet((16, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    folder = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    monitor = Monitor(folder, **config) if config is not None else None
    hook = (lambda step: monitor.step(model, step=step)) if monitor is not None else None
    start = time.perf_counter()
    log = train(model, x, y, batch_size=32, seed=0, max_epochs=epochs, optimizer=opt,
                patience=epochs + 1, on_step=hook)  # fmt: skip
    if monitor is not None:
        monitor.close()
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"seconds": seconds, "steps": log.steps}
    if monitor is not None:
        calls = len(read_run(folder).steps)
        out.update(calls=calls, blocking=monitor.seconds_blocking / max(calls, 1),
                   analysing=monitor.seconds_analysing / max(calls, 1))  # fmt: skip
    shutil.rmtree(folder)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(THREADS)
    data = fashion_mnist(5000, 1000, seed=0)
    print(_common.machine_line(THREADS) + f"; torch threads {torch.get_num_threads()}")
    best: dict[str, dict[str, Any]] = {}
    one(CONFIGS["every 10"], data, 1)  # warm-up: imports, first-call costs
    for _ in range(args.repeats):
        for name, config in CONFIGS.items():
            result = one(config, data, args.epochs)
            share = result.get("blocking", 0.0) * result.get("calls", 0) / result["seconds"]
            result["share"] = share
            if (
                name not in best
                or share < best[name]["share"]
                or (config is None and result["seconds"] < best[name]["seconds"])
            ):
                best[name] = result
    base = best["no monitor"]["seconds"]
    print(f"\n{best['no monitor']['steps']} training steps ({args.epochs} epochs), "
          f"best of {args.repeats}\n")  # fmt: skip
    print(
        "| configuration | analysed steps | run wall time (s) | monitor's share of the run "
        "| loop waits per call (s) | analysis per call (s) |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in best.items():
        calls = r.get("calls", 0)
        share = f"{100 * r['share']:.2f} %" if calls else "—"
        wait = f"{r['blocking']:.4f}" if calls else "—"
        ana = f"{r['analysing']:.4f}" if calls else "—"
        print(f"| {name} | {calls} | {r['seconds']:.1f} | {share} | {wait} | {ana} |")
    print(f"\n(run without a monitor: {base:.1f} s)")
    # The steady state, where load noise matters least: the smallest of many timings of one
    # call (copy + analysis) against the smallest time of a training step.
    torch.manual_seed(0)
    model = MiniAlexNet((16, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    log = train(model, data[0], data[1], batch_size=32, seed=0, max_epochs=args.epochs,
                optimizer=opt, patience=args.epochs + 1)  # fmt: skip
    step_s = min(log.seconds_per_epoch) / (log.steps / log.epochs)
    print(f"\nsteady state: a training step takes {1000 * step_s:.2f} ms (best epoch)\n")
    print("| options | one call: copy + analysis (s, best of 20) | share at every 100 steps |")
    print("|---|---|---|")
    for label, opts in (
        ("float32, randomize (default)", Options(precision="float32", randomize=True)),
        ("float32", Options(precision="float32")),
        ("float64, randomize", Options(randomize=True)),
    ):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            analyse_source(snapshot(model, opts), opts)
            times.append(time.perf_counter() - t0)
        call = min(times)
        print(f"| {label} | {call:.4f} | {100 * call / (call + 100 * step_s):.1f} % |")


if __name__ == "__main__":
    main()
