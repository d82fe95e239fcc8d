"""Spectrum backends: which engine computes the Gram eigenvalues for a ``device`` option.

``device="cpu"`` is numpy/LAPACK (:func:`weightspectra.core.eigen.numpy_spectra`) and never
imports torch. ``"cuda"`` and ``"auto"`` use :mod:`weightspectra.backends.torch_backend`, the only
module that computes with torch. Following einops' habit, torch is detected without importing it
where possible: ``"auto"`` imports torch only if it is already imported by the caller or an
NVIDIA driver is installed, so a CPU-only run never pays torch's import time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass

from weightspectra.core.eigen import SpectrumEngine
from weightspectra.errors import OptionError
from weightspectra.options import Device

#: File present on Linux machines with an NVIDIA driver loaded.
_NVIDIA_PROC = "/proc/driver/nvidia/version"


@dataclass(frozen=True)
class Backend:
    """A resolved ``device`` option.

    Attributes
    ----------
    name : str
        ``"numpy"`` or ``"torch-cuda"`` (part of cache keys: engines differ in round-off).
    engine : SpectrumEngine or None
        The engine to pass to :func:`~weightspectra.core.eigen.layer_eigenvalues`; ``None``
        means the default numpy engine.
    """

    name: str
    engine: SpectrumEngine | None = None


def _nvidia_driver_present() -> bool:
    return os.path.exists(_NVIDIA_PROC) or shutil.which("nvidia-smi") is not None


def _torch_cuda() -> Backend | None:
    """The torch CUDA backend, or None if torch or a usable CUDA device is missing."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None
    from weightspectra.backends import torch_backend

    if not torch_backend.cuda_available():
        return None
    return Backend("torch-cuda", torch_backend.make_engine("cuda"))


def resolve_backend(device: Device) -> Backend:
    """Turn a ``device`` option into the backend that will compute spectra.

    Parameters
    ----------
    device : Device

    Returns
    -------
    Backend

    Raises
    ------
    OptionError
        If ``device`` is ``"cuda"`` and torch is missing or sees no usable CUDA device.

    Examples
    --------
    >>> from weightspectra.options import Device
    >>> resolve_backend(Device.CPU).name
    'numpy'
    """
    if device is Device.CPU:
        return Backend("numpy")
    if device is Device.AUTO:
        if "torch" in sys.modules or _nvidia_driver_present():
            found = _torch_cuda()
            if found is not None:
                return found
        return Backend("numpy")
    found = _torch_cuda()
    if found is None:
        torch_missing = "torch" not in sys.modules and importlib.util.find_spec("torch") is None
        cause = (
            "torch is not installed (pip install 'weightspectra[torch]' with a CUDA build of "
            "torch)"
            if torch_missing
            else "torch sees no usable CUDA device (torch.cuda.is_available() is False)"
        )
        raise OptionError(
            f"device='cuda' was requested but {cause}; use device='cpu', or device='auto' to "
            "use a GPU only when one is present"
        )
    return found
