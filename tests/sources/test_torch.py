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
