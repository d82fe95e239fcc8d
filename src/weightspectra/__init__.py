"""weightspectra: judge trained neural networks by the spectra of their weight matrices.

>>> import weightspectra as ws
>>> report = ws.analyze("model.safetensors")      # doctest: +SKIP
>>> report.to_pandas(); report.summary; report.skipped   # doctest: +SKIP
"""

from weightspectra._version import __version__
from weightspectra.analysis import Progress, analyze, describe
from weightspectra.compare import Comparison, compare
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
from weightspectra.options import EigenMethod, LayerType, Options, Parallel, Precision
from weightspectra.report import LayerResult, Report, Status
from weightspectra.sources import open_model

__all__ = [
    "Comparison",
    "CorruptFileError",
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
    "Report",
    "Status",
    "UnsafeFileError",
    "UnsupportedInputError",
    "WeightSpectraError",
    "WeightSpectraWarning",
    "WorkerError",
    "__version__",
    "analyze",
    "compare",
    "describe",
    "open_model",
]
