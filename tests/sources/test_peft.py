"""PEFT LoRA adapter folders: ΔW = s·B·A per module (rsLoRA, DoRA, fan_in_fan_out), true rank
flagged; with a base, the merged W + ΔW equals weightspectra on a merged safetensors file.

The adapter on the real MiniLM is written here in PEFT's published layout (adapter_config.json +
adapter_model.safetensors, keys ``base_model.model.<module>.lora_A.weight``) with a non-zero B,
so no training and no ``peft`` install is needed; the expected numbers come from numpy.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.errors import CorruptFileError, InputError, UnsupportedInputError
from weightspectra.sources import open_model
from weightspectra.sources.peft import AdapterSource, lora_scale

st = pytest.importorskip("safetensors.numpy")

TARGETS = ("attention.self.query", "attention.self.value")
#: Four of the twelve adapted modules are analysed merged (for speed; all twelve are adapted).
SELECT = (r"layer\.[05]\.attention\.self\.(query|value)$",)


def _write_adapter(
    folder: Path,
    factors: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    alpha: float,
    rslora: bool = False,
    magnitudes: dict[str, np.ndarray] | None = None,
    **config: object,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for module, (a, b) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.astype(np.float32)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.astype(np.float32)
    for module, m in (magnitudes or {}).items():
        tensors[f"base_model.model.{module}.lora_magnitude_vector"] = m.astype(np.float32)
    st.save_file(tensors, folder / "adapter_model.safetensors")
    rank = next(iter(factors.values()))[0].shape[0]
    cfg = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "use_dora": bool(magnitudes),
        "target_modules": ["query", "value"],
        "base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        **config,
    }
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def _minilm_factors(
    base: dict[str, np.ndarray], rank: int, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    factors = {}
    for layer in range(6):
        for target in TARGETS:
            module = f"encoder.layer.{layer}.{target}"
            out_dim, in_dim = base[f"{module}.weight"].shape
            a = rng.standard_normal((rank, in_dim)) / math.sqrt(in_dim)
            b = rng.standard_t(3, (out_dim, rank)) * 0.02  # a trained B: non-zero, heavy-tailed
            factors[module] = (a, b)
    return factors


@pytest.fixture(scope="module")
def minilm_base(minilm_path: Path) -> dict[str, np.ndarray]:
    return dict(st.load_file(str(minilm_path)))


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(np.float64)


def test_scale() -> None:
    assert lora_scale({"lora_alpha": 16}, "q", 8) == 2.0
    assert lora_scale({"lora_alpha": 16, "use_rslora": True}, "q", 4) == 8.0
    cfg = {"lora_alpha": 16, "alpha_pattern": {"layer.1.value": 32}}
    assert lora_scale(cfg, "encoder.layer.1.value", 8) == 4.0
    assert lora_scale(cfg, "encoder.layer.11.value", 8) == 2.0


def test_minilm_adapter_alone_gives_delta_w_with_its_true_rank(
    minilm_base: dict[str, np.ndarray], tmp_path: Path
) -> None:
    rng = np.random.default_rng(12)
    factors = _minilm_factors(minilm_base, 4, rng)
    folder = _write_adapter(tmp_path / "lora", factors, alpha=8.0)
    source = open_model(folder)
    assert isinstance(source, AdapterSource)
    assert [e.key for e in source.entries] == [f"{m}.weight" for m in factors]
    assert {e.layer_type for e in source.entries} == {ws.LayerType.DENSE}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ws.NumericalWarning)  # exact zeros of a rank-4 Gram
        report = ws.analyze(folder)
    assert len(report.analysed) == 12
    for row in report.analysed:
        a, b = factors[row.name]
        delta = (8.0 / 4) * (_f32(b) @ _f32(a))
        expected = np.sort(np.linalg.svd(delta, compute_uv=False) ** 2)
        np.testing.assert_allclose(np.sort(row.evals)[-4:], expected[-4:], rtol=1e-9)
        assert row.metrics["matrix_rank"] == 4
        assert row.metrics["alpha"] is None and row.metrics["warning"] == "low-rank"
        assert row.metrics["norm"] == pytest.approx(float(np.sum(delta**2)), rel=1e-9)


def test_minilm_merged_rows_equal_analyze_on_the_merged_file(
    minilm_base: dict[str, np.ndarray], minilm_path: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    rank, alpha = 16, 8.0
    factors = _minilm_factors(minilm_base, rank, rng)
    folder = _write_adapter(tmp_path / "rslora", factors, alpha=alpha, rslora=True)
    merged = {k: v.astype(np.float64) for k, v in minilm_base.items() if v.dtype != np.int64}
    scale = alpha / math.sqrt(rank)  # rsLoRA
    for module, (a, b) in factors.items():
        merged[f"{module}.weight"] = merged[f"{module}.weight"] + scale * (_f32(b) @ _f32(a))
    merged_file = tmp_path / "merged.safetensors"
    st.save_file(merged, merged_file)

    ours = ws.analyze(folder, base=minilm_path, layers=SELECT)
    reference = ws.analyze(merged_file, layers=SELECT)
    base = ws.analyze(minilm_path, layers=SELECT)
    assert [r.name for r in ours.analysed] == [r.name for r in reference.analysed]
    assert len(ours.analysed) == 4
    for mine, ref, before in zip(ours.analysed, reference.analysed, base.analysed, strict=True):
        assert mine.num_evals == ref.num_evals == 384  # the full spectrum, not r values
        np.testing.assert_allclose(mine.evals, ref.evals, rtol=1e-10)
        for col in ("alpha", "log_norm", "log_spectral_norm", "stable_rank", "matrix_rank"):
            assert mine.metrics[col] == pytest.approx(ref.metrics[col], rel=1e-9), col
        assert mine.metrics["alpha"] != pytest.approx(before.metrics["alpha"], rel=1e-6)


def test_dora_magnitude_and_fan_in_fan_out(tmp_path: Path, rng: np.random.Generator) -> None:
    w = rng.standard_normal((40, 30))
    a, b = rng.standard_normal((4, 30)), rng.standard_normal((40, 4))
    m = rng.uniform(0.5, 2.0, 40)
    folder = _write_adapter(tmp_path / "dora", {"fc": (a, b)}, alpha=4.0, magnitudes={"fc": m})
    report = ws.analyze(folder, base={"fc.weight": w})
    v = w + _f32(b) @ _f32(a)
    expected = (_f32(m) / np.linalg.norm(v, axis=1))[:, None] * v
    np.testing.assert_allclose(
        np.sort(report.analysed[0].evals),
        np.sort(np.linalg.svd(expected, compute_uv=False) ** 2),
        rtol=1e-10,
    )
    # GPT-2's Conv1D stores W as in × out; PEFT marks it fan_in_fan_out and ΔW is transposed
    gpt = _write_adapter(
        tmp_path / "gpt2", {"h.0.attn.c_attn": (a, b)}, alpha=4.0, fan_in_fan_out=True
    )
    entry = open_model(gpt).entries[0]
    assert entry.shape == (30, 40)
    np.testing.assert_allclose(entry.load(), (_f32(b) @ _f32(a)).T, rtol=1e-12)


def test_broken_adapters_fail_clearly(tmp_path: Path, rng: np.random.Generator) -> None:
    a, b = rng.standard_normal((4, 30)), rng.standard_normal((40, 4))
    folder = _write_adapter(tmp_path / "ok", {"fc": (a, b)}, alpha=4.0)
    with pytest.raises(
        InputError, match=r"adapter module 'fc.weight' \(shape \(40, 30\), rank 4\)"
    ):
        ws.analyze(folder, base={"fc.weight": rng.standard_normal((30, 30))})
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    st.save_file({"x": np.ones(3, np.float32)}, tmp_path / "ia3" / "adapter_model.safetensors")
    with pytest.raises(UnsupportedInputError, match="peft_type 'IA3' is not read"):
        ws.analyze(tmp_path / "ia3")
    half = tmp_path / "half"
    half.mkdir()
    (half / "adapter_config.json").write_text(json.dumps({"lora_alpha": 8, "r": 4}))
    st.save_file(
        {"base_model.model.fc.lora_A.weight": a.astype(np.float32)},
        half / "adapter_model.safetensors",
    )
    with pytest.raises(CorruptFileError, match="'fc' needs 2-D lora_A and lora_B"):
        ws.analyze(half)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "adapter_config.json").write_text(json.dumps({"lora_alpha": 8}))
    with pytest.raises(InputError, match="no adapter weights"):
        ws.analyze(empty)
