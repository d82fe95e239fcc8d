"""GPTQ and AWQ checkpoints against an independent numpy packer written from the published layouts.

The packer below follows the layouts as AutoGPTQ's ``QuantLinear.pack`` and AutoAWQ's
``WQLinear_GEMM.from_linear`` describe them (and the GPTQ paper, Frantar et al. 2022; the AWQ
paper, Lin et al. 2023, for the quantiser ``W = s·(q − z)``):

* GPTQ: ``qweight`` (in·bits/32, out) packed along the input axis, ``qzeros`` (groups,
  out·bits/32) packed along the output axis, both as a little-endian bit stream (code ``k`` of a
  run at bit ``k·bits``; a run is one word for 2/4/8 bits and three words for 3 bits); the
  ``"gptq"`` format stores ``z − 1`` (modulo ``2**bits``), ``"gptq_v2"`` (GPTQModel) ``z``.
* AWQ GEMM: ``qweight`` (in, out/8) and ``qzeros`` (groups, out/8), nibble ``i`` of a word holding
  output column ``[0, 2, 4, 6, 1, 3, 5, 7][i]`` of its block of eight; zeros stored as they are.

The packer sets bits one at a time (not by the shift-and-mask of the reader), so a shared
mistake in bit order would have to be made twice in two different ways.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra
from weightspectra.cli import run
from weightspectra.errors import CorruptFileError, InputError
from weightspectra.sources import Registry, open_model
from weightspectra.sources import quantized as qz
from weightspectra.sources.base import in_model_order
from weightspectra.sources.registry import BUILTIN_ADAPTERS

st_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package is a dev extra")

AWQ_NIBBLE_COLUMN = (0, 2, 4, 6, 1, 3, 5, 7)
TOL = 1e-12


# --- the independent writer --------------------------------------------------------------------


def quantise(
    w: np.ndarray, bits: int, group_size: int, g_idx: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Asymmetric min/max quantisation of ``w`` (out, in) per group of input features."""
    out_f, in_f = w.shape
    groups = np.arange(in_f) // group_size if g_idx is None else g_idx
    n_groups = int(groups.max()) + 1
    maxq = 2**bits - 1
    scales = np.empty((n_groups, out_f), np.float16)
    zeros = np.empty((n_groups, out_f), np.int64)
    for g in range(n_groups):
        cols = w[:, groups == g]
        lo, hi = np.minimum(cols.min(axis=1), 0), np.maximum(cols.max(axis=1), 0)
        s = np.maximum((hi - lo) / maxq, 1e-6).astype(np.float16)
        scales[g] = s
        zeros[g] = np.clip(np.round(-lo / s.astype(np.float64)), 0, maxq)
    s_in = scales.astype(np.float64)[groups].T  # (out, in)
    q = np.clip(np.round(w / s_in) + zeros[groups].T, 0, maxq).astype(np.int64)
    return {"q": q.T, "zeros": zeros, "scales": scales, "groups": groups}  # q: (in, out)


def dequantised(parts: dict[str, np.ndarray]) -> np.ndarray:
    """The reference weight (out, in), float32, straight from the unpacked codes."""
    groups = parts["groups"]
    s = parts["scales"].astype(np.float32)[groups]  # (in, out)
    w = s * (parts["q"].astype(np.float32) - parts["zeros"].astype(np.float32)[groups])
    return np.ascontiguousarray(w.T)


def pack_stream(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``codes`` along axis 0 into int32 words, bit by bit (little-endian bit stream)."""
    n = codes.shape[0]
    words = np.zeros((n * bits // 32, *codes.shape[1:]), np.uint64)
    for k in range(n):
        for b in range(bits):
            pos = k * bits + b
            bit = (codes[k].astype(np.uint64) >> np.uint64(b)) & np.uint64(1)
            words[pos // 32] |= bit << np.uint64(pos % 32)
    return words.astype(np.uint32).view(np.int32)


def pack_gptq(parts: dict[str, np.ndarray], bits: int, *, v1: bool = True) -> dict[str, Any]:
    stored_zeros = (parts["zeros"] - (1 if v1 else 0)) % (2**bits)
    return {
        "qweight": pack_stream(parts["q"], bits),
        "qzeros": np.ascontiguousarray(pack_stream(stored_zeros.T, bits).T),
        "scales": parts["scales"],
    }


def pack_awq_columns(codes: np.ndarray) -> np.ndarray:
    rows, cols = codes.shape
    words = np.zeros((rows, cols // 8), np.uint64)
    for block in range(cols // 8):
        for nibble, col in enumerate(AWQ_NIBBLE_COLUMN):
            value = codes[:, block * 8 + col].astype(np.uint64)
            words[:, block] |= value << np.uint64(4 * nibble)
    return words.astype(np.uint32).view(np.int32)


def pack_awq(parts: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "qweight": pack_awq_columns(parts["q"]),
        "qzeros": pack_awq_columns(parts["zeros"]),
        "scales": parts["scales"],
    }


def write_layer(
    tensors: dict[str, np.ndarray], layer: str, packed: dict[str, Any], g_idx: np.ndarray | None
) -> None:
    for part, value in packed.items():
        tensors[f"{layer}.{part}"] = value
    if g_idx is not None:
        tensors[f"{layer}.g_idx"] = g_idx.astype(np.int32)


def assert_same_rows(got: weightspectra.Report, ref: weightspectra.Report) -> None:
    """Every row of ``got`` equals the row of ``ref`` of the same name, metrics to 1e-12."""
    got_rows = {r["name"]: r for r in got.rows("analysed")}
    ref_rows = {r["name"]: r for r in ref.rows("analysed")}
    assert got_rows.keys() == ref_rows.keys()
    assert got_rows
    for name, ref_row in ref_rows.items():
        row = got_rows[name]
        for column, value in ref_row.items():
            if isinstance(value, float) and not isinstance(value, bool):
                assert row[column] == pytest.approx(value, rel=TOL, abs=TOL, nan_ok=True), (
                    name,
                    column,
                )
            else:
                assert row[column] == value, (name, column)


def in_order(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays in the checkpoint's model order (so layer ids match the file's)."""
    return {k: arrays[k] for k in in_model_order(arrays)}


def _save(path: Path, tensors: dict[str, np.ndarray], config: dict[str, Any] | None) -> Path:
    st_numpy.save_file(tensors, str(path))
    if config is not None:
        (path.parent / "quantize_config.json").write_text(json.dumps(config))
    return path


# --- unpacking --------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unpack_inverts_the_bitwise_packer(bits: int, rng: np.random.Generator) -> None:
    codes = rng.integers(0, 2**bits, size=(64, 5))
    np.testing.assert_array_equal(qz.unpack(pack_stream(codes, bits), bits, axis=0), codes)
    packed_t = np.ascontiguousarray(pack_stream(codes, bits).T)
    np.testing.assert_array_equal(qz.unpack(packed_t, bits, axis=1), codes.T)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_v1_zero_offset_wraps(bits: int) -> None:
    """The "gptq" format stores z − 1 modulo 2**bits: a zero point of 0 is stored as 2**bits − 1."""
    maxq = 2**bits - 1
    zeros = np.array([[0, 1, maxq] + [1] * 29])  # (1 group, 32 outputs)
    q = np.full((32, 32), maxq)
    parts = {"q": q, "zeros": zeros, "scales": np.ones((1, 32), np.float16)}
    packed = pack_gptq(parts, bits)
    assert qz.unpack(packed["qzeros"], bits, axis=1)[0, 0] == maxq  # 0 − 1, wrapped
    w = qz.dequantize_gptq(
        packed["qweight"], packed["qzeros"], packed["scales"], None, bits=bits, group_size=-1
    )
    np.testing.assert_array_equal(w[:3, 0], [maxq, maxq - 1, 0])


def test_layout_labels_and_group_size_minus_one() -> None:
    shapes = {"qweight": (64, 96), "qzeros": (1, 24), "scales": (1, 96), "g_idx": (256,)}
    config = qz.QuantConfig(qz.QuantMethod.GPTQ, 8, -1, desc_act=True, origin="x.json")
    lay = qz.layout("fc", shapes, config)
    assert (lay.bits, lay.group_size, lay.in_features, lay.out_features) == (8, -1, 256, 96)
    assert lay.label == "gptq-8bit-gall-act" and lay.has_g_idx
    assert qz.layout("fc", shapes).label == "gptq-8bit-gall"  # g_idx alone is not act-order


# --- GPTQ and AWQ files against analyze of the dequantised arrays -------------------------------

CASES = [
    pytest.param("gptq", 4, False, True, id="gptq-4bit-g128"),
    pytest.param("gptq", 4, True, True, id="gptq-4bit-g128-desc_act"),
    pytest.param("gptq", 8, False, True, id="gptq-8bit-g128"),
    pytest.param("gptq", 3, True, True, id="gptq-3bit-g128-desc_act"),
    pytest.param("gptq", 2, False, False, id="gptq_v2-2bit-g128"),
    pytest.param("awq", 4, False, True, id="awq-4bit-g128"),
]


def _model(
    tmp_path: Path,
    rng: np.random.Generator,
    method: str,
    bits: int,
    desc_act: bool,
    v1: bool,
    *,
    config: bool = True,
) -> tuple[Path, dict[str, np.ndarray]]:
    """A two-layer checkpoint with an unquantised embedding and bias; returns the reference."""
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((50, 256)).astype(np.float16),
        "model.layers.0.mlp.up_proj.bias": rng.standard_normal(96).astype(np.float16),
    }
    reference = dict(tensors)
    for layer, (out_f, in_f) in {
        "model.layers.0.mlp.up_proj": (96, 256),
        "model.layers.1.self_attn.o_proj": (64, 384),
    }.items():
        w = rng.standard_t(4.0, size=(out_f, in_f))
        g_idx = rng.permutation(np.arange(in_f) // 128) if desc_act else None
        parts = quantise(w, bits, 128, g_idx)
        packed = pack_awq(parts) if method == "awq" else pack_gptq(parts, bits, v1=v1)
        write_layer(tensors, layer, packed, g_idx)
        reference[f"{layer}.weight"] = dequantised(parts)
    settings = {
        "quant_method": method,
        "bits": bits,
        "group_size": 128,
        "desc_act": desc_act,
        "sym": False,
        "checkpoint_format": ("gptq" if v1 else "gptq_v2") if method == "gptq" else "gemm",
    }
    path = _save(tmp_path / "model.safetensors", tensors, settings if config else None)
    return path, in_order(reference)


@pytest.mark.parametrize(("method", "bits", "desc_act", "v1"), CASES)
def test_rows_equal_the_dequantised_arrays(
    tmp_path: Path, rng: np.random.Generator, method: str, bits: int, desc_act: bool, v1: bool
) -> None:
    path, reference = _model(tmp_path, rng, method, bits, desc_act, v1)
    source = open_model(path)
    by_key = {e.key: e for e in source.entries}
    layer = "model.layers.0.mlp.up_proj"
    assert by_key[f"{layer}.weight"].shape == (96, 256)
    assert by_key[f"{layer}.weight"].layer_type is weightspectra.LayerType.DENSE
    act = "-act" if desc_act else ""
    assert by_key[f"{layer}.weight"].quantization == f"{method}-{bits}bit-g128{act}"
    assert not any(k.endswith((".qweight", ".qzeros", ".scales", ".g_idx")) for k in by_key)
    assert by_key["model.embed_tokens.weight"].quantization == ""
    for key, ref in reference.items():
        np.testing.assert_array_equal(by_key[key].load(), ref)
    report = weightspectra.analyze(path)
    assert_same_rows(report, weightspectra.analyze(reference))
    row = next(r for r in report.rows() if r["name"] == layer)
    assert row["quantization"] == by_key[f"{layer}.weight"].quantization


@pytest.mark.parametrize(("method", "bits", "desc_act", "v1"), CASES[:1] + CASES[-1:])
def test_settings_inferred_from_shapes_without_a_config(
    tmp_path: Path, rng: np.random.Generator, method: str, bits: int, desc_act: bool, v1: bool
) -> None:
    path, reference = _model(tmp_path, rng, method, bits, desc_act, v1, config=False)
    by_key = {e.key: e for e in open_model(path).entries}
    for key, ref in reference.items():
        np.testing.assert_array_equal(by_key[key].load(), ref)


def test_sharded_folder_with_index_and_config_json(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path, reference = _model(tmp_path, rng, "gptq", 4, True, True, config=False)
    folder = tmp_path / "sharded"
    folder.mkdir()
    tensors = st_numpy.load_file(str(path))
    shard_of = {k: 1 if ".layers.1." in k else 0 for k in tensors}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for i, fname in enumerate(names):
        part = {k: v for k, v in tensors.items() if shard_of[k] == i}
        st_numpy.save_file(part, str(folder / fname))
    index = {"metadata": {}, "weight_map": {k: names[i] for k, i in shard_of.items()}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": 4}}
    (folder / "config.json").write_text(json.dumps(config))
    source = open_model(folder)
    assert [e.key for e in source.entries] == [
        "model.embed_tokens.weight",
        "model.layers.0.mlp.up_proj.bias",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
    ]
    assert_same_rows(weightspectra.analyze(folder), weightspectra.analyze(reference))
    layouts = qz.quantized_layouts(folder)
    assert list(layouts) == ["model.layers.0.mlp.up_proj", "model.layers.1.self_attn.o_proj"]
    up = layouts["model.layers.0.mlp.up_proj"]
    assert (up.method, up.bits, up.group_size, up.zero_offset) == (qz.QuantMethod.GPTQ, 4, 128, 1)
    assert (up.out_features, up.in_features, up.groups) == (96, 256, 2)
    assert up.parameters == tuple(f"model.layers.0.mlp.up_proj.{p}" for p in qz.PARTS)


@pytest.mark.slow  # about 15 s on 2 cores: MiniLM analysed twice, its first block twice more
def test_minilm_dense_layers_quantised(minilm_path: Path, tmp_path: Path) -> None:
    """The real MiniLM's 36 dense layers as GPTQ 4-bit g128 with act-order (desc_act, g_idx),
    and its first block's 6 as AWQ 4-bit g128 (a partial checkpoint, to keep the test short)."""
    original = st_numpy.load_file(str(minilm_path))
    dense = [k for k, v in original.items() if v.ndim == 2 and k.startswith("encoder.layer.")]
    assert len(dense) == 36
    perm_rng = np.random.default_rng(0)
    for method in ("gptq", "awq"):
        block = "" if method == "gptq" else "encoder.layer.0."
        tensors = {k: v for k, v in original.items() if k.startswith(block)}
        reference = dict(tensors)
        for key in (k for k in dense if k in tensors):
            layer = key[: -len(".weight")]
            w = tensors.pop(key)
            g_idx = perm_rng.permutation(np.arange(w.shape[1]) // 128) if method == "gptq" else None
            parts = quantise(w.astype(np.float64), 4, 128, g_idx)
            packed = pack_gptq(parts, 4) if method == "gptq" else pack_awq(parts)
            write_layer(tensors, layer, packed, g_idx)
            reference[key] = dequantised(parts)
        path = tmp_path / method / "model.safetensors"
        path.parent.mkdir()
        st_numpy.save_file(tensors, str(path))
        report = weightspectra.analyze(path)
        assert sum(r.quantization != "" for r in report.analysed) == (36 if method == "gptq" else 6)
        assert_same_rows(report, weightspectra.analyze(in_order(reference)))


# --- laziness, describe and the CLI ------------------------------------------------------------


def test_nothing_is_dequantised_before_load(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _model(tmp_path, rng, "gptq", 4, False, True)

    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("dequantised while only the headers were needed")

    monkeypatch.setattr(qz, "dequantize_gptq", refuse)
    source = open_model(path)
    report = weightspectra.describe(path)
    assert {r["name"] for r in report.rows("all")} >= {e.name for e in source.entries}
    out, err = io.StringIO(), io.StringIO()
    assert run(["describe", str(path)], out, err) == 0, err.getvalue()
    assert "model.layers.0.mlp.up_proj" in out.getvalue()


def test_cli_analyze_prints_the_table(tmp_path: Path, rng: np.random.Generator) -> None:
    path, _ = _model(tmp_path, rng, "awq", 4, False, True)
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(path), "--no-progress"], out, err) == 0, err.getvalue()
    text = out.getvalue()
    assert "model.layers.0.mlp.up_proj" in text
    assert "model.layers.1.self_attn.o_proj" in text


def test_adapter_claims_only_quantised_files(tmp_path: Path, rng: np.random.Generator) -> None:
    plain = tmp_path / "plain.safetensors"
    st_numpy.save_file({"fc.weight": rng.standard_normal((4, 4))}, str(plain))
    path, _ = _model(tmp_path, rng, "gptq", 4, False, True)
    registry = Registry(BUILTIN_ADAPTERS)
    assert registry.find(path) is not None
    assert registry.find(path).name == "quantized-safetensors"  # type: ignore[union-attr]
    assert registry.find(plain).name == "safetensors-file"  # type: ignore[union-attr]
    assert registry.names().index("quantized-safetensors") < registry.names().index(
        "safetensors-file"
    )


# --- bad input: one clear message naming the layer, shapes and the fix -------------------------


def _layer_file(tmp_path: Path, tensors: dict[str, np.ndarray], config: Any = None) -> Path:
    return _save(tmp_path / "bad.safetensors", tensors, config)


def _gptq_layer(rng: np.random.Generator, bits: int = 4) -> dict[str, np.ndarray]:
    parts = quantise(rng.standard_normal((64, 256)), bits, 128)
    return {f"fc.{k}": v for k, v in pack_gptq(parts, bits).items()}


@pytest.mark.parametrize(
    ("edit", "config", "error", "match"),
    [
        pytest.param(
            lambda t: t.pop("fc.scales"),
            None,
            CorruptFileError,
            r"'fc'.*qweight \(32, 64\).*has no fc\.scales.*re-download",
            id="missing-scales",
        ),
        pytest.param(
            lambda t: t.update({"fc.scales": t["fc.scales"][:, :32].copy()}),
            None,
            CorruptFileError,
            r"'fc'.*scales \(2, 32\).*fits neither GPTQ .*re-download",
            id="qweight-vs-scales",
        ),
        pytest.param(
            lambda t: t.update({"fc.scales": t["fc.scales"][:, :32].copy()}),
            {"quant_method": "gptq", "bits": 4, "group_size": 128},
            CorruptFileError,
            r"'fc'.*scales \(2, 32\).*qzeros columns · 32 / scales columns = 8",
            id="qweight-vs-scales-gptq-config",
        ),
        pytest.param(
            lambda t: t.update({"fc.qzeros": t["fc.qzeros"][:1].copy()}),
            None,
            CorruptFileError,
            r"'fc'.*qzeros has 1 groups but scales 2",
            id="qzeros-vs-scales",
        ),
        pytest.param(
            lambda t: None,
            {"quant_method": "gptq", "bits": 5, "group_size": 128},
            InputError,
            r"'fc'.*bits=5 .*quantize_config\.json.*not supported",
            id="bits-5",
        ),
        pytest.param(
            lambda t: None,
            {"quant_method": "gptq", "bits": 4, "group_size": 100},
            InputError,
            r"'fc'.*group_size=100 .*does not divide the 256 input features",
            id="group-size",
        ),
        pytest.param(
            lambda t: None,
            {"quant_method": "gptq", "bits": 8, "group_size": 128},
            CorruptFileError,
            r"'fc'.*bits=8 but the shapes give .* = 4",
            id="bits-disagree",
        ),
    ],
)
def test_bad_layers_fail_with_one_clear_line(
    tmp_path: Path,
    rng: np.random.Generator,
    edit: Any,
    config: dict[str, Any] | None,
    error: type[Exception],
    match: str,
) -> None:
    tensors = _gptq_layer(rng)
    edit(tensors)
    path = _layer_file(tmp_path, tensors, config)
    with pytest.raises(error, match=match):
        open_model(path)
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(path), "--no-progress"], out, err) != 0
    message = err.getvalue()
    assert message.startswith("weightspectra: error: ") and message.count("\n") == 1, message
    assert "Traceback" not in message


def test_unsupported_checkpoint_format_is_named(tmp_path: Path, rng: np.random.Generator) -> None:
    config = {"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "marlin"}
    path = _layer_file(tmp_path, _gptq_layer(rng), config)
    with pytest.raises(InputError, match=r"checkpoint_format 'marlin'.*'gptq_v2'"):
        open_model(path)


def test_bad_g_idx_fails_the_row(tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = _gptq_layer(rng)
    tensors["fc.g_idx"] = np.full(256, 7, np.int32)  # names a group that does not exist
    report = weightspectra.analyze(_layer_file(tmp_path, tensors))
    (row,) = [r for r in report.rows("all") if r["name"] == "fc"]
    assert row["status"] == "failed"
    assert "g_idx" in str(row["reason"]) and "[0, 2)" in str(row["reason"])


# --- bitsandbytes -------------------------------------------------------------------------------
# 8-bit as LLM.int8() (Dettmers et al. 2022) defines vector-wise absmax quantisation and
# transformers serialises it: ``weight`` int8 (out, in) and ``SCB`` float32 (out,), the row absmax.


def _bnb_model(tmp_path: Path, rng: np.random.Generator, weight_format: int | None) -> Path:
    w = rng.standard_normal((48, 64)).astype(np.float32)
    scb = np.abs(w).max(axis=1).astype(np.float32)
    cb = np.round(w / scb[:, None] * 127).astype(np.int8)
    tensors: dict[str, np.ndarray] = {
        "model.layers.0.mlp.down_proj.weight": cb,
        "model.layers.0.mlp.down_proj.SCB": scb,
        "model.layers.0.mlp.up_proj.weight": rng.integers(0, 255, (1536, 1), dtype=np.uint8),
        "model.layers.0.mlp.up_proj.weight.absmax": rng.random(48).astype(np.float32),
        "model.layers.0.mlp.up_proj.weight.quant_map": np.linspace(-1, 1, 16, dtype=np.float32),
        "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4": np.frombuffer(
            b'{"quant_type": "nf4", "blocksize": 64, "shape": [48, 64]}', np.uint8
        ).copy(),
        "model.norm.weight": np.ones(64, np.float32),
    }
    if weight_format is not None:
        tensors["model.layers.0.mlp.down_proj.weight_format"] = np.array([weight_format], np.uint8)
    return _save(tmp_path / "model.safetensors", tensors, None)


def test_bnb_int8_is_dequantised_and_4bit_is_a_named_skipped_row(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = _bnb_model(tmp_path, rng, weight_format=0)
    raw = st_numpy.load_file(str(path))
    reference = (
        raw["model.layers.0.mlp.down_proj.weight"].astype(np.float32)
        * raw["model.layers.0.mlp.down_proj.SCB"][:, None]
        / np.float32(127)
    )
    by_key = {e.key: e for e in open_model(path).entries}
    assert sorted(by_key) == [
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.norm.weight",
    ]
    down = by_key["model.layers.0.mlp.down_proj.weight"]
    assert (down.quantization, down.dtype, down.layer_type) == (
        "bnb-int8",
        "float32",
        weightspectra.LayerType.DENSE,
    )
    np.testing.assert_array_equal(down.load(), reference)
    report = weightspectra.analyze(path)
    ref = weightspectra.analyze({"model.layers.0.mlp.down_proj.weight": reference})
    (got_row,) = [r for r in report.rows() if r["name"] == "model.layers.0.mlp.down_proj"]
    (ref_row,) = ref.rows()
    assert got_row["alpha"] == pytest.approx(ref_row["alpha"], rel=TOL)
    assert got_row["lambda_max"] == pytest.approx(ref_row["lambda_max"], rel=TOL)
    (four,) = [r for r in report.rows("all") if r["name"] == "model.layers.0.mlp.up_proj"]
    assert four["status"] == "skipped"
    assert "bitsandbytes 4-bit (nf4)" in str(four["reason"])
    assert four["quantization"] == "bnb-nf4"


def test_bnb_int8_tile_layout_fails_its_row(tmp_path: Path, rng: np.random.Generator) -> None:
    report = weightspectra.analyze(_bnb_model(tmp_path, rng, weight_format=1))
    (row,) = [r for r in report.rows("all") if r["name"] == "model.layers.0.mlp.down_proj"]
    assert row["status"] == "failed"
    assert "'col32' GPU tile layout" in str(row["reason"])


@pytest.mark.parametrize(
    ("version", "ok"), [("gemm", True), ("gemv", False)], ids=["gemm", "gemv-refused"]
)
def test_old_autoawq_quant_config(
    tmp_path: Path, rng: np.random.Generator, version: str, ok: bool
) -> None:
    path, reference = _model(tmp_path, rng, "awq", 4, False, True, config=False)
    settings = {"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": version}
    (tmp_path / "quant_config.json").write_text(json.dumps(settings))
    if not ok:
        with pytest.raises(InputError, match=r"AWQ version 'gemv' .*quant_config\.json.*'gemm'"):
            open_model(path)
        return
    by_key = {e.key: e for e in open_model(path).entries}
    for key, ref in reference.items():
        np.testing.assert_array_equal(by_key[key].load(), ref)
