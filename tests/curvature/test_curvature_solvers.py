"""Lanczos, Hutchinson/Hutch++ and SLQ against dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from weightspectra.curvature import (  # noqa: E402
    HessianOperator,
    MatrixOperator,
    density,
    lanczos_tridiagonal,
    top_eigenvalues,
    trace,
)
from weightspectra.errors import InputError, OptionError  # noqa: E402

CE = nn.functional.cross_entropy


def test_lanczos_top3_matches_eigvalsh(mlp_exact) -> None:
    model, x, y, exact = mlp_exact
    evals = np.linalg.eigvalsh(exact)
    H = HessianOperator(model, CE, [(x, y)])
    top = top_eigenvalues(H, k=3, which="LA", seed=0)
    want = evals[::-1][:3]
    assert np.max(np.abs(top.values - want) / np.abs(want)) <= 1e-8
    assert top.hvp_count == H.hvp_count > 0
    # Ritz vectors are eigenvectors of the exact Hessian.
    resid = exact @ top.vectors - top.vectors * top.values
    assert np.abs(resid).max() <= 1e-8 * abs(want[0])
    bottom = top_eigenvalues(H, k=2, which="SA", seed=1)
    assert np.max(np.abs(bottom.values - evals[:2]) / np.abs(evals).max()) <= 1e-8


def test_lanczos_is_seeded_and_reproducible(rng: np.random.Generator) -> None:
    A = rng.standard_normal((60, 60))
    A = A + A.T
    a = top_eigenvalues(A, k=2, seed=5)
    b = top_eigenvalues(MatrixOperator(A), k=2, seed=5)
    np.testing.assert_array_equal(a.values, b.values)
    lm = top_eigenvalues(A, k=1, which="LM", seed=0).values[0]
    assert abs(abs(lm) - np.abs(np.linalg.eigvalsh(A)).max()) <= 1e-10 * abs(lm)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_within_four_standard_errors(mlp_exact, method: str) -> None:
    model, x, y, exact = mlp_exact
    H = HessianOperator(model, CE, [(x, y)])
    est = trace(H, method=method, seed=3, rtol=0.05, max_probes=400, sketch=8)
    true = float(np.trace(exact))
    assert 0 < est.stderr < np.inf
    assert abs(est.mean - true) <= 4 * est.stderr
    # Per-layer traces sum to the total and each is within 4 of its own standard errors.
    assert abs(sum(m for m, _ in est.layers.values()) - est.mean) <= 1e-10 * abs(est.mean)
    for name, (m, se) in est.layers.items():
        block = H.blocks[name]
        assert abs(m - np.trace(exact[block, block])) <= 4 * se + 1e-12
    assert est.hvp_count == H.hvp_count
    if method == "hutch++":
        assert est.hvp_count == est.n_probes + 16


def test_trace_stops_on_standard_error_not_on_change(rng: np.random.Generator) -> None:
    A = rng.standard_normal((80, 80))
    A = A @ A.T / 80
    est = trace(A, seed=0, rtol=0.01, max_probes=5000)
    assert est.converged
    assert est.stderr <= 0.01 * abs(est.mean)
    assert abs(est.mean - np.trace(A)) <= 4 * est.stderr
    capped = trace(A, seed=0, rtol=1e-6, max_probes=20)
    assert not capped.converged and capped.n_probes == 20


def test_hutchpp_exact_when_sketch_spans_space(rng: np.random.Generator) -> None:
    A = rng.standard_normal((12, 12))
    A = A + A.T
    est = trace(
        MatrixOperator(A, {"a": slice(0, 5), "b": slice(5, 12)}), method="hutch++", sketch=12
    )
    assert est.stderr == 0.0 and est.n_probes == 0
    assert abs(est.mean - np.trace(A)) <= 1e-10
    assert abs(est.layers["a"][0] - np.trace(A[:5, :5])) <= 1e-10


def test_slq_extremes_with_40_steps(mlp_exact) -> None:
    model, x, y, exact = mlp_exact
    evals = np.linalg.eigvalsh(exact)
    H = HessianOperator(model, CE, [(x, y)])
    d = density(H, n_steps=40, n_probes=3, seed=0)
    lo, hi = d.extremes
    scale = np.abs(evals).max()
    assert abs(lo - evals[0]) <= 1e-6 * scale
    assert abs(hi - evals[-1]) <= 1e-6 * scale
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, atol=1e-12)
    integral = np.sum(d.curve) * (d.grid[1] - d.grid[0])
    assert abs(integral - 1.0) <= 1e-3
    assert d.hvp_count == 3 * 40


def test_slq_quadrature_reproduces_moments(rng: np.random.Generator) -> None:
    # Gauss quadrature with m nodes is exact for polynomials of degree ≤ 2m - 1 of each probe.
    A = rng.standard_normal((50, 50))
    A = (A + A.T) / 10
    z = rng.choice([-1.0, 1.0], size=50)
    a, b = lanczos_tridiagonal(lambda v: A @ v, z, 6)
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    theta, U = np.linalg.eigh(T)
    w = U[0] ** 2
    u = z / np.linalg.norm(z)
    for p in range(1, 12):
        exact = u @ np.linalg.matrix_power(A, p) @ u
        assert abs(np.sum(w * theta**p) - exact) <= 1e-10 * max(1.0, abs(exact))


def test_lanczos_stops_on_invariant_subspace() -> None:
    A = np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    z = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    a, b = lanczos_tridiagonal(lambda v: A @ v, z, 6)
    assert a.size == 2 and b.size == 1


def test_solver_bad_inputs() -> None:
    A = np.eye(4)
    with pytest.raises(OptionError, match="k < dim"):
        top_eigenvalues(A, k=4)
    with pytest.raises(OptionError, match="which='top' is not valid"):
        top_eigenvalues(A, which="top")
    with pytest.raises(OptionError, match="seed must be an int"):
        trace(A, seed=None)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="method='exact' is not valid"):
        trace(A, method="exact")
    with pytest.raises(OptionError, match="max_probes must be an integer ≥ 10"):
        trace(A, max_probes=5)
    with pytest.raises(OptionError, match="rtol must be a finite number"):
        trace(A, rtol=-1.0)
    with pytest.raises(OptionError, match="sigma must be a positive"):
        density(A, sigma=0.0)
    with pytest.raises(InputError, match="square"):
        MatrixOperator(np.ones((3, 4)))
    with pytest.raises(InputError, match="expected a HessianOperator"):
        trace("not an operator")
