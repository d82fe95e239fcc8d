"""Spectrum backends: which engine computes the Gram eigenvalues for a ``device`` option.

``device="cpu"`` forms every Gram matrix with numpy (BLAS ``syrk``) and diagonalises it with
numpy's LAPACK; when torch is installed with Intel MKL, Gram matrices of order
≥ :data:`MKL_MIN_ORDER` are diagonalised by torch's LAPACK instead (MKL's ``syevd``, about 2×
faster there; torch is imported only when the first such matrix arrives, so a model of small
layers never pays its import time). ``"cuda"`` and ``"auto"`` use
:mod:`weightspectra.backends.torch_backend`, the only module that computes with torch. Following
einops' habit, torch is detected without importing it where possible: ``"auto"`` imports torch
only if it is already imported by the caller or an NVIDIA driver is installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

from weightspectra.backends.solvers import STATIC_MKL_MIN_ORDER
from weightspectra.core.eigen import (
    SpectrumEngine,
    SymmetricSolver,
    numpy_spectra,
)
from weightspectra.enums import Device, Precision
from weightspectra.errors import OptionError

#: File present on Linux machines with an NVIDIA driver loaded.
_NVIDIA_PROC = "/proc/driver/nvidia/version"


@dataclass(frozen=True)
class Backend:
    """A resolved ``device`` option.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"numpy+mkl"`` (MKL for large Gram matrices) or ``"torch-cuda"`` (part
        of cache keys: engines differ in round-off).
    engine : SpectrumEngine or None
        The engine to pass to :func:`~weightspectra.core.eigen.layer_eigenvalues`; ``None``
        means the default numpy engine.
    on_host : bool
        Whether spectra are computed in this process's memory (False for a GPU: such a backend
        is shared by threads, never forked into worker processes).
    solver : SymmetricSolver or None
        For host backends whose Gram matrices numpy forms: the solver that diagonalises them,
        so that a tensor its source reads row by row (``TensorEntry.load_rows``) can be summed
        into its Gram matrix block by block
        (:func:`~weightspectra.core.eigen.streamed_layer_eigenvalues`). ``None``: every tensor
        is loaded whole and goes through :attr:`engine`.
    """

    name: str
    engine: SpectrumEngine | None = None
    on_host: bool = True
    solver: SymmetricSolver | None = None

    def prepare(self, precision: Precision) -> None:
        """Before a serial run: measure the solver size classes the run needs and this
        machine has not measured yet, where the run is long enough to repay it
        (:meth:`~weightspectra.backends.solvers.SolverPolicy.prepare`). No-op otherwise."""
        from weightspectra.backends.solvers import SolverPolicy

        if isinstance(self.solver, SolverPolicy) and self.solver.has_choices():
            from weightspectra.runtime.parallel import blas_threads_now

            self.solver.prepare(blas_threads_now(), precision)


#: Without a measured solver table, Gram matrices of at least this order are diagonalised with
#: torch's LAPACK (Intel MKL) when torch is installed with MKL (see :mod:`.solvers`).
MKL_MIN_ORDER = STATIC_MKL_MIN_ORDER


def _torch_installed() -> bool:
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def cpu_solver(gram: np.ndarray) -> np.ndarray:
    """The CPU :data:`~weightspectra.core.eigen.SymmetricSolver` outside a run: the solver
    measured fastest on this machine at the matrix's order (a stored ``bench-solvers`` table),
    else torch's MKL from order :data:`MKL_MIN_ORDER` (when torch has MKL) and numpy's LAPACK
    below (:class:`~weightspectra.backends.solvers.SolverPolicy`). A run uses a policy of its
    own, which knows the matrices it has left."""
    from weightspectra.backends.solvers import SolverPolicy

    return SolverPolicy()(gram)


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit, if :func:`cpu_solver` changed it (torch is
    not imported here: only looked up, if the caller or the run imported it)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None:
            if before is None:
                from weightspectra.backends import torch_backend

                before = torch_backend.IMPORT_THREADS
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)


def cpu_backend(work: Mapping[int, int] | None = None) -> Backend:
    """numpy Gram matrices, each diagonalised by the solver measured fastest here (numpy's
    LAPACK, LAPACK's two-stage reduction, or MKL through torch; see
    :mod:`weightspectra.backends.solvers`). ``work``: how many Gram matrices of each order
    the run will diagonalise, against which torch's import time is counted."""
    from weightspectra.backends.solvers import SolverPolicy

    policy = SolverPolicy(work)
    name = "numpy+mkl" if _torch_installed() else "numpy"
    return Backend(name, partial(numpy_spectra, solver=policy), solver=policy)


def _nvidia_driver_present() -> bool:
    return os.path.exists(_NVIDIA_PROC) or shutil.which("nvidia-smi") is not None


def _torch_cuda() -> Backend | None:
    """The torch CUDA backend, or None if torch or a usable CUDA device is missing."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None
    from weightspectra.backends import torch_backend

    if not torch_backend.cuda_available():
        return None
    return Backend("torch-cuda", torch_backend.make_engine("cuda"), on_host=False)


def resolve_backend(device: Device, work: Mapping[int, int] | None = None) -> Backend:
    """Turn a ``device`` option into the backend that will compute spectra.

        Parameters
        ----------
        device : Device
        work : mapping of int to int, optional
            The run's Gram matrices, counted by order (for the CPU solver's choice).

        Returns
        -------
        Backend

        Raises
        ------
        OptionError
            If ``device`` is ``"cuda"`` and torch is missing or sees no usable CUDA device.

        Examples
        --------
        >>> from weightspectra.backends.solvers import STATIC_MKL_MIN_ORDER
    from weightspectra.enums import Device, Precision
        >>> resolve_backend(Device.CPU).on_host
        True
    """
    if device is Device.CPU:
        return cpu_backend(work)
    if device is Device.AUTO:
        if "torch" in sys.modules or _nvidia_driver_present():
            found = _torch_cuda()
            if found is not None:
                return found
        return cpu_backend(work)
    found = _torch_cuda()
    if found is None:
        torch_missing = "torch" not in sys.modules and importlib.util.find_spec("torch") is None
        cause = (
            "torch is not installed (pip install 'weightspectra[torch]' with a CUDA build of torch)"
            if torch_missing
            else "torch sees no usable CUDA device (torch.cuda.is_available() is False)"
        )
        raise OptionError(
            f"device='cuda' was requested but {cause}; use device='cpu', or device='auto' to "
            "use a GPU only when one is present"
        )
    return found
