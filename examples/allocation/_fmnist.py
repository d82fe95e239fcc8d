"""Fashion-MNIST helpers of the allocation examples: the idx files, a seeded MLP, training.

The data are read from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/*-ubyte.gz``, the idx format, gzip) with numpy only.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path("/usr/share/datasets/fashion-mnist")
HIDDEN: tuple[int, ...] = (512, 256, 128)


def read_idx(path: Path) -> np.ndarray:
    """One idx file (gzip): magic ``0 0 dtype ndim``, big-endian int32 sizes, then the data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data, header says {tuple(dims)}")
    return data.reshape(tuple(dims))


def fashion_tensors(root: Path = DATA) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: 60,000 / 10,000 images as 784 floats in [0, 1]."""

    def images(name: str) -> torch.Tensor:
        a = read_idx(root / f"{name}-images-idx3-ubyte.gz")
        return torch.tensor(a.reshape(a.shape[0], -1), dtype=torch.float32) / 255.0

    def labels(name: str) -> torch.Tensor:
        return torch.tensor(read_idx(root / f"{name}-labels-idx1-ubyte.gz"), dtype=torch.int64)

    return images("train"), labels("train"), images("t10k"), labels("t10k")


def mlp(seed: int, hidden: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    """A ReLU MLP 784 → hidden → 10 with seeded initialisation (Linear modules 0, 2, 4, 6)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> float:
    """Adam, cross-entropy, seeded shuffling; the model is left in eval mode. Returns seconds."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return time.perf_counter() - start


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 5000) -> float:
    """Fraction of correct arg-max predictions."""
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            correct += int((model(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum())
    return correct / x.shape[0]
