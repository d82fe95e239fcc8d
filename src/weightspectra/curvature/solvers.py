"""Spectral quantities of a symmetric operator from matrix-vector products (curvature.md).

Everything here is numpy/scipy on float64 arrays and works on any object with ``dim`` and
``matvec`` (a :class:`HessianOperator`, an :class:`InputHessianOperator`, or a
:class:`MatrixOperator` around an explicit matrix), so each method can be tested against dense
linear algebra. Every stochastic method takes an explicit seed and returns its uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from weightspectra.enums import parse_enum
from weightspectra.errors import InputError, OptionError


class SymmetricOperator(Protocol):
    """What the solvers need: a dimension and a float64 matrix-vector product."""

    dim: int

    def matvec(self, v: np.ndarray) -> np.ndarray: ...


class MatrixOperator:
    """An explicit symmetric matrix behind the operator interface (tests, small problems).

    Parameters
    ----------
    matrix : ndarray of shape (n, n)
        Symmetric matrix.
    blocks : mapping of str to slice, optional
        Named diagonal blocks, for per-block traces.

    Raises
    ------
    InputError
        If ``matrix`` is not square.
    """

    def __init__(self, matrix: np.ndarray, blocks: Mapping[str, slice] | None = None) -> None:
        a = np.asarray(matrix, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise InputError(f"matrix must be square (n, n), got shape {a.shape}")
        self.matrix = a
        self.dim = a.shape[0]
        self.blocks: dict[str, slice] = dict(blocks or {})
        self.hvp_count = 0

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``matrix @ v``."""
        self.hvp_count += 1
        return self.matrix @ np.asarray(v, dtype=np.float64).reshape(-1)


class Which(str, Enum):
    """Which end of the spectrum :func:`top_eigenvalues` returns."""

    LA = "LA"  #: largest algebraic (the sharpness)
    SA = "SA"  #: smallest algebraic (negative curvature)
    LM = "LM"  #: largest magnitude


class TraceMethod(str, Enum):
    """Stochastic trace estimator."""

    HUTCHINSON = "hutchinson"
    HUTCHPP = "hutch++"


@dataclass(frozen=True)
class EigenResult:
    """Result of :func:`top_eigenvalues`.

    Attributes
    ----------
    values : ndarray of shape (k,)
        Eigenvalues, largest first for ``LA``/``LM``, smallest first for ``SA``.
    vectors : ndarray of shape (dim, k)
        Unit eigenvectors, column ``j`` for ``values[j]``.
    which : str
    hvp_count : int
        Operator products used.
    seed : int
    """

    values: np.ndarray
    vectors: np.ndarray
    which: str
    hvp_count: int
    seed: int


@dataclass(frozen=True)
class TraceEstimate:
    """Result of :func:`trace`.

    Attributes
    ----------
    mean, stderr : float
        Estimate of the trace and its standard error.
    n_probes : int
        Random probe vectors in the stochastic part.
    hvp_count : int
        Operator products used (Hutch++ adds ``2 · sketch``).
    converged : bool
        Whether the standard-error rule was met before ``max_probes``.
    layers : dict of str to (float, float)
        Per-block ``(mean, stderr)``; the means sum to :attr:`mean`.
    method : str
    seed : int
    """

    mean: float
    stderr: float
    n_probes: int
    hvp_count: int
    converged: bool
    method: str
    seed: int
    layers: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class DensityResult:
    """Result of :func:`density` (stochastic Lanczos quadrature).

    Attributes
    ----------
    nodes, weights : ndarray of shape (n_probes, n_steps)
        Ritz values and quadrature weights of each probe (a probe whose Lanczos run ended early
        is padded with NaN nodes and zero weights); the weights of each row sum to 1.
    grid, curve : ndarray of shape (grid_size,)
        Gaussian-smoothed density on a grid; ``curve`` integrates to about 1.
    sigma : float
        Width of the smoothing kernel.
    hvp_count : int
    seed : int
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    curve: np.ndarray
    sigma: float
    hvp_count: int
    seed: int

    @property
    def extremes(self) -> tuple[float, float]:
        """Smallest and largest Ritz value over all probes (estimates of λ_min, λ_max)."""
        return float(np.nanmin(self.nodes)), float(np.nanmax(self.nodes))


def _as_operator(H: Any) -> Any:
    if isinstance(H, np.ndarray):
        return MatrixOperator(H)
    if isinstance(H, LinearOperator):
        return _LinearOperatorAdapter(H)
    if not (hasattr(H, "dim") and callable(getattr(H, "matvec", None))):
        raise InputError(
            f"expected a HessianOperator, MatrixOperator, ndarray or LinearOperator, got "
            f"{type(H).__name__}"
        )
    return H


class _LinearOperatorAdapter:
    def __init__(self, op: LinearOperator) -> None:
        if op.shape[0] != op.shape[1]:
            raise InputError(f"operator must be square, got shape {op.shape}")
        self.op = op
        self.dim = int(op.shape[0])
        self.blocks: dict[str, slice] = {}

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.matvec(v), dtype=np.float64).reshape(-1)


def _counted(op: Any) -> tuple[Callable[[np.ndarray], np.ndarray], list[int]]:
    calls = [0]

    def mv(v: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return np.asarray(op.matvec(np.asarray(v, dtype=np.float64).reshape(-1)), dtype=np.float64)

    return mv, calls


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise OptionError(
            f"seed must be an int (stochastic methods are always seeded), got {seed!r}"
        )
    return int(seed)


def _check_count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def top_eigenvalues(
    H: Any,
    k: int = 1,
    which: Which | str = Which.LA,
    seed: int = 0,
    tol: float = 0.0,
    maxiter: int | None = None,
    ncv: int | None = None,
) -> EigenResult:
    """Extreme eigenvalues of a symmetric operator by implicitly restarted Lanczos (ARPACK).

    Parameters
    ----------
    H : HessianOperator, MatrixOperator, ndarray (n, n) or LinearOperator
    k : int, default 1
        How many eigenvalues; must be below ``H.dim``.
    which : {"LA", "SA", "LM"}, default "LA"
        Largest algebraic (the sharpness), smallest algebraic, or largest magnitude.
    seed : int, default 0
        Seeds the Gaussian start vector.
    tol : float, default 0
        Relative accuracy passed to ARPACK; 0 means machine precision.
    maxiter, ncv : int, optional
        Passed to :func:`scipy.sparse.linalg.eigsh`.

    Returns
    -------
    EigenResult

    Raises
    ------
    OptionError
        If ``k`` is not in ``1 .. dim - 1`` or ``which`` is unknown.

    Examples
    --------
    >>> top_eigenvalues(np.diag([1.0, 5.0, 3.0, 2.0]), k=2).values
    array([5., 3.])
    """
    op = _as_operator(H)
    seed = _check_seed(seed)
    which_e = parse_enum(Which, which, "which")
    k = _check_count(k, "k")
    if k >= op.dim:
        raise OptionError(
            f"k={k} eigenvalues requested from an operator of dimension {op.dim}; Lanczos needs "
            f"k < dim (use numpy.linalg.eigvalsh on the dense matrix for tiny problems)"
        )
    mv, calls = _counted(op)
    lin = LinearOperator((op.dim, op.dim), matvec=mv, rmatvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(op.dim)
    vals, vecs = eigsh(lin, k=k, which=which_e.value, v0=v0, tol=tol, maxiter=maxiter, ncv=ncv)
    if which_e is Which.SA:
        order = np.argsort(vals)
    elif which_e is Which.LM:
        order = np.argsort(-np.abs(vals))
    else:
        order = np.argsort(-vals)
    return EigenResult(
        values=vals[order],
        vectors=vecs[:, order],
        which=which_e.value,
        hvp_count=calls[0],
        seed=seed,
    )


def trace(
    H: Any,
    method: TraceMethod | str = TraceMethod.HUTCHINSON,
    seed: int = 0,
    rtol: float = 1e-2,
    atol: float = 0.0,
    min_probes: int = 10,
    max_probes: int = 1000,
    sketch: int = 10,
    layer_rtol: float | None = None,
) -> TraceEstimate:
    """Trace and per-block traces by Hutchinson or Hutch++ with a standard-error stopping rule.

    Probing stops once at least ``min_probes`` Rademacher probes were used and the standard error
    of the mean is ≤ ``max(atol, rtol·|mean|)`` (and, if ``layer_rtol`` is given, each block's
    standard error is ≤ ``layer_rtol`` times its own |mean|), or after ``max_probes``. Stopping
    on the change between successive estimates instead leaves 5–15 % error (curvature.md).

    Parameters
    ----------
    H : HessianOperator, MatrixOperator, ndarray (n, n) or LinearOperator
        Its ``blocks`` (if any) name the per-layer slices.
    method : {"hutchinson", "hutch++"}, default "hutchinson"
        Hutch++ first takes the trace exactly on a ``sketch``-dimensional range sketch
        (``2·sketch`` products) and probes only the deflated remainder.
    seed : int, default 0
    rtol, atol : float
        Stopping rule on the standard error.
    min_probes, max_probes : int
        Bounds on the number of random probes.
    sketch : int, default 10
        Sketch size of Hutch++ (capped at ``dim``).
    layer_rtol : float, optional
        Also require every block's relative standard error to be below this.

    Returns
    -------
    TraceEstimate

    Raises
    ------
    OptionError
        On an unknown method or invalid counts/tolerances.

    Examples
    --------
    >>> est = trace(np.diag([1.0, 2.0, 3.0]), seed=0)
    >>> round(est.mean, 6)   # Rademacher probes are exact on a diagonal matrix
    6.0
    """
    op = _as_operator(H)
    seed = _check_seed(seed)
    m = parse_enum(TraceMethod, method, "method")
    min_probes = _check_count(min_probes, "min_probes", 2)
    max_probes = _check_count(max_probes, "max_probes", min_probes)
    sketch = _check_count(sketch, "sketch")
    for name, tol_ in (("rtol", rtol), ("atol", atol), ("layer_rtol", layer_rtol or 0.0)):
        if not np.isfinite(tol_) or tol_ < 0:
            raise OptionError(f"{name} must be a finite number ≥ 0, got {tol_!r}")
    mv, calls = _counted(op)
    rng = np.random.default_rng(seed)
    n = op.dim
    blocks: dict[str, slice] = dict(getattr(op, "blocks", {}) or {})

    exact_total = 0.0
    exact_blocks = dict.fromkeys(blocks, 0.0)
    Q = np.zeros((n, 0))
    if m is TraceMethod.HUTCHPP:
        s = min(sketch, n)
        S = rng.choice([-1.0, 1.0], size=(n, s))
        HS = np.column_stack([mv(S[:, j]) for j in range(s)])
        Q, _ = np.linalg.qr(HS)
        HQ = np.column_stack([mv(Q[:, j]) for j in range(Q.shape[1])])
        exact_total = float(np.sum(Q * HQ))
        # With P = I - QQᵀ: Tr(P_b H) = Tr(P_b H QQᵀ) + Tr(P_b H P). The first term is exact from
        # HQ; probes z' = Pz estimate the second by z'ᵀ P_b H z' (docs/curvature.md).
        for b, sl in blocks.items():
            exact_blocks[b] = float(np.sum(Q[sl] * HQ[sl]))
        if Q.shape[1] >= n:
            return TraceEstimate(
                mean=exact_total,
                stderr=0.0,
                n_probes=0,
                hvp_count=calls[0],
                converged=True,
                method=m.value,
                seed=seed,
                layers={b: (v, 0.0) for b, v in exact_blocks.items()},
            )

    totals: list[float] = []
    per_block: dict[str, list[float]] = {b: [] for b in blocks}
    converged = False
    while len(totals) < max_probes:
        z = rng.choice([-1.0, 1.0], size=n)
        if Q.shape[1]:
            z = z - Q @ (Q.T @ z)
        prod = z * mv(z)
        totals.append(float(prod.sum()))
        for b, sl in blocks.items():
            per_block[b].append(float(prod[sl].sum()))
        if (
            len(totals) >= min_probes
            and _small_enough(totals, exact_total, rtol, atol)
            and (
                layer_rtol is None
                or all(
                    _small_enough(v, exact_blocks[b], layer_rtol, atol)
                    for b, v in per_block.items()
                )
            )
        ):
            converged = True
            break
    return TraceEstimate(
        mean=exact_total + float(np.mean(totals)),
        stderr=_stderr(totals),
        n_probes=len(totals),
        hvp_count=calls[0],
        converged=converged,
        method=m.value,
        seed=seed,
        layers={b: (exact_blocks[b] + float(np.mean(v)), _stderr(v)) for b, v in per_block.items()},
    )


def _stderr(samples: list[float]) -> float:
    if len(samples) < 2:
        return float("inf")
    return float(np.std(samples, ddof=1) / np.sqrt(len(samples)))


def _small_enough(samples: list[float], offset: float, rtol: float, atol: float) -> bool:
    return _stderr(samples) <= max(atol, rtol * abs(offset + float(np.mean(samples))))


def lanczos_tridiagonal(
    matvec: Callable[[np.ndarray], np.ndarray],
    v0: np.ndarray,
    steps: int,
    reorthogonalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos recurrence: the tridiagonal ``T = Vᵀ A V`` of ``steps`` iterations from ``v0``.

    Parameters
    ----------
    matvec : callable, ndarray (n,) -> ndarray (n,)
        Products with a symmetric matrix ``A``.
    v0 : ndarray of shape (n,)
        Start vector (normalised here).
    steps : int
        Maximum number of iterations; fewer are done if an invariant subspace is found.
    reorthogonalize : bool, default True
        Full re-orthogonalisation against all previous vectors (twice, classical Gram–Schmidt);
        without it, lost orthogonality produces spurious copies of converged Ritz values.

    Returns
    -------
    alpha : ndarray of shape (m,)
        Diagonal of ``T`` (m ≤ steps).
    beta : ndarray of shape (m - 1,)
        Off-diagonal of ``T``.
    """
    n = v0.shape[0]
    steps = min(steps, n)
    V = np.zeros((steps, n))
    alpha: list[float] = []
    beta: list[float] = []
    v = v0 / np.linalg.norm(v0)
    v_prev = np.zeros(n)
    b_prev = 0.0
    scale = 0.0
    for j in range(steps):
        V[j] = v
        w = matvec(v)
        a = float(w @ v)
        alpha.append(a)
        w = w - a * v - b_prev * v_prev
        if reorthogonalize:
            for _ in range(2):
                w = w - V[: j + 1].T @ (V[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        scale = max(scale, abs(a), b)
        if j == steps - 1 or b <= n * np.finfo(np.float64).eps * max(scale, 1e-300):
            break
        beta.append(b)
        v_prev, v, b_prev = v, w / b, b
    return np.asarray(alpha), np.asarray(beta)


def density(
    H: Any,
    n_steps: int = 40,
    n_probes: int = 4,
    seed: int = 0,
    reorthogonalize: bool = True,
    sigma: float | None = None,
    grid_size: int = 512,
) -> DensityResult:
    """Eigenvalue density by stochastic Lanczos quadrature.

    Each of ``n_probes`` normalised Rademacher vectors starts an ``n_steps``-step Lanczos run;
    the Ritz values θ and squared first components of the eigenvectors of ``T`` are the nodes
    and weights of a Gauss quadrature for that probe's spectral measure, and their average over
    probes estimates the eigenvalue density ``(1/n) Σ δ(λ − λ_i)``.

    Parameters
    ----------
    H : HessianOperator, MatrixOperator, ndarray (n, n) or LinearOperator
    n_steps : int, default 40
    n_probes : int, default 4
    seed : int, default 0
    reorthogonalize : bool, default True
        Full re-orthogonalisation (recommended; costs O(n · n_steps²) flops, no extra products).
    sigma : float, optional
        Width of the Gaussian smoothing; default 1 % of the spread of the nodes.
    grid_size : int, default 512

    Returns
    -------
    DensityResult

    Raises
    ------
    OptionError
        On invalid counts or ``sigma``.
    """
    op = _as_operator(H)
    seed = _check_seed(seed)
    n_steps = _check_count(n_steps, "n_steps", 2)
    n_probes = _check_count(n_probes, "n_probes")
    grid_size = _check_count(grid_size, "grid_size", 2)
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise OptionError(f"sigma must be a positive finite width, got {sigma!r}")
    mv, calls = _counted(op)
    rng = np.random.default_rng(seed)
    width = min(n_steps, op.dim)
    nodes = np.full((n_probes, width), np.nan)
    weights = np.zeros((n_probes, width))
    for p in range(n_probes):
        z = rng.choice([-1.0, 1.0], size=op.dim)
        a, b = lanczos_tridiagonal(mv, z, n_steps, reorthogonalize)
        theta, U = _tridiagonal_eigh(a, b)
        nodes[p, : theta.size] = theta
        weights[p, : theta.size] = U[0] ** 2
    lo, hi = float(np.nanmin(nodes)), float(np.nanmax(nodes))
    spread = hi - lo if hi > lo else max(abs(hi), 1.0)
    s = float(sigma) if sigma is not None else 0.01 * spread
    grid = np.linspace(lo - 4 * s, hi + 4 * s, grid_size)
    ok = np.isfinite(nodes)
    diff = grid[:, None] - nodes[ok][None, :]
    kernel = np.exp(-0.5 * (diff / s) ** 2) / (s * np.sqrt(2 * np.pi))
    curve = kernel @ weights[ok] / n_probes
    return DensityResult(
        nodes=nodes, weights=weights, grid=grid, curve=curve, sigma=s, hvp_count=calls[0], seed=seed
    )


def _tridiagonal_eigh(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    return np.linalg.eigh(T)
