"""bitsandbytes-serialised weights in safetensors checkpoints (as transformers saves them).

* **8-bit** (LLM.int8(), Dettmers et al. 2022, vector-wise absmax quantisation; bitsandbytes'
  ``Int8Params`` with its ``CB``/``SCB`` pair): ``<layer>.weight`` int8 (out, in) and
  ``<layer>.SCB`` float32 (out,), each row's absolute maximum, so ``W = CB · SCB / 127``
  row by row. An optional ``<layer>.weight_format`` (older bitsandbytes) must say ``row`` (0);
  the GPU tile layouts (``col32``, ``col_turing``, ``col_ampere``) fail that layer's row.
* **4-bit** (NF4 / FP4, QLoRA): ``<layer>.weight`` uint8 packed codes beside
  ``<layer>.weight.absmax``, ``.quant_map``, ``.nested_*`` and
  ``<layer>.weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``). Their byte layout is defined
  by bitsandbytes' code rather than a published format, so these layers are not dequantised:
  each gives one skipped row naming its format and the way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from weightspectra.enums import LayerType
from weightspectra.errors import InputError
from weightspectra.sources.base import TensorEntry

_FORMATS = {0: "row", 1: "col32", 2: "col_turing", 3: "col_ampere"}
_STATE = ".quant_state.bitsandbytes__"


def dequantize_int8(cb: np.ndarray, scb: np.ndarray) -> np.ndarray:
    """The float32 weight of a bitsandbytes 8-bit layer: row ``o`` is ``CB[o] · SCB[o] / 127``.

    Parameters
    ----------
    cb : ndarray of int8, shape (out, in)
    scb : ndarray of float, shape (out,)

    Returns
    -------
    ndarray of float32, shape (out, in)

    Raises
    ------
    InputError
        If ``scb`` does not have one value per row of ``cb``.

    Examples
    --------
    >>> dequantize_int8(np.array([[127, -127, 0]], np.int8), np.array([2.0], np.float32))
    array([[ 2., -2.,  0.]], dtype=float32)
    """
    if cb.ndim != 2 or np.shape(scb) != (cb.shape[0],):
        raise InputError(
            f"bitsandbytes 8-bit weight {cb.shape} needs one SCB per row, got SCB "
            f"{np.shape(scb)}; the checkpoint is corrupt (re-save it)"
        )
    scale = np.asarray(scb, dtype=np.float32)[:, None]
    out: np.ndarray = cb.astype(np.float32) * scale / np.float32(127)
    return out


def bnb_layers(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """The 8-bit layers (with ``.SCB``) and the 4-bit layers (with a quant state) among keys.

    >>> bnb_layers(["a.weight", "a.SCB", "b.weight", "b.weight.quant_state.bitsandbytes__nf4"])
    (['a'], ['b'])
    """
    eight = [k[: -len(".SCB")] for k in keys if k.endswith(".SCB")]
    four = [k[: k.index(_STATE) - len(".weight")] for k in keys if _STATE in k]
    return eight, four


def _int8_entry(weight: TensorEntry, scb: TensorEntry, fmt: TensorEntry | None) -> TensorEntry:
    layer = weight.key[: -len(".weight")]

    def load() -> np.ndarray:
        if fmt is not None:
            code = int(np.asarray(fmt.load()).reshape(-1)[0])
            if code != 0:
                raise InputError(
                    f"bitsandbytes 8-bit layer {layer!r} is stored in the "
                    f"{_FORMATS.get(code, str(code))!r} GPU tile layout, not 'row'; re-save the "
                    "model with a bitsandbytes that writes the row layout (0.40 or later)"
                )
        return dequantize_int8(weight.load(), scb.load())

    return replace(weight, dtype="float32", load=load, layer_type=None, quantization="bnb-int8")


def _four_bit_entry(layer: str, weight: TensorEntry, kind: str) -> TensorEntry:
    reason = (
        f"bitsandbytes 4-bit ({kind}) weight, stored packed as uint8 {weight.shape}: its "
        "block layout is bitsandbytes' own, not a published format, so weightspectra does not "
        "dequantise it; analyse the "
        "unquantised checkpoint, or load the model with transformers and bitsandbytes and pass "
        "its dequantised state dict"
    )

    def load() -> np.ndarray:
        raise InputError(f"{layer}: {reason}")

    # The dtype is that of the weights the entry stands for (as for every dequantised entry),
    # so the row carries this reason rather than the generic one of a non-float buffer.
    return replace(
        weight,
        dtype="float32",
        load=load,
        layer_type=LayerType.UNKNOWN,
        type_reason=reason,
        quantization=f"bnb-{kind}",
    )


def fold_bnb(entries: Sequence[TensorEntry]) -> tuple[TensorEntry, ...]:
    """Replace bitsandbytes layers' tensors by one ``<layer>.weight`` entry each.

    8-bit layers become float32 weights dequantised when loaded (typed later by naming); 4-bit
    layers become skipped entries with the reason. Their ``SCB``, ``weight_format`` and
    ``weight.*`` quantisation state tensors are folded in and are not rows of their own.

    Parameters
    ----------
    entries : sequence of TensorEntry
        A checkpoint's raw tensors, in model order.

    Returns
    -------
    tuple of TensorEntry
    """
    by_key = {e.key: e for e in entries}
    eight, four = bnb_layers(list(by_key))
    folded: dict[str, TensorEntry] = {}
    hidden: set[str] = set()
    for layer in eight:
        weight = by_key.get(f"{layer}.weight")
        if weight is None or weight.dtype != "int8":
            continue  # an SCB without its int8 weight: left as it is, reported by its dtype
        fmt = by_key.get(f"{layer}.weight_format")
        folded[weight.key] = _int8_entry(weight, by_key[f"{layer}.SCB"], fmt)
        hidden |= {f"{layer}.SCB", f"{layer}.weight_format"}
    for layer in four:
        weight = by_key.get(f"{layer}.weight")
        if weight is None:
            continue
        state = next(k for k in by_key if k.startswith(f"{layer}.weight{_STATE}"))
        folded[weight.key] = _four_bit_entry(layer, weight, state.rsplit("__", 1)[-1])
        hidden |= {k for k in by_key if k.startswith(f"{layer}.weight.")}
    return tuple(folded.get(e.key, e) for e in entries if e.key not in hidden)


def has_bnb(keys: Sequence[str]) -> bool:
    """Whether any key is bitsandbytes state (an ``.SCB`` or a 4-bit quant state)."""
    return any(k.endswith(".SCB") or _STATE in k for k in keys)
