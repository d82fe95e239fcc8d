"""Curvature of the loss landscape on clean and adversarial data (PyTorch only).

Exact Hessian-vector products over a declared data set (:class:`HessianOperator`), Lanczos top
eigenvalues, Hutchinson/Hutch++ traces with a standard-error stopping rule, stochastic Lanczos
quadrature densities, FGSM/PGD adversarial batches and a curvature report. See
``docs/curvature.md``.

Importing this subpackage imports torch; ``import weightspectra`` alone never does.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (imported to fail early with an actionable message)
except ImportError as _exc:  # pragma: no cover - exercised only without torch installed
    from weightspectra.errors import MissingDependencyError

    raise MissingDependencyError("torch", "curvature", "weightspectra.curvature") from _exc

from weightspectra.curvature.adversarial import (
    AdversarialBatches,
    AttackMethod,
    Norm,
    adversarial_batches,
)
from weightspectra.curvature.operator import (
    Engine,
    HessianOperator,
    InputHessianOperator,
    Mode,
    select_parameters,
)
from weightspectra.curvature.report import CurvatureRecord, CurvatureReport, curvature_report
from weightspectra.curvature.solvers import (
    DensityResult,
    EigenResult,
    MatrixOperator,
    TraceEstimate,
    TraceMethod,
    Which,
    density,
    lanczos_tridiagonal,
    top_eigenvalues,
    trace,
)

__all__ = [
    "AdversarialBatches",
    "AttackMethod",
    "CurvatureRecord",
    "CurvatureReport",
    "DensityResult",
    "EigenResult",
    "Engine",
    "HessianOperator",
    "InputHessianOperator",
    "MatrixOperator",
    "Mode",
    "Norm",
    "TraceEstimate",
    "TraceMethod",
    "Which",
    "adversarial_batches",
    "curvature_report",
    "density",
    "lanczos_tridiagonal",
    "select_parameters",
    "top_eigenvalues",
    "trace",
]
