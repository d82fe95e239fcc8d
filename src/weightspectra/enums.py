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


class Solver(str, Enum):
    """A symmetric eigensolver for CPU Gram matrices (``weightspectra bench-solvers``)."""

    NUMPY = "numpy"  # numpy's LAPACK syevd (its bundled OpenBLAS)
    TWO_STAGE = "lapack-2stage"  # LAPACK's two-stage syevd_2stage, from that same OpenBLAS
    MKL = "torch-mkl"  # Intel MKL's syevd through torch


class Estimator(str, Enum):
    """How α is estimated: from the layer's own ESD, or also by FARMS (metrics.md §5)."""

    PLAIN = "plain"  # the power-law fit of the layer's ESD
    FARMS = "farms"  # also: the fit of the pooled ESD of fixed-aspect-ratio submatrices


class AllocationKind(str, Enum):
    """What ``weightspectra.allocate`` assigns per layer."""

    SPARSITY = "sparsity"  # the share of weights pruned, in [0, 1)
    BITS = "bits"  # the integer width of the quantised weights
    RANK = "rank"  # the integer LoRA rank


class AllocationMapping(str, Enum):
    """How a layer's metric becomes its offset from the budget."""

    LINEAR = "linear"  # affine in the metric (AlphaPruning's mapping)
    RANK = "rank"  # affine in the metric's rank among the layers (robust to outliers)
    UNIFORM = "uniform"  # every layer gets the budget (the baseline)


class Parallel(str, Enum):
    """How ``workers > 1`` run: forked processes, threads, or processes where fork exists."""

    AUTO = "auto"
    PROCESSES = "processes"
    THREADS = "threads"


class BootstrapMethod(str, Enum):
    """Resampling scheme of the bootstrap interval of α (see fitting/uncertainty.py)."""

    TAIL = "tail"
    FULL = "full"


class Status(str, Enum):
    """What happened to a layer."""

    OK = "ok"  # spectrum computed (its fit may still have failed: see `warning`)
    SKIPPED = "skipped"  # not analysed, by rule or option (reason says which)
    FAILED = "failed"  # analysis attempted and impossible (reason says why)
    PLANNED = "planned"  # `describe`: would be analysed, nothing computed


class Reason(str, Enum):
    """Why a row is skipped or failed, as a code (the row's ``reason`` says it in words).

    Renderers group rows by these codes; they never search the prose.
    """

    NONE = ""
    TIED = "tied"  # shares its storage with an earlier tensor
    BUFFER = "buffer"  # not floating point: ids, masks, counters
    NOT_MATRIX = "not-matrix"  # 0-D or 1-D: a bias or a norm scale
    BIAS = "bias"  # named like a bias
    PARAMETRIZATION = "parametrization"  # a factor of a parametrised weight (weight norm, ...)
    UNKNOWN_TYPE = "unknown-type"  # no layer type could be given to it
    BAD_SHAPE = "bad-shape"  # its shape does not fit its layer type
    UNPAIRED = "unpaired"  # a delta against a base: no tensor of its name on the other side
    NOT_SELECTED = "not-selected"  # left out by the ``layers`` option
    EXCLUDED = "excluded"  # dropped by the ``exclude`` option
    TOO_FEW_EVALS = "too-few-evals"  # fewer than ``min_evals`` eigenvalues
    TOO_MANY_EVALS = "too-many-evals"  # M above ``max_evals``
    READ_ERROR = "read-error"  # the tensor could not be read
    BAD_VALUES = "bad-values"  # NaN/Inf, all zeros, or a Gram matrix unusable in the precision
    INTERNAL = "internal-error"  # an unexpected error inside one layer (a bug: please report)
    WORKER_LOST = "worker-lost"  # on a cluster: its worker died on every try (killed, OOM)
    TOO_LARGE = "too-large"  # on a cluster: it needs more memory than any worker offers

    @property
    def routine(self) -> str:
        """How the summary counts rows of this code when they are routine ('' when each such
        row is listed with its reason instead)."""
        return _ROUTINE.get(self, "")


_ROUTINE = {
    Reason.NOT_MATRIX: "biases and norm scales (1-D)",
    Reason.BIAS: "biases and norm scales (1-D)",
    Reason.BUFFER: "non-float buffers",
    Reason.NOT_SELECTED: "not selected by --layers",
    Reason.EXCLUDED: "excluded by --exclude",
    Reason.PARAMETRIZATION: "parametrisation factors (their weight is analysed)",
}
