"""Per-layer metrics against direct matrix computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.core.eigen import layer_eigenvalues
from weightspectra.fitting.powerlaw import PowerLawFit, fit_power_law
from weightspectra.metrics.layer import (
    WEAK_RANK_TOLERANCE,
    entropy,
    fit_metrics,
    log10_power_sum,
    matrix_rank,
    norm_metrics,
)
from weightspectra.metrics.summary import model_summary


def test_norms_match_matrix_norms(rng: np.random.Generator) -> None:
    w = rng.standard_normal((70, 40))
    ev = layer_eigenvalues(w[None])
    m = norm_metrics(ev, 70, 40, exact=False)
    fro2 = np.linalg.norm(w, "fro") ** 2
    spec2 = np.linalg.norm(w, 2) ** 2
    assert m["norm"] == pytest.approx(fro2, rel=1e-12)
    assert m["log_norm"] == pytest.approx(math.log10(fro2), rel=1e-12)
    assert m["spectral_norm"] == pytest.approx(spec2, rel=1e-12)
    assert m["log_spectral_norm"] == pytest.approx(math.log10(spec2), rel=1e-12)
    assert m["stable_rank"] == pytest.approx(fro2 / spec2, rel=1e-12)
    assert m["sv_max"] == pytest.approx(np.linalg.svd(w, compute_uv=False)[0], rel=1e-12)
    assert m["matrix_rank"] == 40 and m["rank_loss"] == 0


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_rank_of_low_rank_matrix(rng: np.random.Generator, rank: int) -> None:
    w = rng.standard_normal((60, rank)) @ rng.standard_normal((rank, 45))
    assert np.linalg.matrix_rank(w) == rank
    gram_ev = np.maximum(np.linalg.eigvalsh(w.T @ w), 0)
    svd_ev = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
    assert matrix_rank(gram_ev, 60, 45, exact=False) == rank
    assert matrix_rank(svd_ev, 60, 45, exact=True) == rank


def test_entropy_flat_and_peaked() -> None:
    flat = np.ones(50)
    assert entropy(flat, 50) == pytest.approx(1.0, abs=1e-8)
    peaked = np.r_[np.full(49, 1e-9), 1.0]
    assert entropy(peaked, 50) < 0.01


def test_alpha_norms_follow_definitions(rng: np.random.Generator) -> None:
    w = rng.standard_normal((200, 100))
    ev = layer_eigenvalues(w[None])
    fit = fit_power_law(ev)
    m = fit_metrics(ev, fit)
    assert m["alpha_weighted"] == pytest.approx(fit.alpha * math.log10(ev.max()), rel=1e-13)
    assert m["log_alpha_norm"] == pytest.approx(
        math.log10(sum(float(v) ** fit.alpha for v in ev)), rel=1e-12
    )


def test_summary_excludes_failed_fits_and_counts_them() -> None:
    rows = [
        {"status": "ok", "alpha": 2.0, "log_norm": 1.0},
        {"status": "ok", "alpha": 4.0, "log_norm": 3.0},
        {"status": "ok", "alpha": None, "log_norm": 5.0, "warning": "fit-failed"},
        {"status": "skipped"},
        {"status": "failed"},
    ]
    s = model_summary(rows)
    assert s["alpha"] == 3.0  # the peer would average in -1 for the failed fit
    assert s["log_norm"] == 3.0
    assert (s["num_layers"], s["num_fit_failed"], s["num_skipped"], s["num_failed"]) == (3, 1, 1, 1)


def test_weak_rank_loss_counts_eigenvalues_below_the_peer_tolerance() -> None:
    # The peer's definition (docs/metrics.md): eigenvalues strictly below 1e-6, all of the ESD.
    assert WEAK_RANK_TOLERANCE == 1e-6
    evals = np.array([0.0, 1e-12, 9.99e-7, 1e-6, 5e-6, 1.1e-5, 0.3, 2.0])
    m = norm_metrics(evals, 10, 8, exact=True)
    assert m["weak_rank_loss"] == 3  # 0, 1e-12 and 9.99e-7; not 1e-6 itself, nor 5e-6
    assert m["weak_rank_loss"] == sum(1 for v in evals if v < 1e-6)


def _fit(alpha: float, evals: np.ndarray) -> PowerLawFit:
    return PowerLawFit(
        alpha=alpha,
        xmin=float(evals[0]),
        xmax=float(evals[-1]),
        D=0.1,
        sigma=1.0,
        num_pl_spikes=evals.size,
        num_fit_evals=evals.size,
        small_sample=False,
    )


@pytest.mark.parametrize("value", [0.25, 4.0, 1.0])
@pytest.mark.parametrize("alpha", [3.5e15, 1e300, 2.0])
def test_fit_metrics_never_raise_on_under_or_overflow(value: float, alpha: float) -> None:
    # Σλ^α of 32 equal eigenvalues underflows to 0 (λ < 1) or overflows (λ > 1) in floating
    # point for a huge α; the closed form is log10(32) + α·log10(λ).
    evals = np.full(32, value)
    with np.errstate(all="ignore"):
        direct = float(np.sum(evals**alpha))
    if alpha > 1e10 and value != 1.0:
        assert direct in (0.0, math.inf)  # the naive sum is unusable: the case is real
    m = fit_metrics(evals, _fit(alpha, evals))
    expected = math.log10(32) + alpha * math.log10(value)
    assert math.isfinite(m["log_alpha_norm"])
    assert m["log_alpha_norm"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert m["alpha_weighted"] == pytest.approx(alpha * math.log10(value), rel=1e-12, abs=0)


def test_log10_power_sum_matches_direct_sum_and_handles_zeros(rng: np.random.Generator) -> None:
    evals = np.r_[np.zeros(5), rng.uniform(0.01, 30.0, 200)]
    for alpha in (1.5, 3.0, 7.25):
        direct = math.log10(sum(float(v) ** alpha for v in evals))
        assert log10_power_sum(evals, alpha) == pytest.approx(direct, rel=1e-13)
    assert log10_power_sum(np.zeros(4), 2.0) == -math.inf


def test_norm_metrics_of_zero_norm_give_minus_inf_not_an_error() -> None:
    m = norm_metrics(np.zeros(8), 8, 8, exact=True)
    assert m["log_norm"] == -math.inf and m["log_spectral_norm"] == -math.inf
    assert math.isnan(float(m["stable_rank"]))
