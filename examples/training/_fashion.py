"""Shared helpers of the training examples: Fashion-MNIST and a MiniAlexNet-like model.

The data come from the Debian package ``dataset-fashion-mnist`` (``apt-get update && apt-get
install dataset-fashion-mnist``), read with numpy from its IDX files.
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(
    n_train: int, n_test: int, seed: int = 0, root: Path = FASHION
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: seeded, class-stratified subsets (``n_train``,
    ``n_test`` images), pixels standardised with the training mean and standard deviation."""
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(
            f"Fashion-MNIST not found in {root}; install it with "
            "`apt-get update && apt-get install dataset-fashion-mnist`"
        )
    x_tr = _idx(root / "train-images-idx3-ubyte.gz")
    y_tr = _idx(root / "train-labels-idx1-ubyte.gz")
    x_te = _idx(root / "t10k-images-idx3-ubyte.gz")
    y_te = _idx(root / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)

    def subset(y: np.ndarray, n: int) -> np.ndarray:
        per = n // 10
        picks = [rng.permutation(np.flatnonzero(y == c))[:per] for c in range(10)]
        return rng.permutation(np.concatenate(picks))

    i_tr, i_te = subset(y_tr, n_train), subset(y_te, n_test)
    xtr = x_tr[i_tr].astype(np.float32) / 255.0
    xte = x_te[i_te].astype(np.float32) / 255.0
    mean, std = float(xtr.mean()), float(xtr.std())

    def as_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((a - mean) / std).unsqueeze(1)

    return (
        as_x(xtr),
        torch.from_numpy(y_tr[i_tr].astype(np.int64)),
        as_x(xte),
        torch.from_numpy(y_te[i_te].astype(np.int64)),
    )


class MiniAlexNet(nn.Module):
    """Two 5×5 convolutions with batch norm and max-pool, FC1 (384), FC2 (192), a 10-way output.

    On 28×28 inputs: 28 → 24 → 12 → 8 → 4, so FC1 is ``(384, channels[1]·16)``.
    """

    def __init__(self, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(c2 * 16, 384)
        self.fc2 = nn.Linear(384, 192)
        self.fc3 = nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)
        h = torch.relu(self.fc1(h))
        h = torch.relu(self.fc2(h))
        return self.fc3(h)


def mse_one_hot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE between the outputs and one-hot labels (the published experiment's loss)."""
    return ((logits - nn.functional.one_hot(y, 10).to(logits.dtype)) ** 2).sum(1).mean()


def batches(
    x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches of one epoch (the last one partial)."""
    order = torch.randperm(x.shape[0], generator=gen)
    for i in range(0, x.shape[0], size):
        idx = order[i : i + size]
        yield x[idx], y[idx]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum())
        for i in range(0, x.shape[0], chunk)
    )
    model.train()
    return correct / x.shape[0]


@dataclass
class TrainLog:
    epochs: int = 0
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_epoch: list[float] = field(default_factory=list)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    seed: int,
    max_epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    patience: int = 3,
    min_rel_improvement: float = 0.01,
    on_step: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainLog:
    """Train with MSE on one-hot labels; early stopping on the training loss (stop when the
    epoch's mean loss has not improved by ``min_rel_improvement`` for ``patience`` epochs)."""
    gen = torch.Generator().manual_seed(seed)
    log = TrainLog()
    best, stale = math.inf, 0
    start = time.perf_counter()
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        total, count = 0.0, 0
        for xb, yb in batches(x, y, batch_size, gen):
            optimizer.zero_grad(set_to_none=True)
            loss = mse_one_hot(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * xb.shape[0]
            count += xb.shape[0]
            log.steps += 1
            if on_step is not None:
                on_step(log.steps)
        if scheduler is not None:
            scheduler.step()
        epoch_loss = total / count
        log.losses.append(epoch_loss)
        log.epochs = epoch + 1
        log.seconds_per_epoch.append(time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(epoch + 1, epoch_loss)
        if epoch_loss < best * (1 - min_rel_improvement):
            best, stale = epoch_loss, 0
        else:
            stale += 1
            if stale >= patience:
                break
    log.seconds = time.perf_counter() - start
    return log
