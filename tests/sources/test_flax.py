"""Flax msgpack checkpoints and pytrees of arrays: layouts, names, laziness, broken files.

Files are written two ways: by flax itself (``flax.serialization.to_bytes``, an independent
writer, when flax is installed) and by hand from the documented layout (``msgpack`` only).
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.cli import run
from weightspectra.enums import LayerType
from weightspectra.errors import CorruptFileError, UnsupportedInputError
from weightspectra.sources import Registry, Source, open_model
from weightspectra.sources.flax import FlaxMsgpackFile, FlaxPytree, open_msgpack
from weightspectra.sources.registry import BUILTIN_ADAPTERS

msgpack = pytest.importorskip("msgpack", reason="msgpack is the weightspectra[flax] extra")

EXACT_COLUMNS = (
    "alpha", "D", "xmin", "alpha_weighted", "log_norm", "log_spectral_norm",
    "stable_rank", "entropy", "sigma", "lambda_max", "norm", "log_alpha_norm",
)  # fmt: skip


def ext_array(array: np.ndarray, code: int = 1) -> Any:
    """One array leaf as flax.serialization writes it (documented layout, msgpack only)."""
    payload = msgpack.packb(
        [list(array.shape), array.dtype.name, array.tobytes("C")], use_bin_type=True
    )
    return msgpack.ExtType(code, payload)


def to_msgpack(tree: Any) -> bytes:
    """A nested dict of numpy arrays as flax.serialization.to_bytes would encode it."""

    def encode(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: encode(v) for k, v in node.items()}
        if isinstance(node, np.ndarray):
            return ext_array(node)
        return node

    packed: bytes = msgpack.packb(encode(tree), use_bin_type=True)
    return packed


def flax_registry() -> Registry:
    return Registry([FlaxPytree(), FlaxMsgpackFile()])


def small_tree(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "params": {
            "embed": {"embedding": rng.standard_normal((11, 6)).astype(np.float32)},
            "dense": {
                "kernel": rng.standard_normal((6, 9)).astype(np.float32),
                "bias": np.zeros(9, np.float32),
            },
            "conv": {"kernel": rng.standard_normal((3, 3, 4, 5))},
            "norm": {"scale": np.ones(9, np.float32), "bias": np.zeros(9, np.float32)},
        },
        "step": 7,
    }


def test_hand_written_file_layouts_and_names(tmp_path: Path, rng: np.random.Generator) -> None:
    tree = small_tree(rng)
    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack(tree))
    source = open_model(path, registry=flax_registry())
    got = {e.key: e for e in source.entries}
    assert list(got) == [
        "params.embed.embedding",
        "params.dense",
        "params.dense.bias",
        "params.conv",
        "params.norm.scale",
        "params.norm.bias",
    ]
    p = tree["params"]
    assert got["params.dense"].shape == (9, 6)
    assert got["params.dense"].layer_type is LayerType.DENSE
    np.testing.assert_array_equal(got["params.dense"].load(), p["dense"]["kernel"].T)
    assert got["params.conv"].shape == (5, 4, 3, 3)
    assert got["params.conv"].layer_type is LayerType.CONV2D
    np.testing.assert_array_equal(
        got["params.conv"].load(), p["conv"]["kernel"].transpose(3, 2, 0, 1)
    )
    assert got["params.embed.embedding"].layer_type is LayerType.EMBEDDING
    np.testing.assert_array_equal(got["params.embed.embedding"].load(), p["embed"]["embedding"])
    for key in ("params.dense.bias", "params.norm.scale"):
        assert got[key].layer_type is LayerType.UNKNOWN
        assert "1-D" in got[key].type_reason


def test_nothing_is_loaded_before_load(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weightspectra.sources import flax as flax_source

    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack(small_tree(rng)))
    made: list[tuple[int, ...]] = []
    original = flax_source._Stored.array

    def counting(self: Any) -> np.ndarray:
        made.append(self.shape)
        return original(self)

    monkeypatch.setattr(flax_source._Stored, "array", counting)
    source = open_msgpack(path)
    assert made == []
    dense = next(e for e in source.entries if e.key == "params.dense")
    dense.load()
    assert made == [(6, 9)]


def test_eigenvalues_match_numpy_svd(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.standard_normal((40, 25))  # Dense (in=40, out=25)
    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack({"params": {"fc": {"kernel": kernel}}}))
    report = ws.analyze(open_model(path, registry=flax_registry()))
    evals = report["params.fc"].evals
    assert evals is not None
    ref = np.sort(np.linalg.svd(kernel.T, compute_uv=False) ** 2)
    np.testing.assert_allclose(np.sort(evals), ref, rtol=1e-10)


def test_train_state_optimizer_moments_are_skipped(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    kernel = rng.standard_normal((50, 40))
    tree = {
        "step": 10,
        "params": {"fc": {"kernel": kernel}},
        "opt_state": {
            "0": {"count": np.asarray(3, np.int32), "mu": {"fc": {"kernel": kernel * 0.1}}}
        },
    }
    path = tmp_path / "state.msgpack"
    path.write_bytes(to_msgpack(tree))
    got = {e.key: e for e in open_msgpack(path).entries}
    assert got["params.fc"].layer_type is LayerType.DENSE
    mu = got["opt_state.0.mu.fc"]
    assert mu.layer_type is LayerType.UNKNOWN and "optimizer state" in mu.type_reason
    report = ws.analyze(path)
    assert [r.name for r in report.analysed] == ["params.fc"]


def test_attention_dense_general_kernel_is_skipped_with_reason(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    tree = {"attn": {"query": {"kernel": rng.standard_normal((16, 4, 8))}}}
    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack(tree))
    (entry,) = open_msgpack(path).entries
    assert entry.layer_type is LayerType.UNKNOWN
    assert "DenseGeneral" in entry.type_reason


def test_chunked_array_is_joined(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.standard_normal((8, 5))
    flat = kernel.reshape(-1)
    chunked = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": 8, "1": 5},
        "chunks": {"0": ext_array(flat[:17]), "1": ext_array(flat[17:])},
    }
    path = tmp_path / "model.msgpack"
    path.write_bytes(msgpack.packb({"fc": {"kernel": chunked}}, use_bin_type=True))
    (entry,) = open_msgpack(path).entries
    np.testing.assert_array_equal(entry.load(), kernel.T)


def test_bfloat16_and_float16_load_as_float32(tmp_path: Path, rng: np.random.Generator) -> None:
    import ml_dtypes

    tree = {
        "a": {"kernel": rng.standard_normal((6, 4)).astype(ml_dtypes.bfloat16)},
        "b": {"kernel": rng.standard_normal((6, 4)).astype(np.float16)},
    }
    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack(tree))
    got = {e.key: e for e in open_msgpack(path).entries}
    assert got["a"].dtype == "bfloat16" and got["b"].dtype == "float16"
    for key in ("a", "b"):
        loaded = got[key].load()
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, tree[key]["kernel"].astype(np.float32).T)


# --- broken files -------------------------------------------------------------------------


def _payload(shape: Any, dtype: Any, data: Any) -> Any:
    return msgpack.ExtType(1, msgpack.packb([shape, dtype, data], use_bin_type=True))


BROKEN: dict[str, tuple[Callable[[], bytes], str]] = {
    "truncated": (
        lambda: to_msgpack({"fc": {"kernel": np.ones((4, 4))}})[:-9],
        "not a complete msgpack file",
    ),
    "payload too short": (
        lambda: msgpack.packb({"fc": {"kernel": _payload([4, 4], "float32", b"\0" * 60)}}),
        r"needs 64 bytes but the payload holds 60",
    ),
    "huge claimed shape": (
        lambda: msgpack.packb({"fc": {"kernel": _payload([10**6, 10**6], "float64", b"")}}),
        r"needs 8000000000000 bytes",
    ),
    "empty but huge shape": (
        lambda: msgpack.packb({"fc": {"kernel": _payload([0, 2**40, 2**40], "float32", b"")}}),
        "too large for any array",
    ),
    "negative shape": (
        lambda: msgpack.packb({"fc": {"kernel": _payload([-1, 4], "float32", b"")}}),
        "not a list of non-negative integers",
    ),
    "unknown dtype": (
        lambda: msgpack.packb({"fc": {"kernel": _payload([1], "object", b"\0" * 8)}}),
        "dtype 'object' is not one weightspectra reads",
    ),
    "payload not msgpack": (
        lambda: msgpack.packb({"fc": {"kernel": msgpack.ExtType(1, b"\xc1")}}),
        "array payload is not msgpack",
    ),
    "payload not a triple": (
        lambda: msgpack.packb({"fc": {"kernel": msgpack.ExtType(1, msgpack.packb([1, 2]))}}),
        r"not \[shape, dtype, bytes\]",
    ),
    "unknown ext code": (
        lambda: msgpack.packb({"fc": {"kernel": msgpack.ExtType(42, b"x")}}),
        "ext value of code 42",
    ),
    "string leaf": (
        lambda: msgpack.packb({"fc": {"kernel": "weights"}}),
        "leaf 'fc.kernel' is a str, not an array",
    ),
    "top-level list": (lambda: msgpack.packb([1, 2, 3]), "top level is a list"),
    "nested 1000 deep": (lambda: b"\x81\xa1a" * 1000 + b"\xc0", "nests deeper than 64"),
    "chunks that do not add up": (
        lambda: msgpack.packb(
            {
                "fc": {
                    "kernel": {
                        "__msgpack_chunked_array__": True,
                        "shape": {"0": 4, "1": 4},
                        "chunks": {"0": ext_array(np.zeros(3))},
                    }
                }
            }
        ),
        r"chunks do not add up to one array of shape \(4, 4\)",
    ),
    "not msgpack at all": (lambda: b"\xc1\xc1\xc1", "not a complete msgpack file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_raise_clear_errors(tmp_path: Path, case: str) -> None:
    make, message = BROKEN[case]
    path = tmp_path / "broken.msgpack"
    path.write_bytes(make())
    with pytest.raises(CorruptFileError, match=message):
        open_model(path, registry=flax_registry())


@pytest.mark.parametrize("case", ["truncated", "payload too short", "string leaf"])
def test_cli_broken_file_one_line_nonzero(tmp_path: Path, case: str) -> None:
    make, message = BROKEN[case]
    path = tmp_path / "broken.msgpack"
    path.write_bytes(make())
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(path)], out, err) != 0
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightspectra: error:"), lines
    assert "Traceback" not in err.getvalue()
    assert re.search(message, lines[0]), lines[0]


def test_missing_msgpack_names_the_extra(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from weightspectra.errors import MissingDependencyError

    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack({"fc": {"kernel": rng.standard_normal((3, 3))}}))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "msgpack" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"weightspectra\[flax\]"):
        open_model(path, registry=flax_registry())


# --- in-memory pytrees --------------------------------------------------------------------


def test_numpy_pytree_through_the_default_registry(rng: np.random.Generator) -> None:
    tree = small_tree(rng)
    source = open_model(tree)
    assert [e.key for e in source.entries][:2] == ["params.embed.embedding", "params.dense"]
    assert next(e for e in source.entries if e.key == "params.dense").shape == (9, 6)


def test_pytree_adapter_order() -> None:
    names = [a.name for a in BUILTIN_ADAPTERS]
    # a flat dict stays numpy-dict's; a nested one must be ours before torch-state-dict claims it
    assert names.index("numpy-dict") < names.index("flax-pytree") < names.index("torch-state-dict")


def test_flat_numpy_dict_is_not_claimed(rng: np.random.Generator) -> None:
    assert not FlaxPytree().can_open({"fc.weight": rng.standard_normal((3, 3))})
    assert not FlaxPytree().can_open({"a": {"b": 1}})
    assert not FlaxPytree().can_open({})


def test_pytree_with_torch_tensors_is_left_to_torch() -> None:
    torch = pytest.importorskip("torch")
    assert not FlaxPytree().can_open({"model": {"fc.weight": torch.zeros(2, 2)}})


def test_pytree_bad_leaf(rng: np.random.Generator) -> None:
    tree = {"params": {"fc": {"kernel": rng.standard_normal((3, 3)), "note": "hello"}}}
    with pytest.raises(UnsupportedInputError, match=r"leaf 'params.fc.note' is a str"):
        open_model(tree, registry=flax_registry())


def test_cyclic_pytree_is_refused_not_looped(rng: np.random.Generator) -> None:
    tree: dict[str, Any] = {"fc": {"kernel": rng.standard_normal((3, 3))}}
    tree["again"] = tree
    with pytest.raises(UnsupportedInputError, match="nests deeper than 64"):
        open_model(tree, registry=flax_registry())


def test_pytree_detection_does_not_import_jax() -> None:
    code = (
        "import sys, numpy as np\n"
        "from weightspectra.sources import open_model\n"
        "s = open_model({'params': {'fc': {'kernel': np.ones((3, 2))}}})\n"
        "print(s.entries[0].shape, 'jax' in sys.modules, 'flax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2, 3) False False"


# --- flax itself as the writer ------------------------------------------------------------


def _flax() -> Any:
    return pytest.importorskip("flax", reason="flax (with CPU jax) is the independent writer")


def test_real_flax_linen_to_bytes(tmp_path: Path) -> None:
    _flax()
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from flax import serialization

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, ids: Any, image: Any) -> Any:
            x = nn.Embed(13, 8, name="embed")(ids)
            x = nn.Dense(6, name="dense")(x)
            y = nn.Conv(5, (3, 3), name="conv")(image)
            return x.sum() + y.sum()

    ids = jnp.zeros((2, 4), jnp.int32)
    image = jnp.zeros((1, 8, 8, 3))
    variables = Tiny().init(jax.random.PRNGKey(0), ids, image)
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(serialization.to_bytes(variables))
    got = {e.key: e for e in open_model(path, registry=flax_registry()).entries}
    params = variables["params"]
    assert got["params.dense"].shape == (6, 8)
    np.testing.assert_array_equal(
        got["params.dense"].load(), np.asarray(params["dense"]["kernel"]).T
    )
    assert got["params.conv"].layer_type is LayerType.CONV2D
    np.testing.assert_array_equal(
        got["params.conv"].load(), np.asarray(params["conv"]["kernel"]).transpose(3, 2, 0, 1)
    )
    assert got["params.embed.embedding"].layer_type is LayerType.EMBEDDING
    # the same tree in memory (jax arrays) gives the same entries and values
    mem = {e.key: e for e in open_model(variables, registry=flax_registry()).entries}
    assert list(mem) == list(got)
    for key, entry in got.items():
        assert mem[key].shape == entry.shape
        np.testing.assert_array_equal(mem[key].load(), entry.load())


def test_real_flax_chunked_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _flax()
    from flax import serialization

    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)  # chunk anything over 64 bytes
    kernel = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    blob = serialization.to_bytes({"params": {"fc": {"kernel": kernel}}})
    assert b"__msgpack_chunked_array__" in blob
    path = tmp_path / "model.msgpack"
    path.write_bytes(blob)
    (entry,) = open_msgpack(path).entries
    assert entry.key == "params.fc" and entry.shape == (9, 7)
    np.testing.assert_array_equal(entry.load(), kernel.T)


def test_real_flax_nnx_state(rng: np.random.Generator) -> None:
    _flax()
    from flax import nnx

    model = nnx.Linear(7, 3, rngs=nnx.Rngs(0))
    pure = getattr(nnx, "to_pure_dict", None)
    state = pure(nnx.state(model)) if pure is not None else nnx.state(model).to_pure_dict()
    got = {e.key: e for e in open_model(state, registry=flax_registry()).entries}
    assert got["kernel"].shape == (3, 7)  # a bare Linear: its kernel is the whole path
    np.testing.assert_array_equal(got["kernel"].load(), np.asarray(model.kernel[...]).T)


# --- the real MiniLM through a Flax file --------------------------------------------------


def _safetensors_arrays(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
        data = fh.read()
    header.pop("__metadata__", None)
    dtypes = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64}
    out = {}
    for key, info in header.items():
        begin, end = info["data_offsets"]
        out[key] = np.frombuffer(data[begin:end], dtype=dtypes[info["dtype"]]).reshape(
            info["shape"]
        )
    return out


def flax_path(key: str) -> tuple[str, ...]:
    """A MiniLM safetensors key as the Hugging Face Flax BERT tree names it."""
    parts = key.split(".")
    leaf = parts[-1]
    if leaf == "weight" and "LayerNorm" in parts:
        parts[-1] = "scale"
    elif leaf == "weight" and parts[-2].endswith("embeddings"):
        parts[-1] = "embedding"
    elif leaf == "weight":
        parts[-1] = "kernel"
    return tuple(parts)


def test_minilm_through_flax_msgpack_gives_the_safetensors_rows(
    minilm_path: Path, tmp_path: Path
) -> None:
    arrays = _safetensors_arrays(minilm_path)
    tree: dict[str, Any] = {}
    for key, value in arrays.items():
        parts = flax_path(key)
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = np.ascontiguousarray(value.T) if parts[-1] == "kernel" else value
    path = tmp_path / "flax_model.msgpack"
    try:
        from flax import serialization

        path.write_bytes(serialization.to_bytes(tree))
    except ImportError:
        path.write_bytes(to_msgpack(tree))
    ours = ws.analyze(path)
    reference = ws.analyze(minilm_path)
    ref_rows = {r.name: r.row() for r in reference.analysed}
    flax_rows = {r.name: r.row() for r in ours.analysed}
    # the mapping: a kernel's layer is its module path, the safetensors layer its key less
    # ".weight"; embeddings keep their ".embedding" leaf
    mapped = {
        ".".join(flax_path(k)[:-1])
        if flax_path(k)[-1] == "kernel"
        else ".".join(flax_path(k)): k.removesuffix(".weight")
        for k in arrays
    }
    assert len(flax_rows) == len(ref_rows) > 30
    worst = 0.0
    for name, row in flax_rows.items():
        ref = ref_rows[mapped[name]]
        for col in EXACT_COLUMNS:
            a, b = row[col], ref[col]
            assert isinstance(a, float) and isinstance(b, float), (name, col)
            if np.isnan(b):
                assert np.isnan(a), (name, col)
                continue
            worst = max(worst, abs(a - b) / max(abs(b), 1.0))
            assert a == pytest.approx(b, rel=1e-10, abs=1e-10), (name, col)
        assert row["N"] == ref["N"] and row["M"] == ref["M"], name
    print(f"MiniLM through Flax: max relative difference {worst:.3g}")


def test_cli_analyze_msgpack_prints_table(tmp_path: Path, rng: np.random.Generator) -> None:
    tree = {"params": {f"layer_{i}": {"kernel": rng.standard_normal((60, 40))} for i in range(2)}}
    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack(tree))
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(path)], out, err) == 0, err.getvalue()
    assert "params.layer_0" in out.getvalue() and "params.layer_1" in out.getvalue()


def test_source_description_is_the_path(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "model.msgpack"
    path.write_bytes(to_msgpack({"fc": {"kernel": rng.standard_normal((3, 3))}}))
    source = open_msgpack(path)
    assert isinstance(source, Source) and source.description == str(path)
