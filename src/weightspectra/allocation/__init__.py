"""Decisions from spectra: per-layer sparsity, bit widths and LoRA ranks (docs/allocation.md).

:func:`allocate` turns a report's layer metric (α, or the aspect-ratio-corrected FARMS α) into
a per-layer plan whose weighted mean meets a budget exactly; the plan exports pruning masks
(magnitude, or Wanda with calibration batches), widths for :mod:`weightspectra.quantize` and a
PEFT LoRA ``rank_pattern``. :func:`spectral_damage` says what quantising a model did to each
layer's spectrum and which layers to keep at higher precision. Nothing here imports torch or
peft until an exporter needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from weightspectra.allocation.engine import DEFAULT_BOUNDS, DEFAULT_SPREAD, DIRECTION, allocate
from weightspectra.allocation.export import (
    Masks,
    apply_masks,
    lora_config,
    magnitude_mask,
    masks,
    match_names,
    wanda_mask,
)
from weightspectra.allocation.plan import AllocationPlan, LayerAllocation
from weightspectra.allocation.solve import AllocationError, offsets, round_down, solve_shift
from weightspectra.enums import AllocationKind, AllocationMapping

if TYPE_CHECKING:
    from weightspectra.allocation.damage import keep_at_higher_precision, spectral_damage
    from weightspectra.allocation.damage_result import LayerDamage, SpectralDamage, UnpairedLayer

#: Loaded on first use: the damage report pairs two reports through ``distances``, which the
#: CLI's ``allocate`` command does not need at start-up.
_LAZY = {
    "LayerDamage": "weightspectra.allocation.damage_result",
    "SpectralDamage": "weightspectra.allocation.damage_result",
    "UnpairedLayer": "weightspectra.allocation.damage_result",
    "keep_at_higher_precision": "weightspectra.allocation.damage",
    "spectral_damage": "weightspectra.allocation.damage",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'weightspectra.allocation' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_SPREAD",
    "DIRECTION",
    "AllocationError",
    "AllocationKind",
    "AllocationMapping",
    "AllocationPlan",
    "LayerAllocation",
    "LayerDamage",
    "Masks",
    "SpectralDamage",
    "UnpairedLayer",
    "allocate",
    "apply_masks",
    "keep_at_higher_precision",
    "lora_config",
    "magnitude_mask",
    "masks",
    "match_names",
    "offsets",
    "round_down",
    "solve_shift",
    "spectral_damage",
    "wanda_mask",
]
