"""Curvature on clean vs adversarial (FGSM, PGD) batches, before and after adversarial training.

Two MLPs 64-128-10 on digits: one trained on clean data, one on PGD examples (ε = 0.1, pixels
in [0, 1]). For each, the loss, top Hessian eigenvalue and Hessian trace are measured in eval
mode, in float64, on clean training batches and on FGSM and PGD batches made from them.

    python examples/curvature/clean_vs_adversarial.py --out docs/curvature
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _digits import accuracy, batches, digits_tensors, mlp, set_threads, train

from weightspectra.curvature import adversarial_batches, curvature_report

CE = nn.functional.cross_entropy


def adversarial_training(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, eps: float, seed: int
) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            adv = adversarial_batches(
                model,
                CE,
                [(x[idx], y[idx])],
                method="pgd",
                eps=eps,
                steps=5,
                clamp=(0.0, 1.0),
                seed=seed * 100_000 + epoch * 100 + i,
            )
            model.train()
            opt.zero_grad()
            CE(model(adv.batches[0][0]), y[idx]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/curvature"))
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=600, help="training samples for curvature")
    args = parser.parse_args()
    set_threads()
    x, y, x_te, y_te = digits_tensors(args.seed)
    standard = train(mlp(args.seed, hidden=(128,)), x, y, args.epochs, 64, 1e-3, args.seed)
    robust = adversarial_training(
        mlp(args.seed, hidden=(128,)), x, y, args.epochs, args.eps, args.seed
    )
    data = batches(x[: args.samples], y[: args.samples], 200)
    report = None
    for label, model in (("standard", standard), ("adv-trained", robust)):
        sets = {
            "clean": data,
            "fgsm": adversarial_batches(
                model, CE, data, method="fgsm", eps=args.eps, clamp=(0.0, 1.0)
            ),
            "pgd": adversarial_batches(
                model,
                CE,
                data,
                method="pgd",
                eps=args.eps,
                steps=20,
                clamp=(0.0, 1.0),
                seed=args.seed,
            ),
        }
        test_adv = adversarial_batches(
            model,
            CE,
            [(x_te, y_te)],
            method="pgd",
            eps=args.eps,
            steps=20,
            clamp=(0.0, 1.0),
            seed=args.seed,
        )
        print(
            f"{label}: clean test accuracy {accuracy(model, x_te, y_te):.3f}, "
            f"PGD test accuracy {accuracy(model, test_adv.batches[0][0], y_te):.3f}"
        )
        rep = curvature_report(
            model,
            CE,
            sets,
            label=label,
            k=1,
            with_trace=True,
            with_density=True,
            dtype=torch.float64,
            seed=args.seed,
            trace_options={"rtol": 0.02, "max_probes": 300},
            density_options={"n_steps": 60, "n_probes": 3},
        )
        report = rep if report is None else report + rep
    assert report is not None
    print()
    print(report.table())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    report.plot(ax=ax)
    fig.tight_layout()
    fig.savefig(args.out / "clean_vs_adversarial_density.png", dpi=120)
    print(f"\nfigure: {args.out / 'clean_vs_adversarial_density.png'}")


if __name__ == "__main__":
    main()
