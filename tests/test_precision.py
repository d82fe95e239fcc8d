"""Precision policy: float64 default (peer-exact), opt-in float32 with a stated, tested accuracy;
the blocked (bounded-memory) Gram path equals the one-shot path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
import weightspectra.core.eigen as eigen
from weightspectra.errors import LayerError, NumericalWarning, OptionError
from weightspectra.options import Precision

#: Stated accuracy of precision="float32" (docs/performance.md): measured on MiniLM.
ALPHA_ABS = 1e-3
NORM_REL = 1e-5


def _by_name(report: ws.Report) -> dict[str, dict[str, object]]:
    return {r.name: dict(r.metrics) for r in report.analysed}


def test_float32_accuracy_on_minilm(minilm_path: Path) -> None:
    exact = _by_name(ws.analyze(minilm_path))
    with warnings.catch_warnings():
        # float32 Gram matrices of the low-rank embeddings give round-off negatives: expected
        warnings.simplefilter("ignore", NumericalWarning)
        fast = _by_name(ws.analyze(minilm_path, precision="float32"))
    assert fast.keys() == exact.keys() and len(fast) == 39
    for name, ref in exact.items():
        got = fast[name]
        assert got["num_pl_spikes"] == ref["num_pl_spikes"], name  # same xmin chosen
        for key in ("alpha", "alpha_weighted", "log_alpha_norm"):
            assert abs(got[key] - ref[key]) < ALPHA_ABS, (name, key)  # type: ignore[operator]
        for key in ("log_norm", "log_spectral_norm", "stable_rank", "lambda_max", "norm"):
            assert got[key] == pytest.approx(ref[key], rel=NORM_REL), (name, key)


@pytest.mark.parametrize("shape", [(500, 200), (200, 500), (300, 300)])
def test_float32_norms_against_exact_svd(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    w = rng.standard_t(3.0, size=shape).astype(np.float32)
    exact = eigen.svd_eigenvalues(w)
    fast = eigen.gram_eigenvalues(w, Precision.FLOAT32)
    assert fast.dtype == np.float64
    assert fast[-1] == pytest.approx(exact[-1], rel=NORM_REL)
    assert fast.sum() == pytest.approx(exact.sum(), rel=NORM_REL)
    top = exact > 1e-3 * exact[-1]  # the tail the power law is fitted to
    np.testing.assert_allclose(fast[top], exact[top], rtol=1e-3)


@pytest.mark.parametrize("shape", [(3000, 200), (200, 3000)])
@pytest.mark.parametrize("precision", [Precision.FLOAT64, Precision.FLOAT32])
def test_blocked_gram_equals_one_shot(
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, int],
    precision: Precision,
) -> None:
    w = rng.standard_normal(shape).astype(
        np.float32 if precision is Precision.FLOAT64 else np.float16
    )
    one_shot = eigen.gram_eigenvalues(w, precision)
    monkeypatch.setattr(eigen, "GRAM_BLOCKED_ABOVE_BYTES", 256 * 1024)  # blocked path...
    monkeypatch.setattr(eigen, "GRAM_BLOCK_BYTES", 256 * 1024)  # ...in ~10 blocks
    blocked = eigen.gram_eigenvalues(w, precision)
    tol = 1e-12 if precision is Precision.FLOAT64 else 1e-5
    np.testing.assert_allclose(blocked, one_shot, rtol=0, atol=tol * one_shot[-1])
    np.testing.assert_allclose(
        blocked,
        eigen.svd_eigenvalues(w),
        rtol=0,
        atol=(1e-12 if tol < 1e-6 else 1e-5) * one_shot[-1],
    )


def test_blocked_path_rejects_nan_with_the_layer_name(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eigen, "GRAM_BLOCKED_ABOVE_BYTES", 64 * 1024)
    monkeypatch.setattr(eigen, "GRAM_BLOCK_BYTES", 64 * 1024)
    w = rng.standard_normal((1, 2000, 40)).astype(np.float32)
    w[0, 1500, 7] = np.nan
    with pytest.raises(LayerError, match="layer big contains 1 NaN"):
        eigen.layer_eigenvalues(w, what="layer big")


def test_float32_overflow_is_an_error_not_garbage() -> None:
    w = np.full((1, 30, 20), 1e30, dtype=np.float32)
    with pytest.raises(LayerError, match=r"overflows float32.*precision='float64'"):
        eigen.layer_eigenvalues(w, precision=Precision.FLOAT32, what="huge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)  # rank 1: zeros come out as ±round-off
        assert eigen.layer_eigenvalues(w, what="huge")[-1] == pytest.approx(600e60, rel=1e-6)


def test_one_zero_slice_does_not_fail_a_pooled_layer(rng: np.random.Generator) -> None:
    stack = rng.standard_normal((9, 20, 30))
    stack[4] = 0.0
    evals = eigen.layer_eigenvalues(stack)
    assert evals.size == 9 * 20 and evals[-1] > 0
    with pytest.raises(LayerError, match="all zeros"):
        eigen.layer_eigenvalues(np.zeros((9, 20, 30)), what="layer z")


@pytest.mark.parametrize("bad", ["float16", "double", 32])
def test_bad_precision_raises(bad: object) -> None:
    with pytest.raises(OptionError, match=r"precision=.* is not valid; choose one of 'float64'"):
        ws.Options(precision=bad)  # type: ignore[arg-type]
