"""Cross-checks against the peer (weightwatcher 0.7.7).

Two kinds. The peer's stored output on the real all-MiniLM-L6-v2 (tests/data, from
shared/data/peer_minilm_details.csv) needs no peer: it runs wherever the MiniLM weights package
is installed, and compares every numeric column, ``weak_rank_loss`` included. Live runs of the
peer on small seeded models need the peer (a dev extra); importing it reconfigures logging and
warnings process-wide, so it only ever runs in its own process (tests/peer_script.py,
tests/peer_ranks_script.py), and those tests skip when it is not installed.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra as ws

TESTS = Path(__file__).parent
needs_peer = pytest.mark.skipif(
    importlib.util.find_spec("weightwatcher") is None,
    reason="the peer (weightwatcher==0.7.7) is not installed: pip install -e '.[peer]'",
)

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
INT_COLUMNS = ("N", "M", "rf", "num_evals", "num_pl_spikes", "matrix_rank", "weak_rank_loss")

#: Columns of the peer's MiniLM CSV that are no numbers of the spectrum, with how they are
#: checked instead: ``layer_id`` (the peer's module index) and the short ``name`` are the peer's
#: naming; ``has_esd``/``status`` are its status words; ``warning`` its α vocabulary.
CSV_NOT_NUMBERS = {"layer_id", "name", "longname", "layer_type", "has_esd", "status", "warning"}
#: Measured agreement on MiniLM (float64 Gram route vs the peer's float64 SVD): 3.3e-13 at most
#: for every float column but sv_min, which the Gram route gives to 4.8e-7 (its σ_min/σ_max is
#: 1.2e-5 at the smallest, above the exact-SVD trigger, docs/metrics.md).
CSV_REL = 1e-11
CSV_SV_MIN_REL = 2e-6
CSV_INTS = {*INT_COLUMNS, "rank_loss"}


def _peer_warning(alpha: float | None) -> str:
    """The peer's label for an α (its rule: < 2 over-trained, > 6 under-trained)."""
    if alpha is None:
        return ""
    return "over-trained" if alpha < 2.0 else "under-trained" if alpha > 6.0 else ""


def test_minilm_rows_equal_the_peer_csv(
    minilm_path: Path, peer_minilm: dict[str, dict[str, str]]
) -> None:
    report = ws.analyze(minilm_path)
    ours = {row.name: row for row in report.analysed}
    assert len(peer_minilm) == 39 and set(peer_minilm) <= set(ours)
    compared: set[str] = set()
    nonzero_weak = 0
    for longname, peer in peer_minilm.items():
        row = ours[longname]
        mine: dict[str, Any] = row.row()
        assert row.ok and peer["status"] == "success" and peer["has_esd"] == "True"
        assert mine["layer_type"] == peer["layer_type"], longname
        assert peer["warning"] == _peer_warning(mine["alpha"]), longname
        for col, text in peer.items():
            if col in CSV_NOT_NUMBERS:
                continue
            compared.add(col)
            expected = float(text)
            if col in CSV_INTS:
                assert mine[col] == int(expected), (longname, col)
            else:
                rel = CSV_SV_MIN_REL if col == "sv_min" else CSV_REL
                assert mine[col] == pytest.approx(expected, rel=rel), (longname, col)
        nonzero_weak += int(peer["weak_rank_loss"]) > 0
    # every numeric column of the CSV was compared, weak_rank_loss included and not trivially
    assert "weak_rank_loss" in compared and "sv_min" in compared and len(compared) == 25
    assert nonzero_weak == 12


def _run_peer(script: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(TESTS / script), *args],
        check=True,
        capture_output=True,
        timeout=300,
    )


@needs_peer
@pytest.mark.peer
@pytest.mark.parametrize("pool", [True, False], ids=["pooled", "unpooled"])
@pytest.mark.parametrize("model", ["SmallCNN", "MLP"])
def test_rows_equal_the_peer(model: str, pool: bool, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pd = pytest.importorskip("pandas")
    from models import build

    out = tmp_path / f"peer-{model}-{pool}.csv"
    _run_peer("peer_script.py", model, "0", "1" if pool else "0", str(out))
    peer = pd.read_csv(out)
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


@needs_peer
@pytest.mark.peer
@pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")  # exact zeros: clipped
@pytest.mark.parametrize("pool", [True, False], ids=["pooled", "unpooled"])
def test_rank_metrics_equal_the_peer_on_rank_deficient_layers(pool: bool, tmp_path: Path) -> None:
    # Dead and proportional channels, slices of norms 1e-2…1e2, σ ≈ 1e-9·σ_max, and λ that
    # cross the weak-rank tolerance only once the convolution scaling is applied
    # (tests/peer_ranks_script.py): ranks from an exact SVD, weak rank on the scaled ESD.
    pytest.importorskip("torch")
    pd = pytest.importorskip("pandas")
    out, weights = tmp_path / "peer.csv", tmp_path / "weights.npz"
    _run_peer("peer_ranks_script.py", "1" if pool else "0", str(out), str(weights))
    peer = pd.read_csv(out)
    with np.load(weights) as data:
        arrays = {k: data[k] for k in data.files}
    report = ws.analyze(arrays, pool=pool)
    ours = report.to_pandas()
    assert [n.split("[")[0] for n in ours["name"]] == list(peer["longname"])
    for col in ("num_evals", "matrix_rank", "weak_rank_loss"):
        np.testing.assert_array_equal(ours[col].to_numpy(int), peer[col].to_numpy(int), col)
    assert int(ours["weak_rank_loss"].sum()) > 0 and int(peer["rank_loss"].sum()) > 0
    np.testing.assert_allclose(
        ours["entropy"].to_numpy(float), peer["entropy"].to_numpy(float), rtol=1e-9
    )
    pooled_conv = (ours["rf"] > 1) & (ours["num_evals"] > ours["M"])
    for i in np.flatnonzero(~pooled_conv.to_numpy()):
        assert ours["sv_min"][i] == pytest.approx(peer["sv_min"][i], rel=1e-9, abs=1e-300)
        assert ours["rank_loss"][i] == peer["rank_loss"][i]
    for i in np.flatnonzero(pooled_conv.to_numpy()):
        # Documented differences (docs/metrics.md): on a pooled convolution the peer's sv_min is
        # the largest of the per-slice minima and its rank_loss the sum of per-slice losses
        # (each with its own slice's tolerance), while its matrix_rank, like ours, applies one
        # tolerance to the pooled singular values; ours keep rank_loss = num_evals − matrix_rank
        # and sv_min = the smallest singular value of the whole ESD.
        w = arrays[report.analysed[int(i)].key].astype(np.float64)
        slices = [w[:, :, a, b] for a in range(w.shape[2]) for b in range(w.shape[3])]
        sv_min = min(float(np.linalg.svd(m, compute_uv=False)[-1]) for m in slices)
        assert ours["rank_loss"][i] == ours["num_evals"][i] - ours["matrix_rank"][i]
        assert ours["sv_min"][i] == pytest.approx(sv_min * math.sqrt(0.5), rel=1e-9, abs=1e-300)


@needs_peer
@pytest.mark.peer
@pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")
def test_readme_examples_equal_the_peer(tmp_path: Path) -> None:
    # The peer's README calls (analyze, get_summary, describe, get_ESD, distances,
    # base_model=) run unchanged through the facade and give the peer's numbers. Two measured,
    # documented differences (docs/compat.md): the peer subtracts and differences weights in
    # float32 (ours in float64: agreement 1e-6 there, not 1e-10), and its delta_b is 0 for
    # torch Linear layers, whose biases it never reads (ours: the biases' distance).
    pytest.importorskip("torch")
    pytest.importorskip("pandas")
    import json

    from models import build
    from weightspectra.compat import WeightWatcher

    out = tmp_path / "readme.json"
    _run_peer("peer_readme_script.py", str(out))
    peer = json.loads(out.read_text())
    model, other = build("MLP", 0), build("MLP", 1)
    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    summary = watcher.get_summary(details)
    assert set(summary) == set(peer["summary"])
    for key, value in peer["summary"].items():
        assert summary[key] == pytest.approx(value, rel=1e-12), key
    assert watcher.describe()[["layer_id", "name"]].to_dict("list") == peer["describe"]
    esd = watcher.get_ESD(layer=peer["esd_layer"])
    np.testing.assert_allclose(esd, peer["esd"], rtol=1e-10, atol=1e-12 * max(peer["esd"]))
    avg_w, avg_b, frame = watcher.distances(model, other, method="euclidean")
    np.testing.assert_allclose(frame["delta_W"], peer["distances"]["delta_W"], rtol=1e-6)
    assert avg_w == pytest.approx(peer["distances"]["avg_dW"], rel=1e-6)
    assert peer["distances"]["avg_db"] == 0.0 and avg_b > 0.1
    delta = WeightWatcher(model=other, base_model=model).analyze()
    assert list(delta["name"]) == peer["delta"]["name"]
    np.testing.assert_allclose(delta["lambda_max"], peer["delta"]["lambda_max"], rtol=1e-6)
    np.testing.assert_allclose(delta["alpha"], peer["delta"]["alpha"], rtol=1e-6)
