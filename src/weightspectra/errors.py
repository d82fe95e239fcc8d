"""Exceptions and warnings raised by weightspectra.

Every exception derives from :class:`WeightSpectraError`, so ``except WeightSpectraError`` catches
all of them; each also derives from the matching built-in (``ValueError``, ``TypeError``,
``ImportError``, ``FileNotFoundError``) so generic handlers keep working. Messages say what was
expected, what arrived, and how to fix it.
"""

from __future__ import annotations


class WeightSpectraError(Exception):
    """Root of every error raised by weightspectra."""


class OptionError(WeightSpectraError, ValueError):
    """An option has an invalid value (the message lists the valid choices)."""


class InputError(WeightSpectraError, ValueError):
    """The model, file or array given cannot be read as weights."""


class ModelFileNotFoundError(InputError, FileNotFoundError):
    """A path given as a model does not exist."""


class CorruptFileError(InputError):
    """A weights file is truncated or its header is malformed."""


class UnsafeFileError(InputError):
    """A pickle-based file needs full unpickling, which could run arbitrary code: refused."""


class UnsupportedInputError(WeightSpectraError, TypeError):
    """An object or file of a kind weightspectra cannot read."""


class LayerError(WeightSpectraError, ValueError):
    """One layer's matrix cannot be analysed (non-finite values, zero matrix, bad shape).

    Raised inside the per-layer pipeline and turned into a ``failed`` row of the report; it never
    stops a whole run.
    """


class MissingDependencyError(WeightSpectraError, ImportError):
    """An optional dependency (an *extra*) is needed for this input or feature."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {package!r}; "
            f"install it with: pip install 'weightspectra[{extra}]'"
        )
        self.package = package
        self.extra = extra


class WorkerError(WeightSpectraError, RuntimeError):
    """A worker process stopped abruptly (killed by the system, e.g. when memory ran out)."""


class WeightSpectraWarning(UserWarning):
    """Root of every warning issued by weightspectra."""


class NumericalWarning(WeightSpectraWarning):
    """A numerical edge case was handled (e.g. tiny negative eigenvalues clipped to zero)."""
