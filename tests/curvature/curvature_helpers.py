"""Tiny float64 models and data with exact Hessians, shared by the curvature tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the curvature subpackage needs torch")
from torch import nn  # noqa: E402


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def tiny_cnn() -> nn.Module:
    # 4·9 + 4 + 64·3 + 3 = 235 parameters: small enough for an exact Hessian in seconds.
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(64, 3)).double()


def data_for(model_name: str, n: int = 20, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (n, 4) if model_name == "mlp" else (n, 1, 6, 6)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": tiny_mlp, "cnn": tiny_cnn}


def exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Dense Hessian of the mean cross-entropy over all parameters, by autograd.functional."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    model.eval()
    return torch.autograd.functional.hessian(f, flat).numpy()


def dense(op: object, dim: int) -> np.ndarray:
    """Materialise an operator column by column."""
    return np.column_stack([op.matvec(e) for e in np.eye(dim)])  # type: ignore[attr-defined]
