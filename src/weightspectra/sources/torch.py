"""PyTorch inputs: ``nn.Module`` objects, state dicts of tensors, and ``.pt/.pth/.bin`` files.

Only this module imports torch, and only when such an input is given. Files are read with
``torch.load(weights_only=True)``: a file that needs full unpickling is refused, never run.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.errors import CorruptFileError, InputError, UnsafeFileError
from weightspectra.enums import LayerType
from weightspectra.sources.base import Source, TensorEntry, in_model_order

#: Keys under which checkpoints commonly wrap their state dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")


def is_module(obj: object) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def is_tensor(obj: object) -> bool:
    import torch

    return isinstance(obj, torch.Tensor)


def _dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _tensor_loader(tensor: Any) -> Callable[[], np.ndarray]:
    import torch

    def load() -> np.ndarray:
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.to("cpu")
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float32)
        return np.asarray(t.numpy())

    return load


def _module_types() -> list[tuple[type, dict[str, LayerType]]]:
    from torch import nn

    dense = {"weight": LayerType.DENSE}
    return [
        (nn.Linear, dense),
        (nn.Embedding, {"weight": LayerType.EMBEDDING}),
        (nn.EmbeddingBag, {"weight": LayerType.EMBEDDING}),
        (nn.Conv1d, {"weight": LayerType.CONV1D}),
        (nn.Conv2d, {"weight": LayerType.CONV2D}),
        (nn.Conv3d, {"weight": LayerType.CONV3D}),
        (nn.ConvTranspose1d, {"weight": LayerType.CONV_TRANSPOSE1D}),
        (nn.ConvTranspose2d, {"weight": LayerType.CONV_TRANSPOSE2D}),
        (nn.ConvTranspose3d, {"weight": LayerType.CONV_TRANSPOSE3D}),
        (
            nn.MultiheadAttention,
            {
                "in_proj_weight": LayerType.ATTENTION_IN_PROJ,
                "q_proj_weight": LayerType.DENSE,
                "k_proj_weight": LayerType.DENSE,
                "v_proj_weight": LayerType.DENSE,
            },
        ),
    ]


def _layer_type(
    module: Any, pname: str, table: list[tuple[type, dict[str, LayerType]]]
) -> LayerType | None:
    from torch import nn

    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)) and pname.startswith("weight_"):
        if isinstance(module, nn.LSTM):
            return LayerType.LSTM
        return LayerType.GRU if isinstance(module, nn.GRU) else LayerType.DENSE
    for cls, params in table:
        if isinstance(module, cls):
            return params.get(pname)
    if type(module).__name__ == "Conv1D" and pname == "weight":
        return LayerType.DENSE  # Hugging Face's transposed Linear (GPT-2)
    return None


def open_module(model: Any) -> Source:
    """Open an ``nn.Module``: its parameters in module order, types from the module classes.

    Tied weights (one parameter used by several modules) are analysed once; the later uses are
    reported as tied.
    """
    table = _module_types()
    first_key: dict[int, str] = {}
    entries = []
    for mod_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            key = f"{mod_name}.{pname}" if mod_name else pname
            if _is_uninitialized(param):
                continue
            pid = id(param)
            tied_to = first_key.setdefault(pid, key)
            entries.append(
                TensorEntry(
                    key=key,
                    shape=tuple(int(s) for s in param.shape),
                    dtype=_dtype_name(param),
                    load=_tensor_loader(param),
                    layer_type=_layer_type(module, pname, table),
                    tied_to=None if tied_to == key else tied_to,
                )
            )
    return Source(description=f"{type(model).__name__} (torch.nn.Module)", entries=tuple(entries))


def _is_uninitialized(param: Any) -> bool:
    from torch.nn.parameter import UninitializedParameter

    return isinstance(param, UninitializedParameter)


def unwrap_state_dict(obj: Mapping[str, Any], description: str) -> Mapping[str, Any]:
    """Find the tensors of a checkpoint: the mapping itself, or a ``{"state_dict": ...}``-style
    wrapper around it.

    Raises
    ------
    InputError
        If no tensor is found.
    """
    current: Mapping[str, Any] = obj
    for _ in range(3):
        if any(is_tensor(v) for v in current.values()):
            return current
        inner = next(
            (current[k] for k in WRAPPER_KEYS if isinstance(current.get(k), Mapping)), None
        )
        if inner is None:
            break
        current = inner
    raise InputError(
        f"{description}: no tensors found (top-level keys: {sorted(map(str, obj))[:8]}); "
        f"expected a state dict, or a checkpoint wrapping one under one of {WRAPPER_KEYS}"
    )


def open_state_dict(state: Mapping[str, Any], description: str = "state dict") -> Source:
    """Open an in-memory state dict of tensors (its order is taken as the model's order)."""
    tensors = unwrap_state_dict(state, description)
    entries = []
    for key, value in tensors.items():
        if not is_tensor(value):
            continue
        entries.append(
            TensorEntry(
                key=str(key),
                shape=tuple(int(s) for s in value.shape),
                dtype=_dtype_name(value),
                load=_tensor_loader(value),
            )
        )
    return Source(description=description, entries=tuple(entries))


def load_file(path: Path) -> Mapping[str, Any]:
    """Load a pickle-based PyTorch file safely (``weights_only=True``, memory-mapped if possible).

    Raises
    ------
    UnsafeFileError
        If the file holds anything but tensors and plain containers (its code never runs).
    CorruptFileError
        If the file is truncated or not a PyTorch file.
    """
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "Unsupported" in ln or "GLOBAL" in ln), first[0])
        raise UnsafeFileError(
            f"{path}: refused, the file needs full unpickling, which can run arbitrary code "
            f"({detail.strip()}). weightspectra reads tensors only. In an environment you trust, "
            "convert it once: load it with torch's full unpickler, then "
            "torch.save(m.state_dict() if hasattr(m, 'state_dict') else m, 'weights.pt') "
            "or save it as .safetensors"
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CorruptFileError(
            f"{path}: not a readable PyTorch file ({str(exc).splitlines()[0]}); the file is "
            "truncated or of another format"
        ) from exc
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{path}: holds a {type(obj).__name__}, not a state dict; save model.state_dict()"
        )
    return obj


def open_file(path: Path) -> Source:
    """Open a ``.pt/.pth/.bin`` state-dict file."""
    return open_state_dict(load_file(path), description=str(path))


def open_folder(folder: Path) -> Source:
    """Open a folder of ``pytorch_model*.bin`` shards (with or without their index)."""
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(f"{index}: not a valid index (needs 'weight_map')") from exc
        paths = [folder / f for f in files]
    else:
        paths = (
            sorted(folder.glob("*.bin"))
            + sorted(folder.glob("*.pt"))
            + sorted(folder.glob("*.pth"))
        )
    entries: dict[str, TensorEntry] = {}
    for p in paths:
        if not p.is_file():
            raise InputError(f"{index} names shard {p.name!r}, which is missing from {folder}")
        for entry in open_file(p).entries:
            entries[entry.key] = entry
    ordered = [entries[k] for k in in_model_order(entries)]
    return Source(description=str(folder), entries=tuple(ordered))
