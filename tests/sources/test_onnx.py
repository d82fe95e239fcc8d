"""The ONNX source: weights typed by the graph, lazy (external) data, and every broken file."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402 - after the importorskip

import weightspectra  # noqa: E402
from weightspectra.cli import run  # noqa: E402
from weightspectra.enums import LayerType, Reason  # noqa: E402
from weightspectra.errors import CorruptFileError, InputError, UnsafeFileError  # noqa: E402
from weightspectra.sources import Registry, open_model  # noqa: E402
from weightspectra.sources.onnx import OnnxFile  # noqa: E402

REGISTRY = Registry([OnnxFile()])
RNG = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> TensorProto:
    tensor: TensorProto = numpy_helper.from_array(array, name)
    return tensor


def _save(model: Any, path: Path, **kwargs: Any) -> Path:
    onnx.save(model, str(path), **kwargs)
    return path


def small_model() -> tuple[Any, dict[str, np.ndarray]]:
    """A graph exercising every weight rule; returns it and its arrays by initializer name."""
    arrays: dict[str, np.ndarray] = {
        "onnx::MatMul_7": RNG.standard_normal((12, 10)).astype(np.float32),  # (in, out)
        "gemm_b_t": RNG.standard_normal((9, 10)).astype(np.float32),  # transB=1: (out, in)
        "gemm_b": RNG.standard_normal((9, 11)).astype(np.float32),  # transB=0: (in, out)
        "gemm_c": np.zeros(11, np.float32),
        "conv_w": RNG.standard_normal((16, 3, 3, 3)).astype(np.float32),
        "conv_b": np.zeros(16, np.float32),
        "deconv_w": RNG.standard_normal((16, 8, 2, 2)).astype(np.float32),  # (in, out, k, k)
        "emb": RNG.standard_normal((50, 12)).astype(np.float32),
        "shape": np.array([-1, 12], np.int64),
        "ln_scale": np.ones(12, np.float32),
        "qkv_w": RNG.standard_normal((10, 36)).astype(np.float32),  # (in, 3·out)
        "qkv_b": np.zeros(36, np.float32),
        "fc8_w": RNG.integers(-128, 127, (12, 20)).astype(np.int8),
        "fc8_scale": np.array(0.05, np.float32),
        "fc8_zero": np.array(3, np.int8),
        "unused": RNG.standard_normal((4, 4)).astype(np.float32),
    }
    node = helper.make_node
    nodes = [
        node("Gather", ["emb", "ids"], ["e"], name="/embeddings/word_embeddings/Gather"),
        node("Reshape", ["e", "shape"], ["e2"], name="flatten"),
        node("LayerNormalization", ["e2", "ln_scale"], ["h"], name="ln", axis=-1),
        node("MatMul", ["h", "onnx::MatMul_7"], ["m"], name="/encoder/layer.0/dense/MatMul"),
        node("Gemm", ["m", "gemm_b_t"], ["g1"], name="gemm1", transB=1),
        node("Gemm", ["g1", "gemm_b", "gemm_c"], ["g2"], name="gemm2"),
        node("MatMul", ["m", "qkv_w"], ["qkv0"], name="/attn/qkv/MatMul"),
        node("Add", ["qkv0", "qkv_b"], ["qkv"], name="/attn/qkv/Add"),
        node("Split", ["qkv"], ["q", "k", "v"], name="split", axis=-1, num_outputs=3),
        node("DequantizeLinear", ["fc8_w", "fc8_scale", "fc8_zero"], ["w8"], name="dq"),
        node("MatMul", ["h", "w8"], ["m8"], name="/quant/fc/MatMul"),
        node("Conv", ["img", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        node("ConvTranspose", ["c", "deconv_w"], ["d"], name="deconv", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8]),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("g2", "q", "k", "v", "m8", "d")
        ],
        initializer=[_init(k, v) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return model, arrays


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    model, arrays = small_model()
    return _save(model, tmp_path / "small.onnx"), arrays


def _by_key(path: Path) -> dict[str, Any]:
    return {e.key: e for e in open_model(path, registry=REGISTRY).entries}


def test_weights_are_typed_and_oriented_by_the_graph(
    small: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, arrays = small
    entries = _by_key(path)
    fc8 = (arrays["fc8_w"].astype(np.float32) - 3) * 0.05
    expected = {
        # opaque initializer name: the MatMul's node path names the row
        "encoder.layer.0.dense.weight": (LayerType.DENSE, arrays["onnx::MatMul_7"].T),
        "gemm_b_t": (LayerType.DENSE, arrays["gemm_b_t"]),
        "gemm_b": (LayerType.DENSE, arrays["gemm_b"].T),
        "conv_w": (LayerType.CONV2D, arrays["conv_w"]),
        "deconv_w": (LayerType.CONV_TRANSPOSE2D, arrays["deconv_w"]),
        "emb": (LayerType.EMBEDDING, arrays["emb"]),
        "qkv_w[q]": (LayerType.DENSE, arrays["qkv_w"].T[:12]),
        "qkv_w[k]": (LayerType.DENSE, arrays["qkv_w"].T[12:24]),
        "qkv_w[v]": (LayerType.DENSE, arrays["qkv_w"].T[24:]),
        "fc8_w": (LayerType.DENSE, fc8.T),
    }
    for key, (layer_type, array) in expected.items():
        entry = entries[key]
        assert entry.layer_type is layer_type, key
        assert entry.shape == array.shape, key
        np.testing.assert_array_equal(entry.load(), array, err_msg=key)
    assert entries["fc8_w"].dtype == "float32"
    assert entries["encoder.layer.0.dense.weight"].name == "encoder.layer.0.dense"


def _control_flow_model() -> tuple[Any, dict[str, np.ndarray]]:
    """An ``If`` whose branches hold their own weights (one shadowing an outer name), and a
    ``Loop`` whose body reads an outer weight and holds a Gemm weight of its own."""
    rng = np.random.default_rng(5)
    arrays = {
        "outer_w": rng.standard_normal((16, 12)).astype(np.float32),  # read by the Loop body
        "then_w": rng.standard_normal((16, 14)).astype(np.float32),
        "else_w": rng.standard_normal((16, 18)).astype(np.float32),
        "loop_gemm": rng.standard_normal((20, 16)).astype(np.float32),  # Gemm transB=1: (out, in)
        "shadow": rng.standard_normal((16, 22)).astype(np.float32),  # the else branch's own
    }
    node, value = helper.make_node, helper.make_tensor_value_info
    then_graph = helper.make_graph(
        [node("MatMul", ["x", "then_w"], ["t_out"], name="then_fc")],
        "then",
        [],
        [value("t_out", TensorProto.FLOAT, [1, None])],
        [_init("then_w", arrays["then_w"])],
    )
    else_graph = helper.make_graph(
        [
            node("MatMul", ["x", "else_w"], ["e1"], name="else_fc"),
            node("MatMul", ["x", "shadow"], ["e_out"], name="else_shadow"),
        ],
        "else",
        [],
        [value("e_out", TensorProto.FLOAT, [1, None])],
        [_init("else_w", arrays["else_w"]), _init("shadow", arrays["shadow"])],
    )
    body = helper.make_graph(
        [
            node("Gemm", ["h", "loop_gemm"], ["g"], name="body_gemm", transB=1),
            node("MatMul", ["x", "outer_w"], ["h2"], name="body_outer"),
            node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            value("i", TensorProto.INT64, []),
            value("cond_in", TensorProto.BOOL, []),
            value("h", TensorProto.FLOAT, [1, 16]),
        ],
        [value("cond_out", TensorProto.BOOL, []), value("g", TensorProto.FLOAT, [1, 20])],
        [_init("loop_gemm", arrays["loop_gemm"])],
    )
    graph = helper.make_graph(
        [
            node(
                "If", ["c"], ["branch"], name="pick", then_branch=then_graph, else_branch=else_graph
            ),
            node("Loop", ["n", "c", "h0"], ["h_final"], name="steps", body=body),
            node("MatMul", ["x", "shadow"], ["z"], name="outer_use"),
        ],
        "control",
        [
            value("x", TensorProto.FLOAT, [1, 16]),
            value("c", TensorProto.BOOL, []),
            value("n", TensorProto.INT64, []),
            value("h0", TensorProto.FLOAT, [1, 16]),
        ],
        [
            value("branch", TensorProto.FLOAT, [1, None]),
            value("h_final", TensorProto.FLOAT, [1, None]),
            value("z", TensorProto.FLOAT, [1, None]),
        ],
        [_init("outer_w", arrays["outer_w"]), _init("shadow", arrays["shadow"][:, :10].copy())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), arrays


def test_weights_inside_if_and_loop_subgraphs_are_read(tmp_path: Path) -> None:
    model, arrays = _control_flow_model()
    onnx.checker.check_model(model)
    path = _save(model, tmp_path / "control.onnx")
    entries = _by_key(path)
    expected = {
        "outer_w": arrays["outer_w"].T,
        "then_w": arrays["then_w"].T,
        "else_w": arrays["else_w"].T,
        "loop_gemm": arrays["loop_gemm"],  # Gemm with transB=1 stores (out, in)
        "shadow": arrays["shadow"][:, :10].T,  # the outer one
        "shadow@pick.else_branch": arrays["shadow"].T,  # the else branch's own
    }
    assert set(expected) <= set(entries), sorted(entries)
    for key, array in expected.items():
        assert entries[key].layer_type is LayerType.DENSE, key
        assert entries[key].shape == array.shape, key
        np.testing.assert_array_equal(entries[key].load(), array, err_msg=key)
    rows = {r.key: r for r in weightspectra.analyze(path).layers}
    evals = np.linalg.svd(arrays["loop_gemm"].astype(np.float64), compute_uv=False) ** 2
    assert rows["loop_gemm"].evals is not None
    np.testing.assert_allclose(rows["loop_gemm"].evals, np.sort(evals), rtol=1e-10)


def test_a_subgraph_reading_a_value_nothing_provides_is_corrupt(tmp_path: Path) -> None:
    model, _ = _control_flow_model()
    body = model.graph.node[1].attribute[0].g
    body.node[1].input[1] = "nowhere"
    path = _save(model, tmp_path / "broken.onnx")
    with pytest.raises(CorruptFileError, match="'nowhere', which no initializer"):
        open_model(path, registry=REGISTRY)


def test_other_constants_are_skipped_with_what_they_feed(
    small: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, _ = small
    report = weightspectra.describe(path)
    skipped = {r.name: (r.reason_code, r.reason) for r in report.skipped}
    assert skipped["shape"] == (
        Reason.BUFFER,
        "initializer used as the shape of Reshape 'flatten' (int64, not weights)",
    )
    assert skipped["gemm_c"] == (Reason.BIAS, "initializer used as the bias of Gemm 'gemm2'")
    assert skipped["conv_b"][0] is Reason.BIAS
    assert skipped["ln_scale"] == (
        Reason.NOT_MATRIX,
        "initializer used as the scale of LayerNormalization 'ln' (1-D, not a matrix)",
    )
    assert skipped["fc8_scale"][1].startswith("initializer used as the scale of DequantizeLinear")
    assert skipped["unused"] == (Reason.BUFFER, "initializer not read by any node")


def test_nothing_is_read_before_load(
    small: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = small
    calls: list[str] = []
    real = numpy_helper.to_array

    def counting(tensor: Any, *args: Any) -> np.ndarray:
        calls.append(tensor.name)
        out: np.ndarray = real(tensor, *args)
        return out

    monkeypatch.setattr(numpy_helper, "to_array", counting)
    entries = _by_key(path)
    assert calls == []
    entries["conv_w"].load()
    assert calls == ["conv_w"]


def test_external_data_is_memory_mapped_and_describe_reads_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, arrays = small_model()
    path = _save(
        model,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    assert (tmp_path / "ext.data").stat().st_size > 0
    real_memmap = np.memmap

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("describe must not read tensor data")

    monkeypatch.setattr(np, "memmap", refuse)
    report = weightspectra.describe(path)
    assert report["conv_w"].layer_type == "conv2d"
    monkeypatch.setattr(np, "memmap", real_memmap)
    entries = _by_key(path)
    conv = entries["conv_w"].load()
    assert isinstance(conv, np.memmap)
    np.testing.assert_array_equal(conv, arrays["conv_w"])
    np.testing.assert_array_equal(entries["gemm_b"].load(), arrays["gemm_b"].T)
    inline = weightspectra.analyze(_save(model, tmp_path / "inline.onnx"))
    external = weightspectra.analyze(path)
    assert inline.rows() == external.rows()


# --- broken files -----------------------------------------------------------------------------


def _external_model(tmp_path: Path, **fields: str) -> Path:
    """A one-MatMul model whose weight is external, with ``fields`` overriding its entries."""
    weight = RNG.standard_normal((8, 6)).astype(np.float32)
    (tmp_path / "w.bin").write_bytes(weight.tobytes())
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=weight.shape)
    tensor.data_location = TensorProto.EXTERNAL
    info = {"location": "w.bin", "offset": "0", "length": str(weight.nbytes), **fields}
    for key, value in info.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        initializer=[tensor],
    )
    return _save(helper.make_model(graph), tmp_path / "m.onnx")


def test_hand_written_external_model_reads(tmp_path: Path) -> None:
    entry = _by_key(_external_model(tmp_path))["w"]
    assert entry.shape == (6, 8)
    assert entry.load().shape == (6, 8)


def _cli_error(path: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    code = run(["analyze", str(path)], out, err)
    assert code != 0
    text = err.getvalue()
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.startswith("weightspectra: error: ")
    return text


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"location": "../outside.bin"}, UnsafeFileError, r"outside the model's folder.*traversal"),
        ({"location": "/etc/passwd"}, UnsafeFileError, r"outside the model's folder"),
        ({"location": "gone.bin"}, InputError, r"keeps its data in 'gone.bin', which is missing"),
        ({"offset": "100"}, CorruptFileError, r"needs 192 bytes.*offset 100"),
        ({"length": "12"}, CorruptFileError, r"needs 192 bytes, but its external data says 12"),
        ({"offset": "x"}, CorruptFileError, r"non-numeric external offset"),
    ],
)
def test_bad_external_data(
    tmp_path: Path, fields: dict[str, str], error: type[Exception], match: str
) -> None:
    (tmp_path.parent / "outside.bin").write_bytes(b"\0" * 192)
    path = _external_model(tmp_path, **fields)
    with pytest.raises(error, match=match) as info:
        open_model(path, registry=REGISTRY)
    assert str(path) in str(info.value)
    assert str(path) in _cli_error(path)


def _rewrite(path: Path, edit: Callable[[Any], None]) -> Path:
    model = onnx.load(str(path))
    edit(model)
    return _save(model, path)


def test_truncated_and_foreign_files(
    small: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    path, _ = small
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"PK\x03\x04 this is a zip file, not an ONNX protobuf")
    for bad in (truncated, foreign):
        with pytest.raises(CorruptFileError, match=r"truncated or not (an )?ONNX"):
            open_model(bad, registry=REGISTRY)
        _cli_error(bad)


def test_missing_initializer(small: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = small

    def drop_conv_weight(model: Any) -> None:
        kept = [t for t in model.graph.initializer if t.name != "conv_w"]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)

    _rewrite(path, drop_conv_weight)
    with pytest.raises(CorruptFileError, match=r"Conv 'conv' reads 'conv_w', which no"):
        open_model(path, registry=REGISTRY)
    _cli_error(path)


def test_dims_data_mismatch(small: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = small

    def lie(model: Any) -> None:
        tensor = next(t for t in model.graph.initializer if t.name == "conv_w")
        tensor.dims[0] = 17

    _rewrite(path, lie)
    with pytest.raises(CorruptFileError, match=r"'conv_w' float32\[17, 3, 3, 3\] holds 1728"):
        open_model(path, registry=REGISTRY)
    _cli_error(path)


def test_negative_dims(small: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = small

    def negative(model: Any) -> None:
        tensor = next(t for t in model.graph.initializer if t.name == "emb")
        tensor.dims[0] = -50

    _rewrite(path, negative)
    with pytest.raises(CorruptFileError, match=r"'emb' has negative dims \[-50, 12\]"):
        open_model(path, registry=REGISTRY)


def test_parser_fuzz(small: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """Mutated bytes of a valid model: open either works or raises one of our errors."""
    pytest.importorskip("hypothesis", reason="hypothesis is not installed")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    path, _ = small
    original = path.read_bytes()
    target = tmp_path / "fuzz.onnx"

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)),
            min_size=1,
            max_size=8,
        ),
        st.integers(1, len(original)),
    )
    def check(flips: list[tuple[int, int]], keep: int) -> None:
        data = bytearray(original[:keep])
        for at, value in flips:
            if at < len(data):
                data[at] = value
        target.write_bytes(bytes(data))
        try:
            source = open_model(target, registry=REGISTRY)
        except weightspectra.WeightSpectraError:
            return
        for entry in source.entries:
            with contextlib.suppress(weightspectra.WeightSpectraError):
                entry.load()

    check()


# --- real files -------------------------------------------------------------------------------


def _rapidocr_models() -> list[Path]:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # importing it needs cv2
    if spec is None or spec.origin is None:
        return []
    return sorted(Path(spec.origin).parent.rglob("*.onnx"))


REAL = _rapidocr_models()


@pytest.mark.skipif(not REAL, reason="rapidocr-onnxruntime (PaddleOCR .onnx models) not installed")
@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
@pytest.mark.filterwarnings("ignore::weightspectra.errors.NumericalWarning")
def test_real_paddleocr_models(path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(path)], out, err) == 0, err.getvalue()
    table = out.getvalue()
    assert table.startswith("layer_id") and " conv2d " in table
    report = weightspectra.analyze(path)
    assert len(report.analysed) > 10
    # one conv layer against numpy's SVD of the tensor the graph holds (pooled, × 1/2)
    model = onnx.load(str(path))
    constants = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].name == "value"
    }
    constants.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in constants)
    row = next(r for r in report.analysed if r.key == conv.input[1])
    weight = constants[conv.input[1]].astype(np.float64)
    out_c, in_c = weight.shape[:2]
    slices = np.moveaxis(weight.reshape(out_c, in_c, -1), 2, 0)
    expected = np.sort(np.concatenate([np.linalg.svd(s, compute_uv=False) ** 2 for s in slices]))
    assert row.evals is not None
    np.testing.assert_allclose(np.sort(row.evals), expected * 0.5, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external"])
def test_minilm_through_onnx_matches_safetensors(
    tmp_path: Path, minilm_path: Path, external: bool
) -> None:
    """The real MiniLM exported as MatMul (in, out) / Gather graph: the same rows to 1e-10."""
    safetensors = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    st_path = minilm_path
    tensors: dict[str, np.ndarray] = safetensors.load_file(str(st_path))
    inits: list[TensorProto] = []
    nodes: list[Any] = []
    for i, (key, array) in enumerate(tensors.items()):
        if array.ndim == 2 and "embeddings" in key:
            nodes.append(helper.make_node("Gather", [key, "ids"], [f"o{i}"], name=f"n{i}"))
            inits.append(_init(key, array))
        elif array.ndim == 2:
            nodes.append(helper.make_node("MatMul", ["x", key], [f"o{i}"], name=f"n{i}"))
            inits.append(_init(key, np.ascontiguousarray(array.T)))
        else:
            nodes.append(helper.make_node("Add", ["x", key], [f"o{i}"], name=f"n{i}"))
            inits.append(_init(key, array))
    graph = helper.make_graph(
        nodes,
        "minilm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("ids", TensorProto.INT64, None),
        ],
        [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes],
        initializer=inits,
    )
    kwargs: dict[str, Any] = (
        {"save_as_external_data": True, "location": "minilm.data", "size_threshold": 0}
        if external
        else {}
    )
    path = _save(helper.make_model(graph), tmp_path / "minilm.onnx", **kwargs)
    ours = {r.name: r for r in weightspectra.analyze(path).analysed}
    reference = {r.name: r for r in weightspectra.analyze(st_path).analysed}
    assert set(ours) == set(reference) and len(ours) == 39
    worst = 0.0
    for name, ref in reference.items():
        row, want = ours[name].row(), ref.row()
        assert row["layer_type"] == want["layer_type"], name
        for column, value in want.items():
            if column == "layer_id":  # the graph orders tensors by use, safetensors by name
                continue
            if isinstance(value, float) and math.isfinite(value):
                worst = max(worst, abs(float(row[column]) - value))  # type: ignore[arg-type]
            else:
                assert row[column] == value or (value != value and row[column] != row[column])
    assert worst <= 1e-10, worst


def _one_node_model(tmp_path: Path, nodes: list[Any], arrays: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        initializer=[_init(k, v) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return _save(model, tmp_path / "g.onnx")


def test_pass_through_nodes(tmp_path: Path) -> None:
    """Transpose flips the orientation; QuantizeLinear → DequantizeLinear keeps the float
    weight; block-quantised weights are skipped with their reason."""
    w = RNG.standard_normal((10, 6)).astype(np.float32)
    block = RNG.integers(-8, 8, (6, 10)).astype(np.int8)
    node = helper.make_node
    nodes = [
        node("Transpose", ["w_t"], ["wt"], perm=[1, 0]),
        node("MatMul", ["x", "wt"], ["y1"]),  # Transpose(w_t) is (in, out): w_t is (out, in)
        node("QuantizeLinear", ["w_q", "s", "z"], ["q"]),
        node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        node("MatMul", ["y1", "dq"], ["y2"]),
        node("DequantizeLinear", ["w_b", "sb"], ["db"], axis=1, block_size=2),
        node("MatMul", ["x", "db"], ["y3"], name="blocky"),
    ]
    arrays: dict[str, np.ndarray] = {
        "w_t": w,
        "w_q": w.T.copy(),
        "s": np.array(0.1, np.float32),
        "z": np.array(0, np.int8),
        "w_b": block,
        "sb": np.ones((6, 5), np.float32),
    }
    entries = _by_key(_one_node_model(tmp_path, nodes, arrays))
    np.testing.assert_array_equal(entries["w_t"].load(), w)
    np.testing.assert_array_equal(entries["w_q"].load(), w)
    assert entries["w_q"].layer_type is LayerType.DENSE
    assert entries["w_b"].layer_type is LayerType.UNKNOWN
    assert "quantised weight of MatMul 'blocky' with a block" in entries["w_b"].type_reason


def test_malformed_attribute(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB="yes")]
    path = _one_node_model(tmp_path, nodes, {"w": np.ones((4, 4), np.float32)})
    with pytest.raises(CorruptFileError, match=r"attribute 'transB' of Gemm 'fc' is b'yes'"):
        open_model(path, registry=REGISTRY)


def test_missing_onnx_package_names_the_extra(
    small: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = small
    real = importlib.util.find_spec

    def without_onnx(name: str, *args: Any) -> Any:
        return None if name == "onnx" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_onnx)
    with pytest.raises(weightspectra.MissingDependencyError, match=r"weightspectra\[onnx\]"):
        open_model(path, registry=REGISTRY)


def test_can_open_does_not_import_onnx(tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\x08\x07")
    script = (
        "import sys; from pathlib import Path; from weightspectra.sources.onnx import OnnxFile; "
        f"assert OnnxFile().can_open(Path({str(path)!r})); print('onnx' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_broadcast_vectors_are_biases_and_scales(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["y"], name="add"),
        helper.make_node("Mul", ["y", "g"], ["z"], name="mul"),
    ]
    arrays = {"b": np.zeros((1, 8, 1, 1), np.float32), "g": np.ones((1, 8, 1, 1), np.float32)}
    entries = _by_key(_one_node_model(tmp_path, nodes, arrays))
    assert (entries["b"].type_code, entries["b"].type_reason) == (
        Reason.BIAS,
        "initializer used as an addend of Add 'add' (a bias)",
    )
    assert entries["g"].type_code is Reason.NOT_MATRIX


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, offline
def test_torch_export_with_opaque_names_and_fused_qkv(tmp_path: Path) -> None:
    """A real torch.onnx.export: opaque ``onnx::MatMul_*`` weights are named by their node,
    the q/k/v split is seen in the graph, and every row matches numpy's SVD of torch's weight."""
    pytest.importorskip("torch", reason="torch is not installed")
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)
            self.qkv = torch.nn.Linear(16, 48)
            self.fc = torch.nn.Linear(16, 32, bias=False)
            self.conv = torch.nn.Conv1d(16, 16, 3)

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.emb(ids)
            q, k, v = self.qkv(h).split(16, dim=-1)
            return self.fc(q + k + v), self.conv(h.transpose(1, 2))

    torch.manual_seed(0)
    module = Block().eval()
    path = tmp_path / "block.onnx"
    try:
        torch.onnx.export(module, (torch.zeros(1, 5, dtype=torch.long),), str(path), dynamo=False)
    except (ImportError, RuntimeError) as exc:  # an exporter that needs packages we lack
        pytest.skip(f"torch.onnx.export is unavailable here: {exc}")
    params = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    qkv = params["qkv.weight"]
    expected = {
        "emb": (params["emb.weight"], 1.0),
        "qkv[q]": (qkv[:16], 1.0),
        "qkv[k]": (qkv[16:32], 1.0),
        "qkv[v]": (qkv[32:], 1.0),
        "fc": (params["fc.weight"], 1.0),
        "conv": (params["conv.weight"], 0.5),
    }
    report = weightspectra.analyze(path)
    assert {r.name for r in report.analysed} == set(expected)
    for name, (weight, scale) in expected.items():
        slices = np.moveaxis(weight.reshape(weight.shape[0], weight.shape[1], -1), 2, 0)
        svals = np.concatenate([np.linalg.svd(s, compute_uv=False) for s in slices])
        evals = report[name].evals
        assert evals is not None
        np.testing.assert_allclose(np.sort(evals), np.sort(svals**2) * scale, rtol=1e-6)


def test_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """protobuf hands out invalid UTF-8 in a string field as bytes: a clear error, not a crash."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="zzzzzz")]
    path = _one_node_model(tmp_path, nodes, {"w": np.ones((4, 4), np.float32)})
    data = path.read_bytes()
    assert data.count(b"zzzzzz") == 1
    path.write_bytes(data.replace(b"zzzzzz", b"\xff\xfezzzz"))
    with pytest.raises(CorruptFileError, match=r"a name that is not valid UTF-8"):
        open_model(path, registry=REGISTRY)
    _cli_error(path)
