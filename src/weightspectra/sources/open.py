"""``open_model``: turn whatever the user passed into a :class:`Source`.

It only dispatches: the first registered adapter that can open the model opens it
(:mod:`weightspectra.sources.registry`). What stays here is what holds for every format: paths
that do not exist or are empty, a missing optional package, a source without tensors, and the
message for inputs no adapter claims.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from weightspectra.errors import (
    InputError,
    MissingDependencyError,
    ModelFileNotFoundError,
    UnsupportedInputError,
)
from weightspectra.sources.base import Source, SourceAdapter
from weightspectra.sources.registry import ACCEPTED, NOT_YET, Registry, default_registry

__all__ = ["ACCEPTED", "open_model"]


def open_model(model: object, *, registry: Registry | None = None) -> Source:
    """Open a model of any supported kind as a :class:`Source` (nothing is loaded yet).

    Parameters
    ----------
    model : nn.Module, mapping, Source, str or path-like
        See :data:`~weightspectra.sources.registry.ACCEPTED`.
    registry : Registry, optional
        The adapters to ask, in order (default: the default registry, with every built-in
        adapter and those added by :func:`~weightspectra.sources.register`).

    Returns
    -------
    Source
        Every tensor, typed, in model order.

    Raises
    ------
    ModelFileNotFoundError
        If a path does not exist.
    UnsupportedInputError
        If the object or file is of a kind weightspectra cannot read.
    MissingDependencyError
        If the adapter for the model needs an optional package that is not installed.
    InputError
        If a file or mapping is malformed (subclasses say how), or holds no tensor at all.

    Examples
    --------
    >>> import numpy as np
    >>> source = open_model({"model.embed_tokens.weight": np.ones((10, 4))})
    >>> source.entries[0].layer_type.value
    'embedding'
    """
    registry = default_registry if registry is None else registry
    if isinstance(model, (str, os.PathLike)):
        model = Path(model)
        _check_path(model)
    adapter = registry.find(model)
    if adapter is None:
        raise _unclaimed(model)
    _check_requirement(adapter, model)
    source = adapter.open(model)
    if not source.entries:
        raise InputError(
            f"{source.description} holds no tensors: there is nothing to analyse (an empty "
            "checkpoint, or a module without parameters?)"
        )
    return source


def _check_path(path: Path) -> None:
    if not path.exists():
        raise ModelFileNotFoundError(
            f"{path}: no such file or folder; check the path (accepted: {ACCEPTED})"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); the download or save did not complete")


def _check_requirement(adapter: SourceAdapter, model: object) -> None:
    module = adapter.requires
    if module is None or importlib.util.find_spec(module) is not None:
        return
    what = str(model) if isinstance(model, Path) else f"a {type(model).__name__}"
    raise MissingDependencyError(module, adapter.extra or module, f"reading {what}")


def _unclaimed(model: object) -> Exception:
    """The error for a model that no adapter can open."""
    if isinstance(model, Path):
        if model.is_dir():
            return InputError(
                f"{model} holds no .safetensors, .bin, .pt or .pth file; point at the folder "
                "that has the weights (a Hugging Face snapshot holds model.safetensors)"
            )
        suffix = model.suffix.lower()
        if suffix in NOT_YET:
            return UnsupportedInputError(
                f"{model}: {NOT_YET[suffix]} files are not supported yet; export the weights to "
                ".safetensors (or a PyTorch state dict) and analyse that"
            )
        return UnsupportedInputError(f"{model}: unknown file type {suffix!r}; pass {ACCEPTED}")
    if isinstance(model, Mapping):
        if not model:
            return InputError("the mapping given as a model is empty: it holds no weights")
        return UnsupportedInputError(
            "the mapping given as a model holds values of types "
            f"{sorted({type(v).__name__ for v in model.values()})}; expected numpy arrays or "
            "torch tensors"
        )
    return UnsupportedInputError(
        f"cannot analyse a {type(model).__module__}.{type(model).__name__}; pass {ACCEPTED}"
    )
