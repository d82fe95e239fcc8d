"""Analysis options: one frozen, validated object holding every option of an analysis.

Each field of :class:`Options` declares, in its metadata, its one-line help and how the command
line spells it; the CLI builds its flags from these declarations (:func:`option_specs`), so an
option is added in one place. Enums live in :mod:`weightspectra.enums`.

The package: ``definition`` (the :class:`Options` dataclass and its fields), ``checks`` (the
validation its construction runs), ``selectors`` (the ``layers``/``exclude`` forms) and ``specs``
(how an option is offered on the command line).
"""

from weightspectra.enums import (
    Device,
    EigenMethod,
    Estimator,
    LayerType,
    Parallel,
    Precision,
    parse_enum,
)
from weightspectra.options.definition import Options, option_specs
from weightspectra.options.selectors import selects
from weightspectra.options.specs import OptionSpec

__all__ = [
    "Device",
    "EigenMethod",
    "Estimator",
    "LayerType",
    "OptionSpec",
    "Options",
    "Parallel",
    "Precision",
    "option_specs",
    "parse_enum",
    "selects",
]
