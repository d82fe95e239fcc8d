"""Mixed-precision bits: the α plan of ``ws.allocate`` vs the Hessian plan vs uniform, 3 seeds.

Protocol, fixed before any result was seen:

* models: the digits MLP 64-256-128-10 of ``examples/curvature`` (Adam lr 1e-3, batch 64,
  60 epochs, 70/30 split by seed; its ``_digits.py`` is reused) and the Fashion-MNIST MLP
  784-512-256-128-10 of ``fashion_mnist.py`` (Adam lr 1e-3, batch 128, 5 epochs); seeds 0, 1, 2;
* quantizer: :mod:`weightspectra.quantize` (symmetric, per output channel, biases in full
  precision); test accuracy on the held-out 30 % (digits) or the 10,000 test images (Fashion);
* calibration data (for the Hessian and the measured Ω only): the whole digits training set;
  4,096 Fashion training images (a seeded permutation), batches of 256;
* budgets 2.5, 3 and 4 average bits per weight over the Linear weights; plans:
  - ``uniform``: the widest uniform width that fits (``quantize.uniform_plan``; 2 bits at 2.5);
  - ``alpha (allocate)``, ``alpha_farms (allocate)``: ``ws.allocate(report, budget,
    kind="bits", bounds=(2, 8))`` on ``ws.analyze(model, estimator="farms")``, its defaults
    otherwise (linear mapping, spread 2 bits, integers rounded down to stay within the budget);
  - ``alpha (allocate), head pinned 8 [post hoc]``: added after the first results showed the
    α plans giving the 10-class head 2 bits: the same call with ``pin={head: 8}`` (the head
    counts in the budget);
  - ``alpha (quantize ILP)``, for reference: the older data-free α rule of
    ``quantize.plan_bits(sensitivity="alpha")`` (α importance × relative quantisation error,
    integer programme over widths 2, 3, 4, 8);
  - ``hessian``: ``quantize.plan_bits`` on the HAWQ-V2 Ω of ``sensitivity_table`` (widths
    2, 3, 4, 8), as in ``examples/curvature/bit_allocation.py``;
  - fix 1, ``hessian, widths ≥ 3``: the same with ``candidates=[3, 4, 8]``;
  - fix 2, ``measured Ω``: the same integer programme with Ω replaced by the measured loss
    increase of quantising each layer alone (``quantize.measured_damage``) on the calibration
    batches (training data, never the test set).

    python examples/allocation/bits.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "curvature"))
from _common import allocate, analyze, machine, mean_sd, pipe_table, set_threads
from _digits import batches, digits_tensors
from _digits import mlp as digits_mlp
from _digits import train as digits_train
from _fmnist import fashion_tensors
from _fmnist import mlp as fashion_mlp
from _fmnist import train as fashion_train

from weightspectra.quantize import (
    DEFAULT_BITS,
    Evaluation,
    SensitivityTable,
    evaluate,
    make_problem,
    measured_damage,
    plan_bits,
    sensitivity_table,
    solve_milp,
    uniform_plan,
)

CE = nn.functional.cross_entropy
PLANS = (
    "uniform",
    "alpha (allocate)",
    "alpha_farms (allocate)",
    "alpha (allocate), head pinned 8 [post hoc]",
    "alpha (quantize ILP)",
    "hessian",
    "hessian, widths ≥ 3",
    "measured Ω",
)
# ``hessian, widths ≥ 3`` exists only at budgets ≥ 3 (nothing of widths ≥ 3 fits below).


def build(name: str, seed: int, fashion: tuple[torch.Tensor, ...] | None) -> dict[str, Any]:
    """Train one model; return it with its calibration and test batches and the train time."""
    start = time.perf_counter()
    if name == "digits":
        x, y, x_te, y_te = digits_tensors(seed)
        model = digits_train(digits_mlp(seed), x, y, epochs=60, batch_size=64, lr=1e-3, seed=seed)
        calib = batches(x, y, 256)
    else:
        if fashion is None:
            raise ValueError("the Fashion-MNIST model needs the data: pass fashion_tensors()")
        x, y, x_te, y_te = fashion
        model = fashion_mlp(seed)
        fashion_train(model, x, y, seed, epochs=5)
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(2000 + seed))
        idx = perm[:4096]
        calib = batches(x[idx], y[idx], 256)
    return {
        "model": model,
        "calib": calib,
        "test": [(x_te, y_te)],
        "train_s": time.perf_counter() - start,
    }


def measured_plan(omega: np.ndarray, table: SensitivityTable, budget: float) -> dict[str, int]:
    """The integer programme of ``plan_bits`` with a given Ω (layers × table widths)."""
    problem = make_problem(omega, table.sizes, list(table.bits), budget * float(table.sizes.sum()))
    pick = solve_milp(problem)
    return {n: int(table.bits[k]) for n, k in zip(table.names, pick, strict=True)}


def accuracy_of(ev: Evaluation) -> float:
    """The accuracy of a classifier's evaluation (``evaluate`` gives None for other tasks)."""
    if ev.accuracy is None:
        raise ValueError("the evaluation has no accuracy: these models are classifiers")
    return ev.accuracy


def avg_bits(bits: dict[str, int], table: SensitivityTable) -> float:
    """Average width over the table's weights."""
    sizes = dict(zip(table.names, table.sizes, strict=True))
    return float(sum(sizes[n] * b for n, b in bits.items()) / float(table.sizes.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[2.5, 3.0, 4.0])
    parser.add_argument(
        "--models", nargs="+", choices=["digits", "fashion"], default=["digits", "fashion"]
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for a figure (optional)")
    args = parser.parse_args()
    set_threads()
    print(machine())
    t0 = time.perf_counter()
    fashion = fashion_tensors() if "fashion" in args.models else None
    results: list[dict[str, Any]] = []
    timing: list[list[Any]] = []
    damage_rows: list[list[Any]] = []
    for name in args.models:
        for seed in args.seeds:
            m = build(name, seed, fashion)
            model = m["model"]
            t = time.perf_counter()
            report = analyze(model, estimator="farms")
            t_an = time.perf_counter() - t
            t = time.perf_counter()
            table = sensitivity_table(model, loss_fn=CE, batches=m["calib"], seed=seed)
            t_hess = time.perf_counter() - t
            t = time.perf_counter()
            damage = measured_damage(model, CE, m["calib"], table)
            t_meas = time.perf_counter() - t
            if seed == args.seeds[0]:
                omega_h = table.omega("hessian")
                alphas = {r["name"]: r for r in report.rows()}
                for i, layer in enumerate(table.names):
                    damage_rows.append(
                        [
                            name,
                            layer,
                            "x".join(map(str, table.layers[i].shape)),
                            f"{alphas[layer]['alpha']:.2f}",
                            f"{alphas[layer]['alpha_farms']:.2f}",
                            *(f"{v:.3g}" for v in omega_h[i]),
                            *(f"{v:.3g}" for v in damage[i]),
                        ]
                    )
            head = table.names[-1]  # the classifier
            dense = evaluate(model, CE, m["test"])
            results.append(
                {
                    "model": name,
                    "seed": seed,
                    "budget": "fp32",
                    "plan": "full precision",
                    "bits": "-",
                    "avg": 32.0,
                    "acc": accuracy_of(dense),
                    "loss": dense.loss,
                }
            )
            for budget in args.budgets:
                plans: dict[str, dict[str, int]] = {
                    "uniform": uniform_plan(table, budget).bits,
                    "alpha (allocate)": allocate(
                        report, budget=budget, kind="bits", bounds=(2, 8)
                    ).bits(),
                    "alpha_farms (allocate)": allocate(
                        report, budget=budget, kind="bits", bounds=(2, 8), metric="alpha_farms"
                    ).bits(),
                    "alpha (allocate), head pinned 8 [post hoc]": allocate(
                        report, budget=budget, kind="bits", bounds=(2, 8), pin={head: 8}
                    ).bits(),
                    "alpha (quantize ILP)": plan_bits(
                        table, avg_bits=budget, sensitivity="alpha"
                    ).bits,
                    "hessian": plan_bits(table, avg_bits=budget, sensitivity="hessian").bits,
                    "measured Ω": measured_plan(damage, table, budget),
                }
                if budget >= 3:  # below 3 bits no assignment of widths ≥ 3 fits
                    plans["hessian, widths ≥ 3"] = plan_bits(
                        table, avg_bits=budget, candidates=[3, 4, 8]
                    ).bits
                for plan, bits in plans.items():
                    ev = evaluate(model, CE, m["test"], bits)
                    results.append(
                        {
                            "model": name,
                            "seed": seed,
                            "budget": f"{budget:g}",
                            "plan": plan,
                            "bits": "/".join(str(bits[n]) for n in table.names),
                            "avg": avg_bits(bits, table),
                            "acc": accuracy_of(ev),
                            "loss": ev.loss,
                        }
                    )
            timing.append(
                [
                    name,
                    seed,
                    f"{m['train_s']:.1f}",
                    f"{t_an:.2f}",
                    f"{t_hess:.1f}",
                    table.trace_probes,
                    f"{t_meas:.2f}",
                ]
            )
            print(
                f"{name} seed {seed}: fp32 test acc {100 * accuracy_of(dense):.2f} %, train "
                f"{m['train_s']:.1f} s, analyze {t_an:.2f} s, Hessian table {t_hess:.1f} s "
                f"({table.trace_probes} probes), measured Ω {t_meas:.2f} s",
                flush=True,
            )

    widths = DEFAULT_BITS  # the widths of every sensitivity table here
    print(
        f"\nsensitivities of seed {args.seeds[0]}: HAWQ-V2 Ω (predicted) and the measured loss "
        "increase of quantising that layer alone (calibration batches)"
    )
    print(
        pipe_table(
            ["model", "layer", "shape", "alpha", "alpha_farms"]
            + [f"Ω@{b}" for b in widths]
            + [f"Δloss@{b}" for b in widths],
            damage_rows,
            right=3,
        )
    )
    print("\nper-seed results")
    print(
        pipe_table(
            [
                "model",
                "seed",
                "budget",
                "plan",
                "bits per layer",
                "avg bits",
                "test acc %",
                "test loss",
            ],
            [
                [
                    r["model"],
                    r["seed"],
                    r["budget"],
                    r["plan"],
                    r["bits"],
                    f"{r['avg']:.3f}",
                    f"{100 * r['acc']:.2f}",
                    f"{r['loss']:.4f}",
                ]
                for r in results
            ],
            right=5,
        )
    )
    print(
        f"\nmean ± sd over seeds {args.seeds} (test accuracy, %); Δ = paired difference to "
        "uniform at the same budget, mean [min, max]"
    )
    summary = []
    for name in args.models:
        fp = [r["acc"] for r in results if r["model"] == name and r["plan"] == "full precision"]
        summary.append([name, "fp32", "full precision", "32", mean_sd(fp, 100), "-"])
        for budget in (f"{b:g}" for b in args.budgets):
            uni = np.array(
                [
                    r["acc"]
                    for r in results
                    if r["model"] == name and r["budget"] == budget and r["plan"] == "uniform"
                ]
            )
            for plan in PLANS:
                sel = [
                    r
                    for r in results
                    if r["model"] == name and r["budget"] == budget and r["plan"] == plan
                ]
                if not sel:
                    continue
                acc = np.array([r["acc"] for r in sel])
                d = 100 * (acc - uni)
                summary.append(
                    [
                        name,
                        budget,
                        plan,
                        f"{np.mean([r['avg'] for r in sel]):.3f}",
                        mean_sd(acc, 100),
                        "-"
                        if plan == "uniform"
                        else f"{d.mean():+.2f} [{d.min():+.2f}, {d.max():+.2f}]",
                    ]
                )
    print(
        pipe_table(
            ["model", "budget", "plan", "mean avg bits", "test acc %", "Δ vs uniform"],
            summary,
            right=3,
        )
    )
    print("\nwall times (s)")
    print(
        pipe_table(
            ["model", "seed", "train", "analyze", "Hessian table", "probes", "measured Ω"],
            timing,
            right=2,
        )
    )
    print(f"total: {time.perf_counter() - t0:.1f} s")
    if args.out is not None:
        plot(results, args, args.out)


def plot(results: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    """Test accuracy vs average bits, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.models), figsize=(5.5 * len(args.models), 3.8))
    for ax, name in zip(np.atleast_1d(axes), args.models, strict=True):
        for plan in PLANS:
            sel = [r for r in results if r["model"] == name and r["plan"] == plan]
            ax.plot(
                [r["avg"] for r in sel], [100 * r["acc"] for r in sel], "o", alpha=0.6, label=plan
            )
        ax.set_title(name)
        ax.set_xlabel("average bits per weight")
        ax.set_ylabel("test accuracy (%)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "bits.png", dpi=120)
    print(f"figure: {out / 'bits.png'}")


if __name__ == "__main__":
    main()
