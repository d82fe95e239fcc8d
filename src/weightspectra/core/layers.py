"""From a weight tensor to the 2-D matrices whose spectra are analysed (metrics.md §1).

Pure functions on shapes and numpy arrays. A tensor becomes one or more *groups*; each group is
one row of the report and one empirical spectral density (ESD), made of one or more equally
shaped 2-D matrices whose eigenvalues are pooled and multiplied by ``eig_scale``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from weightspectra.options import LayerType, Options

_CONV = {
    LayerType.CONV1D: 1,
    LayerType.CONV2D: 2,
    LayerType.CONV3D: 3,
    LayerType.CONV_TRANSPOSE1D: 1,
    LayerType.CONV_TRANSPOSE2D: 2,
    LayerType.CONV_TRANSPOSE3D: 3,
}
_GATES = {LayerType.LSTM: ("i", "f", "g", "o"), LayerType.GRU: ("r", "z", "n")}
_RNN_KEY = re.compile(r"weight_(ih|hh)_l(\d+)(_reverse)?$")
_FUSED_QKV = re.compile(r"(c_attn|qkv_proj|\.qkv|Wqkv|in_proj)(\.weight)?$")
_EMBEDDING = re.compile(r"(embed|wte|wpe|tok_embeddings|shared)", re.IGNORECASE)


@dataclass(frozen=True)
class GroupPlan:
    """One ESD to compute from a tensor: which slices, their shape, and the eigenvalue scale.

    Attributes
    ----------
    suffix : str
        Appended to the layer name to name this row ("" for the whole tensor, "[q]", "[1,2]"...).
    count : int
        Number of 2-D matrices pooled into the ESD (``rf`` for a pooled convolution).
    rows, cols : int
        Shape of each matrix.
    eig_scale : float
        Factor applied to every eigenvalue (the peer's convolution scaling).
    rf : int
        Receptive field of the layer: kernel positions (1 for non-convolutions), as the peer
        reports it for pooled and unpooled rows alike.
    take : callable
        Maps the full tensor to a ``(count, rows, cols)`` array (a view where possible).
    """

    suffix: str
    count: int
    rows: int
    cols: int
    eig_scale: float
    take: Callable[[np.ndarray], np.ndarray]
    rf: int = 1

    @property
    def N(self) -> int:
        return max(self.rows, self.cols)

    @property
    def M(self) -> int:
        return min(self.rows, self.cols)

    @property
    def num_evals(self) -> int:
        return self.M * self.count


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
        if _EMBEDDING.search(key):
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


def plan_groups(
    key: str, shape: Sequence[int], layer_type: LayerType, options: Options
) -> list[GroupPlan]:
    """Plan the ESDs of one tensor from its shape alone (nothing is loaded).

    Raises
    ------
    ValueError
        If ``shape`` does not fit ``layer_type`` (the caller turns this into a skipped row).
    """
    shape = tuple(int(s) for s in shape)
    rank = len(shape)

    def whole(t: np.ndarray) -> np.ndarray:
        return t[None, :, :]

    if layer_type in _CONV:
        dims = _CONV[layer_type]
        if rank != dims + 2:
            raise ValueError(f"a {layer_type.value} kernel must be {dims + 2}-D, got {shape}")
        rf = int(np.prod(shape[2:]))
        a, b = shape[0], shape[1]

        def slices(t: np.ndarray) -> np.ndarray:
            # (a, b, *kernel) -> (rf, a, b): one matrix per kernel position
            return np.moveaxis(t.reshape(a, b, rf), 2, 0)

        # The peer's scaling (every published table uses it): slices × √(1/2) when pooled,
        # × √(rf/2) one by one; applied to every convolution, 1×1 kernels included.
        if options.pool or rf == 1:
            scale = 0.5 if options.conv_scaling else 1.0
            return [GroupPlan("", rf, a, b, scale, slices, rf)]
        scale = rf / 2.0 if options.conv_scaling else 1.0
        positions = list(np.ndindex(*shape[2:]))
        plans = []
        for idx, pos in enumerate(positions):
            label = "[" + ",".join(str(p) for p in pos) + "]"
            plans.append(GroupPlan(label, 1, a, b, scale, _slice_taker(a, b, rf, idx), rf))
        return plans

    if layer_type is LayerType.MOE_EXPERTS:
        if rank != 3:
            raise ValueError(f"MoE expert weights must be 3-D (experts, out, in), got {shape}")
        return [
            GroupPlan(f"[expert{e}]", 1, shape[1], shape[2], 1.0, _index_taker(e))
            for e in range(shape[0])
        ]

    if rank != 2:
        raise ValueError(f"a {layer_type.value} weight must be 2-D, got {shape}")
    rows, cols = shape

    if layer_type is LayerType.ATTENTION_IN_PROJ:
        if rows != 3 * cols:
            raise ValueError(f"packed attention in_proj must be (3d, d), got {shape}")
        return _split_rows(cols, ("q", "k", "v"))

    if layer_type in _GATES:
        gates = _GATES[layer_type]
        if rows % len(gates):
            raise ValueError(f"{layer_type.value} weights need {len(gates)}·h rows, got {shape}")
        return _split_rows(rows // len(gates), gates, cols)

    if options.split_fused_qkv and _FUSED_QKV.search(key):
        if rows == 3 * cols:
            return _split_rows(cols, ("q", "k", "v"))
        if cols == 3 * rows:
            return [
                GroupPlan(f"[{n}]", 1, rows, rows, 1.0, _col_taker(i * rows, (i + 1) * rows))
                for i, n in enumerate(("q", "k", "v"))
            ]

    return [GroupPlan("", 1, rows, cols, 1.0, whole)]


def _slice_taker(a: int, b: int, rf: int, idx: int) -> Callable[[np.ndarray], np.ndarray]:
    def take(t: np.ndarray) -> np.ndarray:
        return t.reshape(a, b, rf)[None, :, :, idx]

    return take


def _index_taker(i: int) -> Callable[[np.ndarray], np.ndarray]:
    def take(t: np.ndarray) -> np.ndarray:
        return np.expand_dims(t[i], 0)

    return take


def _col_taker(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    def take(t: np.ndarray) -> np.ndarray:
        return t[None, :, lo:hi]

    return take


def _split_rows(height: int, names: Sequence[str], cols: int | None = None) -> list[GroupPlan]:
    width = height if cols is None else cols

    def taker(i: int) -> Callable[[np.ndarray], np.ndarray]:
        def take(t: np.ndarray) -> np.ndarray:
            return t[None, i * height : (i + 1) * height, :]

        return take

    return [GroupPlan(f"[{n}]", 1, height, width, 1.0, taker(i)) for i, n in enumerate(names)]
