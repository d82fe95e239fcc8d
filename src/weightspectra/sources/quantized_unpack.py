"""Unpacking and dequantising GPTQ and AWQ codes: pure numpy functions, one layer at a time.

The layouts and their sources are described in :mod:`weightspectra.sources.quantized` and
``docs/formats.md``.
"""

from __future__ import annotations

import numpy as np

from weightspectra.errors import InputError

#: Code widths this reader unpacks.
SUPPORTED_BITS = (2, 3, 4, 8)
#: AutoAWQ's order of the output columns within one packed 32-bit word (4-bit).
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def unpack(packed: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Unpack ``bits``-bit codes stored as a little-endian bit stream in 32-bit words.

    Parameters
    ----------
    packed : ndarray of int32 or uint32
        The packed words; ``axis`` is the packed one.
    bits : int
        2, 3, 4 or 8. For 3 bits, every three consecutive words along ``axis`` hold 32 codes.
    axis : int
        The axis the codes are packed along; it grows by ``32 / bits``.

    Returns
    -------
    ndarray of uint8
        The codes, code ``k`` of a run taken from bits ``k·bits`` to ``k·bits + bits − 1``.

    Raises
    ------
    InputError
        If ``bits`` is not supported, or the packed axis is not a whole number of runs.

    Examples
    --------
    >>> unpack(np.array([[0x4321]], dtype=np.int32), 4, axis=1)[0, :5]
    array([1, 2, 3, 4, 0], dtype=uint8)
    """
    if bits not in SUPPORTED_BITS:
        raise InputError(f"cannot unpack {bits}-bit codes; supported: {SUPPORTED_BITS}")
    words = np.moveaxis(np.asarray(packed).view(np.uint32), axis, -1).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    run = bits if 32 % bits else 1  # words per run of whole codes
    if words.shape[-1] % run:
        raise InputError(
            f"a packed axis of {words.shape[-1]} words does not hold whole runs of {bits}-bit "
            f"codes (needs a multiple of {run})"
        )
    per_run = 32 * run // bits
    runs = words.reshape(*words.shape[:-1], words.shape[-1] // run, run)
    codes = np.empty((*runs.shape[:-1], per_run), dtype=np.uint8)
    for k in range(per_run):
        word, shift = divmod(k * bits, 32)
        value = runs[..., word] >> np.uint64(shift)
        if shift + bits > 32:  # the code straddles two words (3 bits only)
            value |= runs[..., word + 1] << np.uint64(32 - shift)
        codes[..., k] = value & mask
    flat = codes.reshape(*codes.shape[:-2], codes.shape[-2] * per_run)
    return np.moveaxis(flat, -1, axis)


def dequantize_gptq(
    qweight: np.ndarray,
    qzeros: np.ndarray,
    scales: np.ndarray,
    g_idx: np.ndarray | None,
    *,
    bits: int,
    group_size: int,
    zero_offset: int = 1,
) -> np.ndarray:
    """The (out, in) float32 weight of a GPTQ layer.

    Parameters
    ----------
    qweight : ndarray of int32, shape (in·bits/32, out)
    qzeros : ndarray of int32, shape (groups, out·bits/32)
    scales : ndarray of float16, shape (groups, out)
    g_idx : ndarray of int32, shape (in,), optional
        Group of each input feature; default ``i // group_size``.
    bits : int
    group_size : int
        ``-1`` for one group.
    zero_offset : int, default 1
        Added to the stored zeros modulo ``2**bits`` (1 for the ``"gptq"`` format).

    Returns
    -------
    ndarray of float32, shape (out, in)
        ``W[o, i] = scales[g, o] · (q[i, o] − z[g, o])`` with ``g = g_idx[i]``; exact, since a
        float16 scale times an integer below 2**9 is representable in float32.

    Raises
    ------
    InputError
        If ``g_idx`` names a group outside ``scales``.
    """
    q = unpack(qweight, bits, axis=0)
    mask = (1 << bits) - 1
    zeros = (unpack(qzeros, bits, axis=1).astype(np.int32) + zero_offset) & mask
    n_in = q.shape[0]
    groups = _group_index(g_idx, n_in, group_size, scales.shape[0])
    return _scaled(q, zeros, scales, groups)


def dequantize_awq(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, *, bits: int, group_size: int
) -> np.ndarray:
    """The (out, in) float32 weight of an AutoAWQ GEMM layer (4-bit).

    Parameters
    ----------
    qweight : ndarray of int32, shape (in, out·bits/32)
    qzeros : ndarray of int32, shape (groups, out·bits/32)
    scales : ndarray of float16, shape (groups, out)
    bits : int
        4 (the only width AutoAWQ's interleaved order is defined for).
    group_size : int

    Returns
    -------
    ndarray of float32, shape (out, in)

    Raises
    ------
    InputError
        If ``bits`` is not 4.
    """
    if bits != 4:
        raise InputError(f"AWQ packing is defined for 4-bit codes, got {bits} bits")
    inverse = np.argsort(np.array(AWQ_ORDER))
    q = _awq_columns(unpack(qweight, bits, axis=1), inverse)
    zeros = _awq_columns(unpack(qzeros, bits, axis=1), inverse)
    groups = _group_index(None, q.shape[0], group_size, scales.shape[0])
    return _scaled(q, zeros, scales, groups)


def _scaled(q: np.ndarray, zeros: np.ndarray, scales: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``scales[g] · (q − zeros[g])`` per input row, transposed to (out, in); in place, so a
    layer needs about three float32 copies of its weight at the peak."""
    w = q.astype(np.float32)
    w -= zeros.astype(np.float32)[groups]
    w *= np.asarray(scales, dtype=np.float32)[groups]
    return np.ascontiguousarray(w.T)


def _awq_columns(codes: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Undo AWQ's interleave: column ``c`` of each block of 8 is stored at nibble ``inverse[c]``."""
    rows, cols = codes.shape
    blocks = codes.reshape(rows, cols // 8, 8)
    return blocks[:, :, inverse].reshape(rows, cols)


def _group_index(g_idx: np.ndarray | None, n_in: int, group_size: int, groups: int) -> np.ndarray:
    if g_idx is None:
        size = n_in if group_size == -1 else group_size
        return np.arange(n_in) // size
    index = np.asarray(g_idx).astype(np.int64)
    if index.shape != (n_in,) or (index.size and (index.min() < 0 or index.max() >= groups)):
        raise InputError(
            f"g_idx {index.shape} must give each of the {n_in} input features a group in "
            f"[0, {groups}); the checkpoint is corrupt (re-save it)"
        )
    return index
