"""The rest of the peer's API in the facade: constructor arguments, base_model deltas, peft,
slice_id rows, get_Weights, distances (centred CKA), SVDSmoothing / SVDSharpness (copies,
never the input edited), vector_metrics, fit_powerlaw, and one-line refusals."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.compat import WeightWatcher
from weightspectra.errors import InputError, OptionError

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))

from models import build  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")


def _mlp(seed: int) -> torch.nn.Module:
    return build("MLP", seed)


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = x @ x.T, y @ y.T
    return float(np.trace(k @ h @ l_ @ h)) / math.sqrt(
        float(np.trace(k @ h @ k @ h)) * float(np.trace(l_ @ h @ l_ @ h))
    )


def test_constructor_framework_and_base_model() -> None:
    base, tuned = _mlp(0), _mlp(0)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    watcher = WeightWatcher(model=tuned, framework="pytorch", base_model=base)
    details = watcher.analyze()
    name = details["longname"][0]
    w = dict(tuned.named_parameters())[f"{name}.weight"].detach().double().numpy()
    w0 = dict(base.named_parameters())[f"{name}.weight"].detach().double().numpy()
    expected = np.linalg.svd(w - w0, compute_uv=False) ** 2
    assert details["lambda_max"][0] == pytest.approx(expected.max(), rel=1e-9)
    with pytest.raises(OptionError, match=r"^framework='caffe' is not one the peer knows"):
        WeightWatcher(model=tuned, framework="caffe")
    # the refusal names the problem in one line, never the module's repr
    with pytest.raises(InputError) as info:
        WeightWatcher(model=tuned).analyze(base_model=tuned)
    assert "\n" not in str(info.value) and "Linear(" not in str(info.value)
    with pytest.raises(OptionError) as info:
        WeightWatcher(model=tuned).analyze(glorot_fix=tuned)
    assert str(info.value).startswith("glorot_fix=a MLP is not run") and "\n" not in str(info.value)


def test_unpooled_rows_have_slice_id_and_the_layer_name() -> None:
    watcher = WeightWatcher(model=build("SmallCNN", 0))
    details = watcher.analyze(pool=False)
    conv = details[details["longname"] == "conv2"]
    assert list(conv["name"]) == ["conv2"] * 9 and list(conv["slice_id"]) == list(range(9))
    assert list(details.columns[:3]) == ["layer_id", "name", "slice_id"]
    plan = watcher.describe(pool=False)
    assert list(plan[plan["longname"] == "conv2"]["slice_id"]) == list(range(9))
    weights = watcher.get_Weights(layer="conv2")
    kernel = dict(build("SmallCNN", 0).named_parameters())["conv2.weight"].detach().numpy()
    assert len(weights) == 9
    np.testing.assert_array_equal(weights[4], kernel[:, :, 1, 1])


def test_distances_as_the_peer_with_the_centred_cka() -> None:
    a, b = _mlp(0), _mlp(1)
    watcher = WeightWatcher()
    avg_w, avg_b, frame = watcher.distances(a, b, method="euclidean")
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    expected = [
        float(np.linalg.norm((pa[f"{n}.weight"] - pb[f"{n}.weight"]).detach().numpy()))
        for n in frame["longname"]
    ]
    np.testing.assert_allclose(frame["delta_W"], expected, rtol=1e-6)
    assert avg_w == pytest.approx(float(np.mean(expected)))
    bias = [
        float(np.linalg.norm((pa[f"{n}.bias"] - pb[f"{n}.bias"]).detach().numpy()))
        for n in frame["longname"]
    ]
    assert avg_b == pytest.approx(float(np.mean(bias)), rel=1e-6)
    _, _, cka = watcher.distances(a, b, method="cka")
    n = cka["longname"][0]
    x = pa[f"{n}.weight"].detach().double().numpy()
    y = pb[f"{n}.weight"].detach().double().numpy()
    assert cka["delta_W"][0] == pytest.approx(_hsic_cka(x, y), rel=1e-9)
    _, _, same = watcher.distances(a, a, method="cka")
    np.testing.assert_allclose(same["delta_W"], 1.0, rtol=1e-12)
    assert watcher.same_models(a, a) and not watcher.same_models(a, b)
    with pytest.raises(OptionError, match="method='cosine': choose 'raw', 'euclidean' or 'cka'"):
        watcher.distances(a, b, method="cosine")


def test_svd_smoothing_returns_a_copy_and_keeps_the_input() -> None:
    model = build("MLP", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    watcher = WeightWatcher(model=model)
    smoothed = watcher.SVDSmoothing(method="svd", percent=0.5)
    assert smoothed is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    edit = watcher.last_edit
    assert edit is not None and edit.edited
    for e in edit.edited:
        w = before[e.key].double().numpy()
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        k = math.ceil(0.5 * e.rank)
        assert e.kept == k
        expected = (u[:, :k] * s[:k]) @ vt[:k]
        got = dict(smoothed.named_parameters())[e.key].detach().double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * s[0])
    sharp = watcher.SVDSharpness()
    assert sharp is not model and watcher.last_edit is not None
    in_place = watcher.SVDSmoothing(method="svd", percent=0.5, inplace=True)
    assert in_place is model
    with pytest.raises(OptionError, match=r"method='median': choose one of \['alpha_min'"):
        watcher.SVDSmoothing(method="median")


def test_vector_metrics_and_fit_powerlaw(rng: np.random.Generator) -> None:
    watcher = WeightWatcher()
    flat, spike = np.ones(64), np.eye(64)[3]
    frame = watcher.vector_metrics([flat, spike])
    assert list(frame.columns) == [
        "length",
        "entropy",
        "discrete_entropy",
        "localization_ratio",
        "participation_ratio",
    ]
    assert frame["entropy"].tolist() == pytest.approx([1.0, 0.0])
    assert frame["localization_ratio"].tolist() == pytest.approx([64.0, 1.0])
    assert frame["participation_ratio"].tolist() == pytest.approx([64**0.25, 1.0])
    w = rng.standard_t(3.0, (300, 100))
    evals = np.linalg.svd(w, compute_uv=False) ** 2
    fit = watcher.fit_powerlaw(evals)
    row = ws.analyze({"w": w}).analysed[0].metrics
    assert fit[0] == pytest.approx(row["alpha"], rel=1e-12) and fit[9] == "success"
    assert fit[2] == pytest.approx(row["xmin"]) and fit[6] == row["num_pl_spikes"]
    failed = watcher.fit_powerlaw(np.ones(20))
    assert math.isnan(failed[0]) and failed[9] == "failed"


def test_peft_folder_through_the_facade(tmp_path: Path, rng: np.random.Generator) -> None:
    st = pytest.importorskip("safetensors.numpy")
    folder = tmp_path / "lora"
    folder.mkdir()
    a, b = rng.standard_normal((4, 60)), rng.standard_normal((80, 4))
    st.save_file(
        {
            "base_model.model.fc.lora_A.weight": a.astype(np.float32),
            "base_model.model.fc.lora_B.weight": b.astype(np.float32),
        },
        folder / "adapter_model.safetensors",
    )
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    base = {"fc.weight": rng.standard_normal((80, 60))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ws.NumericalWarning)
        alone = WeightWatcher(model=str(folder)).analyze(peft=True)
    assert alone["matrix_rank"].tolist() == [4] and alone["ws_warning"].tolist() == ["low-rank"]
    assert math.isnan(alone["alpha"][0])  # the peer fits 4 values; we flag the true rank
    merged = WeightWatcher(model=str(folder), base_model=base).analyze(peft="with_base")
    f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    expected = np.linalg.svd(base["fc.weight"] + 2.0 * f32(b) @ f32(a), compute_uv=False) ** 2
    assert merged["num_evals"][0] == 60  # the full spectrum, not r values
    assert merged["lambda_max"][0] == pytest.approx(expected.max(), rel=1e-10)
    with pytest.raises(OptionError, match="peft=True needs a PEFT adapter folder"):
        WeightWatcher(model=base).analyze(peft=True)


def test_framework_layer_and_options_spelled_like_the_peer() -> None:
    model = build("MLP", 0)
    watcher = WeightWatcher(model=model)
    first = watcher.describe()["layer_id"][0]
    assert (
        watcher.get_framework_layer(layer=int(first))
        is dict(model.named_modules())[watcher.describe()["longname"][0]]
    )
    tpl = watcher.analyze(fit="TPL")
    assert "alpha_tpl" in tpl.columns
    fingers = watcher.analyze(fix_fingers="clip_xmax", max_fingers=5)
    assert "num_fingers" in fingers.columns
    assert WeightWatcher.infer_framework(model) == "pytorch"
    assert WeightWatcher.valid_framework("keras") and not WeightWatcher.valid_framework("jax")
