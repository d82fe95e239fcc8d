"""The peer-compatible API: a peer-style script on MiniLM gives the peer's numbers; options map
or fail clearly; details/describe/get_ESD behave as the peer's."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightspectra.compat import DETAILS_COLUMNS, WeightWatcher
from weightspectra.errors import InputError, OptionError

pd = pytest.importorskip("pandas")

PEER_SUMMARY = {
    "alpha": 4.1171,
    "alpha_weighted": 5.0648,
    "log_norm": 2.9307,
    "log_spectral_norm": 1.3941,
}
#: Peer columns that are not numbers of the spectrum (compared separately or not at all).
NON_NUMERIC = {"layer_id", "name", "longname", "layer_type", "status", "warning", "has_esd"}
#: Columns that differ from the peer on purpose on MiniLM: none (weak_rank_loss follows the
#: peer's definition, eigenvalues < 1e-6, and matches it on every layer).
KNOWN_DIFFERENT: set[str] = set()


def _peer_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def peer_rows() -> list[dict[str, str]]:
    return _peer_rows(Path(__file__).parent / "data" / "peer_minilm_details.csv")


def _compare_details(details: Any, peer_rows: list[dict[str, str]]) -> None:
    ours = {row["longname"]: row for row in details.to_dict("records")}
    assert len(details) == len(peer_rows) == 39
    for peer in peer_rows:
        mine = ours[peer["longname"]]
        assert mine["name"] == peer["name"]
        assert mine["layer_type"] == peer["layer_type"]
        assert mine["status"] == peer["status"] == "success"
        assert mine["warning"] == peer["warning"], peer["longname"]
        assert bool(mine["has_esd"]) == (peer["has_esd"] == "True")
        for col, value in peer.items():
            if col in NON_NUMERIC or col in KNOWN_DIFFERENT:
                continue
            assert mine[col] == pytest.approx(float(value), rel=1e-6), (peer["longname"], col)


def test_peer_script_on_minilm_file(minilm_path: Path, peer_rows: list[dict[str, str]]) -> None:
    watcher = WeightWatcher(model=str(minilm_path))
    details = watcher.analyze()
    summary = watcher.get_summary(details)
    for key, value in PEER_SUMMARY.items():
        assert summary[key] == pytest.approx(value, abs=1e-4), key
    assert list(details.columns[: len(DETAILS_COLUMNS)]) == list(DETAILS_COLUMNS)
    _compare_details(details, peer_rows)
    assert watcher.get_summary() == summary
    assert watcher.get_details() is details


def _hf_bert_tree() -> Any:
    """The module tree of Hugging Face's BertModel (dropouts and activations included), so that
    ``named_modules()`` indices are the peer's layer ids."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def dense_out(d_in: int, d_out: int) -> nn.Module:
        m = nn.Module()
        m.dense, m.LayerNorm, m.dropout = nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.Dropout()
        return m

    def block() -> nn.Module:
        sa = nn.Module()
        sa.query, sa.key, sa.value, sa.dropout = (
            nn.Linear(384, 384),
            nn.Linear(384, 384),
            nn.Linear(384, 384),
            nn.Dropout(),
        )
        att = nn.Module()
        att.self, att.output = sa, dense_out(384, 384)
        inter = nn.Module()
        inter.dense, inter.intermediate_act_fn = nn.Linear(384, 1536), nn.GELU()
        b = nn.Module()
        b.attention, b.intermediate, b.output = att, inter, dense_out(1536, 384)
        return b

    emb = nn.Module()
    emb.word_embeddings = nn.Embedding(30522, 384)
    emb.position_embeddings = nn.Embedding(512, 384)
    emb.token_type_embeddings = nn.Embedding(2, 384)
    emb.LayerNorm, emb.dropout = nn.LayerNorm(384), nn.Dropout()
    emb.register_buffer("position_ids", torch.arange(512).unsqueeze(0))
    enc = nn.Module()
    enc.layer = nn.ModuleList(block() for _ in range(6))
    pooler = nn.Module()
    pooler.dense, pooler.activation = nn.Linear(384, 384), nn.Tanh()
    model = nn.Module()
    model.embeddings, model.encoder, model.pooler = emb, enc, pooler
    return model


def test_peer_script_on_minilm_module(minilm_path: Path, peer_rows: list[dict[str, str]]) -> None:
    st = pytest.importorskip("safetensors.torch")
    model = _hf_bert_tree()
    model.load_state_dict(st.load_file(str(minilm_path)))
    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    _compare_details(details, peer_rows)
    ids = dict(zip(details["longname"], details["layer_id"], strict=True))
    for peer in peer_rows:  # an nn.Module gets the peer's layer ids
        assert ids[peer["longname"]] == int(peer["layer_id"])
    assert list(details["layer_id"]) == sorted(int(p["layer_id"]) for p in peer_rows)
    esd = watcher.get_ESD(layer=12)  # encoder.layer.0.attention.self.query
    weight = model.encoder.layer[0].attention.self.query.weight.detach().double().numpy()
    expected = np.sort(np.linalg.svd(weight, compute_uv=False) ** 2)
    np.testing.assert_allclose(esd, expected, rtol=1e-9, atol=1e-12 * expected[-1])
    only = watcher.analyze(layers=[12, 13])
    assert list(only["longname"]) == [
        "encoder.layer.0.attention.self.query",
        "encoder.layer.0.attention.self.key",
    ]
    dropped = watcher.describe(layers=[-2])  # the same selection, without computing anything
    assert "embeddings.word_embeddings" not in set(dropped["longname"]) and len(dropped) == 38
    assert list(watcher.describe(layers=[12])["layer_id"]) == [12]


def _small() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "a.weight": rng.standard_t(3.0, (120, 60)),
        "b.weight": rng.standard_t(2.5, (200, 50)),
        # rank one: a single eigenvalue above the fit threshold, so the power-law fit fails
        "flat.weight": np.outer(rng.standard_normal(40), rng.standard_normal(40)),
        "tiny.weight": rng.standard_normal((5, 60)),
    }


@pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")  # rank one: exact zeros
def test_failed_fit_and_summary() -> None:
    watcher = WeightWatcher(model=_small())
    details = watcher.analyze()
    flat = details.set_index("longname").loc["flat"]
    assert flat["status"] == "failed" and math.isnan(flat["alpha"])
    assert flat["warning"] == "" and flat["ws_warning"] == "fit-failed"
    ok = details[details["status"] == "success"]
    assert len(ok) == 2 and "tiny" not in set(details["longname"])
    summary = watcher.get_summary()
    assert summary["alpha"] == pytest.approx(ok["alpha"].mean())
    assert summary["log_norm"] == pytest.approx(details["log_norm"].mean())
    assert summary["log_norm"] != pytest.approx(ok["log_norm"].mean())  # flat counts in norms


@pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")
def test_options_map_or_fail() -> None:
    watcher = WeightWatcher(model=_small())
    with pytest.raises(OptionError, match="unknown option frobnicate=1; supported options: "):
        watcher.analyze(frobnicate=1)
    with pytest.raises(OptionError, match=r"^vectors=True .*: call vector_metrics\(vectors\)"):
        watcher.analyze(vectors=True)
    with pytest.raises(OptionError, match="fit='LN': choose 'PL', 'TPL' or 'E_TPL'"):
        watcher.analyze(fit="LN")
    with pytest.raises(OptionError, match=r"xmin_peak.*use fix_fingers='clip_xmax'"):
        watcher.analyze(fix_fingers="xmin_peak")
    # the peer's own defaults, spelled out, run
    details = watcher.analyze(
        vectors=False,
        fix_fingers=None,
        min_evals=45,
        conv2d_norm=True,
        svd_method="fast",
        tolerance=1e-6,
        max_fingers=10,
        xmax=None,
        start_ids=0,
    )
    assert set(details["longname"]) == {"a", "b"}
    assert set(watcher.analyze(max_N=150)["longname"]) == {"a", "flat"}
    # a state dict's peer names are the dotted prefixes, its ids count layers from 1
    assert set(watcher.analyze(layers=["a"])["longname"]) == {"a"}
    assert set(watcher.analyze(layers=["^a$"])["longname"]) == set()  # names are not regexes
    assert set(watcher.analyze(layers=["-a"])["longname"]) == {"b", "flat"}
    assert list(watcher.describe()["layer_id"]) == [1, 2, 3]
    assert set(watcher.analyze(layers=[-1])["longname"]) == {"b", "flat"}
    assert set(watcher.analyze(layers=[2, "dense"])["longname"]) == {"b"}  # ids win over types
    with pytest.raises(OptionError, match=r"ids must all be ≥ 0 \(keep\) or all < 0"):
        watcher.analyze(layers=[1, -2])
    with pytest.raises(OptionError, match="names must all keep"):
        watcher.analyze(layers=["a", "-b"])


@pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")
def test_plot_writes_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "img"
    WeightWatcher(model=_small()).analyze(plot=True, savefig=str(out))
    assert len(list(out.glob("*.png"))) == 2 + 3  # two model plots, three analysed layers


@pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")
def test_describe_get_esd_and_errors() -> None:
    arrays = _small()
    watcher = WeightWatcher()
    with pytest.raises(InputError, match="no model"):
        watcher.analyze()
    assert watcher.get_details() is None and watcher.get_summary() == {}  # as the peer
    plan = watcher.describe(model=arrays)
    assert list(plan.columns) == [
        "layer_id",
        "name",
        "longname",
        "layer_type",
        "N",
        "M",
        "Q",
        "rf",
        "num_evals",
    ]
    assert list(plan["longname"]) == ["a", "b", "flat"]
    assert list(plan["num_evals"]) == [60, 50, 40]
    esd = watcher.get_ESD(model=arrays, layer="a")
    expected = np.sort(np.linalg.svd(arrays["a.weight"], compute_uv=False) ** 2)
    np.testing.assert_allclose(esd, expected, rtol=1e-9, atol=1e-12 * expected[-1])
    with pytest.raises(InputError, match="not among the analysed layers"):
        watcher.get_ESD(model=arrays, layer="zzz")
    # The randomised ESD: analysed with randomize=True on demand (it was a dead feature).
    rand = watcher.get_ESD(model=arrays, layer="a", random=True)
    shuffled = np.random.default_rng(0).permutation(arrays["a.weight"].ravel())
    expected_rand = np.sort(
        np.linalg.svd(shuffled.reshape(arrays["a.weight"].shape), compute_uv=False) ** 2
    )
    np.testing.assert_allclose(rand, expected_rand, rtol=1e-9, atol=1e-12 * expected_rand[-1])


def test_mp_fit_passes_through() -> None:
    watcher = WeightWatcher(model=_small())
    details = watcher.analyze(mp_fit=True, layers=["a", "b"])
    soft = details["mp_softrank"].astype(float)
    assert np.isfinite(soft).all()
    assert watcher.get_summary()["mp_softrank"] == pytest.approx(soft.mean())
    assert "mp_softrank" not in watcher.get_summary(watcher.analyze(mp_fit=False, layers=["a"]))
    assert set(watcher.get_summary()) == {
        "log_norm",
        "alpha",
        "alpha_weighted",
        "log_alpha_norm",
        "log_spectral_norm",
        "stable_rank",
    }
