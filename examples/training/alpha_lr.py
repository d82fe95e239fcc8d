"""Per-layer learning rates from α against a tuned constant-and-decay baseline, on Fashion-MNIST.

The model and loss are those of the phases experiment (``phases_batch_size.py``): MiniAlexNet-like,
SGD with momentum 0.9, MSE on one-hot labels, batch size 32, a fixed number of epochs. The
baseline's learning rate is tuned on a validation split (images of the training set not used
for training) over ``--grid``, with its decay of 0.95 per epoch; :class:`AlphaLR` then starts
from the same rate and decay (it gets no tuning of its own) and rescales each layer's rate by
its α every epoch, within [0.5, 1.5]. Both are run with ``--seeds`` seeds; the table gives test
accuracy mean ± standard deviation and the time per epoch (AlphaLR's includes its analysis).

    python examples/training/alpha_lr.py --out docs/training
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fashion import MiniAlexNet, accuracy, fashion_mnist, train

from weightspectra.training import AlphaLR, layer_param_groups


def data(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    x, y, xt, yt = fashion_mnist(args.train + args.val, args.test, seed=0)
    return x[: args.train], y[: args.train], x[args.train :], y[args.train :], xt, yt


def run(job: tuple[str, float, int, argparse.Namespace]) -> dict[str, Any]:
    method, lr, seed, args = job
    torch.set_num_threads(1)
    x, y, xv, yv, xt, yt = data(args)
    torch.manual_seed(seed)
    model = MiniAlexNet((args.c1, args.c2))
    if method == "alpha":
        opt = torch.optim.SGD(layer_param_groups(model), lr=lr, momentum=0.9)
        sched: Any = AlphaLR(opt, model, base_lr=lr, gamma=0.95)
        epoch_hook = lambda e, loss: sched.step()  # noqa: E731
        lr_sched = None
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        lr_sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
        epoch_hook = None
    log = train(
        model, x, y, batch_size=args.batch_size, seed=seed, max_epochs=args.epochs,
        optimizer=opt, scheduler=lr_sched, patience=args.epochs + 1, on_epoch=epoch_hook,
    )  # fmt: skip
    out = {
        "method": method,
        "lr": lr,
        "seed": seed,
        "val_acc": accuracy(model, xv, yv),
        "test_acc": accuracy(model, xt, yt),
        "train_acc": accuracy(model, x, y),
        "seconds_per_epoch": log.seconds / log.epochs,
    }
    if method == "alpha":
        out["analysis_seconds_per_epoch"] = sched.seconds / log.epochs
        out["last_factors"] = sched.factors
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("alpha-lr-out"))
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--grid", type=str, default="0.0025,0.005,0.01,0.02")
    p.add_argument("--c1", type=int, default=16)
    p.add_argument("--c2", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    grid = [float(v) for v in args.grid.split(",")]
    with ProcessPoolExecutor(args.workers) as pool:
        tuning = list(pool.map(run, [("baseline", lr, 100, args) for lr in grid]))
        best = max(tuning, key=lambda r: r["val_acc"])["lr"]
        jobs = [(m, best, s, args) for m in ("baseline", "alpha") for s in range(args.seeds)]
        results = list(pool.map(run, jobs))
    wall = time.perf_counter() - start
    lines = [
        "Tuning (seed 100, validation accuracy): "
        + ", ".join(f"lr {r['lr']:g}: {100 * r['val_acc']:.1f} %" for r in tuning)
        + f"; chosen lr {best:g}",
        "",
        "| method | seeds | test accuracy (mean ± sd) | train − test | s / epoch "
        "| of which α analysis |",
        "|---|---|---|---|---|---|",
    ]
    for method, label in (
        ("baseline", "constant + decay 0.95"),
        ("alpha", "AlphaLR (α → [0.5, 1.5]×)"),
    ):
        rs = [r for r in results if r["method"] == method]
        acc = [100 * r["test_acc"] for r in rs]
        gap = [100 * (r["train_acc"] - r["test_acc"]) for r in rs]
        per = statistics.mean(r["seconds_per_epoch"] for r in rs)
        ana = statistics.mean(r.get("analysis_seconds_per_epoch", 0.0) for r in rs)
        lines.append(
            f"| {label} | {len(rs)} | {statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f} % "
            f"| {statistics.mean(gap):.2f} % | {per:.2f} | {ana:.3f} |"
        )
    text = "\n".join(lines) + f"\n\nwall time {wall:.0f} s ({args.workers} worker processes)\n"
    (args.out / "alpha_lr.md").write_text(text)
    (args.out / "alpha_lr.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "tuning": tuning,
                    "results": results, "wall_s": wall}, indent=1)
    )  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
