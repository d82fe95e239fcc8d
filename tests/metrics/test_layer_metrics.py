"""Per-layer metrics against direct matrix computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.core.eigen import layer_eigenvalues
from weightspectra.fitting.powerlaw import fit_power_law
from weightspectra.metrics.layer import (
    entropy,
    fit_metrics,
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
