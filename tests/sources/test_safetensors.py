"""Our numpy-only safetensors reader against the reference library, and broken files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from weightspectra.errors import CorruptFileError, InputError
from weightspectra.sources import open_model

st_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package is a dev extra")


def test_reads_every_float_dtype(tmp_path: Path, rng: np.random.Generator) -> None:
    arrays = {
        "a.weight": rng.standard_normal((6, 4)),
        "b.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "c.weight": rng.standard_normal((4, 4)).astype(np.float16),
        "ids": np.arange(8, dtype=np.int64).reshape(2, 4),
    }
    path = tmp_path / "m.safetensors"
    st_numpy.save_file(arrays, str(path))
    source = open_model(path)
    got = {e.key: e for e in source.entries}
    assert set(got) == set(arrays)
    for key, ref in arrays.items():
        assert got[key].shape == ref.shape
        np.testing.assert_array_equal(got[key].load(), ref.astype(got[key].load().dtype))
    assert got["c.weight"].load().dtype == np.float16  # halves are handed out as stored
    assert not got["ids"].is_float


def test_reads_bfloat16_without_torch_semantics(tmp_path: Path, rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    t = torch.from_numpy(rng.standard_normal((7, 5)).astype(np.float32)).to(torch.bfloat16)
    path = tmp_path / "bf.safetensors"
    save_file({"w.weight": t}, str(path))
    (entry,) = open_model(path).entries
    assert entry.dtype == "bfloat16"
    loaded = entry.load()
    assert loaded.dtype.name == "bfloat16" and loaded.dtype.itemsize == 2  # not widened
    np.testing.assert_array_equal(np.asarray(loaded, np.float32), t.to(torch.float32).numpy())


def _write_shards(folder: Path, rng: np.random.Generator, with_index: bool) -> list[str]:
    names = [f"model.layers.{i}.mlp.weight" for i in (0, 1, 2, 10, 11)]
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for fname, keys in shards.items():
        st_numpy.save_file({k: rng.standard_normal((9, 8)) for k in keys}, str(folder / fname))
        weight_map.update({k: fname for k in keys})
    if with_index:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return names


@pytest.mark.parametrize("with_index", [True, False])
def test_sharded_folder_in_model_order(
    tmp_path: Path, rng: np.random.Generator, with_index: bool
) -> None:
    names = _write_shards(tmp_path, rng, with_index)
    keys = [e.key for e in open_model(tmp_path).entries]
    assert keys == names  # layers.2 before layers.10: numeric, not alphabetical
    assert sorted(names) != names


def test_missing_shard_is_named(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_shards(tmp_path, rng, with_index=True)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match=r"model-00002-of-00002\.safetensors.*missing"):
        open_model(tmp_path)


def test_truncated_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "t.safetensors"
    st_numpy.save_file({"w": rng.standard_normal((50, 50))}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptFileError, match=r"'w'.*truncated"):
        open_model(path)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 10**9) + b"{}", "header length"),
        (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 14) + b'{"w": {"a":1}}', "lacks dtype"),
    ],
)
def test_corrupt_headers(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(CorruptFileError, match=match):
        open_model(path)


def test_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"holds no \.safetensors"):
        open_model(tmp_path)


def test_same_key_in_two_files_names_both(tmp_path: Path, rng: np.random.Generator) -> None:
    st_numpy.save_file({"a.weight": rng.standard_normal((9, 8))}, str(tmp_path / "one.safetensors"))
    st_numpy.save_file(
        {"a.weight": rng.standard_normal((9, 8)), "b.weight": rng.standard_normal((9, 8))},
        str(tmp_path / "two.safetensors"),
    )
    with pytest.raises(
        CorruptFileError,
        match=r"'a\.weight' appears in two files of .*: one\.safetensors and two\.safetensors; "
        r"a folder must hold one checkpoint",
    ):
        open_model(tmp_path)


def test_fused_experts_in_a_sharded_folder_are_split(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    prefix = "model.layers.0.mlp.experts."
    gate_up = rng.standard_normal((2, 16, 9)).astype(np.float32)  # (E, 2I, H)
    st_numpy.save_file({prefix + "gate_up_proj": gate_up}, str(tmp_path / "a.safetensors"))
    down = rng.standard_normal((2, 9, 8)).astype(np.float32)
    st_numpy.save_file({prefix + "down_proj": down}, str(tmp_path / "b.safetensors"))
    entries = {e.key: e for e in open_model(tmp_path).entries}
    assert entries[prefix + "gate_up_proj"].gate_up is not None
    assert entries[prefix + "gate_up_proj"].gate_up.dim == 1
    import weightspectra as ws

    report = ws.analyze(tmp_path)
    up = report[prefix + "gate_up_proj[expert1.up]"]
    expected = np.sort(np.linalg.svd(gate_up[1, 8:].astype(np.float64), compute_uv=False) ** 2)
    np.testing.assert_allclose(up.evals, expected, rtol=1e-5)
