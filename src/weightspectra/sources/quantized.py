"""GPTQ and AWQ quantised safetensors checkpoints, dequantised with numpy one layer at a time.

A quantised linear layer ``<layer>`` is stored as ``<layer>.qweight`` (int32, packed codes),
``<layer>.qzeros`` (int32, packed zero points), ``<layer>.scales`` (float16) and, for GPTQ,
optionally ``<layer>.g_idx`` (int32, the group of each input feature). Each such layer becomes
*one* dense entry ``<layer>.weight`` of shape (out, in) whose loader unpacks and dequantises it,
``W = scales[g] · (q − z[g])``; its quantisation parameters are folded into that entry and are
not rows of their own (:attr:`QuantLayout.parameters` lists them). Every other tensor (embeddings,
norms, biases, an unquantised ``lm_head``) is read as in a plain safetensors file.

The layouts (see ``docs/formats.md`` for their sources):

* **GPTQ** (AutoGPTQ, GPTQModel): ``qweight`` (in·bits/32, out), codes packed along the input
  axis; ``qzeros`` (groups, out·bits/32), packed along the output axis; ``scales`` (groups,
  out). Within each 32-bit word (2, 4, 8 bits) or each run of three words (3 bits) the codes
  form a little-endian bit stream, code ``k`` at bit ``k·bits``. The ``"gptq"`` checkpoint
  format (AutoGPTQ, and GPTQModel's default when saving) stores ``z − 1``; GPTQModel's
  ``"gptq_v2"`` stores ``z``.
* **AWQ** (AutoAWQ GEMM): ``qweight`` (in, out·bits/32) and ``qzeros`` (groups, out·bits/32),
  packed along the output axis, 4-bit only, the eight nibbles of a word holding output columns
  ``[0, 2, 4, 6, 1, 3, 5, 7]`` of its block of eight; zeros stored as they are.

Bits, group size, ``desc_act``, ``sym`` and the checkpoint format come from
``quantize_config.json``, ``config.json``'s ``quantization_config`` or ``quant_config.json``
beside the weights; without one they are inferred from the shapes (always unambiguous for the
layouts above, since ``qzeros`` carries the bits).

bitsandbytes 8-bit and 4-bit weights in the same files are handled by
:mod:`weightspectra.sources.quantized_bnb`; the packing arithmetic is in
:mod:`~weightspectra.sources.quantized_unpack` and the shape checks in
:mod:`~weightspectra.sources.quantized_layout`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightspectra.enums import LayerType
from weightspectra.errors import CorruptFileError, InputError
from weightspectra.sources.base import Source, TensorEntry, as_path, merge_files
from weightspectra.sources.naming import interleaved_gate_up_beside, type_entries
from weightspectra.sources.quantized_bnb import dequantize_int8, fold_bnb, has_bnb
from weightspectra.sources.quantized_layout import (
    PARTS,
    QuantConfig,
    QuantLayout,
    QuantMethod,
    layout,
    read_config,
)
from weightspectra.sources.quantized_unpack import (
    AWQ_ORDER,
    SUPPORTED_BITS,
    dequantize_awq,
    dequantize_gptq,
    unpack,
)
from weightspectra.sources.safetensors import _file_entries, read_header


def quantized_layers(keys: Iterable[str]) -> list[str]:
    """The layers (prefixes of ``.qweight``) among ``keys``, in the order met.

    >>> quantized_layers(["a.qweight", "a.scales", "a.bias", "b.weight"])
    ['a']
    """
    return [k[: -len(".qweight")] for k in keys if k.endswith(".qweight")]


def _dequantized_entry(lay: QuantLayout, parts: Mapping[str, TensorEntry]) -> TensorEntry:
    def load() -> np.ndarray:
        qweight, qzeros, scales = (parts[p].load() for p in ("qweight", "qzeros", "scales"))
        if lay.method is QuantMethod.AWQ:
            return dequantize_awq(qweight, qzeros, scales, bits=lay.bits, group_size=lay.group_size)
        g_idx = parts["g_idx"].load() if "g_idx" in parts else None
        return dequantize_gptq(
            qweight,
            qzeros,
            scales,
            g_idx,
            bits=lay.bits,
            group_size=lay.group_size,
            zero_offset=lay.zero_offset,
        )

    def each(method: str) -> Callable[[], None]:
        def hook() -> None:
            for part in parts.values():
                getattr(part, method)()

        return hook

    return TensorEntry(
        key=f"{lay.layer}.weight",
        shape=(lay.out_features, lay.in_features),
        dtype="float32",
        load=load,
        layer_type=LayerType.DENSE,
        quantization=lay.label,
        prefetch_hook=each("prefetch"),
        release_hook=each("release"),
    )


def fold_quantized(
    entries: Sequence[TensorEntry], config: QuantConfig | None = None
) -> tuple[tuple[TensorEntry, ...], dict[str, QuantLayout]]:
    """Replace each quantised layer's tensors by one dequantising ``<layer>.weight`` entry.

    Parameters
    ----------
    entries : sequence of TensorEntry
        A checkpoint's raw tensors, in model order.
    config : QuantConfig, optional
        The checkpoint's declared settings.

    Returns
    -------
    (tuple of TensorEntry, dict)
        The entries, each quantised layer's at the place of its ``qweight``, and the
        :class:`QuantLayout` of each layer, by layer name (its ``parameters`` are the keys left
        out of the entries).

    Raises
    ------
    CorruptFileError, InputError
        As :func:`layout`, for the first layer that does not fit.
    """
    by_key = {e.key: e for e in entries}
    layouts: dict[str, QuantLayout] = {}
    folded: dict[str, TensorEntry] = {}
    for layer in quantized_layers(by_key):
        parts = {p: by_key[f"{layer}.{p}"] for p in PARTS if f"{layer}.{p}" in by_key}
        lay = layout(layer, {p: e.shape for p, e in parts.items()}, config)
        layouts[layer] = lay
        folded[f"{layer}.qweight"] = _dequantized_entry(lay, parts)
    hidden = {k for lay in layouts.values() for k in lay.parameters}
    out = [folded.get(e.key, e) for e in entries if e.key in folded or e.key not in hidden]
    return tuple(out), layouts


def _describe(
    path: Path, layouts: Mapping[str, QuantLayout], entries: Sequence[TensorEntry]
) -> str:
    quantised = [e for e in entries if e.quantization]
    kinds = sorted({e.quantization for e in quantised})
    return (
        f"{path} ({len(quantised)} quantised layers, {', '.join(kinds)}; their quantisation "
        "parameters are folded into <layer>.weight)"
    )


def open_quantized(path: Path) -> Source:
    """Open a GPTQ/AWQ safetensors file, or a folder of (sharded) ones.

    Returns
    -------
    Source
        One dense ``<layer>.weight`` entry per quantised layer, dequantised when loaded, and
        every other tensor as stored; each entry's ``quantization`` says how it was stored.

    Raises
    ------
    CorruptFileError, InputError
        As :func:`layout`, or for an unreadable file, index or config.
    """
    entries, layouts = fold_quantized(_raw_entries(path), read_config(path))
    entries = fold_bnb(entries)
    typed = type_entries(entries, interleaved_gate_up=interleaved_gate_up_beside(path))
    return Source(description=_describe(path, layouts, entries), entries=typed)


def quantized_layouts(path: str | Path) -> dict[str, QuantLayout]:
    """How each quantised layer of a GPTQ/AWQ checkpoint is stored (headers and config only).

    The per-layer record behind the ``quantization`` column (``"gptq-4bit-g128"``), with the
    bits, group size, features, zero offset and the folded parameter keys as attributes.

    Parameters
    ----------
    path : str or Path
        A ``.safetensors`` file or a folder of shards.

    Returns
    -------
    dict of str to QuantLayout
        By layer name (the prefix of ``.qweight``), in model order; empty when none is quantised.

    Raises
    ------
    CorruptFileError, InputError
        As :func:`open_quantized`.
    """
    _, layouts = fold_quantized(_raw_entries(Path(path)), read_config(Path(path)))
    return layouts


def _raw_entries(path: Path) -> tuple[TensorEntry, ...]:
    if path.is_dir():
        parts = [(shard, _file_entries(shard, keys)) for shard, keys in _shards(path)]
        return merge_files(path, parts)
    return tuple(_file_entries(path))


def _shards(folder: Path) -> list[tuple[Path, list[str] | None]]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if not indexes:
        return [(f, None) for f in sorted(folder.glob("*.safetensors"))]
    try:
        weight_map = json.loads(indexes[0].read_text(encoding="utf-8"))["weight_map"]
        pairs = [(str(k), str(v)) for k, v in weight_map.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(
            f"{indexes[0]}: not a valid safetensors index (needs a 'weight_map' object)"
        ) from exc
    by_file: dict[str, list[str]] = {}
    for key, fname in pairs:
        by_file.setdefault(fname, []).append(key)
    out: list[tuple[Path, list[str] | None]] = []
    for fname, keys in by_file.items():
        if not (folder / fname).is_file():
            raise InputError(
                f"{indexes[0]} names shard {fname!r}, which is missing from {folder}; "
                "download the complete checkpoint"
            )
        out.append((folder / fname, keys))
    return out


def _is_quantized(keys: Iterable[str]) -> bool:
    names = list(keys)
    return any(k.endswith(".qweight") for k in names) or has_bnb(names)


def _has_qweight(path: Path) -> bool:
    """Whether a safetensors file (or a folder's index or first shard) names a ``.qweight``
    or bitsandbytes state."""
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if indexes:
            try:
                weight_map = json.loads(indexes[0].read_text(encoding="utf-8"))["weight_map"]
                return _is_quantized(str(k) for k in weight_map)
            except (OSError, ValueError, KeyError, TypeError):
                return False  # not ours to report: the safetensors-folder adapter says why
        files = sorted(path.glob("*.safetensors"))
        return any(_has_qweight(f) for f in files)
    try:
        header, _ = read_header(path)
    except (CorruptFileError, OSError):
        return False
    return _is_quantized(header)


@dataclass(frozen=True)
class QuantizedSafetensors:
    """Adapter for GPTQ/AWQ safetensors files and sharded folders (numpy only).

    Asked before the plain safetensors adapters: it claims a file or folder only when a tensor
    key ends in ``.qweight`` (read from the header or the index, nothing else).
    """

    name: str = "quantized-safetensors"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        if not isinstance(model, Path):
            return False
        is_file = model.is_file() and model.suffix.lower() == ".safetensors"
        is_folder = model.is_dir() and any(model.glob("*.safetensors"))
        return (is_file or is_folder) and _has_qweight(model)

    def open(self, model: object) -> Source:
        return open_quantized(as_path(model, self.name))


__all__ = [
    "AWQ_ORDER",
    "PARTS",
    "SUPPORTED_BITS",
    "QuantConfig",
    "QuantLayout",
    "QuantMethod",
    "QuantizedSafetensors",
    "dequantize_awq",
    "dequantize_gptq",
    "dequantize_int8",
    "fold_quantized",
    "layout",
    "open_quantized",
    "quantized_layouts",
    "read_config",
    "unpack",
]
