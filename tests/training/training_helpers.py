"""Helpers of the training tests: comparing run records with report rows, a training step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Columns that may differ between a run record and ``ws.analyze`` of the saved weights: the
#: step and epoch are the run's own, and ``layer_id`` counts the tensors of the source (a module
#: lists its parameters, a saved state dict also its buffers).
NOT_COMPARED = {"step", "epoch", "layer_id"}


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def assert_same_rows(record: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
    """Every column of the reference row equals the run record's (exactly: same options, same
    weights, same code)."""
    keys = (set(record) | set(reference)) - NOT_COMPARED
    diff = {
        k: (record.get(k), reference.get(k))
        for k in keys
        if not same_value(record.get(k), reference.get(k))
    }
    assert not diff, diff


def sgd_step(torch: Any, model: Any, opt: Any, gen: Any) -> float:
    x = torch.randn(16, 12, generator=gen)
    y = x[:, :3].sum(1, keepdim=True).expand(-1, 3)
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())
