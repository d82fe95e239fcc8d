"""GGUF files: shapes and names as llama.cpp writes them, every dequantisable type, the real
MiniLM written as F32/F16/Q8_0 against its safetensors rows, the CLI, and broken files."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

import weightspectra
from weightspectra.cli import EXIT_OK, run
from weightspectra.enums import LayerType, Reason, Status
from weightspectra.errors import CorruptFileError, InputError, WeightSpectraError
from weightspectra.report.results import LayerResult, Report
from weightspectra.sources import Registry, open_model
from weightspectra.sources.gguf_header import check_header
from weightspectra.sources.registry import BUILTIN_ADAPTERS

gguf = pytest.importorskip("gguf", reason="the gguf package is the 'gguf' extra")
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from gguf.constants import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

REGISTRY = Registry(BUILTIN_ADAPTERS)


def write_gguf(path: Path, tensors: Mapping[str, tuple[np.ndarray, Q | None]]) -> Path:
    """Write ``tensors`` (name -> (array, raw ggml type or None for the array's own dtype))."""
    writer = gguf.GGUFWriter(str(path), "llama")
    for name, (array, raw) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def random_blocks(qtype: Q, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random quantised bytes for a ``shape`` tensor of ``qtype``: every byte below 0x3C, so
    every fp16/bf16 scale inside a block is finite (exponent ≤ 14)."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    return rng.integers(0, 0x3C, size=(rows, cols // block * type_size), dtype=np.uint8)


def rows_by_key(report: Report) -> dict[str, LayerResult]:
    return {r.name: r for r in report.layers}


def assert_rows_close(
    got: LayerResult, ref: LayerResult, rtol: float, *, check_type: bool = True
) -> None:
    assert got.status is ref.status, (got.name, got.reason, ref.reason)
    if check_type:
        assert got.layer_type == ref.layer_type, got.name
    assert (got.N, got.M) == (ref.N, ref.M), got.name
    assert set(got.metrics) == set(ref.metrics), got.name
    for col, value in ref.metrics.items():
        other = got.metrics[col]
        if isinstance(value, float) and isinstance(other, float):
            np.testing.assert_allclose(other, value, rtol=rtol, atol=0, err_msg=f"{got.name} {col}")
        else:
            assert other == value, (got.name, col)
    if ref.evals is not None:
        assert got.evals is not None
        np.testing.assert_allclose(got.evals, ref.evals, rtol=rtol, atol=0, err_msg=got.name)


# --- shapes, names, types, laziness -------------------------------------------------------


def test_can_open_without_importing_gguf(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (np.ones((4, 8), np.float32), None)})
    (tmp_path / "m.gguf").rename(tmp_path / "renamed.bin")
    code = (
        "import sys; from pathlib import Path; from weightspectra.sources.gguf import GgufFile;"
        f"assert GgufFile().can_open(Path({str(tmp_path / 'renamed.bin')!r}));"
        "assert not GgufFile().can_open(Path('/'));"
        "assert 'gguf' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_shapes_are_reversed_ne_and_names_in_model_order(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    q = rng.standard_normal((48, 64)).astype(np.float32)  # (out, in): ne = [64, 48]
    experts = rng.standard_normal((3, 40, 64)).astype(np.float32)  # ne = [64, 40, 3]
    tensors: dict[str, tuple[np.ndarray, Q | None]] = {
        "output.weight": (rng.standard_normal((100, 64)).astype(np.float32), None),
        "blk.10.attn_q.weight": (q, None),
        "blk.2.ffn_up_exps.weight": (experts, None),
        "blk.2.attn_q.weight": (q, None),
        "output_norm.weight": (np.ones(64, np.float32), None),
        "token_embd.weight": (rng.standard_normal((100, 64)).astype(np.float32), None),
    }
    path = write_gguf(tmp_path / "m.gguf", tensors)
    dims = {t.name: t.dims for t in check_header(path).tensors}
    assert dims["blk.10.attn_q.weight"] == (64, 48) and dims["blk.2.ffn_up_exps.weight"] == (
        64,
        40,
        3,
    )
    source = open_model(path, registry=REGISTRY)
    assert [e.key for e in source.entries] == [
        "token_embd.weight",
        "blk.2.ffn_up_exps.weight",
        "blk.2.attn_q.weight",
        "blk.10.attn_q.weight",
        "output.weight",
        "output_norm.weight",
    ]
    got = {e.key: e for e in source.entries}
    assert got["token_embd.weight"].layer_type is LayerType.EMBEDDING
    assert got["blk.2.ffn_up_exps.weight"].layer_type is LayerType.MOE_EXPERTS
    assert got["blk.10.attn_q.weight"].layer_type is LayerType.DENSE
    assert got["output.weight"].layer_type is LayerType.DENSE
    for key, (array, _) in tensors.items():
        assert got[key].shape == array.shape
        np.testing.assert_array_equal(got[key].load(), array)
    report = weightspectra.analyze(path)
    rows = rows_by_key(report)
    ref = rows_by_key(weightspectra.analyze({"e.experts.weight": experts}))
    for e in range(3):
        got_row = rows[f"blk.2.ffn_up_exps[expert{e}]"]
        assert (got_row.N, got_row.M) == (64, 40)
        assert_rows_close(got_row, ref[f"e.experts[expert{e}]"], 0.0)


def test_describe_reads_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    path = write_gguf(
        tmp_path / "m.gguf",
        {"blk.0.attn_q.weight": (random_blocks(Q.Q4_K, (8, 256), rng), Q.Q4_K)},
    )
    calls: list[np.ndarray] = []

    def recording(data: np.ndarray, qtype: Q) -> np.ndarray:
        calls.append(np.array(data))
        return dequantize(data, qtype)

    monkeypatch.setattr(gguf.quants, "dequantize", recording)
    report = weightspectra.describe(path)
    assert [r.status for r in report.layers] == [Status.PLANNED]
    # the only call is the open-time probe on one all-zero block, never the file's data
    assert all(c.shape[0] == 1 and not c.any() for c in calls)
    (entry,) = open_model(path, registry=REGISTRY).entries
    before = len(calls)
    entry.load()
    assert len(calls) > before and entry.quantization == "Q4_K"


DEQUANTISABLE = [
    Q.BF16,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q8_0,
    Q.Q2_K,
    Q.Q3_K,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
    Q.IQ4_NL,
    Q.IQ4_XS,
    Q.IQ2_XXS,
    Q.IQ3_S,
]


@pytest.mark.parametrize("qtype", DEQUANTISABLE, ids=lambda q: q.name)
def test_every_type_loads_as_its_dequantised_float32_in_chunks(
    qtype: Q, tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = random_blocks(qtype, (24, 512), rng)
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_down.weight": (blocks, qtype)})
    monkeypatch.setattr("weightspectra.sources.gguf.DEQUANT_CHUNK_BYTES", 5 * 512 * 4)  # 5 rows
    (entry,) = open_model(path, registry=REGISTRY).entries
    loaded = entry.load()
    assert loaded.dtype == np.float32 and loaded.shape == (24, 512) == entry.shape
    np.testing.assert_array_equal(loaded, dequantize(blocks, qtype))
    assert np.isfinite(loaded).all() and loaded.any()
    assert entry.quantization == ("" if qtype is Q.BF16 else qtype.name)
    assert entry.dtype == ("bfloat16" if qtype is Q.BF16 else "float32")


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q8_0, Q.IQ4_XS], ids=lambda q: q.name)
def test_quantised_rows_equal_rows_of_the_dequantised_weights(
    qtype: Q, tmp_path: Path, rng: np.random.Generator
) -> None:
    blocks = random_blocks(qtype, (96, 256), rng)
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_down.weight": (blocks, qtype)})
    (got,) = weightspectra.analyze(path).layers
    (ref,) = weightspectra.analyze({"blk.0.ffn_down.weight": dequantize(blocks, qtype)}).layers
    assert got.quantization == qtype.name and got.status is Status.OK
    assert_rows_close(got, ref, 0.0)


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q8_0, Q.F16], ids=lambda q: q.name)
def test_rows_read_by_load_rows_are_those_of_load(
    qtype: Q, tmp_path: Path, rng: np.random.Generator
) -> None:
    if qtype is Q.F16:
        array, raw = rng.standard_normal((40, 256)).astype(np.float16), None
    else:
        array, raw = random_blocks(qtype, (40, 256), rng), qtype
    path = write_gguf(tmp_path / "m.gguf", {"token_embd.weight": (array, raw)})
    (entry,) = open_model(path, registry=REGISTRY).entries
    assert entry.load_rows is not None
    whole = entry.load()
    parts = [entry.load_rows(lo, min(lo + 7, 40)) for lo in range(0, 40, 7)]
    assert all(p.dtype == np.float32 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_a_large_quantised_embedding_is_dequantised_into_its_gram_matrix(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tall matrix over the threshold is streamed (never one float32 array) and its row
    equals, bit for bit, the row of its dequantised weights analysed whole."""
    from weightspectra import analysis
    from weightspectra.core import eigen

    for module in (analysis, eigen):
        monkeypatch.setattr(module, "GRAM_BLOCKED_ABOVE_BYTES", 256 * 1024)
    monkeypatch.setattr(eigen, "STREAM_READ_BYTES", 64 * 1024)
    blocks = random_blocks(Q.Q4_K, (1200, 256), rng)  # 1.2 MB of float32
    path = write_gguf(tmp_path / "m.gguf", {"token_embd.weight": (blocks, Q.Q4_K)})
    streamed: list[tuple[int, int]] = []
    real = analysis.streamed_layer_eigenvalues

    def recording(
        read_rows: Callable[[int, int], np.ndarray], shape: tuple[int, int], **kw: object
    ) -> np.ndarray:
        streamed.append(shape)
        return real(read_rows, shape, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "streamed_layer_eigenvalues", recording)
    (got,) = weightspectra.analyze(path).layers
    assert streamed == [(1200, 256)]
    (ref,) = weightspectra.analyze({"token_embd.weight": dequantize(blocks, Q.Q4_K)}).layers
    assert got.quantization == "Q4_K" and got.layer_type == LayerType.EMBEDDING.value
    assert_rows_close(got, ref, 0.0, check_type=False)


def test_a_type_gguf_cannot_dequantise_is_a_skipped_row_naming_it(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gguf(
        tmp_path / "m.gguf",
        {
            "blk.0.attn_q.weight": (random_blocks(Q.Q4_K, (8, 256), rng), Q.Q4_K),
            "blk.0.attn_k.weight": (rng.standard_normal((8, 256)).astype(np.float32), None),
        },
    )

    def refusing(data: np.ndarray, qtype: Q) -> np.ndarray:
        if qtype is Q.Q4_K:
            raise NotImplementedError("Dequantization for Q4_K is not yet implemented")
        return dequantize(data, qtype)

    monkeypatch.setattr(gguf.quants, "dequantize", refusing)
    rows = rows_by_key(weightspectra.analyze(path, min_evals=4))
    assert rows["blk.0.attn_q"].status is Status.SKIPPED
    assert rows["blk.0.attn_q"].reason_code is Reason.UNKNOWN_TYPE
    assert "GGUF tensor type Q4_K" in rows["blk.0.attn_q"].reason
    assert "cannot dequantise" in rows["blk.0.attn_q"].reason
    assert rows["blk.0.attn_k"].status is Status.OK


def test_integer_tensors_are_buffers(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "m.gguf",
        {
            "ids": (np.arange(12, dtype=np.int32).reshape(3, 4), None),
            "blk.0.attn_q.weight": (np.eye(8, dtype=np.float32), None),
        },
    )
    rows = rows_by_key(weightspectra.analyze(path, min_evals=4))
    assert rows["ids"].reason_code is Reason.BUFFER


# --- the real MiniLM, written as GGUF ---------------------------------------------------

_BERT = [  # Hugging Face BERT names -> llama.cpp's, as convert_hf_to_gguf.py maps them
    ("embeddings.word_embeddings", "token_embd"),
    ("embeddings.position_embeddings", "position_embd"),
    ("embeddings.token_type_embeddings", "token_types"),
    ("embeddings.LayerNorm", "token_embd_norm"),
    ("attention.self.query", "attn_q"),
    ("attention.self.key", "attn_k"),
    ("attention.self.value", "attn_v"),
    ("attention.output.dense", "attn_output"),
    ("attention.output.LayerNorm", "attn_output_norm"),
    ("intermediate.dense", "ffn_up"),
    ("output.dense", "ffn_down"),
    ("output.LayerNorm", "layer_output_norm"),
]


def llama_cpp_name(key: str) -> str:
    name = key.replace("encoder.layer.", "blk.")
    for hf, ours in _BERT:
        name = name.replace(hf, ours)
    return name


def minilm_arrays(path: Path) -> dict[str, np.ndarray]:
    source = open_model(path, registry=REGISTRY)
    return {e.key: np.array(e.load()) for e in source.entries}


def minilm_as_gguf(
    arrays: Mapping[str, np.ndarray], path: Path, qtype: Q
) -> tuple[Path, dict[str, np.ndarray]]:
    """Write MiniLM with every matrix as ``qtype`` (1-D and integer tensors as they are);
    returns the file and the float32 weights it holds (the dequantised matrices)."""
    tensors: dict[str, tuple[np.ndarray, Q | None]] = {}
    held = {}
    for key, array in arrays.items():
        name = llama_cpp_name(key)
        if array.ndim < 2 or not np.issubdtype(array.dtype, np.floating):
            tensors[name] = (array, None)
            held[key] = array
            continue
        stored = quantize(array.astype(np.float32), qtype)
        tensors[name] = (stored, None if qtype in (Q.F32, Q.F16) else qtype)
        held[key] = dequantize(stored, qtype)
    return write_gguf(path, tensors), held


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> dict[str, np.ndarray]:
    return minilm_arrays(minilm_path)


def _compare_minilm(got: Report, ref: Report, rtol: float) -> None:
    by_name = rows_by_key(got)
    analysed = [r for r in ref.layers if r.status is Status.OK]
    assert len(analysed) >= 36
    for row in ref.layers:
        other = by_name[llama_cpp_name(row.name)]
        if row.status is Status.OK:
            assert_rows_close(other, row, rtol)
        else:
            assert other.status is row.status and other.reason_code == row.reason_code


def test_minilm_f32_rows_equal_its_safetensors_rows(
    minilm: dict[str, np.ndarray], minilm_path: Path, tmp_path: Path
) -> None:
    path, _ = minilm_as_gguf(minilm, tmp_path / "minilm-f32.gguf", Q.F32)
    _compare_minilm(weightspectra.analyze(path), weightspectra.analyze(minilm_path), 1e-10)


def test_minilm_f16_rows_near_its_safetensors_rows(
    minilm: dict[str, np.ndarray], minilm_path: Path, tmp_path: Path
) -> None:
    path, held = minilm_as_gguf(minilm, tmp_path / "minilm-f16.gguf", Q.F16)
    got = weightspectra.analyze(path)
    # exact against the float16-rounded weights ...
    _compare_minilm(got, weightspectra.analyze(held), 1e-10)
    # ... and within float16 rounding (2⁻¹¹ relative per weight) of the float32 model. Measured
    # worst relative differences over MiniLM's 37 matrices: α 1.5e-4, α_weighted 1.6e-4,
    # log_norm 1.7e-6, log_spectral_norm 7.0e-5, stable_rank 2.7e-4, λ_max 2.8e-4 (the smallest
    # eigenvalues move more: sv_min up to 7e-2, which is why it is not compared).
    by_name = rows_by_key(got)
    ref = weightspectra.analyze(minilm_path)
    for row in ref.layers:
        if row.status is Status.OK and row.metrics.get("alpha") is not None:
            other = by_name[llama_cpp_name(row.name)]
            for col in F16_COLUMNS:
                value, near = row.metrics[col], other.metrics[col]
                assert isinstance(value, float) and isinstance(near, float), (row.name, col)
                np.testing.assert_allclose(near, value, rtol=F16_RTOL, err_msg=f"{row.name} {col}")


F16_RTOL = 1e-3
F16_COLUMNS = (
    "alpha",
    "alpha_weighted",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "lambda_max",
)


def test_minilm_q8_0_rows_equal_the_rows_of_its_dequantised_weights(
    minilm: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path, held = minilm_as_gguf(minilm, tmp_path / "minilm-q8_0.gguf", Q.Q8_0)
    got = weightspectra.analyze(path)
    _compare_minilm(got, weightspectra.analyze(held), 0.0)
    assert {r.quantization for r in got.layers if r.status is Status.OK} == {"Q8_0"}


def test_compare_shows_how_alpha_moves_under_quantisation(
    minilm: dict[str, np.ndarray], minilm_path: Path, tmp_path: Path
) -> None:
    path, held = minilm_as_gguf(minilm, tmp_path / "minilm-q8_0.gguf", Q.Q8_0)
    cmp = weightspectra.compare([minilm_path, path])
    assert len(cmp.models) == 2
    full, quant = (m.metrics for m in cmp.models)
    # independently: the mean α over the rows of each model's own analysis
    for metrics, model in ((full, minilm_path), (quant, held)):
        alphas = [
            r.metrics["alpha"]
            for r in weightspectra.analyze(model).layers
            if r.status is Status.OK and isinstance(r.metrics.get("alpha"), float)
        ]
        assert metrics["alpha"] == pytest.approx(float(np.mean(alphas)), rel=1e-12)
    assert full["alpha"] != quant["alpha"]  # quantisation moves the spectra (a little)
    assert abs(full["alpha"] - quant["alpha"]) < 0.05 * full["alpha"]
    assert "alpha" in cmp.render("table")


# --- the command line ---------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def small_gguf(tmp_path: Path, rng: np.random.Generator) -> Path:
    return write_gguf(
        tmp_path / "small.gguf",
        {
            "token_embd.weight": (rng.standard_normal((64, 32)).astype(np.float32), None),
            "blk.0.attn_q.weight": (random_blocks(Q.Q8_0, (48, 64), rng), Q.Q8_0),
            "blk.0.attn_norm.weight": (np.ones(64, np.float32), None),
            "output.weight": (rng.standard_normal((64, 32)).astype(np.float16), None),
        },
    )


def test_cli_analyze_and_describe(small_gguf: Path) -> None:
    code, out, err = cli("analyze", str(small_gguf))
    assert code == EXIT_OK and err == "", err
    rows = [line.split() for line in out.splitlines()[2:]]
    names = [r[1] for r in rows if r and r[0].isdigit()]
    assert names[:3] == ["token_embd", "blk.0.attn_q", "output"]
    code, out, _ = cli("describe", str(small_gguf))
    assert code == EXIT_OK and "3 matrices to analyse" in out


# --- broken files -------------------------------------------------------------------------


def _locate(data: bytes, name: str) -> int:
    """Offset of the tensor record of ``name`` (just past its name)."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    return data.index(needle) + len(needle)


def _broken(path: Path, change: Callable[[bytearray], bytes | bytearray]) -> Path:
    data = bytearray(path.read_bytes())
    target = path.with_name("broken.gguf")
    target.write_bytes(bytes(change(data)))
    return target


def _set(data: bytearray, at: int, fmt: str, value: int) -> bytearray:
    struct.pack_into(fmt, data, at, value)
    return data


def _record(data: bytearray) -> int:
    return _locate(bytes(data), "blk.0.attn_q.weight")


BROKEN: dict[str, tuple[Callable[[bytearray], bytes | bytearray], str]] = {
    "wrong magic": (lambda d: b"GGUX" + d[4:], "not the GGUF magic"),
    "too short": (lambda d: d[:10], "too short for a GGUF file"),
    "truncated header": (lambda d: d[:40], "truncated or corrupt"),
    "truncated data": (lambda d: d[: len(d) - 200], "needs .* bytes at offset"),
    "tensor count": (lambda d: _set(d, 8, "<Q", 2**62), "claims .* tensors"),
    "kv count": (lambda d: _set(d, 16, "<Q", 2**40), "claims .* tensors and .* metadata"),
    "lying offset": (lambda d: _set(d, _record(d) + 4 + 16 + 4, "<Q", 2**33), "needs .* bytes"),
    "unaligned offset": (lambda d: _set(d, _record(d) + 4 + 16 + 4, "<Q", 3), "alignment"),
    "huge dimension": (lambda d: _set(d, _record(d) + 4, "<Q", 2**40), "needs .* bytes"),
    "rank": (lambda d: _set(d, _record(d), "<I", 70000), "claims 70000 dimensions"),
    "unknown type": (lambda d: _set(d, _record(d) + 4 + 16, "<I", 9999), "unknown to the"),
    "bad version": (lambda d: _set(d, 4, "<I", 77), "GGUF version 77"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_are_one_clear_error(case: str, small_gguf: Path) -> None:
    change, message = BROKEN[case]
    path = _broken(small_gguf, change)
    with pytest.raises(WeightSpectraError, match=message) as info:
        open_model(path, registry=REGISTRY)
    assert str(path) in str(info.value)
    code, out, err = cli("analyze", str(path))
    assert code != EXIT_OK and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and str(path) in err


def test_overlapping_tensors(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "m.gguf",
        {
            "blk.0.attn_q.weight": (np.ones((4, 8), np.float32), None),
            "blk.0.attn_k.weight": (np.ones((4, 8), np.float32), None),
        },
    )
    data = bytearray(path.read_bytes())
    at = _locate(bytes(data), "blk.0.attn_k.weight") + 4 + 16 + 4
    path.write_bytes(bytes(_set(data, at, "<Q", 0)))
    with pytest.raises(CorruptFileError, match="overlap"):
        open_model(path, registry=REGISTRY)


def test_metadata_array_claiming_more_items_than_bytes(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_array("test.tokens", ["a", "b", "c"])
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = bytearray((tmp_path / "m.gguf").read_bytes())
    key = b"test.tokens"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4 + 4  # past both types
    (tmp_path / "m.gguf").write_bytes(bytes(_set(data, at, "<Q", 2**61)))
    with pytest.raises(CorruptFileError, match="claims 2305843009213693952 items"):
        open_model(tmp_path / "m.gguf", registry=REGISTRY)


def test_fuzzed_headers_fail_cleanly(small_gguf: Path) -> None:
    pytest.importorskip("hypothesis", reason="hypothesis is a dev extra")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    original = small_gguf.read_bytes()
    header_end = check_header(small_gguf).data_start
    target = small_gguf.with_name("fuzzed.gguf")

    @settings(max_examples=150, deadline=2000, derandomize=True, database=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, header_end - 1), st.integers(0, 255)), min_size=1, max_size=6
        ),
        st.integers(0, len(original)),
    )
    def opens_or_fails_cleanly(flips: list[tuple[int, int]], cut: int) -> None:
        data = bytearray(original[:cut] if cut < 24 else original)
        for at, value in flips:
            if at < len(data):
                data[at] = value
        target.write_bytes(bytes(data))
        try:
            source = open_model(target, registry=REGISTRY)
        except (InputError, WeightSpectraError):
            return
        for entry in source.entries:  # a header that still checks reads within the file
            if entry.is_float and entry.layer_type is not LayerType.UNKNOWN:
                entry.load()

    opens_or_fails_cleanly()
