"""Cross-check against the peer (weightwatcher 0.7.7), run in a subprocess.

The peer is a dev extra; importing it reconfigures logging and warnings process-wide, so it only
ever runs in its own process (tests/peer_script.py).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
if importlib.util.find_spec("weightwatcher") is None:
    pytest.skip(
        "the peer (weightwatcher==0.7.7) is not installed: pip install -e '.[dev]'",
        allow_module_level=True,
    )

import weightspectra as ws  # noqa: E402
from models import build  # noqa: E402

pytestmark = pytest.mark.peer
SCRIPT = Path(__file__).parent / "peer_script.py"
FLOAT_COLUMNS = (
    "alpha",
    "D",
    "xmin",
    "xmax",
    "sigma",
    "alpha_weighted",
    "log_alpha_norm",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "entropy",
    "lambda_max",
    "norm",
    "sv_max",
)
INT_COLUMNS = ("N", "M", "rf", "num_evals", "num_pl_spikes", "matrix_rank")


def peer_details(model: str, seed: int, pool: bool, tmp_path: Path) -> pd.DataFrame:
    out = tmp_path / f"peer-{model}-{seed}-{pool}.csv"
    subprocess.run(
        [sys.executable, str(SCRIPT), model, str(seed), "1" if pool else "0", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return pd.read_csv(out)


@pytest.mark.parametrize("pool", [True, False], ids=["pooled", "unpooled"])
@pytest.mark.parametrize("model", ["SmallCNN", "MLP"])
def test_rows_equal_the_peer(model: str, pool: bool, tmp_path: Path) -> None:
    peer = peer_details(model, 0, pool, tmp_path)
    ours = ws.analyze(build(model, 0), pool=pool).to_pandas()
    assert len(ours) == len(peer), "the same layers and slices are analysed"
    # the peer names rows by module; ours add the kernel position for unpooled slices
    assert [n.split("[")[0] for n in ours["name"]] == list(peer["longname"])
    for col in FLOAT_COLUMNS:
        np.testing.assert_allclose(
            ours[col].to_numpy(float), peer[col].to_numpy(float), rtol=1e-7, err_msg=col
        )
    for col in INT_COLUMNS:
        np.testing.assert_array_equal(ours[col].to_numpy(int), peer[col].to_numpy(int), err_msg=col)
    expected_warning = peer["warning"].fillna("").to_numpy(str)
    assert [
        w.split(",")[0] if w.startswith(("over", "under")) else "" for w in ours["warning"]
    ] == [w if w in ("over-trained", "under-trained") else "" for w in expected_warning]
