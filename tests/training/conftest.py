"""Fixtures of the training tests (helpers live in training_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # training_helpers


@pytest.fixture
def torch_mlp() -> Any:
    torch = pytest.importorskip("torch")

    def make(seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(12, 48),
            torch.nn.ReLU(),
            torch.nn.Linear(48, 24),
            torch.nn.ReLU(),
            torch.nn.Linear(24, 3),
        )

    return make
