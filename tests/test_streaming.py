"""Streaming: sharded checkpoints are read one tensor at a time; peak memory stays near one
tensor's working set, whatever the checkpoint's size (measured in a subprocess)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
import weightspectra.sources.safetensors as st_source
from weightspectra.enums import LayerType, Reason, Status
from weightspectra.sources import Source, TensorEntry

MB = 2**20
PROC_STATUS = Path("/proc/self/status")


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (round to nearest even)."""
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A minimal safetensors writer: ``{name: (dtype code, little-endian raw array)}``."""
    header: dict[str, object] = {}
    offset = 0
    for name, (code, raw) in tensors.items():
        header[name] = {
            "dtype": code,
            "shape": list(raw.shape),
            "data_offsets": [offset, offset + raw.nbytes],
        }
        offset += raw.nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for _, raw in tensors.values():
            fh.write(np.ascontiguousarray(raw).tobytes())


def make_sharded(
    folder: Path, code: str, shards: int, per_shard: int, shape: tuple[int, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """A sharded checkpoint with an index; returns the float32 values the reader must give."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    values: dict[str, np.ndarray] = {}
    layer = 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors: dict[str, tuple[str, np.ndarray]] = {}
        for _ in range(per_shard):
            key = f"model.layers.{layer}.mlp.weight"
            x = (rng.standard_t(4.0, size=shape) * 0.02).astype(np.float32)
            if code == "BF16":
                raw = _bf16_bits(x)
                values[key] = (raw.astype(np.uint32) << 16).view(np.float32)
            elif code == "F16":
                raw = x.astype(np.float16)
                values[key] = raw.astype(np.float32)
            else:
                raw = x
                values[key] = x
            tensors[key] = (code, raw)
            tensors[f"model.layers.{layer}.norm.weight"] = ("F32", np.ones(shape[1], np.float32))
            weight_map[key] = fname
            weight_map[f"model.layers.{layer}.norm.weight"] = fname
            layer += 1
        write_safetensors(folder / fname, tensors)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return values


@pytest.mark.parametrize(
    ("code", "ml_dtypes", "loaded_as"),
    [("BF16", True, "bfloat16"), ("BF16", False, "float32"), ("F16", True, "float16")],
)
def test_16bit_tensors_load_exactly_and_analyse_like_float32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, ml_dtypes: bool, loaded_as: str
) -> None:
    if not ml_dtypes:  # the fallback: widened to float32 chunk by chunk
        monkeypatch.setattr(st_source, "bfloat16_dtype", lambda: None)
        monkeypatch.setattr(st_source, "CONVERT_CHUNK", 1000)  # many chunks, a ragged last one
    elif code == "BF16":
        pytest.importorskip("ml_dtypes")
    values = make_sharded(tmp_path / "ckpt", code, shards=2, per_shard=2, shape=(77, 130))
    source = ws.sources.open_model(tmp_path / "ckpt")
    loaded = {e.key: e.load() for e in source.entries if e.key in values}
    assert loaded.keys() == values.keys()
    for key, expected in values.items():
        assert loaded[key].dtype.name == loaded_as
        np.testing.assert_array_equal(np.asarray(loaded[key], np.float32), expected)
    report = ws.analyze(tmp_path / "ckpt")
    reference = ws.analyze(values)  # the same values as float32 arrays
    for ours, ref in zip(report.analysed, reference.analysed, strict=True):
        assert ours.name == ref.name
        np.testing.assert_equal(dict(ours.metrics), dict(ref.metrics))  # exactly: same Gram


def test_bfloat16_blocked_gram_equals_float32_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ml_dtypes")
    from weightspectra.core import eigen

    monkeypatch.setattr(eigen, "GRAM_BLOCKED_ABOVE_BYTES", 64 * 1024)  # the blocked path...
    monkeypatch.setattr(eigen, "GRAM_BLOCK_BYTES", 32 * 1024)  # ...in many blocks
    values = make_sharded(tmp_path / "ckpt", "BF16", shards=1, per_shard=2, shape=(900, 60))
    report = ws.analyze(tmp_path / "ckpt", cache=tmp_path / "cache")
    reference = ws.analyze(values)
    cached = ws.analyze(tmp_path / "ckpt", cache=tmp_path / "cache")  # bfloat16 keys hash too
    assert len(report.analysed) == len(cached.analysed) == len(reference.analysed) > 0
    for ours, ref, again in zip(report.analysed, reference.analysed, cached.analysed, strict=True):
        assert ours.name == ref.name == again.name
        np.testing.assert_equal(dict(ours.metrics), dict(ref.metrics))
        np.testing.assert_equal(dict(again.metrics), dict(ref.metrics))


# --- tensors a source reads by rows (TensorEntry.load_rows) ------------------------------------


def _row_source(
    arrays: dict[str, np.ndarray], reads: list[tuple[str, int, int]], *, load_works: bool
) -> Source:
    """A source whose entries stream by rows; ``load`` fails unless ``load_works``."""

    def entry(key: str, array: np.ndarray) -> TensorEntry:
        def load() -> np.ndarray:
            if not load_works:
                raise RuntimeError("whole load refused by the test")
            return array

        def load_rows(lo: int, hi: int) -> np.ndarray:
            reads.append((key, lo, hi))
            return array[lo:hi]

        return TensorEntry(key, array.shape, "float32", load, LayerType.DENSE, load_rows=load_rows)

    return Source("rows", tuple(entry(k, a) for k, a in arrays.items()))


@pytest.fixture
def streaming_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream every matrix over 32 KiB (float32), in several reads and syrk blocks."""
    from weightspectra import analysis
    from weightspectra.core import eigen

    monkeypatch.setattr(analysis, "GRAM_BLOCKED_ABOVE_BYTES", 32 * 1024)
    monkeypatch.setattr(eigen, "GRAM_BLOCKED_ABOVE_BYTES", 32 * 1024)
    monkeypatch.setattr(eigen, "GRAM_BLOCK_BYTES", 16 * 1024)
    monkeypatch.setattr(eigen, "STREAM_READ_BYTES", 64 * 1024)


@pytest.mark.usefixtures("streaming_threshold")
def test_a_large_tall_matrix_is_streamed_never_loaded_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arrays = {
        "big.weight": rng.standard_t(3, (2000, 40)).astype(np.float32),  # 320 KB: streamed
        "wide.weight": rng.standard_normal((40, 2000)).astype(np.float32),  # wide: loaded
        "small.weight": rng.standard_normal((60, 30)).astype(np.float32),  # small: loaded
    }
    reads: list[tuple[str, int, int]] = []
    report = ws.analyze(_row_source(arrays, reads, load_works=False))
    by_name = {r.name: r for r in report.layers}
    assert by_name["big"].status is Status.OK, by_name["big"].reason
    # the others needed a whole load, which this source refuses: proof of which path ran
    assert by_name["wide"].reason_code is Reason.READ_ERROR
    assert by_name["small"].reason_code is Reason.READ_ERROR
    assert {k for k, _, _ in reads} == {"big.weight"} and len(reads) > 1
    reference = ws.analyze({"big.weight": arrays["big.weight"]}).analysed[0]
    np.testing.assert_equal(dict(by_name["big"].metrics), dict(reference.metrics))  # same sum
    evals = np.sort(np.linalg.svd(arrays["big.weight"].astype(np.float64), compute_uv=False) ** 2)
    assert by_name["big"].evals is not None
    np.testing.assert_allclose(by_name["big"].evals, evals, rtol=1e-10)


@pytest.mark.usefixtures("streaming_threshold")
def test_streaming_is_off_where_the_whole_matrix_is_needed() -> None:
    w = np.random.default_rng(8).standard_normal((2000, 40)).astype(np.float32)
    for options in ({"randomize": True}, {"eig_method": "svd"}):
        reads: list[tuple[str, int, int]] = []
        report = ws.analyze(_row_source({"big.weight": w}, reads, load_works=True), **options)
        assert reads == [] and report.layers[0].status is Status.OK, options


@pytest.mark.usefixtures("streaming_threshold")
def test_a_streamed_rank_deficient_matrix_gets_its_exact_ranks_from_a_whole_load() -> None:
    rng = np.random.default_rng(9)
    columns = rng.standard_normal((2000, 12)).astype(np.float32)
    w = columns[:, np.arange(40) % 12]  # 40 columns, 12 distinct: rank 12 exactly, in float32
    reads: list[tuple[str, int, int]] = []
    row = ws.analyze(_row_source({"low.weight": w}, reads, load_works=True)).layers[0]
    assert reads and row.status is Status.OK
    assert row.metrics["matrix_rank"] == np.linalg.matrix_rank(w.astype(np.float64)) == 12


@pytest.mark.usefixtures("streaming_threshold")
def test_a_streamed_tensor_has_the_cache_key_of_the_whole_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weightspectra import analysis

    w = np.random.default_rng(10).standard_normal((2000, 40)).astype(np.float32)
    reads: list[tuple[str, int, int]] = []
    first = ws.analyze(_row_source({"big.weight": w}, reads, load_works=False), cache=tmp_path)
    assert first.layers[0].status is Status.OK and reads
    monkeypatch.setattr(analysis, "GRAM_BLOCKED_ABOVE_BYTES", 2**40)  # now loaded whole...

    def no_compute(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("recomputed instead of served from the cache")

    monkeypatch.setattr(analysis, "layer_eigenvalues", no_compute)
    again = ws.analyze(_row_source({"big.weight": w}, [], load_works=True), cache=tmp_path)
    assert again.layers[0].status is Status.OK, again.layers[0].reason  # ...and served
    np.testing.assert_equal(dict(again.layers[0].metrics), dict(first.layers[0].metrics))


_CHILD = """
import sys, numpy as np, weightspectra as ws
def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out
ws.analyze({"warm.weight": np.random.default_rng(0).standard_normal((512, 256))})
before = status()["VmRSS"]
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS
report = ws.analyze(sys.argv[1], workers=int(sys.argv[2]))
print(status()["VmHWM"] - before, len(report.analysed))
"""


def _peak_growth(folder: Path, workers: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    growth, analysed = out.stdout.split()
    return int(growth), int(analysed)


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="peak RSS is read from /proc (Linux only)")
@pytest.mark.parametrize(("code", "workers"), [("BF16", 1), ("F32", 1), ("BF16", 2)])
def test_peak_memory_is_one_tensor_not_the_checkpoint(
    tmp_path: Path, code: str, workers: int
) -> None:
    shape = (4096, 256)  # 4 MB as float32, 8 MB as float64; its Gram matrix is small
    shards, per_shard = 4, 12
    make_sharded(tmp_path / "ckpt", code, shards, per_shard, shape)
    on_disk = sum(f.stat().st_size for f in (tmp_path / "ckpt").glob("*.safetensors"))
    as_float32 = shards * per_shard * shape[0] * shape[1] * 4
    assert on_disk >= 96 * MB if code == "F32" else on_disk >= 48 * MB
    growth, analysed = _peak_growth(tmp_path / "ckpt", workers)
    assert analysed == shards * per_shard
    # One tensor's working set is ~4 MB (float32) + 8 MB (float64 copy) + small Gram and fit
    # buffers, per worker. Holding the checkpoint (or its mapped pages) would cost 96–192 MB.
    bound = 40 * MB * workers
    assert growth < bound, f"peak RSS grew by {growth / MB:.0f} MB (bound {bound / MB:.0f} MB)"
    assert growth < as_float32 / 4


@pytest.mark.usefixtures("streaming_threshold")
def test_a_streamed_matrix_gets_its_farms_alpha_from_bands_of_rows() -> None:
    w = np.random.default_rng(10).standard_t(3, (2000, 40)).astype(np.float32)
    reads: list[tuple[str, int, int]] = []
    report = ws.analyze(_row_source({"big.weight": w}, reads, load_works=False), estimator="farms")
    (row,) = report.layers
    assert row.status is Status.OK, row.reason
    # the windows are 40 rows tall, half-overlapping: each read one band, none the whole matrix
    bands = [(lo, hi) for _, lo, hi in reads if hi - lo == 40]
    assert len(bands) == row.metrics["num_farms_windows"] == 99
    assert max(hi - lo for _, lo, hi in reads) < 2000
    whole = ws.analyze({"big.weight": w}, estimator="farms").layers[0]
    assert row.metrics["alpha_farms"] == whole.metrics["alpha_farms"]
