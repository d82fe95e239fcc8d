"""From a weight tensor to the 2-D matrices whose spectra are analysed (metrics.md §1).

Pure functions on shapes and numpy arrays. A tensor becomes one or more *groups*; each group is
one row of the report and one empirical spectral density (ESD), made of one or more equally
shaped 2-D matrices whose eigenvalues are pooled and multiplied by ``eig_scale``.

The layer type, and for fused MoE experts the gate/up layout, come from the source that read the
tensor (:mod:`weightspectra.sources.naming` for keys, module classes for ``nn.Module`` inputs);
options come as plain keyword arguments, so this module depends on :mod:`weightspectra.enums`
alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from weightspectra.enums import LayerType

_CONV = {
    LayerType.CONV1D: 1,
    LayerType.CONV2D: 2,
    LayerType.CONV3D: 3,
    LayerType.CONV_TRANSPOSE1D: 1,
    LayerType.CONV_TRANSPOSE2D: 2,
    LayerType.CONV_TRANSPOSE3D: 3,
}
_GATES = {LayerType.LSTM: ("i", "f", "g", "o"), LayerType.GRU: ("r", "z", "n")}
_FUSED_QKV = re.compile(r"(c_attn|qkv_proj|\.qkv|Wqkv|in_proj)(\.weight)?$")


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


@dataclass(frozen=True)
class GateUpSplit:
    """Where the gate and up projections of fused MoE experts lie in their stacked tensor.

    A fused ``experts.gate_up_proj`` tensor of shape ``(E, a, b)`` holds, for each of its ``E``
    experts, the gate and the up projection side by side along axis ``dim`` (1 or 2): as two
    contiguous halves, gate first (``interleaved=False``, most models), or alternating
    ``gate0, up0, gate1, up1, ...`` (``interleaved=True``, GPT-OSS). Sources decide it from the
    model's naming and layout; :func:`plan_groups` only applies it.

    Attributes
    ----------
    dim : int
        Axis of the 3-D tensor that is twice the intermediate size (1 or 2).
    interleaved : bool, default False
        Whether gate and up alternate along ``dim`` instead of filling its two halves.
    """

    dim: int
    interleaved: bool = False

    def __post_init__(self) -> None:
        if self.dim not in (1, 2):
            raise ValueError(
                f"GateUpSplit.dim must be 1 or 2 (an axis of the (experts, a, b) tensor), "
                f"got {self.dim}"
            )


def plan_groups(
    key: str,
    shape: Sequence[int],
    layer_type: LayerType,
    *,
    pool: bool = True,
    conv_scaling: bool = True,
    split_fused_qkv: bool = False,
    gate_up: GateUpSplit | None = None,
) -> list[GroupPlan]:
    """Plan the ESDs of one tensor from its shape alone (nothing is loaded).

    Parameters
    ----------
    key : str
        Tensor key (only read to recognise fused q/k/v projections).
    shape : sequence of int
        Tensor shape.
    layer_type : LayerType
        The tensor's type, given by its source.
    pool : bool, default True
        Pool the kernel positions of a convolution into one ESD (else one row per position).
    conv_scaling : bool, default True
        Apply the peer's convolution eigenvalue scaling.
    split_fused_qkv : bool, default False
        Split fused q/k/v projections (``c_attn``, ``qkv_proj``, ...) into three rows.
    gate_up : GateUpSplit, optional
        For fused MoE ``gate_up_proj`` experts: split each expert into its gate and up halves
        (rows ``[expert{e}.gate]`` and ``[expert{e}.up]``) instead of one stacked matrix.

    Returns
    -------
    list of GroupPlan
        One per row of the report.

    Raises
    ------
    ValueError
        If ``shape`` does not fit ``layer_type`` (the caller turns this into a skipped row).

    Examples
    --------
    >>> [g.suffix for g in plan_groups("e.gate_up_proj", (2, 8, 3), LayerType.MOE_EXPERTS,
    ...                                gate_up=GateUpSplit(dim=1))]
    ['[expert0.gate]', '[expert0.up]', '[expert1.gate]', '[expert1.up]']
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
        if pool or rf == 1:
            scale = 0.5 if conv_scaling else 1.0
            return [GroupPlan("", rf, a, b, scale, slices, rf)]
        scale = rf / 2.0 if conv_scaling else 1.0
        positions = list(np.ndindex(*shape[2:]))
        plans = []
        for idx, pos in enumerate(positions):
            label = "[" + ",".join(str(p) for p in pos) + "]"
            plans.append(GroupPlan(label, 1, a, b, scale, _slice_taker(a, b, rf, idx), rf))
        return plans

    if layer_type is LayerType.MOE_EXPERTS:
        if rank != 3:
            raise ValueError(f"MoE expert weights must be 3-D (experts, out, in), got {shape}")
        if gate_up is not None:
            return _gate_up_groups(key, shape, gate_up)
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

    if split_fused_qkv and _FUSED_QKV.search(key):
        if rows == 3 * cols:
            return _split_rows(cols, ("q", "k", "v"))
        if cols == 3 * rows:
            return [
                GroupPlan(f"[{n}]", 1, rows, rows, 1.0, _col_taker(i * rows, (i + 1) * rows))
                for i, n in enumerate(("q", "k", "v"))
            ]

    return [GroupPlan("", 1, rows, cols, 1.0, whole)]


def _gate_up_groups(key: str, shape: tuple[int, ...], split: GateUpSplit) -> list[GroupPlan]:
    width = shape[split.dim]
    if width % 2:
        raise ValueError(
            f"{key}: fused gate_up experts {shape} need an even axis {split.dim} (gate and up "
            f"halves), got {width}; pass the tensor without a gate/up split to analyse it whole"
        )
    half = width // 2
    rows, cols = (half, shape[2]) if split.dim == 1 else (shape[1], half)
    plans = []
    for e in range(shape[0]):
        for part, name in enumerate(("gate", "up")):
            if split.interleaved:
                picked = slice(part, None, 2)
            else:
                picked = slice(part * half, (part + 1) * half)
            take = _half_taker(e, split.dim, picked)
            plans.append(GroupPlan(f"[expert{e}.{name}]", 1, rows, cols, 1.0, take))
    return plans


def _half_taker(expert: int, dim: int, picked: slice) -> Callable[[np.ndarray], np.ndarray]:
    def take(t: np.ndarray) -> np.ndarray:
        matrix: np.ndarray = t[expert]
        half: np.ndarray = matrix[picked, :] if dim == 1 else matrix[:, picked]
        return half[None, :, :]

    return take


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
