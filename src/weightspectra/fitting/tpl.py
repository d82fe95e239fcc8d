"""Truncated power law and likelihood-ratio comparisons of an ESD tail (metrics.md §3).

All models are fitted by maximum likelihood to the same tail ``x ≥ xmin`` (the power-law fit's
``xmin``), in the dimensionless variable ``u = x / xmin ≥ 1``, so their pointwise
log-likelihoods are directly comparable:

=====================  =====================================  ==========
model                  density on u ≥ 1                        parameters
=====================  =====================================  ==========
power law              (α − 1) u^(−α)                          α > 1
truncated power law    u^(−α) e^(−L u) / Z(α, L)               α, L ≥ 0
exponential            L e^(−L (u − 1))                        L > 0
log-normal             φ((ln u − μ)/s) / (u s Φ(μ/s))          μ, s > 0
=====================  =====================================  ==========

``L = Λ · xmin`` (Λ, the cut-off rate in eigenvalue units, is reported). The power law is nested
in the truncated power law (L = 0), so that pair is compared by Wilks' test, with the boundary
null distribution ½χ²₀ + ½χ²₁; the exponential and log-normal are not nested with the power law
and are compared by Vuong's normalised log-likelihood ratio test (two-sided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from weightspectra.errors import LayerError

#: Fewest tail points for which the comparisons are attempted.
MIN_COMPARE_TAIL = 10
#: Default significance level: an alternative replaces the power law only when its likelihood
#: ratio test rejects the power law at this level.
P_THRESHOLD = 0.05
#: Bounds of the truncated power law's α (it may fall below 1 when L > 0).
TPL_ALPHA_BOUNDS = (0.0, 20.0)
#: Bounds of ln L, L = Λ·xmin (below the lower bound the cut-off is beyond any realistic tail).
TPL_LOG_L_BOUNDS = (-25.0, 10.0)

POWER_LAW = "power_law"
TRUNCATED_POWER_LAW = "truncated_power_law"
EXPONENTIAL = "exponential"
LOGNORMAL = "lognormal"


class CompareError(LayerError):
    """The tail cannot be compared across distributions (the message says why)."""


@dataclass(frozen=True)
class TPLFit:
    """Truncated power law ρ(x) ∝ x^(−α) e^(−Λx) on x ≥ xmin.

    Attributes
    ----------
    alpha : float
    Lambda : float
        Cut-off rate in the eigenvalues' units (0 means a pure power law).
    xmin : float
    loglik : float
        Total log-likelihood in u = x/xmin units.
    """

    alpha: float
    Lambda: float
    xmin: float
    loglik: float


@dataclass(frozen=True)
class FitComparison:
    """Likelihood-ratio comparisons of the power law with three alternatives on one tail.

    ``lr_*`` are Σᵢ (ℓ_PL(xᵢ) − ℓ_alt(xᵢ)): positive favours the power law. ``p_*`` are the
    p-values of the tests (Vuong for exponential and log-normal, Wilks for the truncated power
    law). ``best_fit`` is the power law unless an alternative beats it significantly; among
    several such, the one with the highest AIC-penalised likelihood (ℓ − number of parameters).
    """

    tpl: TPLFit
    alpha_pl: float
    lr_exponential: float
    p_exponential: float
    lr_lognormal: float
    p_lognormal: float
    lr_tpl: float
    p_tpl: float
    best_fit: str


def tpl_log_norm(alpha: float, L: float) -> float:
    """ln Z(α, L) with Z = ∫₁^∞ u^(−α) e^(−L u) du (``inf`` when the integral diverges).

    The integral is taken in t = ln u, where it reads ∫₀^∞ exp((1 − α)t − L eᵗ) dt; the integrand
    is divided by its maximum first so that the quadrature never under- or overflows.
    """
    from scipy import integrate  # scipy's heavier parts load only when a TPL is fitted

    if L <= 0.0:
        return -math.log(alpha - 1.0) if alpha > 1.0 else math.inf
    t_peak = math.log((1.0 - alpha) / L) if alpha < 1.0 and (1.0 - alpha) > L else 0.0
    log_peak = (1.0 - alpha) * t_peak - L * math.exp(t_peak)

    def integrand(t: float) -> float:
        return math.exp((1.0 - alpha) * t - L * math.exp(t) - log_peak)

    # Past t ≈ ln(1/L) the integrand decays doubly exponentially; splitting there helps quad.
    split = max(t_peak, -math.log(L)) + 2.0
    head, _ = integrate.quad(integrand, 0.0, split, limit=200)
    tail, _ = integrate.quad(integrand, split, math.inf, limit=200)
    total = head + tail
    if not total > 0.0:
        return math.inf
    return math.log(total) + log_peak


def fit_tpl(tail: np.ndarray, xmin: float, alpha_start: float) -> TPLFit:
    """Maximum-likelihood truncated power law on ``tail`` (all ≥ ``xmin``).

    Parameters
    ----------
    tail : ndarray of shape (m,)
        The tail eigenvalues, ``≥ xmin``.
    xmin : float
        Start of the tail (> 0).
    alpha_start : float
        Starting α (the power-law fit's).

    Returns
    -------
    TPLFit

    Raises
    ------
    CompareError
        If ``xmin`` is not positive or the tail is shorter than :data:`MIN_COMPARE_TAIL`.
    """
    from scipy import optimize

    u = _as_tail(tail, xmin)
    m = u.size
    sum_log, sum_u = float(np.log(u).sum()), float(u.sum())

    def nll(params: np.ndarray) -> float:
        alpha, log_L = float(params[0]), float(params[1])
        L = math.exp(log_L)
        log_z = tpl_log_norm(alpha, L)
        if not math.isfinite(log_z):
            return 1e300
        return (alpha * sum_log + L * sum_u + m * log_z) / m

    starts = [
        (max(alpha_start, 1.05), math.log(max(1e-3 / float(u.mean()), 1e-10))),
        (max(alpha_start - 0.5, 0.5), math.log(1.0 / max(float(u.mean()) - 1.0, 1e-9))),
    ]
    bounds = [TPL_ALPHA_BOUNDS, TPL_LOG_L_BOUNDS]
    best_val, best_x = math.inf, np.array(starts[0])
    for a0, l0 in starts:
        x0 = np.array([min(max(a0, bounds[0][0]), bounds[0][1]), min(max(l0, -25.0), 10.0)])
        res = optimize.minimize(
            nll,
            x0,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 2000},
        )
        if float(res.fun) < best_val:
            best_val, best_x = float(res.fun), np.asarray(res.x, dtype=np.float64)
    alpha, L = float(best_x[0]), math.exp(float(best_x[1]))
    loglik = -best_val * m
    # The pure power law (L = 0) is the boundary of the model; keep it when it is at least as
    # likely, so that the nested likelihood ratio is never negative.
    pl_alpha = 1.0 + m / sum_log if sum_log > 0.0 else math.inf
    if math.isfinite(pl_alpha):
        pl_ll = m * math.log(pl_alpha - 1.0) - pl_alpha * sum_log
        if pl_ll >= loglik:
            alpha, L, loglik = pl_alpha, 0.0, pl_ll
    return TPLFit(alpha=alpha, Lambda=L / xmin, xmin=float(xmin), loglik=loglik)


def compare_fits(
    tail: np.ndarray, xmin: float, *, p_threshold: float = P_THRESHOLD
) -> FitComparison:
    """Compare the power law with the exponential, log-normal and truncated power law.

    Parameters
    ----------
    tail : ndarray of shape (m,)
        Eigenvalues ``≥ xmin`` (the fitted tail).
    xmin : float
        Start of the tail.
    p_threshold : float, default 0.05
        Significance level for an alternative to replace the power law as ``best_fit``.

    Returns
    -------
    FitComparison

    Raises
    ------
    CompareError
        If the tail is shorter than :data:`MIN_COMPARE_TAIL`, ``xmin ≤ 0``, or the tail is
        degenerate (all values equal to ``xmin``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).pareto(1.5, 3000) + 1.0
    >>> compare_fits(x, 1.0).best_fit
    'power_law'
    """
    from scipy import special, stats

    u = _as_tail(tail, xmin)
    m = u.size
    log_u = np.log(u)
    sum_log = float(log_u.sum())
    if not sum_log > 0.0 or float(u.max()) == 1.0:
        raise CompareError("the tail is degenerate (every value equals xmin): nothing to compare")
    alpha = 1.0 + m / sum_log
    ll_pl = math.log(alpha - 1.0) - alpha * log_u

    rate = 1.0 / float(np.mean(u - 1.0))
    ll_exp = math.log(rate) - rate * (u - 1.0)

    mu, s = _fit_lognormal(log_u)
    ll_ln = (
        -log_u
        - math.log(s)
        - 0.5 * math.log(2.0 * math.pi)
        - 0.5 * ((log_u - mu) / s) ** 2
        - float(special.log_ndtr(mu / s))
    )

    tpl = fit_tpl(tail, xmin, alpha)
    lr_tpl = min(float(ll_pl.sum()) - tpl.loglik, 0.0)  # nested: ≤ 0 up to round-off
    wilks = max(-2.0 * lr_tpl, 0.0)
    p_tpl = 0.5 * float(stats.chi2.sf(wilks, 1)) if wilks > 0.0 else 1.0

    lr_exp, p_exp = _vuong(ll_pl - ll_exp)
    lr_ln, p_ln = _vuong(ll_pl - ll_ln)

    ll_tpl = -tpl.alpha * log_u - tpl.Lambda * xmin * u - _tpl_log_z(tpl)
    best, best_ll = POWER_LAW, ll_pl
    # Simpler, power-law-like models first; a later one must beat both the power law and the
    # current choice significantly (Vuong) to replace it.
    challengers = (
        (TRUNCATED_POWER_LAW, ll_tpl, p_tpl < p_threshold),
        (LOGNORMAL, ll_ln, lr_ln < 0.0 and p_ln < p_threshold),
        (EXPONENTIAL, ll_exp, lr_exp < 0.0 and p_exp < p_threshold),
    )
    for name, ll_alt, beats_pl in challengers:
        if not beats_pl:
            continue
        if best != POWER_LAW:
            lr, p = _vuong(ll_alt - best_ll)
            if not (lr > 0.0 and p < p_threshold):
                continue
        best, best_ll = name, ll_alt
    return FitComparison(
        tpl=tpl,
        alpha_pl=alpha,
        lr_exponential=lr_exp,
        p_exponential=p_exp,
        lr_lognormal=lr_ln,
        p_lognormal=p_ln,
        lr_tpl=lr_tpl,
        p_tpl=p_tpl,
        best_fit=best,
    )


def _tpl_log_z(tpl: TPLFit) -> float:
    return tpl_log_norm(tpl.alpha, tpl.Lambda * tpl.xmin)


def _as_tail(tail: np.ndarray, xmin: float) -> np.ndarray:
    if not (math.isfinite(xmin) and xmin > 0.0):
        raise CompareError(f"xmin must be a positive finite number, got {xmin!r}")
    x = np.asarray(tail, dtype=np.float64).ravel()
    x = x[x >= xmin]
    if x.size < MIN_COMPARE_TAIL:
        raise CompareError(
            f"the tail has {x.size} points at or above xmin={xmin:.4g}; comparing distributions "
            f"needs at least {MIN_COMPARE_TAIL} (lower min_tail or skip compare_fits)"
        )
    return x / xmin


def _fit_lognormal(log_u: np.ndarray) -> tuple[float, float]:
    """MLE (μ, s) of a log-normal truncated to u ≥ 1, from the tail's ln u."""
    from scipy import optimize, special

    m = log_u.size
    sum_sq_start = float(np.std(log_u))

    def nll(params: np.ndarray) -> float:
        mu, log_s = float(params[0]), float(params[1])
        s = math.exp(log_s)
        z = (log_u - mu) / s
        return float(log_s + 0.5 * float(z @ z) / m + special.log_ndtr(mu / s))

    x0 = np.array([float(np.mean(log_u)), math.log(max(sum_sq_start, 1e-6))])
    res = optimize.minimize(
        nll, x0, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000}
    )
    return float(res.x[0]), math.exp(float(res.x[1]))


def _vuong(diff: np.ndarray) -> tuple[float, float]:
    """Log-likelihood ratio Σ dᵢ and Vuong's two-sided p-value for pointwise differences d."""
    from scipy import special

    total = float(diff.sum())
    sd = float(np.std(diff))
    if sd == 0.0:
        return total, 1.0
    z = total / (sd * math.sqrt(diff.size))
    return total, float(special.erfc(abs(z) / math.sqrt(2.0)))
