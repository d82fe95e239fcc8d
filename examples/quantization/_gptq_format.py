"""The GPTQ checkpoint layout, written (weightspectra only reads it): integer codes packed into
int32 words along the input axis, zero points packed along the output axis and stored minus one
(the "v1" convention AutoGPTQ writes), float16 scales, one group per ``group`` input columns.

Only widths that divide 32 (2, 4, 8 bits) are packed here: a word then holds whole codes, so
packing is a reshape and a shift per code slot, not a bit stream.
"""

from __future__ import annotations

import numpy as np


def pack_words(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (n, m) in [0, 2**bits) packed along axis 0 into int32 words (n·bits/32, m): code
    ``k`` of a word sits at bits ``k·bits`` up, the first code in the lowest bits."""
    if 32 % bits:
        raise ValueError(f"{bits}-bit codes do not fill an int32 word evenly; use 2, 4 or 8")
    per_word = 32 // bits
    n = codes.shape[0]
    if n % per_word:
        raise ValueError(f"{n} codes along the packed axis, not a multiple of {per_word}")
    slots = codes.astype(np.uint32).reshape(n // per_word, per_word, *codes.shape[1:])
    words = np.zeros((n // per_word, *codes.shape[1:]), np.uint32)
    for k in range(per_word):
        words |= slots[:, k] << np.uint32(k * bits)
    return words.view(np.int32)


def gptq_tensors(layer: str, parts: dict[str, np.ndarray], bits: int) -> dict[str, np.ndarray]:
    """The tensors of one layer in GPTQ's format, from ``parts``: codes ``q`` (in, out), integer
    ``zeros`` and float16 ``scales`` (groups, out)."""
    stored_zeros = (parts["zeros"] - 1) % (2**bits)  # v1: AutoGPTQ stores zero − 1
    return {
        f"{layer}.qweight": pack_words(parts["q"], bits),
        f"{layer}.qzeros": np.ascontiguousarray(pack_words(stored_zeros.T, bits).T),
        f"{layer}.scales": parts["scales"],
    }


def dequantised(parts: dict[str, np.ndarray]) -> np.ndarray:
    """The weight (out, in) the codes stand for, in float32: scale · (code − zero)."""
    groups = parts["groups"]
    scales = parts["scales"].astype(np.float32)[groups]  # (in, out)
    zeros = parts["zeros"].astype(np.float32)[groups]
    return np.ascontiguousarray((scales * (parts["q"].astype(np.float32) - zeros)).T)
