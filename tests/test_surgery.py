"""Spectral surgery: each edit against numpy's SVD, the counts each rule reads, the input never
edited, a safetensors round trip, and the digits validation of docs/compat.md (shortened)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra import surgery
from weightspectra.errors import OptionError

pytestmark = pytest.mark.filterwarnings("ignore::weightspectra.NumericalWarning")
EXAMPLE = Path(__file__).parents[1] / "examples" / "surgery" / "digits.py"


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    w = rng.standard_t(3.0, (200, 100))
    w[7, 11] = 60.0  # one huge entry: a correlation trap
    return {
        "fc.weight": w,
        "fc.bias": rng.standard_normal(200),
        "head.weight": rng.standard_normal((30, 100)),
    }


def _svd_keep(w: np.ndarray, k: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


@pytest.mark.parametrize(
    ("rule", "column"), [("tail", "num_pl_spikes"), ("mp", "num_spikes"), ("detx", "detX_num")]
)
def test_smooth_keeps_the_count_of_its_rule(
    rule: str, column: str, rng: np.random.Generator
) -> None:
    model = _model(rng)
    original = {k: v.copy() for k, v in model.items()}
    result = surgery.smooth(model, rule)
    rows = {r.key: r for r in ws.analyze(model, mp_fit=True).analysed}
    for edit in result.edits:
        k = rows[edit.key].metrics[column]
        assert isinstance(k, int) and edit.kept == k and edit.removed == edit.rank - k
        expected = _svd_keep(model[edit.key], k)
        np.testing.assert_allclose(result.state[edit.key], expected, rtol=1e-10, atol=1e-10)
        rel = np.linalg.norm(model[edit.key] - expected) / np.linalg.norm(model[edit.key])
        assert edit.removed_norm_rel == pytest.approx(rel, rel=1e-9)
    for key, value in model.items():  # the input is never edited
        np.testing.assert_array_equal(value, original[key])
    np.testing.assert_array_equal(result.state["fc.bias"], model["fc.bias"])


def test_fraction_traps_and_clipping(rng: np.random.Generator, tmp_path: Path) -> None:
    model = _model(rng)
    half = surgery.smooth(model, "fraction", fraction=0.5)
    assert [(e.kept, e.removed) for e in half.edits] == [(50, 50), (15, 15)]
    traps = surgery.remove_traps(model)
    fc = next(e for e in traps.edits if e.key == "fc.weight")
    row = next(r for r in ws.analyze(model, randomize=True).analysed if r.key == "fc.weight")
    assert fc.removed == row.metrics["num_traps"] >= 1
    u, s, vt = np.linalg.svd(model["fc.weight"], full_matrices=False)
    k = fc.removed
    np.testing.assert_allclose(
        traps.state["fc.weight"], (u[:, k:] * s[k:]) @ vt[k:], rtol=1e-9, atol=1e-9
    )
    clipped = surgery.clip_spikes(model)
    edit = next(e for e in clipped.edits if e.key == "fc.weight")
    row = next(r for r in ws.analyze(model, mp_fit=True).analysed if r.key == "fc.weight")
    edge = math.sqrt(float(row.metrics["bulk_max"]))
    new_s = np.linalg.svd(clipped.state["fc.weight"], compute_uv=False)
    assert edit.removed == int(np.sum(s > edge)) and new_s.max() == pytest.approx(edge, rel=1e-9)
    pytest.importorskip("safetensors")
    path = half.to_safetensors(tmp_path / "smoothed.safetensors")
    again = ws.analyze(path)
    assert again.analysed[0].metrics["matrix_rank"] == 50
    with pytest.raises(OptionError, match=r"fraction=1.5 must lie in \(0, 1\]"):
        surgery.smooth(model, "fraction", fraction=1.5)
    with pytest.raises(OptionError, match="rule='median' is not valid; choose one of"):
        surgery.smooth(model, "median")


def test_digits_validation_shortened() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("surgery_digits", EXAMPLE)
    assert spec is not None and spec.loader is not None
    digits = importlib.util.module_from_spec(spec)
    sys.modules["surgery_digits"] = digits
    spec.loader.exec_module(digits)
    x_tr, y_tr, x_te, y_te = digits.data()
    model = digits.trained_mlp(x_tr, y_tr, epochs=15)
    before = digits.accuracy(model, x_te, y_te)
    assert before > 0.9
    import copy

    tail = surgery.smooth(model, "tail").apply_to(copy.deepcopy(model))
    harsh = surgery.smooth(model, "fraction", fraction=0.1).apply_to(copy.deepcopy(model))
    assert digits.accuracy(tail, x_te, y_te) > before - 0.03  # the tail carries the signal
    assert digits.accuracy(harsh, x_te, y_te) < before - 0.1  # a tenth of the rank does not
