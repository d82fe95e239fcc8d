"""Tensor → matrices: convolutions, packed attention, RNN gates, experts, type inference."""

from __future__ import annotations

import numpy as np
import pytest

from weightspectra.core.layers import infer_layer_type, plan_groups
from weightspectra.options import LayerType, Options

DEFAULT = Options()


def test_conv2d_pooled_takes_every_kernel_position(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5, 3, 2))
    (group,) = plan_groups("c.weight", w.shape, LayerType.CONV2D, DEFAULT)
    stack = group.take(w)
    assert stack.shape == (6, 8, 5)
    expected = [w[:, :, i, j] for i in range(3) for j in range(2)]
    np.testing.assert_array_equal(stack, np.stack(expected))
    assert (group.count, group.rf, group.N, group.M, group.num_evals) == (6, 6, 8, 5, 30)
    assert group.eig_scale == 0.5


def test_conv2d_unpooled_one_row_per_position(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5, 3, 3))
    groups = plan_groups("c.weight", w.shape, LayerType.CONV2D, Options(pool=False))
    assert [g.suffix for g in groups][:2] == ["[0,0]", "[0,1]"]
    assert len(groups) == 9
    np.testing.assert_array_equal(groups[5].take(w)[0], w[:, :, 1, 2])
    assert all(g.eig_scale == 9 / 2 and g.rf == 9 and g.num_evals == 5 for g in groups)


def test_conv_scaling_can_be_switched_off() -> None:
    (group,) = plan_groups("c", (4, 4, 3, 3), LayerType.CONV2D, Options(conv_scaling=False))
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
    (group,) = plan_groups("c", shape, layer_type, DEFAULT)
    stack = group.take(w)
    assert stack.shape == (count, shape[0], shape[1])
    np.testing.assert_array_equal(stack[-1], w.reshape(shape[0], shape[1], -1)[:, :, -1])


def test_attention_in_proj_split_into_qkv(rng: np.random.Generator) -> None:
    w = rng.standard_normal((12, 4))
    groups = plan_groups("attn.in_proj_weight", w.shape, LayerType.ATTENTION_IN_PROJ, DEFAULT)
    assert [g.suffix for g in groups] == ["[q]", "[k]", "[v]"]
    for i, g in enumerate(groups):
        np.testing.assert_array_equal(g.take(w)[0], w[4 * i : 4 * (i + 1)])


@pytest.mark.parametrize(("layer_type", "gates"), [(LayerType.LSTM, 4), (LayerType.GRU, 3)])
def test_rnn_gates(rng: np.random.Generator, layer_type: LayerType, gates: int) -> None:
    w = rng.standard_normal((gates * 10, 7))
    groups = plan_groups("rnn.weight_ih_l0", w.shape, layer_type, DEFAULT)
    assert len(groups) == gates
    np.testing.assert_array_equal(groups[-1].take(w)[0], w[-10:])
    assert groups[0].rows == 10 and groups[0].cols == 7


def test_moe_experts(rng: np.random.Generator) -> None:
    w = rng.standard_normal((3, 16, 8))
    groups = plan_groups("mlp.experts.w1", w.shape, LayerType.MOE_EXPERTS, DEFAULT)
    assert [g.suffix for g in groups] == ["[expert0]", "[expert1]", "[expert2]"]
    np.testing.assert_array_equal(groups[1].take(w)[0], w[1])


def test_fused_qkv_split_only_on_request(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 24))  # GPT-2 Conv1D layout (in, 3·out)
    assert len(plan_groups("h.0.attn.c_attn.weight", w.shape, LayerType.DENSE, DEFAULT)) == 1
    groups = plan_groups(
        "h.0.attn.c_attn.weight", w.shape, LayerType.DENSE, Options(split_fused_qkv=True)
    )
    np.testing.assert_array_equal(groups[2].take(w)[0], w[:, 16:])


@pytest.mark.parametrize(
    ("key", "shape", "expected"),
    [
        ("encoder.layer.0.attention.self.query.weight", (384, 384), LayerType.DENSE),
        ("embeddings.word_embeddings.weight", (30522, 384), LayerType.EMBEDDING),
        ("transformer.wte.weight", (50257, 768), LayerType.EMBEDDING),
        ("attn.in_proj_weight", (96, 32), LayerType.ATTENTION_IN_PROJ),
        ("features.0.weight", (64, 3, 3, 3), LayerType.CONV2D),
        ("conv.weight", (64, 32, 3), LayerType.CONV1D),
        ("video.weight", (8, 4, 3, 3, 3), LayerType.CONV3D),
        ("model.layers.0.mlp.experts.w1", (8, 64, 32), LayerType.MOE_EXPERTS),
        ("rnn.weight_hh_l0", (40, 10), LayerType.LSTM),
        ("rnn.weight_hh_l0", (30, 10), LayerType.GRU),
    ],
)
def test_infer_layer_type(key: str, shape: tuple[int, ...], expected: LayerType) -> None:
    assert infer_layer_type(key, shape)[0] is expected


def test_infer_rnn_input_weight_uses_its_hidden_sibling() -> None:
    siblings = {"lstm.weight_hh_l1_reverse": (40, 10)}
    assert infer_layer_type("lstm.weight_ih_l1_reverse", (40, 25), siblings)[0] is LayerType.LSTM


def test_ambiguous_3d_tensor_is_unknown_with_reason() -> None:
    layer_type, why = infer_layer_type("blob", (4, 5, 600))
    assert layer_type is LayerType.UNKNOWN
    assert "nn.Module" in why


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
        plan_groups("x", shape, layer_type, DEFAULT)
