"""Frameworks are imported only by the callback module that needs them: the monitor, the run
folder, the series and the CLI import none (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2] / "src")

CODE = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
import weightspectra.cli
from weightspectra.training import Monitor, analyze_series, read_run, AlphaLR
import weightspectra.training.render, weightspectra.training.series
import tempfile
with Monitor(tempfile.mkdtemp(), every=1) as m:
    m.step({{"fc.weight": np.random.default_rng(0).standard_normal((40, 20))}}, step=1)
heavy = [n for n in ("torch", "transformers", "keras", "lightning", "matplotlib", "pandas")
         if n in sys.modules]
print(",".join(heavy))
"""


def test_no_framework_imported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(root=PACKAGE_ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == ""
