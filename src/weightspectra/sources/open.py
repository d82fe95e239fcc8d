"""``open_model``: turn whatever the user passed into a :class:`Source`."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from weightspectra.errors import (
    InputError,
    MissingDependencyError,
    ModelFileNotFoundError,
    UnsupportedInputError,
)
from weightspectra.sources import arrays, safetensors
from weightspectra.sources.base import Source

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_NOT_YET = {
    ".onnx": "ONNX",
    ".gguf": "GGUF",
    ".h5": "Keras/HDF5",
    ".keras": "Keras",
    ".tflite": "TFLite",
}
ACCEPTED = (
    "an nn.Module, a state dict, a dict of numpy arrays, or a path to a .safetensors file, "
    "a .pt/.pth/.bin state-dict file, a .npz file, or a folder of (sharded) safetensors or "
    "pytorch_model*.bin files"
)


def _torch_sources(purpose: str) -> ModuleType:
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError("torch", "torch", purpose)
    from weightspectra.sources import torch as torch_source

    return torch_source


def _open_torch_file(path: Path) -> Source:
    source: Source = _torch_sources(f"reading {path}").open_file(path)
    return source


def _torch_loaded() -> ModuleType | None:
    """The torch adapter if torch is already imported by the caller (never imports torch)."""
    if "torch" not in sys.modules:
        return None
    from weightspectra.sources import torch as torch_source

    return torch_source


def open_model(model: object) -> Source:
    """Open a model of any supported kind as a :class:`Source` (nothing is loaded yet).

    Parameters
    ----------
    model : nn.Module, mapping, str or path-like
        See :data:`ACCEPTED`.

    Raises
    ------
    ModelFileNotFoundError
        If a path does not exist.
    UnsupportedInputError
        If the object or file is of a kind weightspectra cannot read.
    InputError
        If a file or mapping is malformed (subclasses say how), or holds no tensor at all.
    """
    source = _open(model)
    if not source.entries:
        raise InputError(
            f"{source.description} holds no tensors: there is nothing to analyse (an empty "
            "checkpoint, or a module without parameters?)"
        )
    return source


def _open(model: object) -> Source:
    if isinstance(model, Source):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _open_path(Path(model))
    torch_source = _torch_loaded()
    if torch_source is not None and torch_source.is_module(model):
        module_source: Source = torch_source.open_module(model)
        return module_source
    if isinstance(model, Mapping):
        if not model:
            raise InputError("the mapping given as a model is empty: it holds no weights")
        if all(isinstance(v, np.ndarray) for v in model.values()):
            return arrays.open_arrays(model)
        if torch_source is not None and any(
            torch_source.is_tensor(v) or isinstance(v, Mapping) for v in model.values()
        ):
            state_source: Source = torch_source.open_state_dict(model)
            return state_source
        raise UnsupportedInputError(
            "the mapping given as a model holds values of types "
            f"{sorted({type(v).__name__ for v in model.values()})}; expected numpy arrays or "
            "torch tensors"
        )
    raise UnsupportedInputError(
        f"cannot analyse a {type(model).__module__}.{type(model).__name__}; pass {ACCEPTED}"
    )


def _open_path(path: Path) -> Source:
    if not path.exists():
        raise ModelFileNotFoundError(
            f"{path}: no such file or folder; check the path (accepted: {ACCEPTED})"
        )
    if path.is_dir():
        if any(path.glob("*.safetensors")):
            return safetensors.open_folder(path)
        if any(any(path.glob(pattern)) for pattern in ("*.bin", "*.pt", "*.pth")):
            folder: Source = _torch_sources(f"reading the files in {path}").open_folder(path)
            return folder
        raise InputError(
            f"{path} holds no .safetensors, .bin, .pt or .pth file; point at the folder that "
            "has the weights (a Hugging Face snapshot holds model.safetensors)"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); the download or save did not complete")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return safetensors.open_file(path)
    if suffix in TORCH_SUFFIXES:
        return _open_torch_file(path)
    if suffix == ".npz":
        return _open_npz(path)
    if suffix in _NOT_YET:
        raise UnsupportedInputError(
            f"{path}: {_NOT_YET[suffix]} files are not supported yet; export the weights to "
            ".safetensors (or a PyTorch state dict) and analyse that"
        )
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"PK":
        return _open_torch_file(path)
    raise UnsupportedInputError(f"{path}: unknown file type {suffix!r}; pass {ACCEPTED}")


def _open_npz(path: Path) -> Source:
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise InputError(f"{path}: not a plain .npz of arrays ({exc})") from exc
    return arrays.open_arrays(data, description=str(path))
