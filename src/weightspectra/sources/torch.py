"""PyTorch inputs: ``nn.Module`` objects, state dicts of tensors, and ``.pt/.pth/.bin`` files.

Only this module imports torch, and only when such an input is given. Files are read with
``torch.load(weights_only=True)``: a file that needs full unpickling is refused, never run.

Module parameters are typed by their module's class; parametrised weights (weight norm,
spectral norm, any ``torch.nn.utils.parametrize`` parametrisation, and the older
``weight_norm``/``spectral_norm`` hooks) are analysed as the weight the layer uses, computed
from the parametrisation. State dicts and files are typed by key naming
(:mod:`weightspectra.sources.naming`).
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.core.layers import GateUpSplit
from weightspectra.enums import LayerType, Reason
from weightspectra.errors import (
    CorruptFileError,
    InputError,
    UnsafeFileError,
    UnsupportedInputError,
)
from weightspectra.sources.base import Source, TensorEntry, as_path, merge_files
from weightspectra.sources.naming import gate_up_split, interleaved_gate_up_beside, type_entries
from weightspectra.sources.reparam import weight_norm_reason

#: Keys under which checkpoints commonly wrap their state dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")
#: Suffixes of pickle-based PyTorch files.
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
#: First bytes of a legacy (pre-zip) ``torch.save`` file: pickle protocol 2, then torch's magic
#: number as a pickled long.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
#: Experts modules that interleave gate and up, for transformers versions whose experts carry
#: no ``is_concatenated`` flag.
_INTERLEAVED_EXPERTS = frozenset({"GptOssExperts"})
#: Readable names of torch's parametrisation classes, for the skipped rows' reasons.
_PARAMETRIZATION_NAMES = {
    "_WeightNorm": "weight norm",
    "_SpectralNorm": "spectral norm",
    "_Orthogonal": "orthogonal",
}


def is_module(obj: object) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def is_tensor(obj: object) -> bool:
    import torch

    return isinstance(obj, torch.Tensor)


def _dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return np.asarray(t.numpy())


def _tensor_loader(tensor: Any) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return _to_numpy(tensor)

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


def _experts_split(module: Any, pname: str, shape: tuple[int, ...]) -> GateUpSplit | None:
    """The gate/up layout a transformers experts module declares, if it declares one.

    transformers 5 marks its experts classes with ``is_transposed`` ((E, in, out) storage) and
    ``is_concatenated`` (gate and up as two halves, not interleaved). Without those flags, an
    interleaving class (GPT-OSS) is split along the axis its ``down_proj`` sibling gives, and
    other classes are left to the key naming rules.
    """
    if pname != "gate_up_proj" or len(shape) != 3:
        return None
    transposed = getattr(module, "is_transposed", None)
    concatenated = getattr(module, "is_concatenated", None)
    if isinstance(concatenated, bool):
        interleaved = not concatenated
    else:
        interleaved = type(module).__name__ in _INTERLEAVED_EXPERTS
    if isinstance(transposed, bool):
        return GateUpSplit(2 if transposed else 1, interleaved)
    if not interleaved:
        return None
    siblings = {n: tuple(p.shape) for n, p in module.named_parameters(recurse=False)}
    return gate_up_split(pname, shape, siblings, interleaved=True)


@contextmanager
def _no_grad() -> Iterator[None]:
    import torch

    with torch.no_grad():
        yield


@contextmanager
def _frozen(module: Any) -> Iterator[None]:
    """No gradients, and ``module`` and its children in eval mode (restored afterwards): a
    spectral norm in training mode would run a power iteration and change its buffers."""
    import torch

    modes = [(m, m.training) for m in module.modules()]
    module.train(False)
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


@dataclass(frozen=True)
class _Effective:
    """A weight a module computes from a parametrisation, and the reason of its stored parts."""

    pname: str
    compute: Callable[[], Any]
    parts: dict[str, str]  # stored parameter -> reason of its skipped row


def _parametrisation_name(plist: Any) -> str:
    names = [_PARAMETRIZATION_NAMES.get(type(p).__name__, type(p).__name__) for p in plist]
    return " then ".join(names) or "parametrisation"


def _effective_weights(module: Any, prefix: str) -> tuple[list[_Effective], dict[int, _Effective]]:
    """The parametrised weights of ``module``: its own old-style hooks, and the
    ``torch.nn.utils.parametrize`` lists (by id, for their parameters' rows)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found: list[_Effective] = []
    lists: dict[int, _Effective] = {}
    if parametrize.is_parametrized(module):
        for pname, plist in module.parametrizations.items():
            eff = prefix + pname
            kind = _parametrisation_name(plist)
            parts = {}
            for original, _ in plist.named_parameters(recurse=False):
                if kind == "weight norm" and original in ("original0", "original1"):
                    parts[original] = weight_norm_reason(eff, "g" if original[-1] == "0" else "v")
                else:
                    parts[original] = (
                        f"parametrisation of {eff} ({kind}, {original}); analysed as the "
                        f"effective weight {eff}"
                    )

            def compute(pname: str = pname, plist: Any = plist) -> Any:
                with _frozen(plist):
                    return getattr(module, pname)

            item = _Effective(pname, compute, parts)
            found.append(item)
            lists[id(plist)] = item
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            eff = prefix + hook.name
            parts = {
                f"{hook.name}_g": weight_norm_reason(eff, "g"),
                f"{hook.name}_v": weight_norm_reason(eff, "v"),
            }

            def compute_wn(hook: Any = hook) -> Any:
                with _no_grad():
                    return hook.compute_weight(module)

            found.append(_Effective(hook.name, compute_wn, parts))
        elif isinstance(hook, SpectralNorm):
            eff = prefix + hook.name
            reason = (
                f"parametrisation of {eff} (spectral norm, the unnormalised weight); analysed "
                f"as the effective weight {eff}"
            )

            def compute_sn(hook: Any = hook) -> Any:
                with _no_grad():
                    return hook.compute_weight(module, do_power_iteration=False)

            found.append(_Effective(hook.name, compute_sn, {f"{hook.name}_orig": reason}))
    return found, lists


def _computed_loader(compute: Callable[[], Any]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return _to_numpy(compute())

    return load


def open_module(model: Any) -> Source:
    """Open an ``nn.Module``: its parameters in module order, types from the module classes.

    Tied weights (one parameter used by several modules) are analysed once; the later uses are
    reported as tied. A parametrised weight (``torch.nn.utils.parametrizations.weight_norm``,
    ``spectral_norm``, any ``torch.nn.utils.parametrize`` parametrisation, or the older
    ``torch.nn.utils.weight_norm``/``spectral_norm``) is analysed as the weight the layer uses,
    ``<module>.weight``, computed once when loaded (in eval mode: a spectral norm's power
    iteration is not advanced); its stored parts are skipped rows saying so. Parameters whose
    module class says nothing (fused experts) are typed by key naming.
    """
    table = _module_types()
    first_key: dict[int, str] = {}
    owners: dict[int, _Effective] = {}
    entries: list[TensorEntry] = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        effective, lists = _effective_weights(module, prefix)
        owners.update(lists)
        parts: dict[str, str] = {}
        for item in effective:
            parts.update(item.parts)
            weight = item.compute()  # computed once here for its shape and dtype
            entries.append(
                TensorEntry(
                    key=prefix + item.pname,
                    shape=tuple(int(s) for s in weight.shape),
                    dtype=_dtype_name(weight),
                    load=_computed_loader(item.compute),
                    layer_type=_layer_type(module, item.pname, table),
                )
            )
            del weight
        owner = owners.get(id(module))
        if owner is not None:
            parts.update(owner.parts)
        for pname, param in module.named_parameters(recurse=False):
            key = prefix + pname
            if _is_uninitialized(param):
                continue
            tied_to = first_key.setdefault(id(param), key)
            shape = tuple(int(s) for s in param.shape)
            reason = parts.get(pname, "")
            split = _experts_split(module, pname, shape)
            if reason:
                layer_type: LayerType | None = LayerType.UNKNOWN
            elif split is not None:
                layer_type = LayerType.MOE_EXPERTS
            else:
                layer_type = _layer_type(module, pname, table)
            entries.append(
                TensorEntry(
                    key=key,
                    shape=shape,
                    dtype=_dtype_name(param),
                    load=_tensor_loader(param),
                    layer_type=layer_type,
                    type_reason=reason,
                    type_code=Reason.PARAMETRIZATION if reason else Reason.NONE,
                    gate_up=split,
                    tied_to=None if tied_to == key else tied_to,
                )
            )
    typed = type_entries(entries, weight_norm=False)  # the module already computed those
    return Source(description=f"{type(model).__name__} (torch.nn.Module)", entries=typed)


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


def _state_entries(state: Mapping[str, Any], description: str) -> list[TensorEntry]:
    tensors = unwrap_state_dict(state, description)
    entries = []
    for key, value in tensors.items():
        if not is_tensor(value):
            continue
        _check_fits_storage(str(key), value, description)
        entries.append(
            TensorEntry(
                key=str(key),
                shape=tuple(int(s) for s in value.shape),
                dtype=_dtype_name(value),
                load=_tensor_loader(value),
            )
        )
    return entries


def _check_fits_storage(key: str, tensor: Any, description: str) -> None:
    """Refuse a tensor whose shape its stored bytes cannot hold (a corrupt or crafted file).

    Raises
    ------
    CorruptFileError
        If a dimension is negative, the element count leaves int64, or the storage holds fewer
        bytes than the tensor's elements need (zero strides included: such a tensor would be
        materialised at its full size).
    """
    shape = [int(d) for d in tensor.shape]
    size = tensor.element_size()
    needed = math.prod(shape) * size
    span = math.prod(max(d, 1) for d in shape) * size
    try:
        stored = int(tensor.untyped_storage().nbytes())
    except (RuntimeError, AttributeError):  # a tensor without storage (meta, sparse...)
        stored = needed
    if min(shape, default=0) < 0 or span >= 2**63 or stored < needed:
        raise CorruptFileError(
            f"{description}: tensor {key!r} of shape {tuple(shape)} needs {needed} bytes but its "
            f"storage holds {stored}; the file is corrupt (re-save it with "
            "torch.save(model.state_dict(), ...) or as .safetensors)"
        )


def open_state_dict(
    state: Mapping[str, Any],
    description: str = "state dict",
    *,
    interleaved_gate_up: bool = False,
) -> Source:
    """Open an in-memory state dict of tensors (its order is taken as the model's order).

    Tensors are typed by key naming; weight-norm pairs become their effective weight.
    """
    entries = _state_entries(state, description)
    typed = type_entries(entries, interleaved_gate_up=interleaved_gate_up)
    return Source(description=description, entries=typed)


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
    except (
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        # what torch's weights-only unpickler raises on a corrupt pickle (found by fuzzing)
        IndexError,
        KeyError,
        TypeError,
        AttributeError,
        AssertionError,
        struct.error,
    ) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptFileError(
            f"{path}: not a readable PyTorch file ({detail}); the file is truncated or of "
            "another format"
        ) from exc
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{path}: holds a {type(obj).__name__}, not a state dict; save model.state_dict()"
        )
    return obj


def open_file(path: Path) -> Source:
    """Open a ``.pt/.pth/.bin`` state-dict file."""
    interleaved = interleaved_gate_up_beside(path)
    return open_state_dict(load_file(path), description=str(path), interleaved_gate_up=interleaved)


def open_folder(folder: Path) -> Source:
    """Open a folder of ``pytorch_model*.bin`` shards (with or without their index).

    Raises
    ------
    InputError
        If the index names a missing shard.
    CorruptFileError
        If the index is malformed, or a tensor appears in two files.
    """
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
    parts = []
    for p in paths:
        if not p.is_file():
            raise InputError(
                f"{index} names shard {p.name!r}, which is missing from {folder}; download "
                "the complete checkpoint"
            )
        parts.append((p, _state_entries(load_file(p), str(p))))
    merged = merge_files(folder, parts)
    typed = type_entries(merged, interleaved_gate_up=interleaved_gate_up_beside(folder))
    return Source(description=str(folder), entries=typed)


def looks_like_torch_file(path: Path) -> bool:
    """Whether a file's first bytes are those of ``torch.save`` (zip with ``data.pkl`` first, or
    the legacy pickle with torch's magic number); reads 128 bytes, imports nothing."""
    with path.open("rb") as fh:
        head = fh.read(128)
    if head.startswith(_LEGACY_MAGIC):
        return True
    if not head.startswith(b"PK\x03\x04") or len(head) < 30:
        return False
    name_length = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + name_length].endswith(b"data.pkl")


def _imported_torch() -> Any:
    """The torch module if the caller has imported it, else ``None`` (never imports it).

    An object can only be a torch tensor or module if torch is imported; ``None`` in
    ``sys.modules`` (torch hidden on purpose) counts as not imported.
    """
    return sys.modules.get("torch")


def _not_a(adapter: str, expected: str, model: object) -> UnsupportedInputError:
    return UnsupportedInputError(
        f"the {adapter!r} source opens {expected}, got a {type(model).__name__}; call "
        "weightspectra.open_model(model), which picks the adapter"
    )


@dataclass(frozen=True)
class TorchModule:
    """Adapter for a ``torch.nn.Module`` (needs torch imported by the caller)."""

    name: str = "torch-module"
    extra: str | None = "torch"
    requires: str | None = "torch"

    def can_open(self, model: object) -> bool:
        torch = _imported_torch()
        return torch is not None and isinstance(model, torch.nn.Module)

    def open(self, model: object) -> Source:
        return open_module(model)


@dataclass(frozen=True)
class TorchStateDict:
    """Adapter for a mapping of torch tensors, or a checkpoint dict wrapping one."""

    name: str = "torch-state-dict"
    extra: str | None = "torch"
    requires: str | None = "torch"

    def can_open(self, model: object) -> bool:
        torch = _imported_torch()
        return (
            torch is not None
            and isinstance(model, Mapping)
            and any(isinstance(v, (torch.Tensor, Mapping)) for v in model.values())
        )

    def open(self, model: object) -> Source:
        if not isinstance(model, Mapping):
            raise _not_a(self.name, "mappings", model)
        return open_state_dict(model)


@dataclass(frozen=True)
class TorchFile:
    """Adapter for a ``.pt/.pth/.bin/.ckpt`` file, or any file written by ``torch.save``."""

    name: str = "torch-file"
    extra: str | None = "torch"
    requires: str | None = "torch"

    def can_open(self, model: object) -> bool:
        if not isinstance(model, Path) or not model.is_file():
            return False
        return model.suffix.lower() in TORCH_SUFFIXES or looks_like_torch_file(model)

    def open(self, model: object) -> Source:
        return open_file(as_path(model, self.name))


@dataclass(frozen=True)
class TorchFolder:
    """Adapter for a folder of ``.bin``/``.pt``/``.pth`` state-dict files (shards)."""

    name: str = "torch-folder"
    extra: str | None = "torch"
    requires: str | None = "torch"

    def can_open(self, model: object) -> bool:
        return (
            isinstance(model, Path)
            and model.is_dir()
            and any(any(model.glob(pattern)) for pattern in ("*.bin", "*.pt", "*.pth"))
        )

    def open(self, model: object) -> Source:
        return open_folder(as_path(model, self.name))
