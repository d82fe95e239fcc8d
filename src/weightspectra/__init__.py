"""weightspectra: judge trained neural networks by the spectra of their weight matrices.

>>> import weightspectra as ws
>>> report = ws.analyze("model.safetensors")      # doctest: +SKIP
>>> report.to_pandas(); report.summary; report.skipped   # doctest: +SKIP

The public names are loaded on first use (PEP 562), so ``import weightspectra`` (and importing
one subpackage, such as :mod:`weightspectra.core.eigen`) imports nothing it does not need.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from weightspectra._version import __version__
from weightspectra.enums import EigenMethod, LayerType, Parallel, Precision, Reason, Status
from weightspectra.errors import (
    CorruptFileError,
    InputError,
    LayerError,
    MissingDependencyError,
    ModelFileNotFoundError,
    NumericalWarning,
    OptionError,
    UnsafeFileError,
    UnsupportedInputError,
    WeightSpectraError,
    WeightSpectraWarning,
    WorkerError,
)

if TYPE_CHECKING:
    from weightspectra.allocation import AllocationPlan, allocate
    from weightspectra.analysis import Progress, analyze, describe
    from weightspectra.compare import Comparison, compare
    from weightspectra.distances import Distances, distances
    from weightspectra.options import Options
    from weightspectra.report.results import LayerResult, Report
    from weightspectra.sources import open_model
    from weightspectra.training.series import analyze_series

#: Public names loaded lazily, and the module each comes from.
_LAZY = {
    "AllocationPlan": "weightspectra.allocation",
    "allocate": "weightspectra.allocation",
    "Progress": "weightspectra.analysis",
    "analyze": "weightspectra.analysis",
    "describe": "weightspectra.analysis",
    "Comparison": "weightspectra.compare",
    "Distances": "weightspectra.distances",
    "Options": "weightspectra.options",
    "LayerResult": "weightspectra.report.results",
    "Report": "weightspectra.report.results",
    "open_model": "weightspectra.sources",
    "analyze_series": "weightspectra.training.series",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightspectra' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """This package's module type: ``weightspectra.compare`` is the function, always.

    The function shares its name with the subpackage that defines it, and the import system
    binds a subpackage to its parent's attribute when the subpackage is first imported (which
    may happen before anyone asks for ``weightspectra.compare``). A property on the module's
    type wins over that binding, so the public name stays the function, as an eager import in
    this file would leave it.
    """

    @property
    def compare(self) -> Any:
        return importlib.import_module("weightspectra.compare").compare

    @compare.setter
    def compare(self, value: object) -> None:
        pass  # the import system binding the subpackage: the function stays the public name

    @property
    def distances(self) -> Any:
        return importlib.import_module("weightspectra.distances").distances

    @distances.setter
    def distances(self, value: object) -> None:
        pass  # as for compare: the submodule binding never replaces the function


sys.modules[__name__].__class__ = _Package


__all__ = [
    "AllocationPlan",
    "Comparison",
    "CorruptFileError",
    "Distances",
    "EigenMethod",
    "InputError",
    "LayerError",
    "LayerResult",
    "LayerType",
    "MissingDependencyError",
    "ModelFileNotFoundError",
    "NumericalWarning",
    "OptionError",
    "Options",
    "Parallel",
    "Precision",
    "Progress",
    "Reason",
    "Report",
    "Status",
    "UnsafeFileError",
    "UnsupportedInputError",
    "WeightSpectraError",
    "WeightSpectraWarning",
    "WorkerError",
    "__version__",
    "allocate",
    "analyze",
    "analyze_series",
    "compare",
    "describe",
    "distances",
    "open_model",
]
