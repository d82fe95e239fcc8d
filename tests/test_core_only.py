"""The core install (no extras) analyses safetensors: what `scripts/demo.sh` relies on.

`scripts/setup.sh --core` installs only numpy, scipy, threadpoolctl and ml_dtypes. The test
environment has every extra, so these tests hide the optional packages from a child process and
run the command line there, as a core-only user would.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

#: Packages that the core must neither need nor import (extras and test-only packages).
OPTIONAL = ("torch", "pandas", "matplotlib", "sklearn", "safetensors", "selenium")

_CHILD = """
import importlib.abc, runpy, sys

class _Hiding(importlib.abc.MetaPathFinder):
    # Wraps each finder so that a hidden package is not found at all, as if not installed:
    # `import` raises ModuleNotFoundError and importlib.util.find_spec returns None.
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {hidden}:
            return None
        return self.inner.find_spec(name, path, target)

    def invalidate_caches(self):
        getattr(self.inner, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [_Hiding(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
sys.argv = ["weightspectra", *sys.argv[1:]]
try:
    runpy.run_module("weightspectra", run_name="__main__")
finally:
    loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & set({hidden}))
    print("loaded:", ",".join(loaded), file=sys.stderr)
"""


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file written with numpy alone (header length, JSON header, raw bytes)."""
    header: dict[str, object] = {}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _run_core_only(*args: str) -> subprocess.CompletedProcess[str]:
    code = _CHILD.format(hidden=repr(OPTIONAL))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


def test_cli_analyzes_safetensors_without_optional_packages(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model = tmp_path / "model.safetensors"
    _write_safetensors(
        model,
        {
            "encoder.0.dense.weight": rng.standard_t(3.0, size=(160, 64)),
            "encoder.0.dense.bias": rng.standard_normal(160),
            "encoder.1.dense.weight": rng.standard_t(4.0, size=(64, 160)),
        },
    )
    out = _run_core_only("analyze", str(model))
    assert out.returncode == 0, out.stderr
    assert "encoder.0.dense " in out.stdout
    assert "encoder.1.dense " in out.stdout
    assert "Model summary" in out.stdout
    loaded = [ln for ln in out.stderr.splitlines() if ln.startswith("loaded:")]
    assert loaded == ["loaded: "], out.stderr


def test_hiding_works(tmp_path: Path) -> None:
    # The check above means something only if the child really cannot import a hidden package.
    code = _CHILD.format(hidden=repr(OPTIONAL)).replace(
        'runpy.run_module("weightspectra", run_name="__main__")', "import torch"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ModuleNotFoundError: No module named 'torch'" in out.stderr
