"""PyTorch inputs: module types, tied weights, state dicts and safe loading of files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra")
from torch import nn  # noqa: E402

import weightspectra as ws  # noqa: E402
from weightspectra.errors import CorruptFileError, InputError, UnsafeFileError  # noqa: E402
from weightspectra.options import LayerType  # noqa: E402
from weightspectra.sources import open_model  # noqa: E402


class Conv1D(nn.Module):
    """Stand-in for Hugging Face's transposed Linear (weight stored as (in, out))."""

    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))


class Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.attn = nn.MultiheadAttention(16, 2)
        self.lstm = nn.LSTM(16, 12)
        self.gru = nn.GRU(12, 10)
        self.c1 = nn.Conv1d(16, 20, 3)
        self.c3 = nn.Conv3d(4, 10, 2)
        self.ct = nn.ConvTranspose2d(10, 12, 3)
        self.hf = Conv1D(16, 48)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight  # tied


def test_module_layer_types_and_rows() -> None:
    torch.manual_seed(0)
    report = ws.analyze(Zoo())
    types = {r.name: r.layer_type for r in report.layers}
    assert types["emb"] == "embedding"
    assert types["attn.in_proj_weight[q]"] == "attention_in_proj"
    assert types["attn.out_proj"] == "dense"
    assert {f"lstm.weight_ih_l0[{g}]" for g in "ifgo"} <= set(types)
    assert {f"gru.weight_hh_l0[{g}]" for g in "rzn"} <= set(types)
    assert types["c1"] == "conv1d" and types["c3"] == "conv3d"
    assert types["ct"] == "conv_transpose2d"
    assert types["hf"] == "dense"
    head = report["head"]
    assert head.status is ws.Status.SKIPPED and "tied to emb.weight" in head.reason
    q = report["attn.in_proj_weight[q]"]
    assert (q.N, q.M, q.num_evals) == (16, 16, 16)
    assert report["c3"].num_evals == 4 * 8 and report["c3"].rf == 8


def test_packed_attention_equals_manual_split() -> None:
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(24, 3)
    report = ws.analyze(mha)
    w = mha.in_proj_weight.detach().numpy().astype(np.float64)
    k = w[24:48]
    expected = np.sort(np.linalg.svd(k, compute_uv=False) ** 2)
    np.testing.assert_allclose(report["in_proj_weight[k]"].evals, expected, rtol=1e-9)


def test_state_dict_wrappers_and_types() -> None:
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    sd = model.state_dict()
    for wrapped in (sd, {"state_dict": sd, "epoch": 3}, {"model": sd, "optimizer": {}}):
        report = ws.analyze(wrapped)
        assert [r.name for r in report.analysed] == ["0", "2"]
    assert ws.analyze(model).summary["alpha"] == pytest.approx(ws.analyze(sd).summary["alpha"])


def test_bfloat16_module(rng: np.random.Generator) -> None:
    lin = nn.Linear(40, 30).to(torch.bfloat16)
    report = ws.analyze(lin)
    w = lin.weight.detach().float().numpy().astype(np.float64)
    assert report["weight"].metrics["norm"] == pytest.approx((w**2).sum(), rel=1e-12)


def test_pt_file_loaded_weights_only(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 10))
    path = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    report = ws.analyze(path)
    assert len(report.analysed) == 2


class _WritesAFile:
    """A pickle payload that, if unpickled, would create a file (proof that code ran)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.randn(10, 10), "payload": _WritesAFile(target)}, path)
    assert not target.exists()
    with pytest.raises(UnsafeFileError, match=r"refused.*weights\.pt"):
        ws.analyze(path)
    assert not target.exists()


def test_whole_module_pickle_is_refused_with_conversion_hint(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(nn.Linear(10, 10), path)
    with pytest.raises(UnsafeFileError, match="state_dict"):
        ws.analyze(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(_WritesAFile(target)))
    with pytest.raises((UnsafeFileError, CorruptFileError)):
        ws.analyze(path)
    assert not target.exists()


def test_truncated_pt_file(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(nn.Linear(50, 50).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"w\.pt"):
        ws.analyze(path)


def test_checkpoint_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(InputError, match="no tensors found"):
        ws.analyze(path)


def test_module_source_keeps_module_order() -> None:
    model = nn.Sequential(nn.Linear(9, 9), nn.Linear(9, 9))
    model.add_module("10", nn.Linear(9, 9))
    model.add_module("3", nn.Linear(9, 9))
    keys = [e.key for e in open_model(model).entries if e.layer_type is LayerType.DENSE]
    assert keys == ["0.weight", "1.weight", "10.weight", "3.weight"]


def test_same_key_in_two_bin_files_names_both(tmp_path: Path) -> None:
    """The one policy for shards: a key in two files is an error, never a silent overwrite."""
    torch.save({"a.weight": torch.randn(9, 8)}, tmp_path / "pytorch_model-00001.bin")
    torch.save(
        {"a.weight": torch.randn(9, 8), "b.weight": torch.randn(9, 8)},
        tmp_path / "pytorch_model-00002.bin",
    )
    with pytest.raises(
        CorruptFileError,
        match=r"'a\.weight' appears in two files of .*: pytorch_model-00001\.bin and "
        r"pytorch_model-00002\.bin; a folder must hold one checkpoint",
    ):
        open_model(tmp_path)


def test_bin_folder_shards_merge_in_model_order(tmp_path: Path) -> None:
    torch.save({"layers.10.weight": torch.randn(9, 8)}, tmp_path / "pytorch_model-00001.bin")
    torch.save({"layers.2.weight": torch.randn(9, 8)}, tmp_path / "pytorch_model-00002.bin")
    keys = [e.key for e in open_model(tmp_path).entries]
    assert keys == ["layers.2.weight", "layers.10.weight"]


def test_torch_file_without_a_torch_suffix_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "weights.model"
    torch.save({"fc.weight": torch.randn(12, 10)}, path)
    assert [e.key for e in open_model(path).entries] == ["fc.weight"]


class Experts(nn.Module):
    """transformers-5-style fused experts that declare their layout."""

    def __init__(self, transposed: bool, concatenated: bool) -> None:
        super().__init__()
        self.is_transposed = transposed
        self.is_concatenated = concatenated
        shape = (3, 10, 24) if transposed else (3, 24, 10)  # (E, H, 2I) or (E, 2I, H)
        self.gate_up_proj = nn.Parameter(torch.randn(*shape))
        self.down_proj = nn.Parameter(
            torch.randn(3, 12, 10) if transposed else torch.randn(3, 10, 12)
        )


@pytest.mark.parametrize(
    ("transposed", "concatenated"),
    [(False, True), (True, True), (True, False)],
    ids=["mixtral-(E,2I,H)", "llama4-(E,H,2I)", "gpt-oss-interleaved"],
)
def test_module_experts_split_by_their_declared_layout(
    transposed: bool, concatenated: bool
) -> None:
    torch.manual_seed(5)
    experts = Experts(transposed, concatenated)
    report = ws.analyze(nn.ModuleDict({"experts": experts}))
    w = experts.gate_up_proj.detach().numpy().astype(np.float64)
    for e in range(3):
        m = w[e]
        if not transposed:
            halves = {"gate": m[:12], "up": m[12:]}
        elif concatenated:
            halves = {"gate": m[:, :12], "up": m[:, 12:]}
        else:
            halves = {"gate": m[:, 0::2], "up": m[:, 1::2]}
        for part, half in halves.items():
            row = report[f"experts.gate_up_proj[expert{e}.{part}]"]
            assert row.layer_type == "moe_experts"
            expected = np.sort(np.linalg.svd(half, compute_uv=False) ** 2)
            np.testing.assert_allclose(row.evals, expected, rtol=1e-5)
    assert report["experts.down_proj[expert2]"].status is ws.Status.OK


class GptOssExperts(nn.Module):
    """GPT-OSS experts as older transformers wrote them: no layout flags, interleaved gate/up."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(2, 10, 24))  # (E, H, 2I)
        self.down_proj = nn.Parameter(torch.randn(2, 12, 10))  # (E, I, H)


def test_gpt_oss_experts_without_flags_are_interleaved() -> None:
    torch.manual_seed(6)
    experts = GptOssExperts()
    report = ws.analyze(nn.ModuleDict({"experts": experts}))
    w = experts.gate_up_proj.detach().numpy().astype(np.float64)
    up = report["experts.gate_up_proj[expert1.up]"]
    expected = np.sort(np.linalg.svd(w[1][:, 1::2], compute_uv=False) ** 2)
    np.testing.assert_allclose(up.evals, expected, rtol=1e-5)


def _tiny_transformers_models() -> dict[str, nn.Module]:
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (it is in the dev extra)"
    )
    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    small |= {"num_key_value_heads": 1, "vocab_size": 64}
    configs = {
        "qwen2_moe": transformers.Qwen2MoeConfig(
            **small,
            intermediate_size=24,
            moe_intermediate_size=20,
            shared_expert_intermediate_size=28,
            num_experts=3,
            num_experts_per_tok=2,
        ),
        "mixtral": transformers.MixtralConfig(**small, intermediate_size=24, num_local_experts=3),
        "gpt_oss": transformers.GptOssConfig(
            **small, intermediate_size=24, num_local_experts=3, head_dim=8
        ),
    }
    torch.manual_seed(7)
    return {k: transformers.AutoModelForCausalLM.from_config(c) for k, c in configs.items()}


def test_real_transformers_moe_models_built_from_configs() -> None:
    """Tiny random models from transformers' own classes (nothing downloaded)."""
    for name, model in _tiny_transformers_models().items():
        module_entries = {e.key: e for e in open_model(model).entries}
        state_entries = {e.key: e for e in open_model(model.state_dict()).entries}
        for key, entry in module_entries.items():
            if "shared_expert" in key and key.endswith("proj.weight"):
                assert entry.layer_type is LayerType.DENSE, key
                assert state_entries[key].layer_type is LayerType.DENSE, key
        (key,) = [k for k in module_entries if k.endswith("experts.gate_up_proj")]
        split = module_entries[key].gate_up
        assert split is not None and split.interleaved == (name == "gpt_oss")
        assert split.dim == (2 if name == "gpt_oss" else 1)
        assert state_entries[key].gate_up is not None
        assert state_entries[key].gate_up.dim == split.dim  # same axis from key naming alone
        report = ws.analyze(model)
        w = dict(model.named_parameters())[key].detach().numpy().astype(np.float64)[0]
        gate = w[:, 0::2] if name == "gpt_oss" else w[: w.shape[0] // 2]  # (H, 2I) or (2I, H)
        row = report[f"{key}[expert0.gate]"]
        expected = np.sort(np.linalg.svd(gate, compute_uv=False) ** 2)
        np.testing.assert_allclose(row.evals, expected, rtol=1e-5)
