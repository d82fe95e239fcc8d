"""Key naming rules (Hugging Face / PyTorch): layer types and fused gate/up layouts by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.core.layers import GateUpSplit
from weightspectra.enums import LayerType
from weightspectra.sources import open_model
from weightspectra.sources.naming import (
    gate_up_split,
    infer_layer_type,
    interleaved_gate_up_beside,
    layer_name,
)

DENSE, EMB, EXPERTS = LayerType.DENSE, LayerType.EMBEDDING, LayerType.MOE_EXPERTS


@pytest.mark.parametrize(
    ("key", "shape", "expected"),
    [
        ("encoder.layer.0.attention.self.query.weight", (384, 384), DENSE),
        ("embeddings.word_embeddings.weight", (30522, 384), EMB),
        ("transformer.wte.weight", (50257, 768), EMB),
        ("attn.in_proj_weight", (96, 32), LayerType.ATTENTION_IN_PROJ),
        ("features.0.weight", (64, 3, 3, 3), LayerType.CONV2D),
        ("conv.weight", (64, 32, 3), LayerType.CONV1D),
        ("video.weight", (8, 4, 3, 3, 3), LayerType.CONV3D),
        ("model.layers.0.mlp.experts.w1", (8, 64, 32), EXPERTS),
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
    assert "nn.Module" in why and "(4, 5, 600)" in why


# Key names and shapes as transformers 5 writes them (tiny configs; real names).
QWEN2_MOE = {
    "model.embed_tokens.weight": ((151936, 16), EMB),
    "model.layers.0.self_attn.q_proj.weight": ((16, 16), DENSE),
    "model.layers.0.mlp.gate.weight": ((60, 16), DENSE),  # the router
    "model.layers.0.mlp.experts.gate_up_proj": ((60, 40, 16), EXPERTS),
    "model.layers.0.mlp.experts.down_proj": ((60, 16, 20), EXPERTS),
    "model.layers.0.mlp.shared_expert.gate_proj.weight": ((28, 16), DENSE),
    "model.layers.0.mlp.shared_expert.up_proj.weight": ((28, 16), DENSE),
    "model.layers.0.mlp.shared_expert.down_proj.weight": ((16, 28), DENSE),
    "model.layers.0.mlp.shared_expert_gate.weight": ((1, 16), DENSE),
    "lm_head.weight": ((151936, 16), DENSE),
}
DEEPSEEK = {  # V2 and V3 name their layers alike
    "model.embed_tokens.weight": ((102400, 16), EMB),
    "model.layers.0.self_attn.q_a_proj.weight": ((8, 16), DENSE),
    "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": ((12, 16), DENSE),
    "model.layers.0.self_attn.kv_b_proj.weight": ((16, 8), DENSE),
    "model.layers.0.mlp.gate_proj.weight": ((24, 16), DENSE),
    "model.layers.1.mlp.gate.weight": ((64, 16), DENSE),
    "model.layers.1.mlp.experts.gate_up_proj": ((64, 40, 16), EXPERTS),
    "model.layers.1.mlp.experts.down_proj": ((64, 16, 20), EXPERTS),
    "model.layers.1.mlp.shared_experts.gate_proj.weight": ((20, 16), DENSE),
    "model.layers.1.mlp.shared_experts.up_proj.weight": ((20, 16), DENSE),
    "model.layers.1.mlp.shared_experts.down_proj.weight": ((16, 20), DENSE),
    # the older DeepSeek-V2 remote code: one module per expert
    "model.layers.1.mlp.experts.3.gate_proj.weight": ((20, 16), DENSE),
}
T5 = {
    "shared.weight": ((32128, 16), EMB),
    "encoder.embed_tokens.weight": ((32128, 16), EMB),
    "encoder.block.0.layer.0.SelfAttention.q.weight": ((16, 16), DENSE),
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": ((32, 2), DENSE),
    "encoder.block.0.layer.1.DenseReluDense.wi.weight": ((24, 16), DENSE),
    "decoder.block.0.layer.1.EncDecAttention.o.weight": ((16, 16), DENSE),
    "lm_head.weight": ((32128, 16), DENSE),
}
BART = {
    "model.shared.weight": ((50265, 16), EMB),
    "model.encoder.embed_positions.weight": ((1026, 16), EMB),
}
BERT = {
    "embeddings.word_embeddings.weight": ((30522, 16), EMB),
    "embeddings.position_embeddings.weight": ((512, 16), EMB),
    "embeddings.token_type_embeddings.weight": ((2, 16), EMB),
    "encoder.layer.0.attention.self.query.weight": ((16, 16), DENSE),
    "encoder.layer.0.attention.output.dense.weight": ((16, 16), DENSE),
    "encoder.layer.0.intermediate.dense.weight": ((24, 16), DENSE),
    "pooler.dense.weight": ((16, 16), DENSE),
}
GPT2 = {
    "transformer.wte.weight": ((50257, 16), EMB),
    "transformer.wpe.weight": ((1024, 16), EMB),
    "transformer.h.0.attn.c_attn.weight": ((16, 48), DENSE),
    "transformer.h.0.mlp.c_fc.weight": ((16, 64), DENSE),
    "lm_head.weight": ((50257, 16), DENSE),
}
LLAMA = {
    "model.embed_tokens.weight": ((32000, 16), EMB),
    "model.layers.0.self_attn.k_proj.weight": ((8, 16), DENSE),
    "model.layers.0.mlp.gate_proj.weight": ((24, 16), DENSE),
    "model.layers.0.mlp.down_proj.weight": ((16, 24), DENSE),
    "lm_head.weight": ((32000, 16), DENSE),
}


@pytest.mark.parametrize(
    "keys",
    [QWEN2_MOE, DEEPSEEK, T5, BART, BERT, GPT2, LLAMA],
    ids=["qwen2_moe", "deepseek", "t5", "bart", "bert", "gpt2", "llama"],
)
def test_real_key_names_are_typed(keys: dict[str, tuple[tuple[int, ...], LayerType]]) -> None:
    siblings = {k: shape for k, (shape, _) in keys.items()}
    got = {k: infer_layer_type(k, shape, siblings)[0] for k, (shape, _) in keys.items()}
    assert got == {k: expected for k, (_, expected) in keys.items()}


def test_shared_experts_are_dense_but_t5_shared_is_an_embedding() -> None:
    """The bug: ``shared`` anywhere in a key used to make it an embedding."""
    for key in (
        "model.layers.3.mlp.shared_expert.gate_proj.weight",
        "model.layers.3.mlp.shared_experts.down_proj.weight",
        "model.layers.3.mlp.shared_expert_gate.weight",
        "blocks.0.shared_mlp.weight",
    ):
        assert infer_layer_type(key, (28, 16)) == (DENSE, ""), key
    assert infer_layer_type("shared.weight", (32128, 512))[0] is EMB
    assert infer_layer_type("model.shared.weight", (50265, 768))[0] is EMB
    assert layer_name("model.layers.3.mlp.shared_expert.gate_proj.weight") == "gate_proj"


def test_source_entries_carry_their_type_from_open_time(rng: np.random.Generator) -> None:
    arrays = {k: rng.standard_normal(shape) for k, (shape, _) in T5.items() if shape[0] < 100}
    arrays["blob"] = rng.standard_normal((4, 5, 600))
    entries = {e.key: e for e in open_model(arrays).entries}
    assert entries["encoder.block.0.layer.0.SelfAttention.q.weight"].layer_type is DENSE
    assert entries["blob"].layer_type is LayerType.UNKNOWN
    assert "nn.Module" in entries["blob"].type_reason
    row = ws.analyze(arrays)["blob"]
    assert row.status is ws.Status.SKIPPED and row.reason == entries["blob"].type_reason


@pytest.mark.parametrize(
    ("gate_up", "down", "expected"),
    [
        ((8, 40, 16), (8, 16, 20), GateUpSplit(1)),  # Mixtral / Qwen-MoE / DeepSeek
        ((8, 16, 40), (8, 20, 16), GateUpSplit(2)),  # Llama 4 / GPT-OSS
        ((8, 32, 16), (8, 16, 16), GateUpSplit(1)),  # H == I: still the sibling decides
        ((8, 16, 32), (8, 16, 16), GateUpSplit(2)),
        ((8, 40, 16), None, GateUpSplit(1)),  # no sibling: the transformers default
        ((8, 15, 40), None, GateUpSplit(2)),  # ... unless axis 1 is odd
        ((8, 15, 41), None, None),
    ],
)
def test_gate_up_split_axis(
    gate_up: tuple[int, int, int],
    down: tuple[int, int, int] | None,
    expected: GateUpSplit | None,
) -> None:
    key = "model.layers.0.mlp.experts.gate_up_proj"
    siblings = {} if down is None else {"model.layers.0.mlp.experts.down_proj": down}
    assert gate_up_split(key, gate_up, siblings) == expected


def test_only_fused_gate_up_keys_split() -> None:
    for key in ("mlp.experts.down_proj", "mlp.experts.gate_up_proj_bias", "mlp.experts.w1"):
        assert gate_up_split(key, (8, 40, 16), {}) is None
    assert gate_up_split("e.gate_up_proj", (40, 16), {}) is None  # a dense one (Phi-3) stays


def _svd_evals(matrix: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(matrix.astype(np.float64), compute_uv=False) ** 2)


@pytest.mark.parametrize(
    ("gate_up_shape", "down_shape", "halves"),
    [
        ((4, 24, 10), (4, 10, 12), lambda m: (m[:12], m[12:])),
        ((4, 10, 24), (4, 12, 10), lambda m: (m[:, :12], m[:, 12:])),
    ],
    ids=["rows-(E,2I,H)", "columns-(E,H,2I)"],
)
def test_fused_gate_up_rows_equal_numpy_of_each_half(
    rng: np.random.Generator,
    gate_up_shape: tuple[int, int, int],
    down_shape: tuple[int, int, int],
    halves: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> None:
    prefix = "model.layers.0.mlp.experts."
    w = rng.standard_normal(gate_up_shape)
    arrays = {prefix + "gate_up_proj": w, prefix + "down_proj": rng.standard_normal(down_shape)}
    report = ws.analyze(arrays)
    names = [r.name for r in report.layers if "gate_up" in r.name]
    assert names == [
        f"{prefix}gate_up_proj[expert{e}.{p}]" for e in range(4) for p in ("gate", "up")
    ]
    for e in range(4):
        gate, up = halves(w[e])
        for part, half in (("gate", gate), ("up", up)):
            row = report[f"{prefix}gate_up_proj[expert{e}.{part}]"]
            assert row.status is ws.Status.OK and (row.N, row.M) == (12, 10)
            np.testing.assert_allclose(row.evals, _svd_evals(half), rtol=1e-9)
    assert report[f"{prefix}down_proj[expert3]"].status is ws.Status.OK


def test_gpt_oss_checkpoint_interleaves_gate_and_up(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """GPT-OSS alternates gate and up columns; its config.json says which model it is."""
    prefix = "model.layers.0.mlp.experts."
    w = rng.standard_normal((2, 10, 24)).astype(np.float32)
    arrays = {prefix + "gate_up_proj": w, prefix + "down_proj": rng.standard_normal((2, 12, 10))}
    np.savez(tmp_path / "weights.npz", **arrays)
    assert not interleaved_gate_up_beside(tmp_path / "weights.npz")
    plain = ws.analyze(tmp_path / "weights.npz")
    np.testing.assert_allclose(
        plain[f"{prefix}gate_up_proj[expert1.gate]"].evals, _svd_evals(w[1][:, :12]), rtol=1e-5
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_oss"}))
    assert interleaved_gate_up_beside(tmp_path / "weights.npz")
    report = ws.analyze(tmp_path / "weights.npz")
    for part, half in (("gate", w[1][:, 0::2]), ("up", w[1][:, 1::2])):
        row = report[f"{prefix}gate_up_proj[expert1.{part}]"]
        np.testing.assert_allclose(row.evals, _svd_evals(half), rtol=1e-5)


def test_unreadable_config_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    assert not interleaved_gate_up_beside(tmp_path)
