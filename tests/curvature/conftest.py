"""Fixtures of the curvature tests (helpers live in curvature_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # curvature_helpers

torch = pytest.importorskip("torch", reason="the curvature subpackage needs torch")
from curvature_helpers import MODELS, data_for, exact_hessian, tiny_mlp  # noqa: E402
from torch import nn  # noqa: E402

_EXACT: dict[str, np.ndarray] = {}


@pytest.fixture(params=["mlp", "cnn"])
def model_and_data(
    request: pytest.FixtureRequest,
) -> tuple[str, nn.Module, torch.Tensor, torch.Tensor, np.ndarray]:
    """A tiny model, its data, and its exact Hessian (computed once per session)."""
    name = request.param
    x, y = data_for(name)
    model = MODELS[name]()
    if name not in _EXACT:
        _EXACT[name] = exact_hessian(model, x, y)
    return name, model, x, y, _EXACT[name]


@pytest.fixture(scope="module")
def mlp_exact() -> tuple[nn.Module, torch.Tensor, torch.Tensor, np.ndarray]:
    model = tiny_mlp()
    x, y = data_for("mlp")
    return model, x, y, exact_hessian(model, x, y)
