"""A bfloat16 safetensors file, written byte by byte here, read where torch cannot be imported.

The file format (safetensors' README): 8 bytes little-endian u64 header length, a UTF-8 JSON
header {key: {dtype, shape, data_offsets}}, then the raw little-endian tensor data. bfloat16 is
the upper 16 bits of a float32, so the exact float32 value of each element is ``bits << 16``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws

PACKAGE_ROOT = str(Path(ws.__file__).resolve().parents[1])  # the weightspectra under test
ROWS, COLS = 48, 32
#: The float64 Gram eigenvalues of the widened matrix against its SVD: ~1e-14 relative on this
#: well-conditioned Gaussian matrix; 1e-9 is the stated tolerance.
RTOL = 1e-9


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns, rounding to nearest, ties to even."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def widen(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns → their exact float32 values."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for key, (dtype, data) in tensors.items():
        raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
        header[key] = {
            "dtype": dtype,
            "shape": list(data.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # pad so the data starts 8-byte aligned, as safetensors does
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


_CHILD = r"""
import importlib.machinery, json, sys

hide, mode = sys.argv[2].split(","), sys.argv[3]
if mode == "shim":  # the usual way to make an import fail: None in sys.modules
    for name in hide:
        sys.modules[name] = None
else:  # "absent": the path finders do not see the packages, as if they were not installed
    class Hiding:
        def __init__(self, inner):
            self.inner = inner
        def find_spec(self, fullname, target=None):
            if fullname.partition(".")[0] in hide:
                return None
            return self.inner.find_spec(fullname, target)
        def invalidate_caches(self):
            if hasattr(self.inner, "invalidate_caches"):
                self.inner.invalidate_caches()
    original = list(sys.path_hooks)
    def hook(path):
        for make in original:
            try:
                return Hiding(make(path))
            except ImportError:
                continue
        raise ImportError(path)
    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()
    import importlib.util
    for name in hide:
        assert importlib.util.find_spec(name) is None, name

import weightspectra as ws
report = ws.analyze(sys.argv[1])
(row,) = [r for r in report.layers if r.key == "layer.weight"]
loaded = sorted(k for k, v in sys.modules.items()
                if k.partition(".")[0] in hide and v is not None)
print(json.dumps({"status": row.status.value, "reason": row.reason, "key": row.key,
                  "evals": None if row.evals is None else [float(v) for v in row.evals],
                  "loaded": loaded}))
"""


def run_child(path: Path, hide: list[str], mode: str) -> dict[str, object]:
    paths = [PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), ",".join(hide), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["shim", "absent"])
@pytest.mark.parametrize("hide", [["torch"], ["torch", "ml_dtypes"]], ids=["no-torch", "bare"])
def test_bf16_file_without_torch_matches_float32_widening(
    tmp_path: Path, hide: list[str], mode: str
) -> None:
    values = np.random.default_rng(16).standard_normal((ROWS, COLS)).astype(np.float32)
    bits = bf16_bits(values)
    path = tmp_path / "model.safetensors"
    write_safetensors(
        path,
        {"layer.weight": ("BF16", bits), "layer.bias": ("F32", np.zeros(ROWS, dtype=np.float32))},
    )
    widened = widen(bits).astype(np.float64)
    # the rounding is the nearest bfloat16: within half a bfloat16 ulp (2⁻⁸ relative)
    assert np.all(np.abs(widened - values) <= np.abs(values) * 2.0**-8)
    expected = np.sort(np.linalg.svd(widened, compute_uv=False) ** 2)

    result = run_child(path, hide, mode)
    assert result["loaded"] == []  # none of the hidden packages was imported
    assert result["status"] == "ok", result["reason"]
    assert result["key"] == "layer.weight"
    got = np.asarray(result["evals"], dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=RTOL)


def test_bf16_file_in_process_matches_the_same_widening(tmp_path: Path) -> None:
    """The same file read here (whatever is installed) gives the same eigenvalues."""
    values = np.random.default_rng(17).standard_normal((COLS, ROWS)).astype(np.float32)
    bits = bf16_bits(values)
    path = tmp_path / "wide.safetensors"
    write_safetensors(path, {"w.weight": ("BF16", bits)})
    (row,) = ws.analyze(path).layers
    assert row.evals is not None
    expected = np.sort(np.linalg.svd(widen(bits).astype(np.float64), compute_uv=False) ** 2)
    np.testing.assert_allclose(row.evals, expected, rtol=RTOL)
