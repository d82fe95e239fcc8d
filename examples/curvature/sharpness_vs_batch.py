"""Sharpness (top Hessian eigenvalue) against batch size, at matched training loss, on digits.

Each model (MLP 64-64-10, plain SGD, the same learning rate) is trained until its full
training loss first falls below ``--target``; the top Hessian eigenvalue of the training loss
is then measured in eval mode, in float64, by Lanczos. The loss is printed beside it: sharpness
is only comparable at the same loss.

    python examples/curvature/sharpness_vs_batch.py --out docs/curvature
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _digits import digits_tensors, mlp, set_threads

from weightspectra.curvature import HessianOperator, top_eigenvalues, trace

CE = nn.functional.cross_entropy


def train_to_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    lr: float,
    target: float,
    seed: int,
    max_steps: int = 60_000,
) -> int:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps = 0
    while steps < max_steps:
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0] - batch + 1, batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            CE(model(x[idx]), y[idx]).backward()
            opt.step()
            steps += 1
            with torch.no_grad():
                if CE(model(x), y).item() <= target:
                    return steps
    raise RuntimeError(f"batch {batch}: loss did not reach {target} in {max_steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/curvature"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=0.1)
    args = parser.parse_args()
    set_threads()
    x, y, _, _ = digits_tensors(0)
    rows = []
    print("| batch | seed | steps | train loss | lambda_max | trace ± se | hvps |")
    print("|------:|-----:|------:|-----------:|-----------:|-----------:|-----:|")
    for batch in args.batches:
        for seed in range(args.seeds):
            model = mlp(seed, hidden=(64,))
            steps = train_to_loss(model, x, y, batch, args.lr, args.target, seed)
            model.eval()
            H = HessianOperator(model, CE, [(x, y)], dtype=torch.float64)
            lam = top_eigenvalues(H, k=1, seed=seed).values[0]
            tr = trace(H, seed=seed, rtol=0.02, max_probes=300)
            loss = H.loss()
            rows.append((batch, seed, steps, loss, lam, tr.mean))
            print(
                f"| {batch} | {seed} | {steps} | {loss:.4f} | {lam:.3f} | "
                f"{tr.mean:.1f} ± {tr.stderr:.1f} | {H.hvp_count} |",
                flush=True,
            )
    data = np.array(rows)
    print("\n| batch | mean train loss | mean lambda_max | change vs smallest batch | mean trace |")
    print("|------:|----------------:|----------------:|-------------------------:|-----------:|")
    base = None
    means = []
    for batch in args.batches:
        sel = data[data[:, 0] == batch]
        lam = sel[:, 4].mean()
        base = lam if base is None else base
        means.append(lam)
        print(
            f"| {batch} | {sel[:, 3].mean():.4f} | {lam:.3f} | {100 * (lam / base - 1):+.1f} % | "
            f"{sel[:, 5].mean():.1f} |"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogx(data[:, 0], data[:, 4], "o", alpha=0.5, label="seeds")
    ax.semilogx(args.batches, means, "-", label="mean")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"top Hessian eigenvalue (train loss ≤ {args.target})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "sharpness_vs_batch.png", dpi=120)
    print(f"\nfigure: {args.out / 'sharpness_vs_batch.png'}")


if __name__ == "__main__":
    main()
