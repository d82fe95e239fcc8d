"""One-shot pruning of a Fashion-MNIST MLP: α-allocated vs uniform layer sparsity, 3 seeds.

Protocol, fixed before any result was seen:

* data: Fashion-MNIST from ``/usr/share/datasets/fashion-mnist`` (60,000 train, 10,000 test);
* model: MLP 784-512-256-128-10 (ReLU), Adam lr 1e-3, batch 128, 5 epochs, seeds 0, 1, 2
  (the seed sets the initialisation and the shuffling);
* analysis: ``ws.analyze(model, estimator="farms")`` of the trained weights (α and α_FARMS);
* allocation at sparsity 0.5, 0.7, 0.8, 0.9 with ``ws.allocate``: ``mapping="uniform"`` (every
  layer gets the budget), ``mapping="linear"`` on ``metric="alpha"`` and on
  ``metric="alpha_farms"``, default bounds (0, 0.99); the parameter-weighted mean sparsity equals
  the budget in every plan;
* criterion, the same for all three allocations: magnitude within each layer, and Wanda
  (|W|·‖X_j‖) with 8 training batches of 128 images (the first 1,024 of a seeded permutation)
  as calibration;
* one-shot: no fine-tuning, biases kept; test accuracy on the 10,000 test images;
* every setting with nothing excluded, and again with the classifier (module ``6``) left dense.

    python examples/allocation/fashion_mnist.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import allocate, analyze, apply_masks, machine, mean_sd, pipe_table, set_threads
from _fmnist import accuracy, fashion_tensors, mlp, train

#: allocation name -> (mapping, metric) of ``ws.allocate``
ALLOCATIONS: dict[str, tuple[str, str]] = {
    "uniform": ("uniform", "alpha"),
    "alpha": ("linear", "alpha"),
    "alpha_farms": ("linear", "alpha_farms"),
}
EXCLUDES: dict[str, tuple[str, ...]] = {"none": (), "classifier": (r"^6$",)}


def calibration_batches(x: torch.Tensor, seed: int, n: int = 8, size: int = 128) -> list[Any]:
    """``n`` training batches of ``size`` images from a seeded permutation."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1000 + seed))
    return [x[perm[i * size : (i + 1) * size]] for i in range(n)]


def pruned_accuracy(
    model: nn.Module,
    plan: Any,
    criterion: str,
    calibration: list[Any],
    x_te: torch.Tensor,
    y_te: torch.Tensor,
) -> tuple[float, float]:
    """Test accuracy of a pruned copy and the measured overall sparsity of the pruned layers."""
    clone = copy.deepcopy(model)
    if criterion == "wanda":
        masks = plan.masks(clone, method="wanda", calibration=calibration)
    else:
        masks = plan.masks(clone)
    apply_masks(clone, masks)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return accuracy(clone, x_te, y_te), 1 - kept / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--criteria", nargs="+", choices=["magnitude", "wanda"], default=["magnitude", "wanda"]
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for a figure (optional)")
    args = parser.parse_args()
    set_threads()
    print(machine())
    t0 = time.perf_counter()
    x, y, x_te, y_te = fashion_tensors()
    print(f"data: {x.shape[0]} train, {x_te.shape[0]} test ({time.perf_counter() - t0:.1f} s)\n")

    results: list[dict[str, Any]] = []
    dense: dict[int, float] = {}
    layer_rows: list[list[Any]] = []
    plan_rows: list[list[Any]] = []
    timing: list[list[Any]] = []
    for seed in args.seeds:
        model = mlp(seed)
        t_train = train(model, x, y, seed, epochs=args.epochs)
        dense[seed] = accuracy(model, x_te, y_te)
        t = time.perf_counter()
        report = analyze(model, estimator="farms")
        t_analyze = time.perf_counter() - t
        for row in report.rows():
            layer_rows.append(
                [
                    seed,
                    row["name"],
                    f"{row['N']}x{row['M']}",
                    f"{row['alpha']:.2f}",
                    f"{row['alpha_farms']:.2f}",
                ]
            )
        calib = calibration_batches(x, seed)
        t = time.perf_counter()
        for s in args.sparsities:
            for ex_name, ex in EXCLUDES.items():
                for alloc, (mapping, metric) in ALLOCATIONS.items():
                    plan = allocate(
                        report,
                        budget=s,
                        kind="sparsity",
                        metric=metric,
                        mapping=mapping,
                        exclude=ex,
                    )
                    if seed == args.seeds[0]:
                        per = "/".join(f"{plan.values[n]:.3f}" for n in plan.values)
                        plan_rows.append([s, ex_name, alloc, per])
                    for crit in args.criteria:
                        acc, measured = pruned_accuracy(model, plan, crit, calib, x_te, y_te)
                        results.append(
                            {
                                "seed": seed,
                                "sparsity": s,
                                "exclude": ex_name,
                                "criterion": crit,
                                "alloc": alloc,
                                "acc": acc,
                                "measured": measured,
                            }
                        )
        t_prune = time.perf_counter() - t
        timing.append([seed, f"{t_train:.1f}", f"{t_analyze:.2f}", f"{t_prune:.1f}"])
        print(
            f"seed {seed}: dense test accuracy {100 * dense[seed]:.2f} %, train {t_train:.1f} s, "
            f"analyze {t_analyze:.2f} s, allocate+prune+evaluate {t_prune:.1f} s",
            flush=True,
        )

    print("\nα per layer (plain and FARMS)")
    print(pipe_table(["seed", "layer", "shape", "alpha", "alpha_farms"], layer_rows, right=3))
    print(f"\nper-layer sparsity of each plan, seed {args.seeds[0]} (layers in model order)")
    print(pipe_table(["sparsity", "exclude", "allocation", "sparsity per layer"], plan_rows))

    print("\nper-seed test accuracy (%) after one-shot pruning, no fine-tuning")
    rows = []
    for r in results:
        rows.append(
            [
                r["seed"],
                f"{r['sparsity']:g}",
                r["exclude"],
                r["criterion"],
                r["alloc"],
                f"{r['measured']:.4f}",
                f"{100 * r['acc']:.2f}",
            ]
        )
    print(
        pipe_table(
            ["seed", "sparsity", "exclude", "criterion", "allocation", "measured sparsity", "acc"],
            rows,
            right=5,
        )
    )

    print(
        f"\nmean ± sd over seeds {args.seeds} (test accuracy, %); Δ = paired difference to "
        "uniform, mean ± sd [min, max]"
    )
    print(f"dense: {mean_sd(dense.values(), 100)} %")
    summary = []
    for crit in args.criteria:
        for ex_name in EXCLUDES:
            for s in args.sparsities:

                def accs(alloc: str, s: float = s, ex_name: str = ex_name, crit: str = crit) -> Any:
                    return np.array(
                        [
                            r["acc"]
                            for r in results
                            if r["sparsity"] == s
                            and r["exclude"] == ex_name
                            and r["criterion"] == crit
                            and r["alloc"] == alloc
                        ]
                    )

                u = accs("uniform")
                cells: list[Any] = [crit, ex_name, f"{s:g}", mean_sd(u, 100)]
                for alloc in ("alpha", "alpha_farms"):
                    a = accs(alloc)
                    d = 100 * (a - u)
                    cells += [
                        mean_sd(a, 100),
                        f"{mean_sd(d)} [{d.min():+.2f}, {d.max():+.2f}]",
                    ]
                summary.append(cells)
    print(
        pipe_table(
            [
                "criterion",
                "exclude",
                "sparsity",
                "uniform",
                "alpha",
                "Δ alpha",
                "alpha_farms",
                "Δ alpha_farms",
            ],
            summary,
            right=2,
        )
    )
    print("\nwall times (s)")
    print(pipe_table(["seed", "train", "analyze", "allocate+prune+evaluate"], timing, right=0))
    print(f"total: {time.perf_counter() - t0:.1f} s")

    if args.out is not None:
        plot(results, args, args.out)


def plot(results: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    """Mean accuracy vs sparsity per allocation (magnitude, nothing excluded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for alloc, marker in (("uniform", "^"), ("alpha", "o"), ("alpha_farms", "s")):
        means = [
            100
            * np.mean(
                [
                    r["acc"]
                    for r in results
                    if r["sparsity"] == s
                    and r["alloc"] == alloc
                    and r["exclude"] == "none"
                    and r["criterion"] == "magnitude"
                ]
            )
            for s in args.sparsities
        ]
        ax.plot(args.sparsities, means, marker=marker, label=alloc)
    ax.set_xlabel("sparsity (parameter-weighted mean)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST MLP, magnitude, one-shot")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "fashion_mnist_pruning.png", dpi=120)
    print(f"figure: {out / 'fashion_mnist_pruning.png'}")


if __name__ == "__main__":
    main()
