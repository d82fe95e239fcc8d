"""Shared helpers of the curvature examples: the digits data and small seeded models."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def digits_tensors(seed: int, test_fraction: float = 0.3) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)`` from scikit-learn's digits, pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te)


def mlp(seed: int, hidden: tuple[int, ...] = (256, 128)) -> nn.Sequential:
    """A ReLU MLP 64 → hidden → 10 with seeded initialisation."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive mini-batches (the last one partial)."""
    return [(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
) -> nn.Module:
    """Plain mini-batch training with cross-entropy (seeded shuffling)."""
    gen = torch.Generator().manual_seed(seed)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct arg-max predictions."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def set_threads() -> None:
    """Deterministic, modest CPU use."""
    torch.set_num_threads(min(4, torch.get_num_threads()))
    np.set_printoptions(precision=4, suppress=True)
