"""weightspectra: judge trained neural networks by the spectra of their weight matrices."""

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
)
from weightspectra.options import EigenMethod, LayerType, Options, Precision

__version__ = "0.1.0"

__all__ = [
    "CorruptFileError",
    "EigenMethod",
    "InputError",
    "LayerError",
    "LayerType",
    "MissingDependencyError",
    "ModelFileNotFoundError",
    "NumericalWarning",
    "OptionError",
    "Options",
    "Precision",
    "UnsafeFileError",
    "UnsupportedInputError",
    "WeightSpectraError",
    "WeightSpectraWarning",
    "__version__",
]
