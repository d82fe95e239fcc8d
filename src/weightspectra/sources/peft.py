"""PEFT adapter folders (LoRA, rsLoRA, DoRA): ``adapter_config.json`` + adapter weights.

Alone, an adapter gives one matrix per adapted module, its update ``ΔW = s·B·A`` (``A`` is
``r × in``, ``B`` is ``out × r``; ``s = lora_alpha / r``, or ``lora_alpha / √r`` with
``use_rslora``; per-module ``rank_pattern`` / ``alpha_pattern`` honoured; transposed for
``fan_in_fan_out`` layers such as GPT-2's ``Conv1D``), named as the base's weight
(``encoder.layer.0.attention.self.query.weight``). Its rank is at most ``r``: the analysis flags
rows with fewer non-zero eigenvalues than ``min_evals`` instead of fitting them.

With a base (:func:`merge_adapter`, ``weightspectra.analyze(adapter, base=...)``) it gives the
merged model: every base tensor, each adapted one as ``W + ΔW`` (DoRA's magnitude vector
applied: ``m ⊙ (W + ΔW) / ‖W + ΔW‖`` row-wise), with its full spectrum.

The layout read is the one PEFT publishes: keys ``base_model.model.<module>.lora_A.weight``,
``.lora_B.weight``, ``.lora_magnitude_vector`` (``lora_embedding_A`` / ``lora_embedding_B`` for
embeddings; ``.modules_to_save.default.`` for modules saved whole), in
``adapter_model.safetensors`` (or ``adapter_model.bin``, read with torch's safe loader).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.errors import CorruptFileError, InputError, UnsupportedInputError
from weightspectra.sources.base import Source, TensorEntry, as_path
from weightspectra.sources.delta import DeltaSource, canonical_key, pair_keys, with_load
from weightspectra.sources.naming import type_entries

CONFIG_NAME = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_LORA = re.compile(
    r"^(?P<module>.+)\.lora_(?P<emb>embedding_)?(?P<part>[AB])(?:\.default)?(?:\.weight)?$"
)
_MAGNITUDE = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.default)?(?:\.weight)?$")
_SAVED = re.compile(r"^(?P<module>.+)\.modules_to_save\.default\.(?P<param>.+)$")


@dataclass(frozen=True)
class LoraModule:
    """One adapted module of an adapter.

    Attributes
    ----------
    key : str
        The base weight's key (``<module>.weight``, PEFT's prefix removed).
    rank : int
        ``r``, from ``A``'s shape (the update's rank is at most this).
    scale : float
        ``s``: ``lora_alpha / r`` (``/ √r`` with rsLoRA).
    shape : tuple of int
        The base weight's shape (``out × in``; ``in × out`` for ``fan_in_fan_out``).
    load_delta : callable
        Returns ``ΔW`` (float64), in the base weight's layout.
    load_magnitude : callable, optional
        DoRA's magnitude vector (one value per output row), when the adapter has one.
    """

    key: str
    rank: int
    scale: float
    shape: tuple[int, ...]
    load_delta: Callable[[], np.ndarray]
    load_magnitude: Callable[[], np.ndarray] | None = None


@dataclass(frozen=True)
class AdapterSource(DeltaSource):
    """An opened adapter: its ``ΔW`` entries, and what :func:`merge_adapter` needs.

    Attributes
    ----------
    config : mapping
        ``adapter_config.json``.
    modules : tuple of LoraModule
    saved : tuple of TensorEntry
        Modules saved whole (``modules_to_save``), keyed as the base's tensors.
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    modules: tuple[LoraModule, ...] = ()
    saved: tuple[TensorEntry, ...] = ()


def _pattern_value(patterns: Mapping[str, Any], module: str, default: float) -> float:
    for pattern, value in patterns.items():
        if (
            module == pattern
            or module.endswith("." + pattern)
            or re.fullmatch(rf"(?:.*\.)?{pattern}", module)
        ):
            return float(value)
    return default


def lora_scale(config: Mapping[str, Any], module: str, rank: int) -> float:
    """``s`` of one module: ``alpha / r``, or ``alpha / √r`` when ``use_rslora`` is set;
    ``alpha`` from ``alpha_pattern`` when a pattern names the module, else ``lora_alpha``.

    >>> lora_scale({"lora_alpha": 16}, "q", 8)
    2.0
    >>> lora_scale({"lora_alpha": 16, "use_rslora": True}, "q", 4)
    8.0
    """
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, float(config["lora_alpha"]))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _product(
    a: TensorEntry, b: TensorEntry, scale: float, transpose: bool
) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        delta = scale * (np.asarray(b.load(), np.float64) @ np.asarray(a.load(), np.float64))
        return np.ascontiguousarray(delta.T) if transpose else delta

    return load


def _as_float64(entry: TensorEntry) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return np.asarray(entry.load(), np.float64).reshape(-1)

    return load


def _read_weights(folder: Path) -> Source:
    from weightspectra.sources.safetensors import open_file
    from weightspectra.sources.torch import open_file as open_torch_file

    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            return open_file(path) if path.suffix == ".safetensors" else open_torch_file(path)
    raise InputError(
        f"{folder} has {CONFIG_NAME} but no adapter weights ({' or '.join(WEIGHT_FILES)}); "
        "copy the adapter's weights file beside its config"
    )


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CorruptFileError(f"{path}: expected a JSON object, got {type(config).__name__}")
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise UnsupportedInputError(
            f"{path}: peft_type {kind!r} is not read (LoRA, rsLoRA and DoRA adapters are); "
            "merge the adapter into the model with PEFT's merge_and_unload() and analyse that"
        )
    if "lora_alpha" not in config:
        raise CorruptFileError(f"{path}: a LoRA config needs 'lora_alpha'")
    return config


def open_adapter(folder: Path) -> AdapterSource:
    """Open a PEFT LoRA adapter folder as its ``ΔW = s·B·A`` matrices (nothing computed yet).

    Raises
    ------
    InputError
        If the folder has no adapter weights.
    CorruptFileError
        If the config is not JSON, or a module has ``A`` without ``B`` (or shapes that do not
        chain: ``B`` is ``out × r``, ``A`` is ``r × in``).
    UnsupportedInputError
        If the adapter is not LoRA (IA³, prefix tuning, ...).
    """
    config = _read_config(folder)
    weights = _read_weights(folder)
    parts: dict[str, dict[str, TensorEntry]] = {}
    magnitudes: dict[str, TensorEntry] = {}
    saved: list[TensorEntry] = []
    for entry in weights.entries:
        key = entry.key
        if (m := _LORA.match(key)) is not None:
            parts.setdefault(m["module"], {})[m["part"] + ("e" if m["emb"] else "")] = entry
        elif (m := _MAGNITUDE.match(key)) is not None:
            magnitudes[m["module"]] = entry
        elif (m := _SAVED.match(key)) is not None:
            saved.append(replace(entry, key=f"{m['module']}.{m['param']}", layer_type=None))
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    modules: list[LoraModule] = []
    for module, ab in parts.items():
        embedding = "Ae" in ab or "Be" in ab
        a, b = (ab.get("Ae"), ab.get("Be")) if embedding else (ab.get("A"), ab.get("B"))
        if a is None or b is None or len(a.shape) != 2 or len(b.shape) != 2:
            raise CorruptFileError(
                f"{folder}: LoRA module {_strip_prefix(module)!r} needs 2-D lora_A and lora_B "
                f"weights, found {sorted(ab)}; the adapter file is incomplete"
            )
        if embedding:  # PEFT stores A as r × vocab and B as dim × r; the weight is vocab × dim
            rank, shape, transpose = a.shape[0], (a.shape[1], b.shape[0]), True
        else:
            rank, shape, transpose = a.shape[0], (b.shape[0], a.shape[1]), fan_in_fan_out
            shape = (shape[1], shape[0]) if transpose else shape
        if b.shape[1] != rank:
            raise CorruptFileError(
                f"{folder}: LoRA module {module!r}: B {b.shape} and A {a.shape} do not chain "
                "(B must be out × r and A r × in)"
            )
        name = _strip_prefix(module)
        scale = lora_scale(config, name, rank)
        magnitude = magnitudes.get(module)
        modules.append(
            LoraModule(
                key=f"{name}.weight",
                rank=rank,
                scale=scale,
                shape=shape,
                load_delta=_product(a, b, scale, transpose),
                load_magnitude=None if magnitude is None else _as_float64(magnitude),
            )
        )
    if not modules and not saved:
        raise InputError(
            f"{folder}: the adapter has no lora_A/lora_B weights (keys such as "
            f"{[e.key for e in weights.entries[:3]]})"
        )
    entries = [
        TensorEntry(key=m.key, shape=m.shape, dtype="float64", load=m.load_delta) for m in modules
    ]
    saved_entries = tuple(replace(e, key=_strip_prefix(e.key)) for e in saved)
    typed = type_entries([*entries, *saved_entries], weight_norm=False)
    return AdapterSource(
        description=str(folder),
        entries=typed,
        base_description=str(config.get("base_model_name_or_path") or ""),
        config=config,
        modules=tuple(modules),
        saved=typed[len(entries) :],
    )


def _strip_prefix(key: str) -> str:
    return canonical_key(key)


def _merged(base_load: Callable[[], np.ndarray], module: LoraModule) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        merged: np.ndarray = np.asarray(base_load(), np.float64) + module.load_delta()
        if module.load_magnitude is not None:
            norms = np.linalg.norm(merged, axis=1)
            merged = merged * (module.load_magnitude() / norms)[:, None]
        return merged

    return load


def merge_adapter(adapter: AdapterSource, base: Source) -> Source:
    """The merged model: every tensor of ``base``, each adapted weight as ``W + ΔW``.

    Modules saved whole replace the base's tensors. Pairing is by name
    (:func:`~weightspectra.sources.delta.pair_keys`).

    Raises
    ------
    InputError
        If a module of the adapter has no weight of that name in the base, or one of another
        shape (the adapter was made for another model).
    """
    base_keys = [e.key for e in base.entries]
    wanted = [m.key for m in adapter.modules] + [e.key for e in adapter.saved]
    pairs = pair_keys(wanted, base_keys)
    merged: dict[str, LoraModule] = {}
    replaced: dict[str, TensorEntry] = {}
    base_shapes = {e.key: e.shape for e in base.entries}
    for module in adapter.modules:
        target = pairs.get(module.key)
        if target is None or base_shapes[target] != module.shape:
            found = "no such tensor" if target is None else f"shape {base_shapes[target]}"
            raise InputError(
                f"adapter module {module.key!r} (shape {module.shape}, rank {module.rank}) has "
                f"no partner in the base {base.description} ({found}); pass the base model the "
                f"adapter was trained on ({adapter.base_description or 'see adapter_config.json'})"
            )
        merged[target] = module
    for saved in adapter.saved:
        target = pairs.get(saved.key)
        if target is not None:
            replaced[target] = saved
    entries = []
    for entry in base.entries:
        if entry.key in merged:
            entry = with_load(entry, _merged(entry.load, merged[entry.key]), dtype="float64")
        elif entry.key in replaced:
            new = replaced[entry.key]
            entry = with_load(entry, new.load, shape=new.shape, dtype=new.dtype)
        entries.append(entry)
    return Source(
        description=f"{base.description} + adapter {adapter.description}", entries=tuple(entries)
    )


def merged_arrays(adapter: AdapterSource, base: Source) -> dict[str, np.ndarray]:
    """Every float tensor of the merged model as a numpy array (for writing a merged file)."""
    return {e.key: e.load() for e in merge_adapter(adapter, base).entries if e.is_float}


@dataclass(frozen=True)
class PeftAdapterFolder:
    """Adapter for a PEFT adapter folder (``adapter_config.json`` beside its weights)."""

    name: str = "peft-adapter"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and model.is_dir() and (model / CONFIG_NAME).is_file()

    def open(self, model: object) -> Source:
        return open_adapter(as_path(model, self.name))


__all__ = [
    "AdapterSource",
    "LoraModule",
    "PeftAdapterFolder",
    "lora_scale",
    "merge_adapter",
    "merged_arrays",
    "open_adapter",
]
