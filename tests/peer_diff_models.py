"""Small transformers architectures built offline from configs, for the differential suite.

Used by both the test process and the peer's subprocess (tests/peer_diff_script.py): the same
name and seed give the same weights in both (a checksum is compared). Each model gets a
seeded heavy-tailed perturbation so that power-law fits are non-trivial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Architectures of the quick matrix (one call of the peer's subprocess covers them all).
QUICK = ("bert", "gpt2", "llama", "vit", "resnet")
#: The longer matrix (marked slow).
SLOW = ("t5", "qwen2", "mixtral", "convnext", "whisper")


def _bert() -> Any:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=120,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    return BertModel(cfg)


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=100,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg)


def _llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def _qwen2() -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(cfg)


def _mixtral() -> Any:
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=64,
    )
    return MixtralForCausalLM(cfg)


def _t5() -> Any:
    from transformers import T5Config, T5Model

    cfg = T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    return T5Model(cfg)


def _vit() -> Any:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    return ViTModel(cfg)


def _resnet() -> Any:
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    return ResNetModel(cfg)


def _convnext() -> Any:
    from transformers import ConvNextConfig, ConvNextModel

    cfg = ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)
    return ConvNextModel(cfg)


def _whisper() -> Any:
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(
        vocab_size=100,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        max_source_positions=32,
        max_target_positions=32,
    )
    return WhisperModel(cfg)


BUILDERS: dict[str, Callable[[], Any]] = {
    "bert": _bert,
    "gpt2": _gpt2,
    "llama": _llama,
    "qwen2": _qwen2,
    "mixtral": _mixtral,
    "t5": _t5,
    "vit": _vit,
    "resnet": _resnet,
    "convnext": _convnext,
    "whisper": _whisper,
}


#: ``base_model`` in an option set names the seed of the base model (built the same way).
BASE_SEED = 1

#: Option sets run on each architecture, beside the defaults (the peer's own spelling).
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "bert": {
        "drop-query": {"layers": ["-query"]},
        "ids-over-types": {"layers": [12, "dense"]},
        "delta": {"base_model": BASE_SEED},
    },
    "gpt2": {"conv1d": {"layers": ["conv1d"]}},
    "llama": {"min-evals": {"min_evals": 50}, "delta": {"base_model": BASE_SEED}},
    "vit": {"embedding-type": {"layers": ["dense"]}},
    "resnet": {"unpooled": {"pool": False}, "no-conv-norm": {"conv2d_norm": False}},
    "t5": {},
    "qwen2": {"drop-ids": {"layers": [-3, -4]}},
    "mixtral": {},
    "convnext": {"unpooled": {"pool": False}},
    "whisper": {},
}


def build(name: str, seed: int = 0) -> Any:
    """The model ``name`` with seeded weights and a heavy-tailed perturbation (float64-exact
    in both processes: the same torch seed, then numpy's seeded generator)."""
    import torch

    torch.manual_seed(seed)
    model = BUILDERS[name]().eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim >= 2:
                noise = rng.standard_t(2.5, tuple(p.shape)).astype(np.float32)
                p.add_(torch.from_numpy(0.02 * noise))
    return model


def options(name: str, config: str) -> dict[str, Any]:
    """The keyword arguments of one option set, with ``base_model`` built from its seed."""
    kwargs = dict({"default": {}, **CONFIGS[name]}[config])
    if "base_model" in kwargs:
        kwargs["base_model"] = build(name, int(kwargs["base_model"]))
    return kwargs


def checksum(model: Any) -> float:
    """Sum of |w| over every parameter (both processes must agree on it)."""
    return float(sum(p.detach().double().abs().sum().item() for p in model.parameters()))
