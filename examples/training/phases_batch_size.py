"""The 5+1 phases of training by batch size, on Fashion-MNIST (metrics.md §6).

A MiniAlexNet-like model (two 5×5 convolutions with batch norm and max-pool, FC1 384, FC2 192,
10-way output; SGD, momentum 0.9, learning rate 0.01 decayed by 0.95 per epoch, MSE on one-hot
labels, early stopping on the training loss) is trained at each batch size with several seeds.
FC1's eigenvalues are pooled over the seeds of a batch size and the pooled ESD goes through the
same metrics as any layer (``weightspectra.metrics.spectrum.spectrum_metrics`` with the default
``Options``: the phase thresholds are the defaults used everywhere else). Writes
``phases.json``, ``phases.md`` (the table) and ``phases.png`` (FC1's ESD per batch size with the
fitted MP density) to ``--out``.

    python examples/training/phases_batch_size.py --out phases-out --seeds 2

Each trained run is kept in ``--out``/runs (FC1's weights, ~4 MB) and reused by a rerun.

Defaults (a CPU run of minutes, not the published CIFAR-10 run of hours): 5000 training and 2000
test images, 3 seeds, at most 20 epochs, convolutions of 16 and 32 channels (FC1 is 384 × 512).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fashion import MiniAlexNet, accuracy, fashion_mnist, train

import weightspectra as ws
from weightspectra.metrics.spectrum import spectrum_metrics

BATCH_SIZES = (2, 4, 8, 16, 32, 50, 100, 150, 250, 500, 1000)


def run_one(job: tuple[int, int, argparse.Namespace]) -> dict[str, Any]:
    """Train one (batch size, seed); the result is saved in ``out/runs/`` and reused by a rerun
    (an interrupted experiment resumes where it stopped)."""
    batch_size, seed, args = job
    saved = args.out / "runs" / f"bs{batch_size}-seed{seed}.json"
    if saved.is_file():
        result: dict[str, Any] = json.loads(saved.read_text())
        return result
    torch.set_num_threads(1)
    x, y, xt, yt = fashion_mnist(args.train, args.test, seed=0)
    torch.manual_seed(seed)
    model = MiniAlexNet((args.c1, args.c2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    log = train(
        model, x, y, batch_size=batch_size, seed=seed, max_epochs=args.epochs,
        optimizer=opt, scheduler=sched,
    )  # fmt: skip
    fc1 = model.fc1.weight.detach().numpy().astype(np.float64)
    result = {
        "batch_size": batch_size,
        "seed": seed,
        "epochs": log.epochs,
        "steps": log.steps,
        "final_loss": log.losses[-1],
        "train_acc": accuracy(model, x, y),
        "test_acc": accuracy(model, xt, yt),
        "seconds": log.seconds,
        "fc1": fc1.tolist(),
    }
    saved.parent.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(saved)
    return result


def pooled_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed rows from ws.analyze, and the metrics of the ESD pooled over the seeds."""
    options = ws.Options()
    per_seed, evals = [], []
    for run in runs:
        report = ws.analyze({"fc1.weight": np.array(run["fc1"])}, options)
        row = report.analysed[0]
        per_seed.append(row)
        evals.append(row.evals)
    pooled = np.sort(np.concatenate(evals))
    N, M = per_seed[0].N, per_seed[0].M
    m = spectrum_metrics(pooled, N, M, options)
    test = np.array([r["test_acc"] for r in runs])
    gap = np.array([r["train_acc"] - r["test_acc"] for r in runs])
    return {
        "batch_size": runs[0]["batch_size"],
        "phase": m["phase"],
        "phase_reason": m["phase_reason"],
        "spike_share": m["spike_share"],
        "sigma_mp": m["sigma_mp"],
        "bulk_max": m["bulk_max"],
        "alpha": m["alpha"],
        "stable_rank": m["stable_rank"],
        "mp_softrank": m["mp_softrank"],
        "seed_phases": [r.metrics["phase"] for r in per_seed],
        "seed_alphas": [r.metrics["alpha"] for r in per_seed],
        "test_acc": float(test.mean()),
        "test_acc_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        "gap": float(gap.mean()),
        "epochs": [r["epochs"] for r in runs],
        "steps": [r["steps"] for r in runs],
        "seconds": float(sum(r["seconds"] for r in runs)),
        "N": N,
        "M": M,
        "pooled_evals": pooled.tolist(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [
        "| batch size | phase (pooled) | phases per seed | beyond the bulk | σ_MP | α "
        "| stable rank | MP soft rank | test acc | train − test | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['phase']} | {', '.join(map(str, r['seed_phases']))} "
            f"| {100 * r['spike_share']:.1f} % | {f(r['sigma_mp'], '.4f')} "
            f"| {f(r['alpha'], '.2f')} "
            f"| {r['stable_rank']:.1f} | {f(r['mp_softrank'], '.3f')} "
            f"| {100 * r['test_acc']:.1f} ± {100 * r['test_acc_std']:.1f} % "
            f"| {100 * r['gap']:.1f} % | {', '.join(map(str, r['epochs']))} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weightspectra.fitting.mp import mp_density_from_edge

    cols = 4
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows))
    for ax, r in zip(axes.flat, rows, strict=False):
        ev = np.array(r["pooled_evals"])
        ax.hist(ev, bins=80, density=True, color="#7a9cc6", alpha=0.8)
        if r["bulk_max"] is not None:
            top = max(min(ev.max(), 1.6 * r["bulk_max"]), r["bulk_max"])
            x = np.linspace(ev.min(), top, 400)
            ax.plot(x, mp_density_from_edge(x, r["bulk_max"], r["N"] / r["M"]), "r-", lw=1)
            ax.axvline(r["bulk_max"], color="r", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(
            f"bs {r['batch_size']}: {r['phase']}, {100 * r['spike_share']:.1f} %", fontsize=9
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle("FC1 ESD pooled over seeds, fitted MP density (red), λ₊ (dotted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("phases-out"))
    p.add_argument("--train", type=int, default=5000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--c1", type=int, default=16)
    p.add_argument("--c2", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-sizes", type=str, default=",".join(map(str, BATCH_SIZES)))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Load the analysis and plotting code now, before the long training part.
    import matplotlib.pyplot  # noqa: F401

    from weightspectra.analysis import analyze  # noqa: F401
    from weightspectra.fitting.mp import mp_density_from_edge  # noqa: F401

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    start = time.perf_counter()
    jobs = [(bs, seed, args) for bs in sizes for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run_one, jobs))
    by_size: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_size.setdefault(run["batch_size"], []).append(run)
    rows = [pooled_row(by_size[bs]) for bs in sizes]
    wall = time.perf_counter() - start
    (args.out / "phases.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": wall,
             "rows": [{k: v for k, v in r.items() if k != "pooled_evals"} for r in rows]},
            indent=1,
        )
    )  # fmt: skip
    text = table(rows)
    (args.out / "phases.md").write_text(text + f"\nwall time {wall:.0f} s\n")
    figure(rows, args.out / "phases.png")
    print(text)
    print(f"wall time {wall:.0f} s ({args.workers} worker processes)")


if __name__ == "__main__":
    main()
