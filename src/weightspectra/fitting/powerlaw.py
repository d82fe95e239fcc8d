"""Continuous power-law fit of an ESD tail, xmin chosen by the KS distance (metrics.md §3).

The peer-compatible procedure, vectorised: every eigenvalue but the largest is a candidate
``xmin``; each candidate's maximum-likelihood α and Kolmogorov–Smirnov distance D are computed
for all candidates at once (in blocks, to bound memory), and the smallest D wins.
:func:`xmin_scan` exposes the same computation, candidate by candidate, for plots.

A spectrum without a tail is refused rather than given a number: all eigenvalues equal within
round-off (a scaled orthogonal matrix), or a best α that is not finite or above
:data:`MAX_ALPHA` (a near-flat spectrum, where α only measures round-off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weightspectra.errors import LayerError

#: Eigenvalues at or below this are left out of the fit (the peer's threshold); kept elsewhere.
FIT_EVAL_THRESHOLD = 1e-5
#: Below this many fit eigenvalues the peer's small-sample rule applies (metrics.md §3.5).
SMALL_SAMPLE = 20
#: Smallest tail allowed under the small-sample rule.
SMALL_SAMPLE_MIN_TAIL = 8
#: Fit eigenvalues whose spread ``λ_max − λ_min`` is at most this many ``n·eps·λ_max`` are all
#: equal within round-off (the Gram route computes each to about ``n·eps·λ_max``): a flat spectrum,
#: e.g. of ``c·I`` or of any scaled orthogonal matrix, which has no tail to fit.
FLAT_SPECTRUM_ROUNDOFF = 100.0
#: Largest α a fit may report. 1/(α − 1) is the mean of ln(λ/xmin) over the tail, so at α = 1e3
#: the tail eigenvalues exceed xmin by 0.1 % on average: a near-flat spectrum, no power law (the
#: peer reports α ≈ 3.5e15 on 0.5·I, where round-off alone separates the eigenvalues). Fits with
#: α up to this are reported, those above 8 flagged ``spurious-fit`` by the diagnostics.
MAX_ALPHA = 1e3
#: Upper bound on the elements of one block of the KS computation (memory ~ 8 bytes each × ~4).
_BLOCK_ELEMENTS = 2_000_000
#: Candidates per block. Candidate i's tail starts at column i, so a block of rows lo..hi spans
#: columns lo..n and wastes only its (hi−lo)²/2 lower corner: thin blocks skip most of the
#: square's lower half. 64 rows vs one block, one thread, identical fits: 1.73× faster at
#: n = 384, 1.91× at 1024, 1.62× at 4096 (benchmarks/bench_internals.py).
_BLOCK_ROWS = 64


class FitError(LayerError):
    """The power-law fit is impossible for this spectrum (the message says why)."""


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes
    ----------
    alpha : float
        Power-law exponent of the tail, ρ(λ) ∝ λ^(−α).
    xmin, xmax : float
        Start of the fitted tail, and the largest eigenvalue.
    D : float
        Kolmogorov–Smirnov distance between the tail and the fitted law.
    sigma : float
        Standard error of α, (α − 1)/√m.
    num_pl_spikes : int
        Tail size m: the number of eigenvalues ≥ xmin.
    num_fit_evals : int
        Eigenvalues that entered the fit (those above :data:`FIT_EVAL_THRESHOLD`).
    small_sample : bool
        True when the small-sample rule was used: α is then mostly noise (low confidence).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int
    num_fit_evals: int
    small_sample: bool


#: Coarse-to-fine xmin search (``max_candidates``): the coarse candidates of smallest D whose
#: neighbourhoods are then searched candidate by candidate.
REFINED_MINIMA = 8


def fit_power_law(
    evals: np.ndarray,
    threshold: float = FIT_EVAL_THRESHOLD,
    max_candidates: int | None = None,
) -> PowerLawFit:
    """Fit a power law to the tail of an ESD, choosing xmin by the smallest KS distance.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues, any order.
    threshold : float, default 1e-5
        Eigenvalues ≤ threshold are left out of the fit.
    max_candidates : int, optional
        Search xmin coarse to fine when there are more candidates than this: first this many,
        evenly spread (the first and last included), then every candidate between the two
        neighbours of each of the :data:`REFINED_MINIMA` best of them. The full scan costs
        O(n²), this O(n·max_candidates): for pooled ESDs of tens of thousands of eigenvalues
        (FARMS). None (the default, and the peer's way) evaluates every candidate.

    Returns
    -------
    PowerLawFit

    Raises
    ------
    FitError
        If too few eigenvalues lie above ``threshold``; if they are all equal within round-off
        (see :data:`FLAT_SPECTRUM_ROUNDOFF`); if every candidate tail is degenerate; or if the
        best α is not finite or exceeds :data:`MAX_ALPHA`. The message says which, and why no
        α is meaningful there.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.pareto(1.5, 5000) + 1.0      # density ∝ x^(-2.5)
    >>> round(fit_power_law(x).alpha, 1)
    2.5
    >>> try:
    ...     fit_power_law(np.full(32, 0.25))
    ... except FitError as exc:
    ...     print(str(exc).split(":")[0])
    all 32 eigenvalues are equal (0.25)
    """
    x = _fit_eigenvalues(evals, threshold)
    n = x.size
    small = n < SMALL_SAMPLE
    min_tail = SMALL_SAMPLE_MIN_TAIL if small else 2
    if n < min_tail:
        raise FitError(
            f"only {n} eigenvalues above {threshold:g}; a power-law fit needs at least {min_tail}"
        )
    _check_not_flat(x)
    n_cand = _num_candidates(n, small)
    if max_candidates is not None and n_cand > max(max_candidates, 2):
        coarse = np.unique(np.linspace(0, n_cand - 1, max_candidates).round().astype(np.intp))
        _, dist_c = _candidates(x, small, coarse)
        spans = []
        for j in np.argsort(dist_c, kind="stable")[:REFINED_MINIMA]:
            lo = int(coarse[max(j - 1, 0)])
            hi = int(coarse[min(j + 1, coarse.size - 1)])
            spans.append(np.arange(lo, hi + 1))
        rows = np.unique(np.concatenate(spans))
    else:
        rows = np.arange(n_cand)
    alpha, dist = _candidates(x, small, rows)
    pick = int(np.argmin(dist))
    best = int(rows[pick])
    if not np.isfinite(alpha[pick]) or dist[pick] >= 1.0:
        raise FitError("every candidate tail is degenerate (the tail eigenvalues are all equal)")
    m = n - best
    a = float(alpha[pick])
    if a > MAX_ALPHA:
        raise FitError(
            f"the best tail ({m} eigenvalues from xmin={x[best]:.6g}) gives α={a:.3g} > "
            f"{MAX_ALPHA:g}: they differ by at most {x[-1] / x[best] - 1.0:.2g} relative, a "
            "near-flat spectrum (e.g. a scaled orthogonal matrix) with no power-law tail"
        )
    return PowerLawFit(
        alpha=a,
        xmin=float(x[best]),
        xmax=float(x[-1]),
        D=float(dist[pick]),
        sigma=(a - 1.0) / np.sqrt(m),
        num_pl_spikes=int(m),
        num_fit_evals=int(n),
        small_sample=small,
    )


def xmin_scan(
    evals: np.ndarray,
    threshold: float = FIT_EVAL_THRESHOLD,
    max_candidates: int | None = None,
    include: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """α and KS distance D of every candidate xmin, by the computation :func:`fit_power_law` uses.

    The fit picks the candidate of smallest D (the first on ties); this returns the whole curve,
    e.g. to plot how stable α is around the chosen xmin. A candidate whose α is not finite or
    ≤ 1 has D = 1. Below :data:`SMALL_SAMPLE` eigenvalues only tails of at least
    :data:`SMALL_SAMPLE_MIN_TAIL` points are candidates, with the small-sample estimator.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues, any order.
    threshold : float, default 1e-5
        Eigenvalues ≤ threshold are left out, as in the fit.
    max_candidates : int or None, default None
        Evaluate at most this many candidates, evenly spread over the candidate positions
        (the first and the last included); None evaluates every one.
    include : float, optional
        A value of xmin (e.g. the fitted one) that is always evaluated when it is one of the
        candidate eigenvalues, even if the thinning would skip it.

    Returns
    -------
    xmins, alphas, ds : ndarray of shape (k,)
        Candidates in ascending order, and α and D for each.

    Raises
    ------
    FitError
        If fewer eigenvalues than the smallest tail lie above ``threshold`` (no candidate), or
        ``max_candidates`` is below 1.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).pareto(1.5, 500) + 1.0
    >>> xs, alphas, ds = xmin_scan(x)
    >>> fit = fit_power_law(x)
    >>> bool(xs[np.argmin(ds)] == fit.xmin and alphas[np.argmin(ds)] == fit.alpha)
    True
    """
    if max_candidates is not None and max_candidates < 1:
        raise FitError(f"max_candidates must be None or ≥ 1, got {max_candidates!r}")
    x = _fit_eigenvalues(evals, threshold)
    n = x.size
    small = n < SMALL_SAMPLE
    n_cand = _num_candidates(n, small)
    if n_cand < 1:
        raise FitError(
            f"only {n} eigenvalues above {threshold:g}: no candidate xmin for a power-law fit "
            f"(it needs at least {SMALL_SAMPLE_MIN_TAIL if small else 2})"
        )
    rows = np.arange(n_cand)
    if max_candidates is not None and n_cand > max_candidates:
        rows = np.unique(np.linspace(0, n_cand - 1, max_candidates).round().astype(np.intp))
        if include is not None:
            hit = int(np.searchsorted(x, include))
            if hit < n_cand and x[hit] == include:
                rows = np.unique(np.append(rows, hit))
    alpha, dist = _candidates(x, small, rows)
    return x[rows], alpha, dist


def _fit_eigenvalues(evals: np.ndarray, threshold: float) -> np.ndarray:
    """The eigenvalues a fit uses: float64, ascending, those above ``threshold``."""
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    kept: np.ndarray = x[x > threshold]
    return kept


def _num_candidates(n: int, small: bool) -> int:
    return n - SMALL_SAMPLE_MIN_TAIL + 1 if small else n - 1


def _check_not_flat(x: np.ndarray) -> None:
    """Raise :class:`FitError` if the ascending, positive ``x`` are all equal within round-off."""
    n = x.size
    top = float(x[-1])
    spread = top - float(x[0])
    if spread > FLAT_SPECTRUM_ROUNDOFF * n * float(np.finfo(np.float64).eps) * top:
        return
    how = "" if spread == 0.0 else f" to {spread / top:.1g} relative, i.e. within round-off"
    raise FitError(
        f"all {n} eigenvalues are equal ({top:.6g}){how}: a flat spectrum, e.g. a scaled "
        "orthogonal matrix, has no power-law tail"
    )


def _candidates(
    x: np.ndarray, small: bool, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """α and KS distance D for candidate xmin = x[i], i in ``rows`` (default: every candidate).

    ``x`` is ascending and positive; ``rows`` ascending candidate positions.
    """
    n = x.size
    if rows is None:
        rows = np.arange(_num_candidates(n, small))
    logx = np.log(x)
    tail_log_sum = np.cumsum(logx[::-1])[::-1]  # Σ_{j ≥ i} ln x_j
    m = (n - rows).astype(np.float64)  # tail sizes
    log_ratio_sum = tail_log_sum[rows] - m * logx[rows]  # Σ_{j ≥ i} ln(x_j / x_i)
    numer = m - 1.0 if small else m
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + numer / log_ratio_sum
    valid = np.isfinite(alpha) & (alpha > 1.0)
    dist = np.ones(rows.size)
    block = max(1, min(_BLOCK_ROWS, _BLOCK_ELEMENTS // n))
    for lo in range(0, rows.size, block):
        hi = min(lo + block, rows.size)
        idx = rows[lo:hi]
        first = int(idx[0])
        k = np.arange(first, n)[None, :] - idx[:, None]  # position within each candidate's tail
        rel = logx[None, first:] - logx[idx, None]  # ln(x_j / xmin)
        expo = np.where(valid[lo:hi], 1.0 - alpha[lo:hi], 0.0)[:, None]
        with np.errstate(over="ignore", invalid="ignore"):
            gap = np.abs(-np.expm1(expo * rel) - k / m[lo:hi, None])
        gap[k < 0] = 0.0
        dist[lo:hi] = np.where(valid[lo:hi], gap.max(axis=1), 1.0)
    return alpha, dist
