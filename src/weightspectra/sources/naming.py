"""Hugging Face / PyTorch key naming: a tensor's layer type from its key and shape.

The rules of the adapters whose tensors come by name only (state dicts, ``.pt``/``.bin`` files,
safetensors, numpy arrays), and of module parameters whose class says nothing (a fused experts
module). :func:`type_entries` is what those adapters call at open time: it rebuilds weight-norm
weights (:mod:`weightspectra.sources.reparam`), then fills each untyped entry's ``layer_type``,
``type_reason`` and, for fused MoE ``gate_up_proj`` experts, ``gate_up``.

The rules, by rank of the tensor:

* 2-D: ``weight_ih_l0``/``weight_hh_l0`` are LSTM or GRU gates (4h or 3h rows); a packed
  ``in_proj_weight`` of shape (3d, d) is attention; a layer whose own module name contains
  ``embed``, or is ``wte``, ``wpe`` or ``shared`` (T5/BART's tied embedding: the whole path
  component, so ``shared_expert`` MLPs stay dense), is an embedding; anything else is dense.
* 3-D: a key naming experts is MoE experts, else a Conv1d kernel when its last axis is small.
* 4-D and 5-D: Conv2d and Conv3d kernels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from weightspectra.core.layers import GateUpSplit
from weightspectra.enums import LayerType
from weightspectra.sources.base import TensorEntry
from weightspectra.sources.reparam import effective_weights

_RNN_KEY = re.compile(r"weight_(ih|hh)_l(\d+)(_reverse)?$")
#: Matched against the layer's own module name (the key's last component before ``.weight``).
_EMBEDDING_LAYER = re.compile(r"embed|^(wte|wpe|shared)$", re.IGNORECASE)
_GATE_UP = re.compile(r"(^|\.)gate_up_proj(\.weight)?$")

#: ``model_type`` values (a checkpoint's ``config.json``) whose fused experts interleave gate and
#: up along the doubled axis (``gate0, up0, gate1, ...``). Every other model in transformers
#: 5.x stores them as two halves, gate first (``is_concatenated=True``, its default).
INTERLEAVED_GATE_UP_MODEL_TYPES = frozenset({"gpt_oss"})


def layer_name(key: str) -> str:
    """The layer's own module name: the key's last component, before a final ``.weight``.

    >>> layer_name("model.embed_tokens.weight"), layer_name("shared.weight"), layer_name("emb")
    ('embed_tokens', 'shared', 'emb')
    """
    parts = key.split(".")
    if len(parts) > 1 and parts[-1] == "weight":
        parts.pop()
    return parts[-1]


def infer_layer_type(
    key: str, shape: Sequence[int], siblings: Mapping[str, Sequence[int]] | None = None
) -> tuple[LayerType, str]:
    """Guess the layer type of a tensor known only by its key and shape (state dicts, files).

    Parameters
    ----------
    key : str
        Tensor key, e.g. ``"encoder.layer.0.attention.self.query.weight"``.
    shape : sequence of int
        Tensor shape.
    siblings : mapping, optional
        Shapes of the other tensors, by key (used to size LSTM/GRU input weights).

    Returns
    -------
    (LayerType, str)
        The type, and an empty string or the reason it is :attr:`LayerType.UNKNOWN`.

    Examples
    --------
    >>> infer_layer_type("model.layers.0.mlp.shared_expert.gate_proj.weight", (28, 16))
    (<LayerType.DENSE: 'dense'>, '')
    >>> infer_layer_type("shared.weight", (32128, 512))
    (<LayerType.EMBEDDING: 'embedding'>, '')
    """
    rank = len(shape)
    rnn = _RNN_KEY.search(key)
    if rank == 2 and rnn is not None:
        rows, cols = shape
        if rnn.group(1) == "hh":
            hidden = cols
        else:
            hh_key = key[: rnn.start()] + f"weight_hh_l{rnn.group(2)}{rnn.group(3) or ''}"
            hh = (siblings or {}).get(hh_key)
            hidden = hh[1] if hh is not None and len(hh) == 2 else 0
        if hidden and rows == 4 * hidden:
            return LayerType.LSTM, ""
        if hidden and rows == 3 * hidden:
            return LayerType.GRU, ""
        return LayerType.DENSE, ""
    if rank == 2:
        rows, cols = shape
        if key.endswith("in_proj_weight") and rows == 3 * cols:
            return LayerType.ATTENTION_IN_PROJ, ""
        if _EMBEDDING_LAYER.search(layer_name(key)):
            return LayerType.EMBEDDING, ""
        return LayerType.DENSE, ""
    if rank == 3:
        if "expert" in key.lower():
            return LayerType.MOE_EXPERTS, ""
        out_c, in_c, k = shape
        if k <= min(out_c, in_c):
            return LayerType.CONV1D, ""
        return (
            LayerType.UNKNOWN,
            f"3-D tensor {tuple(shape)} is neither a Conv1d kernel (out, in, k) with a small k "
            "nor named like MoE experts; load the model as an nn.Module to give its type",
        )
    if rank == 4:
        return LayerType.CONV2D, ""
    if rank == 5:
        return LayerType.CONV3D, ""
    return LayerType.UNKNOWN, f"a {rank}-D tensor has no matrix form"


def gate_up_split(
    key: str,
    shape: Sequence[int],
    siblings: Mapping[str, Sequence[int]],
    *,
    interleaved: bool = False,
) -> GateUpSplit | None:
    """Where the gate and up halves of fused ``experts.gate_up_proj`` weights lie.

    The doubled axis is the one that is twice the intermediate size of the sibling
    ``down_proj``: ``(E, 2I, H)`` beside a ``(E, H, I)`` down projection (Mixtral, Qwen-MoE,
    DeepSeek: axis 1), ``(E, H, 2I)`` beside ``(E, I, H)`` (Llama 4, GPT-OSS: axis 2). Without
    a matching sibling, axis 1 when it is even (the transformers default layout), else axis 2.

    Parameters
    ----------
    key : str
        Tensor key; only keys ending in ``gate_up_proj`` (or ``gate_up_proj.weight``) split.
    shape : sequence of int
        Its shape ``(E, a, b)``.
    siblings : mapping
        Shapes of the other tensors, by key (to find the ``down_proj`` beside it).
    interleaved : bool, default False
        Gate and up alternate along the doubled axis (see
        :data:`INTERLEAVED_GATE_UP_MODEL_TYPES`).

    Returns
    -------
    GateUpSplit or None
        ``None`` when the tensor is not fused gate/up experts, or has no even axis to split.

    Examples
    --------
    >>> siblings = {"mlp.experts.down_proj": (8, 16, 20)}
    >>> gate_up_split("mlp.experts.gate_up_proj", (8, 40, 16), siblings)
    GateUpSplit(dim=1, interleaved=False)
    """
    found = _GATE_UP.search(key)
    if len(shape) != 3 or found is None:
        return None
    _, a, b = (int(s) for s in shape)
    down_key = key[: found.start()] + found.group(0).replace("gate_up_proj", "down_proj")
    down = siblings.get(down_key)
    if down is not None and len(down) == 3:
        _, c, d = (int(s) for s in down)
        if a == 2 * d and b == c:
            return GateUpSplit(1, interleaved)
        if b == 2 * c and a == d:
            return GateUpSplit(2, interleaved)
    if a % 2 == 0:
        return GateUpSplit(1, interleaved)
    if b % 2 == 0:
        return GateUpSplit(2, interleaved)
    return None


def model_type_beside(path: Path) -> str | None:
    """The ``model_type`` of the ``config.json`` in a checkpoint folder (or beside a file).

    A missing or unreadable ``config.json`` gives ``None``: it is optional metadata, not weights.
    """
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    model_type = data.get("model_type")
    text = data.get("text_config")
    if not isinstance(model_type, str) and isinstance(text, dict):
        model_type = text.get("model_type")
    return model_type if isinstance(model_type, str) else None


def interleaved_gate_up_beside(path: Path) -> bool:
    """Whether the checkpoint at ``path`` interleaves fused gate/up experts (by its config)."""
    return model_type_beside(path) in INTERLEAVED_GATE_UP_MODEL_TYPES


def type_entries(
    entries: Sequence[TensorEntry],
    *,
    interleaved_gate_up: bool = False,
    weight_norm: bool = True,
) -> tuple[TensorEntry, ...]:
    """Type every untyped entry by key naming (entries with a type are kept as they are).

    Parameters
    ----------
    entries : sequence of TensorEntry
        A source's tensors, in model order.
    interleaved_gate_up : bool, default False
        Fused MoE gate/up experts alternate gate and up (GPT-OSS).
    weight_norm : bool, default True
        First replace weight-norm pairs by their effective weight and two skipped rows (see
        :func:`weightspectra.sources.reparam.effective_weights`); off for module sources, which
        compute parametrised weights themselves.

    Returns
    -------
    tuple of TensorEntry
        Every entry with ``layer_type`` set.
    """
    rebuilt = effective_weights(entries) if weight_norm else list(entries)
    shapes = {e.key: e.shape for e in rebuilt}
    typed = []
    for entry in rebuilt:
        if entry.layer_type is not None:
            typed.append(entry)
            continue
        layer_type, why = infer_layer_type(entry.key, entry.shape, shapes)
        split = None
        if layer_type is LayerType.MOE_EXPERTS:
            split = gate_up_split(entry.key, entry.shape, shapes, interleaved=interleaved_gate_up)
        typed.append(replace(entry, layer_type=layer_type, type_reason=why, gate_up=split))
    return tuple(typed)
