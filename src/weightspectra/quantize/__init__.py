"""Automatic mixed-precision bit allocation from curvature or weight spectra (PyTorch only).

Symmetric per-channel fake quantization of Linear/Conv weights, per-layer sensitivity tables
(Hessian trace per parameter × quantization error, and the data-free α rule), an integer
programme for the widths under a size (and BOPs) budget, and validation against uniform
quantization. See ``docs/curvature.md``.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (imported to fail early with an actionable message)
except ImportError as _exc:  # pragma: no cover - exercised only without torch installed
    from weightspectra.errors import MissingDependencyError

    raise MissingDependencyError("torch", "curvature", "weightspectra.quantize") from _exc

from weightspectra.quantize.fake import (
    QUANTIZABLE,
    fake_quantize,
    fake_quantized,
    quantizable_layers,
    quantization_error,
    quantize_codes,
    quantized_copy,
)
from weightspectra.quantize.plan import (
    BitPlan,
    BitProblem,
    PlanError,
    Solver,
    count_macs,
    make_problem,
    plan_bits,
    solve_exhaustive,
    solve_milp,
    uniform_plan,
)
from weightspectra.quantize.sensitivity import (
    DEFAULT_BITS,
    LayerSensitivity,
    Sensitivity,
    SensitivityTable,
    alpha_importance,
    sensitivity_table,
    weight_alpha,
)
from weightspectra.quantize.validate import (
    DamageCorrelation,
    Evaluation,
    PlanComparison,
    compare_plans,
    damage_correlation,
    evaluate,
    measured_damage,
)

__all__ = [
    "DEFAULT_BITS",
    "QUANTIZABLE",
    "BitPlan",
    "BitProblem",
    "DamageCorrelation",
    "Evaluation",
    "LayerSensitivity",
    "PlanComparison",
    "PlanError",
    "Sensitivity",
    "SensitivityTable",
    "Solver",
    "alpha_importance",
    "compare_plans",
    "count_macs",
    "damage_correlation",
    "evaluate",
    "fake_quantize",
    "fake_quantized",
    "make_problem",
    "measured_damage",
    "plan_bits",
    "quantizable_layers",
    "quantization_error",
    "quantize_codes",
    "quantized_copy",
    "sensitivity_table",
    "solve_exhaustive",
    "solve_milp",
    "uniform_plan",
    "weight_alpha",
]
