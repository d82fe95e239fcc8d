"""Marchenko–Pastur fit of the bulk of an ESD (metrics.md §5).

The bulk scale σ² is fitted directly: the sorted bulk eigenvalues are regressed, through the
origin, on the quantiles of the unit-variance MP law over a central window of probabilities.
Spikes (eigenvalues beyond the fitted edge plus a Tracy–Widom margin) are then taken out of the
bulk and the regression is repeated until the spike count is stable. The cost is O(n) after one
cached-free tabulation of the MP law (a few thousand points): negligible next to ``eigvalsh``.

Units: all functions here take eigenvalues of ``X = WᵀW / N`` ("normalised units"). A caller
holding raw ``λ = σ²(W)`` divides by ``N`` first; any further overall factor (the pooled-Conv2D
½) is absorbed into the fitted σ, which therefore is the entry standard deviation of the matrix
*as the eigenvalues were computed*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from weightspectra.errors import LayerError

#: Points of the θ-grid on which the MP CDF is tabulated (error of the tabulated quantiles is far
#: below the finite-size fluctuation of any realistic layer).
MP_GRID_POINTS = 4097
#: Probability window of the bulk regression: low enough to avoid the edge (where spikes and
#: bleeding-out sit), high enough to avoid the mass at zero of a collapsed layer.
MP_WINDOW = (0.05, 0.75)
#: Fewest nonzero eigenvalues for which an MP fit is attempted.
MP_MIN_EVALS = 8
#: Refits of the bulk after removing spikes, at most.
MP_MAX_ITER = 5
#: Default multiplier of the Tracy–Widom scale that separates fluctuations from spikes.
TW_MULTIPLIER = 3.0
#: Eigenvalues at or below ``ZERO_REL_TOL · N · eps64 · λ_max`` are numerical zeros (the Gram
#: tolerance of :func:`weightspectra.metrics.layer.matrix_rank`, in λ units).
ZERO_REL_TOL = 10.0


class MPFitError(LayerError):
    """The Marchenko–Pastur fit is impossible for this spectrum (the message says why)."""


@dataclass(frozen=True)
class MPFit:
    """Result of :func:`fit_mp`, in normalised units (eigenvalues of WᵀW/N).

    Attributes
    ----------
    sigma : float
        Fitted entry standard deviation σ of the bulk.
    bulk_min, bulk_max : float
        MP edges λ± = σ²(1 ± 1/√Q)².
    tw_scale : float
        Tracy–Widom scale of the top edge (standard deviation-like unit of λ_max fluctuations).
    tw_margin : float
        ``multiplier · tw_scale``: eigenvalues above ``bulk_max + tw_margin`` are spikes.
    num_spikes : int
        Eigenvalues beyond ``bulk_max + tw_margin``.
    num_zeros : int
        Numerically zero eigenvalues (left out of the fit).
    ks_distance : float
        Kolmogorov–Smirnov distance between the bulk (nonzero, non-spike eigenvalues) and the
        fitted MP law restricted to the same count: the bulk goodness of fit.
    softrank : float
        ``min(bulk_max / λ_max, 1)``, in (0, 1]: near 1 for a random-like layer, towards 0 as
        spikes or a heavy tail rise above the bulk. Exactly 1 means the fitted bulk edge reaches
        past λ_max: no spike (on rank-collapsed layers the edge fitted to the nonzero bulk can
        exceed λ_max, by up to 2.16× on measured layers; the ratio itself carries no meaning
        there, so it is bounded rather than reported above 1).
    Q : float
        Aspect ratio N/M used.
    """

    sigma: float
    bulk_min: float
    bulk_max: float
    tw_scale: float
    tw_margin: float
    num_spikes: int
    num_zeros: int
    ks_distance: float
    softrank: float
    Q: float


def mp_edges(Q: float, sigma: float = 1.0) -> tuple[float, float]:
    """MP bulk edges ``σ²(1 ± 1/√Q)²`` for aspect ratio ``Q = N/M ≥ 1``.

    Examples
    --------
    >>> mp_edges(4.0)
    (0.25, 2.25)
    """
    r = 1.0 / math.sqrt(Q)
    s2 = sigma * sigma
    return s2 * (1.0 - r) ** 2, s2 * (1.0 + r) ** 2


def mp_density(x: np.ndarray, Q: float, sigma: float = 1.0) -> np.ndarray:
    """Marchenko–Pastur density of the eigenvalues of ``WᵀW/N`` (normalised units).

    ``ρ(x) = √((λ₊ − x)(x − λ₋)) / (2π σ² c x)`` on ``(λ₋, λ₊)``, zero elsewhere, with
    ``c = 1/Q`` and ``λ± = σ²(1 ± √c)²`` (:func:`mp_edges`): the limit law of an N × M matrix
    with i.i.d. entries of variance σ², ``Q = N/M ≥ 1``. It integrates to 1 (no mass at zero,
    since M ≤ N); at ``Q = 1`` it diverges like ``x^(−1/2)`` at 0.

    Parameters
    ----------
    x : array_like
        Points at which to evaluate, any shape.
    Q : float
        Aspect ratio N/M ≥ 1.
    sigma : float, default 1.0
        Entry standard deviation σ > 0 (the density scales as ``ρ_σ(x) = ρ_1(x/σ²)/σ²``).

    Returns
    -------
    ndarray of the shape of ``x``, float64

    Raises
    ------
    MPFitError
        If ``Q < 1`` or ``sigma`` is not a positive finite number.

    See Also
    --------
    mp_density_from_edge : the same law given its top edge λ₊ instead of σ.

    Examples
    --------
    >>> import numpy as np
    >>> mp_density(np.array([0.1, 1.0, 3.0]), Q=4.0).round(4)
    array([0.    , 0.6164, 0.    ])
    """
    if not math.isfinite(sigma) or not sigma > 0.0:
        raise MPFitError(f"the MP density needs σ > 0, got sigma={sigma!r}")
    return _mp_density(np.asarray(x, dtype=np.float64), Q, sigma * sigma)


def mp_density_from_edge(x: np.ndarray, bulk_max: float, Q: float) -> np.ndarray:
    """Marchenko–Pastur density whose top edge is ``bulk_max``, in the units of ``bulk_max``.

    The scale follows from the edge, ``σ² = λ₊ / (1 + 1/√Q)²``, so this is
    :func:`mp_density` with that σ, in whatever units the edge is given (raw or normalised
    eigenvalues, any convolution scaling): the form a plot of a fitted layer needs.

    Parameters
    ----------
    x : array_like
        Points at which to evaluate, any shape.
    bulk_max : float
        Top edge λ₊ > 0 of the bulk.
    Q : float
        Aspect ratio N/M ≥ 1.

    Returns
    -------
    ndarray of the shape of ``x``, float64

    Raises
    ------
    MPFitError
        If ``bulk_max`` is not a positive finite number or ``Q < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(mp_density_from_edge(np.array([4.0]), bulk_max=9.0, Q=4.0)[0]), 4)  # σ² = 4
    0.1541
    """
    if not math.isfinite(bulk_max) or not bulk_max > 0.0:
        raise MPFitError(f"the MP density needs a top edge bulk_max > 0, got {bulk_max!r}")
    _check_q(Q)
    s2 = bulk_max / (1.0 + 1.0 / math.sqrt(Q)) ** 2
    return _mp_density(np.asarray(x, dtype=np.float64), Q, s2)


def _check_q(Q: float) -> None:
    if not Q >= 1.0 or not math.isfinite(Q):
        raise MPFitError(f"the MP law needs Q = N/M ≥ 1, got Q={Q!r}; pass N ≥ M")


def _mp_density(x: np.ndarray, Q: float, s2: float) -> np.ndarray:
    _check_q(Q)
    lo, hi = mp_edges(Q, math.sqrt(s2))
    out = np.zeros(x.shape, dtype=np.float64)
    inside = (x > lo) & (x < hi)
    xi = x[inside]
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2.0 * math.pi * s2 * xi / Q)
    return out


def tw_scale(N: int, M: int, sigma: float = 1.0) -> float:
    """Tracy–Widom scale of the largest eigenvalue of ``WᵀW/N`` (Johnstone 2001), N ≥ M.

    ``σ² (√N + √M)(1/√N + 1/√M)^(1/3) / N``, of order ``N^(−2/3)``.
    """
    a, b = math.sqrt(N), math.sqrt(M)
    return float(sigma * sigma * (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0) / N)


def mp_cdf_table(Q: float) -> tuple[np.ndarray, np.ndarray]:
    """Tabulated CDF of the unit-variance MP law for aspect ratio ``Q ≥ 1``.

    The density √((b−x)(x−a)) / (2π c x), c = 1/Q, is integrated in the variable θ with
    x = m + r cos θ (m, r the centre and half-width of [a, b]), where the integrand is smooth up
    to both edges, so the trapezoidal rule converges fast.

    Returns
    -------
    x : ndarray of shape (MP_GRID_POINTS,), ascending from a to b
    cdf : ndarray of the same shape, from 0 to 1
    """
    _check_q(Q)
    c = 1.0 / Q
    a, b = mp_edges(Q)
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    theta = np.linspace(math.pi, 0.0, MP_GRID_POINTS)
    x = mid + half * np.cos(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (half * np.sin(theta)) ** 2 / (2.0 * math.pi * c * x)
    # x = 0 only at θ = π when Q = 1; there x = half·(1 + cos θ), so the integrand is
    # half·(1 − cos θ)/(2πc), whose limit is half/(πc) = 2/π (not 0: that put the CDF 2.4e-4 off)
    f[~np.isfinite(f)] = half / (math.pi * c)
    step = math.pi / (MP_GRID_POINTS - 1)
    cdf = np.concatenate(([0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * step)))
    cdf /= cdf[-1]
    return x, cdf


def count_zeros(evals: np.ndarray, N: int) -> int:
    """Numerically zero eigenvalues of an ascending ESD (see :data:`ZERO_REL_TOL`)."""
    lam_max = float(evals[-1])
    tol = ZERO_REL_TOL * N * float(np.finfo(np.float64).eps) * lam_max
    return int(np.searchsorted(evals, tol, side="right"))


def fit_mp(
    evals: np.ndarray,
    N: int,
    M: int,
    *,
    tw_multiplier: float = TW_MULTIPLIER,
) -> MPFit:
    """Fit the Marchenko–Pastur law to the bulk of one ESD.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues in normalised units (of WᵀW/N), ascending. ``n`` may be a multiple of ``M``
        (pooled convolution slices, each N × M).
    N, M : int
        Larger and smaller side of one matrix (``N ≥ M ≥ 1``).
    tw_multiplier : float, default 3.0
        Spikes are eigenvalues above ``bulk_max + tw_multiplier · tw_scale``.

    Returns
    -------
    MPFit

    Raises
    ------
    MPFitError
        If fewer than :data:`MP_MIN_EVALS` eigenvalues are nonzero, N < M, or the bulk window
        is degenerate (all eigenvalues there equal zero).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((800, 400))
    >>> fit = fit_mp(np.linalg.eigvalsh(w.T @ w / 800), 800, 400)
    >>> round(fit.sigma, 2), fit.num_spikes
    (1.0, 0)
    """
    if N < M or M < 1:
        raise MPFitError(f"expected N ≥ M ≥ 1 (N the larger side), got N={N}, M={M}")
    x = np.asarray(evals, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise MPFitError(f"expected a 1-D array of eigenvalues, got shape {x.shape}")
    if np.any(x[1:] < x[:-1]):
        x = np.sort(x)
    zeros = count_zeros(x, N)
    nz = x[zeros:]
    if nz.size < MP_MIN_EVALS:
        raise MPFitError(
            f"only {nz.size} nonzero eigenvalues; an MP fit needs at least {MP_MIN_EVALS}"
        )
    Q = N / M
    grid_x, grid_cdf = mp_cdf_table(Q)
    lo, hi = mp_edges(Q)
    tw1 = tw_scale(N, M)
    n_spikes = 0
    s2 = math.nan
    for _ in range(MP_MAX_ITER):
        bulk = nz[: nz.size - n_spikes]
        s2 = _bulk_scale(bulk, grid_x, grid_cdf)
        cut = s2 * hi + tw_multiplier * s2 * tw1
        new = int(nz.size - np.searchsorted(nz, cut, side="right"))
        # Never call more than half of the spectrum spikes: past that the bulk is not MP at all,
        # and the goodness of fit says so.
        new = min(new, nz.size // 2)
        if new == n_spikes:
            break
        n_spikes = new
    bulk = nz[: nz.size - n_spikes]
    model = np.interp(bulk / s2, grid_x, grid_cdf)
    k = bulk.size
    ranks = np.arange(1, k + 1) / k
    ks = float(max(np.max(ranks - model), np.max(model - (ranks - 1.0 / k))))
    sigma = math.sqrt(s2)
    return MPFit(
        sigma=sigma,
        bulk_min=s2 * lo,
        bulk_max=s2 * hi,
        tw_scale=s2 * tw1,
        tw_margin=tw_multiplier * s2 * tw1,
        num_spikes=n_spikes,
        num_zeros=zeros,
        ks_distance=ks,
        softrank=min(s2 * hi / float(x[-1]), 1.0),
        Q=Q,
    )


def _bulk_scale(bulk: np.ndarray, grid_x: np.ndarray, grid_cdf: np.ndarray) -> float:
    """σ² by least squares through the origin of sorted bulk eigenvalues on MP quantiles."""
    k = bulk.size
    p = (np.arange(k) + 0.5) / k
    sel = (p >= MP_WINDOW[0]) & (p <= MP_WINDOW[1])
    if np.count_nonzero(sel) < 2:
        sel = np.ones(k, dtype=bool)
    q = np.interp(p[sel], grid_cdf, grid_x)
    y = bulk[sel]
    denom = float(q @ q)
    s2 = float(q @ y) / denom if denom > 0.0 else 0.0
    if not s2 > 0.0 or not math.isfinite(s2):
        raise MPFitError("the bulk eigenvalues in the fit window are all zero: no MP scale")
    return s2
