"""Tensor → matrices: convolutions, packed attention, RNN gates, experts, fused gate/up.

Layer-type inference from key names belongs to the sources (tests/sources/test_naming.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from weightspectra.core.layers import GateUpSplit, plan_groups
from weightspectra.enums import LayerType


def test_conv2d_pooled_takes_every_kernel_position(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5, 3, 2))
    (group,) = plan_groups("c.weight", w.shape, LayerType.CONV2D)
    stack = group.take(w)
    assert stack.shape == (6, 8, 5)
    expected = [w[:, :, i, j] for i in range(3) for j in range(2)]
    np.testing.assert_array_equal(stack, np.stack(expected))
    assert (group.count, group.rf, group.N, group.M, group.num_evals) == (6, 6, 8, 5, 30)
    assert group.eig_scale == 0.5


def test_conv2d_unpooled_one_row_per_position(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5, 3, 3))
    groups = plan_groups("c.weight", w.shape, LayerType.CONV2D, pool=False)
    assert [g.suffix for g in groups][:2] == ["[0,0]", "[0,1]"]
    assert len(groups) == 9
    np.testing.assert_array_equal(groups[5].take(w)[0], w[:, :, 1, 2])
    assert all(g.eig_scale == 9 / 2 and g.rf == 9 and g.num_evals == 5 for g in groups)


def test_conv_scaling_can_be_switched_off() -> None:
    (group,) = plan_groups("c", (4, 4, 3, 3), LayerType.CONV2D, conv_scaling=False)
    assert group.eig_scale == 1.0


@pytest.mark.parametrize(
    ("layer_type", "shape", "count"),
    [
        (LayerType.CONV1D, (6, 4, 5), 5),
        (LayerType.CONV3D, (6, 4, 2, 2, 2), 8),
        (LayerType.CONV_TRANSPOSE2D, (4, 6, 3, 3), 9),
    ],
)
def test_other_convolutions(
    rng: np.random.Generator, layer_type: LayerType, shape: tuple[int, ...], count: int
) -> None:
    w = rng.standard_normal(shape)
    (group,) = plan_groups("c", shape, layer_type)
    stack = group.take(w)
    assert stack.shape == (count, shape[0], shape[1])
    np.testing.assert_array_equal(stack[-1], w.reshape(shape[0], shape[1], -1)[:, :, -1])


def test_attention_in_proj_split_into_qkv(rng: np.random.Generator) -> None:
    w = rng.standard_normal((12, 4))
    groups = plan_groups("attn.in_proj_weight", w.shape, LayerType.ATTENTION_IN_PROJ)
    assert [g.suffix for g in groups] == ["[q]", "[k]", "[v]"]
    for i, g in enumerate(groups):
        np.testing.assert_array_equal(g.take(w)[0], w[4 * i : 4 * (i + 1)])


@pytest.mark.parametrize(("layer_type", "gates"), [(LayerType.LSTM, 4), (LayerType.GRU, 3)])
def test_rnn_gates(rng: np.random.Generator, layer_type: LayerType, gates: int) -> None:
    w = rng.standard_normal((gates * 10, 7))
    groups = plan_groups("rnn.weight_ih_l0", w.shape, layer_type)
    assert len(groups) == gates
    np.testing.assert_array_equal(groups[-1].take(w)[0], w[-10:])
    assert groups[0].rows == 10 and groups[0].cols == 7


def test_moe_experts(rng: np.random.Generator) -> None:
    w = rng.standard_normal((3, 16, 8))
    groups = plan_groups("mlp.experts.w1", w.shape, LayerType.MOE_EXPERTS)
    assert [g.suffix for g in groups] == ["[expert0]", "[expert1]", "[expert2]"]
    np.testing.assert_array_equal(groups[1].take(w)[0], w[1])


def test_fused_qkv_split_only_on_request(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 24))  # GPT-2 Conv1D layout (in, 3·out)
    assert len(plan_groups("h.0.attn.c_attn.weight", w.shape, LayerType.DENSE)) == 1
    groups = plan_groups("h.0.attn.c_attn.weight", w.shape, LayerType.DENSE, split_fused_qkv=True)
    np.testing.assert_array_equal(groups[2].take(w)[0], w[:, 16:])


def _svd_evals(matrix: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(matrix.astype(np.float64), compute_uv=False) ** 2)


@pytest.mark.parametrize(
    ("shape", "split", "halves"),
    [
        # (E, 2I, H), gate rows first: Mixtral, Qwen2/3-MoE, DeepSeek-V2/V3
        ((3, 10, 7), GateUpSplit(dim=1), lambda m: (m[:5], m[5:])),
        # (E, H, 2I), gate columns first: Llama 4
        ((3, 7, 10), GateUpSplit(dim=2), lambda m: (m[:, :5], m[:, 5:])),
        # (E, H, 2I), gate and up columns alternating: GPT-OSS
        ((3, 7, 10), GateUpSplit(dim=2, interleaved=True), lambda m: (m[:, 0::2], m[:, 1::2])),
    ],
)
def test_fused_gate_up_experts_split_into_gate_and_up(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    split: GateUpSplit,
    halves: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> None:
    from weightspectra.core.eigen import layer_eigenvalues

    w = rng.standard_normal(shape)
    groups = plan_groups("mlp.experts.gate_up_proj", shape, LayerType.MOE_EXPERTS, gate_up=split)
    assert [g.suffix for g in groups] == [
        f"[expert{e}.{part}]" for e in range(shape[0]) for part in ("gate", "up")
    ]
    for e in range(shape[0]):
        gate, up = halves(w[e])
        for group, half in zip(groups[2 * e : 2 * e + 2], (gate, up), strict=True):
            stack = group.take(w)
            assert stack.shape == (1, group.rows, group.cols) == (1, *half.shape)
            np.testing.assert_array_equal(stack[0], half)
            evals = layer_eigenvalues(stack)
            np.testing.assert_allclose(evals, _svd_evals(half)[-len(evals) :], rtol=1e-9)


def test_fused_gate_up_needs_an_even_axis() -> None:
    with pytest.raises(ValueError, match=r"gate_up_proj: fused gate_up experts \(2, 9, 4\)"):
        plan_groups("e.gate_up_proj", (2, 9, 4), LayerType.MOE_EXPERTS, gate_up=GateUpSplit(1))
    with pytest.raises(ValueError, match="must be 1 or 2"):
        GateUpSplit(dim=0)


@pytest.mark.parametrize(
    ("layer_type", "shape", "match"),
    [
        (LayerType.CONV2D, (4, 4), "must be 4-D"),
        (LayerType.DENSE, (4, 4, 4), "must be 2-D"),
        (LayerType.ATTENTION_IN_PROJ, (10, 4), r"must be \(3d, d\)"),
        (LayerType.LSTM, (10, 4), "4·h rows"),
    ],
)
def test_shape_mismatch(layer_type: LayerType, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_groups("x", shape, layer_type)
