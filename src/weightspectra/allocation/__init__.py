"""Decisions from spectra: per-layer sparsity, bit widths and LoRA ranks (docs/allocation.md).

:func:`allocate` turns a report's layer metric (α, or the aspect-ratio-corrected FARMS α) into
a per-layer plan whose weighted mean meets a budget exactly; the plan exports pruning masks
(magnitude, or Wanda with calibration batches), widths for :mod:`weightspectra.quantize` and a
PEFT LoRA ``rank_pattern``. Nothing here imports torch or peft until an exporter needs them.
"""

from __future__ import annotations

from weightspectra.allocation.engine import DEFAULT_BOUNDS, DEFAULT_SPREAD, DIRECTION, allocate
from weightspectra.allocation.export import (
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

__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_SPREAD",
    "DIRECTION",
    "AllocationError",
    "AllocationKind",
    "AllocationMapping",
    "AllocationPlan",
    "LayerAllocation",
    "allocate",
    "apply_masks",
    "lora_config",
    "magnitude_mask",
    "masks",
    "match_names",
    "offsets",
    "round_down",
    "solve_shift",
    "wanda_mask",
]
