"""Mixed-precision bit allocation on digits: Hessian plan vs α plan vs uniform, 3 seeds.

For each seed an MLP 64-256-128-10 is trained (Adam, 60 epochs); per-layer sensitivities are
measured on the training set (Hutchinson traces for the Hessian rule, weight spectra for the
data-free α rule) and an integer programme picks widths from {2, 3, 4, 8} at 2.5, 3 and 4
average bits. Accuracy and loss are on the held-out 30 %; uniform quantization at the same
budget, 8-bit and full precision are shown beside. The rank correlation between predicted Ω and
the measured single-layer loss increase (held-out set) judges each rule.

    python examples/curvature/bit_allocation.py --out docs/curvature
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _digits import batches, digits_tensors, mlp, set_threads, train

from weightspectra.quantize import (
    damage_correlation,
    evaluate,
    measured_damage,
    plan_bits,
    sensitivity_table,
    uniform_plan,
)

CE = nn.functional.cross_entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/curvature"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=float, nargs="+", default=[2.5, 3.0, 4.0])
    args = parser.parse_args()
    set_threads()
    results: list[dict[str, object]] = []
    corr_rows = []
    for seed in range(args.seeds):
        x, y, x_te, y_te = digits_tensors(seed)
        model = train(mlp(seed), x, y, epochs=60, batch_size=64, lr=1e-3, seed=seed)
        test = [(x_te, y_te)]
        table = sensitivity_table(model, loss_fn=CE, batches=batches(x, y, 256), seed=seed)
        if seed == 0:
            print(table.table(), "\n")
        full = evaluate(model, CE, test)
        eight = evaluate(model, CE, test, 8)
        results.append(
            {
                "seed": seed,
                "budget": "fp32",
                "plan": "full precision",
                "bits": "-",
                "acc": full.accuracy,
                "loss": full.loss,
            }
        )
        results.append(
            {
                "seed": seed,
                "budget": "8",
                "plan": "uniform 8",
                "bits": "8/8/8",
                "acc": eight.accuracy,
                "loss": eight.loss,
            }
        )
        for budget in args.budgets:
            plans = {
                "hessian": plan_bits(table, avg_bits=budget, sensitivity="hessian"),
                "alpha": plan_bits(table, avg_bits=budget, sensitivity="alpha"),
                "uniform": uniform_plan(table, budget),
            }
            if budget >= 3:
                plans["hessian, widths ≥ 3"] = plan_bits(
                    table, avg_bits=budget, candidates=[3, 4, 8]
                )
            for name, plan in plans.items():
                ev = evaluate(model, CE, test, plan)
                results.append(
                    {
                        "seed": seed,
                        "budget": f"{budget:g}",
                        "plan": name,
                        "bits": "/".join(str(plan.bits[n]) for n in table.names),
                        "avg": plan.avg_bits,
                        "acc": ev.accuracy,
                        "loss": ev.loss,
                    }
                )
        damage = measured_damage(model, CE, test, table)
        for kind in ("hessian", "alpha"):
            c = damage_correlation(model, CE, test, table, kind, measured=damage)
            corr_rows.append((seed, kind, c.spearman, c.kendall))

    print("| seed | budget (avg bits) | plan | bits per layer | avg bits | test acc | test loss |")
    print("|-----:|------------------:|------|----------------|---------:|---------:|----------:|")
    for r in results:
        avg = f"{r['avg']:.3f}" if "avg" in r else "-"
        print(
            f"| {r['seed']} | {r['budget']} | {r['plan']} | {r['bits']} | {avg} | "
            f"{100 * float(r['acc']):.2f} % | {float(r['loss']):.4f} |"
        )  # type: ignore[arg-type]

    print("\nmean over seeds (accuracy points; min gain over uniform in brackets)")
    print("| budget | plan | mean test acc | mean test loss | gain vs uniform (min over seeds) |")
    print("|-------:|------|--------------:|---------------:|---------------------------------:|")
    keys = sorted({(str(r["budget"]), str(r["plan"])) for r in results}, key=lambda k: (k[0], k[1]))
    for budget, plan in keys:
        sel = [r for r in results if r["budget"] == budget and r["plan"] == plan]
        acc = np.array([float(r["acc"]) for r in sel])  # type: ignore[arg-type]
        loss = np.mean([float(r["loss"]) for r in sel])  # type: ignore[arg-type]
        uni = [r for r in results if r["budget"] == budget and r["plan"] == "uniform"]
        gain = "-"
        if uni and plan != "uniform":
            u = np.array([float(r["acc"]) for r in uni])  # type: ignore[arg-type]
            gain = f"{100 * (acc - u).mean():+.2f} ({100 * (acc - u).min():+.2f})"
        print(f"| {budget} | {plan} | {100 * acc.mean():.2f} % | {loss:.4f} | {gain} |")

    print("\nrank correlation of predicted Ω with measured single-layer loss increase (12 pairs)")
    print("| seed | rule | Spearman | Kendall |")
    print("|-----:|------|---------:|--------:|")
    for seed, kind, rho, tau in corr_rows:
        print(f"| {seed} | {kind} | {rho:.3f} | {tau:.3f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for plan, marker in (("hessian", "o"), ("alpha", "s"), ("uniform", "^")):
        sel = [r for r in results if r["plan"] == plan]
        ax.plot(
            [float(r["avg"]) for r in sel],
            [100 * float(r["acc"]) for r in sel],  # type: ignore[arg-type]
            marker,
            alpha=0.7,
            label=plan,
        )
    ax.axhline(
        100 * float(np.mean([float(r["acc"]) for r in results if r["plan"] == "full precision"])),  # type: ignore[arg-type]
        color="gray",
        ls="--",
        label="full precision",
    )
    ax.set_xlabel("average bits per weight")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "bit_allocation.png", dpi=120)
    print(f"\nfigure: {args.out / 'bit_allocation.png'}")


if __name__ == "__main__":
    main()
