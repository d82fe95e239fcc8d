"""Every enum of the analysis options and results, and :func:`parse_enum`.

Imports nothing of weightspectra but :mod:`weightspectra.errors`, so every layer of the package
(core included) can use the enums without importing options, metrics or report code.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from weightspectra.errors import OptionError

_E = TypeVar("_E", bound=Enum)


def parse_enum(enum_type: type[_E], value: _E | str, option: str) -> _E:
    """Return ``value`` as a member of ``enum_type``; a typo fails with the valid choices.

    Raises
    ------
    OptionError
        If ``value`` names no member.
    """
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        for member in enum_type:
            if key in (str(member.value).lower(), member.name.lower()):
                return member
    choices = ", ".join(repr(m.value) for m in enum_type)
    raise OptionError(f"{option}={value!r} is not valid; choose one of {choices}")


class LayerType(str, Enum):
    """The kind of layer a weight tensor belongs to; decides how it becomes 2-D matrices."""

    DENSE = "dense"
    EMBEDDING = "embedding"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    CONV3D = "conv3d"
    CONV_TRANSPOSE1D = "conv_transpose1d"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    CONV_TRANSPOSE3D = "conv_transpose3d"
    ATTENTION_IN_PROJ = "attention_in_proj"
    LSTM = "lstm"
    GRU = "gru"
    MOE_EXPERTS = "moe_experts"
    UNKNOWN = "unknown"


class EigenMethod(str, Enum):
    """How eigenvalues are computed: from the smaller Gram matrix, or by a full SVD (exact)."""

    GRAM = "gram"
    SVD = "svd"


class Precision(str, Enum):
    """Floating-point precision of the eigenvalue computation."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"


class Device(str, Enum):
    """Where spectra are computed: numpy on the CPU, torch on a CUDA GPU, or CUDA if present."""

    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"


class Parallel(str, Enum):
    """How ``workers > 1`` run: forked processes, threads, or processes where fork exists."""

    AUTO = "auto"
    PROCESSES = "processes"
    THREADS = "threads"




class BootstrapMethod(str, Enum):
    """Resampling scheme of the bootstrap interval of α (see :mod:`weightspectra.fitting.uncertainty`)."""

    TAIL = "tail"
    FULL = "full"
