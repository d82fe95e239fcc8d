"""The whole pipeline: the real MiniLM against the peer's numbers, input forms, bad layers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.errors import InputError, OptionError, UnsupportedInputError

EXACT_COLUMNS = (
    "alpha", "D", "xmin", "alpha_weighted", "log_alpha_norm", "log_norm",
    "log_spectral_norm", "stable_rank", "entropy", "sigma", "lambda_max", "norm",
)  # fmt: skip
COUNT_COLUMNS = ("num_pl_spikes", "num_evals", "N", "M", "matrix_rank", "rank_loss")
PEER_SUMMARY = {
    "alpha": 4.1171,
    "alpha_weighted": 5.0648,
    "log_norm": 2.9307,
    "log_spectral_norm": 1.3941,
    "log_alpha_norm": 5.5960,
    "stable_rank": 38.0629,
}


def assert_matches_peer(report: ws.Report, peer: dict[str, dict[str, str]]) -> None:
    ours = {r.name: r for r in report.analysed}
    assert set(peer) <= set(ours), (
        f"layers the peer analysed but we did not: {set(peer) - set(ours)}"
    )
    for name, row in peer.items():
        mine = ours[name].row()
        for col in EXACT_COLUMNS:
            assert mine[col] == pytest.approx(float(row[col]), rel=1e-6), (name, col)
        for col in COUNT_COLUMNS:
            assert mine[col] == int(float(row[col])), (name, col)
    for key, value in PEER_SUMMARY.items():
        assert report.summary[key] == pytest.approx(value, abs=5e-5), key


def test_minilm_file_matches_peer(
    minilm_path: Path, peer_minilm: dict[str, dict[str, str]]
) -> None:
    report = ws.analyze(minilm_path)
    assert_matches_peer(report, peer_minilm)
    assert len(report.analysed) == 39
    skipped = {r.name: r.reason for r in report.skipped}
    assert "min_evals=8" in skipped["embeddings.token_type_embeddings"]
    assert "int64" in skipped["embeddings.position_ids"]


def test_minilm_same_numbers_from_state_dict_and_module(
    minilm_path: Path, peer_minilm: dict[str, dict[str, str]]
) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from models import BertLike

    state = load_file(str(minilm_path))
    by_state = ws.analyze(state)
    module = BertLike()
    module.load_state_dict(state)
    by_module = ws.analyze(module)
    by_file = ws.analyze(minilm_path)
    for report in (by_state, by_module):
        assert_matches_peer(report, peer_minilm)
        for row in report.analysed:
            ref = by_file[row.name]
            np.testing.assert_array_equal(row.evals, ref.evals)
            assert row.metrics == ref.metrics
    assert torch.is_tensor(state["pooler.dense.weight"])


def test_dict_of_arrays_and_bad_layers_do_not_stop_the_run(rng: np.random.Generator) -> None:
    nan_w = rng.standard_normal((40, 30))
    nan_w[2, 3] = np.nan
    arrays = {
        "good.weight": rng.standard_normal((60, 40)),
        "nan.weight": nan_w,
        "zero.weight": np.zeros((20, 20)),
        "row.weight": rng.standard_normal((1, 50)),
        "small.weight": rng.standard_normal((6, 50)),
        "norm.weight": rng.standard_normal(50),
        "also_good.weight": rng.standard_normal((30, 90)),
    }
    report = ws.analyze(arrays)
    status = {r.name: (r.status.value, r.reason) for r in report.layers}
    assert status["good"][0] == "ok" and status["also_good"][0] == "ok"
    assert status["nan"] == ("failed", status["nan"][1]) and "1 NaN" in status["nan"][1]
    assert status["zero"][0] == "failed" and "all zeros" in status["zero"][1]
    assert status["row"][0] == "skipped" and "only 1 eigenvalues" in status["row"][1]
    assert status["small"][0] == "skipped" and "min_evals=8" in status["small"][1]
    assert status["norm"][0] == "skipped" and "1-D" in status["norm"][1]
    assert report.summary["num_layers"] == 2 and report.summary["num_failed"] == 2


def test_fit_failure_is_reported_not_numbered(rng: np.random.Generator) -> None:
    w = np.diag(np.r_[np.full(6, 1.0), np.full(6, 1e-4)])  # only 6 eigenvalues above 1e-5
    report = ws.analyze({"odd.weight": w, "good.weight": rng.standard_normal((50, 40))})
    odd = report["odd"]
    assert odd.ok and odd.metrics["alpha"] is None and odd.metrics["warning"] == "fit-failed"
    assert "only 6 eigenvalues" in str(odd.metrics["fit_error"])
    assert report.summary["num_fit_failed"] == 1
    assert report.summary["alpha"] == pytest.approx(report["good"].metrics["alpha"])


def test_layer_selection_by_id_type_and_regex(rng: np.random.Generator) -> None:
    arrays = {
        "embed.weight": rng.standard_normal((100, 20)),
        "blocks.0.fc.weight": rng.standard_normal((40, 20)),
        "blocks.1.fc.weight": rng.standard_normal((40, 20)),
        "conv.weight": rng.standard_normal((16, 8, 3, 3)),
    }

    def names(**kw: object) -> list[str]:
        return [r.name for r in ws.analyze(arrays, **kw).analysed]

    assert names(layers=[1]) == ["blocks.0.fc"]
    assert names(layers=["embedding"]) == ["embed"]
    assert names(layers=[r"blocks\.\d+\.fc"]) == ["blocks.0.fc", "blocks.1.fc"]
    assert names(exclude=["conv2d", 0]) == ["blocks.0.fc", "blocks.1.fc"]
    assert names(layers=["conv2d"], pool=False)[:2] == ["conv[0,0]", "conv[0,1]"]


def test_normalize_changes_norms_not_alpha(rng: np.random.Generator) -> None:
    arrays = {"w.weight": rng.standard_normal((300, 100))}
    plain = ws.analyze(arrays)["w"].metrics
    norm = ws.analyze(arrays, normalize=True)["w"].metrics
    assert norm["alpha"] == pytest.approx(plain["alpha"], rel=1e-12)
    assert norm["lambda_max"] == pytest.approx(plain["lambda_max"] / 300, rel=1e-12)
    assert norm["log_norm"] == pytest.approx(plain["log_norm"] - math.log10(300), rel=1e-12)


def test_svd_method_agrees_with_gram(rng: np.random.Generator) -> None:
    arrays = {"w.weight": rng.standard_normal((120, 80))}
    gram = ws.analyze(arrays)["w"].metrics
    svd = ws.analyze(arrays, eig_method="svd")["w"].metrics
    for key in ("alpha", "xmin", "D", "log_norm", "log_spectral_norm", "entropy"):
        assert svd[key] == pytest.approx(gram[key], rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_evals": 0}, "min_evals must be a positive integer"),
        ({"eig_method": "eigh"}, "eig_method='eigh' is not valid; choose one of 'gram', 'svd'"),
        ({"precision": "f16"}, "choose one of 'float64', 'float32'"),
        ({"pool": "yes"}, "pool must be True or False"),
        ({"layers": [-1]}, "use exclude"),
        ({"layers": ["("]}, "neither a layer type"),
        ({"max_evals": 4}, "below min_evals"),
        ({"min_evalz": 3}, "unknown option.*min_evalz.*valid options"),
    ],
)
def test_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        ws.analyze({"w.weight": np.eye(10)}, **kwargs)


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        ("/no/such/model.safetensors", ws.ModelFileNotFoundError, "no such file"),
        ({}, InputError, "empty"),
        ({"w": [1, 2]}, UnsupportedInputError, "numpy arrays or torch tensors"),
        (42, UnsupportedInputError, "cannot analyse a builtins.int"),
    ],
)
def test_bad_inputs(model: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ws.analyze(model)


def test_models_without_tensors(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "nothing.safetensors"
    st_numpy.save_file({}, str(path))
    with pytest.raises(InputError, match="holds no tensors"):
        ws.analyze(path)
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match=r"ReLU \(torch.nn.Module\) holds no tensors"):
        ws.analyze(torch.nn.ReLU())


def test_unsupported_and_empty_files(tmp_path: Path) -> None:
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\x08\x01")
    with pytest.raises(UnsupportedInputError, match="TFLite files are not supported yet"):
        ws.analyze(tflite)
    empty = tmp_path / "e.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        ws.analyze(empty)


def test_describe_computes_nothing(rng: np.random.Generator) -> None:
    calls = []

    def load() -> np.ndarray:
        calls.append(1)
        return rng.standard_normal((30, 20))

    from weightspectra.sources import Source, TensorEntry

    source = Source("probe", (TensorEntry("fc.weight", (30, 20), "float32", load),))
    report = ws.describe(source)
    assert calls == []
    (row,) = report.layers
    assert row.status is ws.Status.PLANNED and row.num_evals == 20


def test_progress_callback_sees_every_tensor(rng: np.random.Generator) -> None:
    seen: list[ws.Progress] = []
    arrays = {f"l{i}.weight": rng.standard_normal((20, 10)) for i in range(4)}
    ws.analyze(arrays, progress=seen.append)
    assert [(p.done, p.total) for p in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_json_round_trip(rng: np.random.Generator, tmp_path: Path) -> None:
    report = ws.analyze({"a.weight": rng.standard_normal((40, 30)), "b": rng.standard_normal(5)})
    path = tmp_path / "r.json"
    report.to_json(path)
    back = ws.Report.from_json(path)
    assert back.layers == report.layers
    np.testing.assert_array_equal(back["a"].evals, report["a"].evals)
    assert back.summary == report.summary


def test_diagnostics_are_wired_and_configurable(rng: np.random.Generator) -> None:
    arrays = {"g.weight": rng.standard_normal((400, 200))}
    default = ws.analyze(arrays)["g"].metrics
    assert default["phase"] == "random-like"
    assert default["sigma_mp"] == pytest.approx(1.0, rel=0.05)  # unit-variance entries
    assert default["num_traps"] is None  # randomize is off by default
    assert ws.analyze(arrays).summary["mp_softrank"] == pytest.approx(default["mp_softrank"])
    traps = ws.analyze(arrays, randomize=True, seed=7)["g"].metrics
    assert traps["num_traps"] == 0
    assert traps == ws.analyze(arrays, randomize=True, seed=7)["g"].metrics  # seeded
    off = ws.analyze(arrays, mp_fit=False)["g"].metrics
    assert off["sigma_mp"] is None and off["alpha"] == default["alpha"]
    options = ws.Options.from_kwargs(randomize=True, min_evals=4)
    assert options.randomize  # one options object: diagnostics fields are options
    assert options.to_dict()["randomize"] is True
    with pytest.raises(OptionError, match="seed"):
        ws.analyze(arrays, seed=-1.5)


def test_rows_and_reports_pickle_round_trip(rng: np.random.Generator) -> None:
    import pickle

    model = {"fc.weight": rng.standard_normal((120, 40)), "fc.bias": rng.standard_normal(120)}
    report = ws.analyze(model)
    back = pickle.loads(pickle.dumps(report))
    assert [r.name for r in back.layers] == [r.name for r in report.layers]
    for a, b in zip(report.layers, back.layers, strict=True):
        np.testing.assert_equal(a.row(), b.row())
        assert type(b.metrics) is type(a.metrics)  # still a read-only mapping
        if a.evals is not None:
            np.testing.assert_array_equal(a.evals, b.evals)
            assert not b.evals.flags.writeable
