"""Per-layer random-matrix diagnostics (metrics.md §3, §5, §6).

One pure entry point, :func:`layer_diagnostics`, turns a layer's eigenvalues (and optionally its
power-law fit and the ESD of its entry-shuffled matrix) into extra report columns: the
Marchenko–Pastur fit of the bulk, the phase of training with the rule that fired, correlation
traps, the detX / ERG condition, honest fit warnings, a bootstrap interval for α, the fingers fix
and likelihood ratio comparisons. :class:`~weightspectra.options.Options` holds every threshold,
validated at construction. Definitions and defaults are documented in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from weightspectra import schema
from weightspectra.enums import BootstrapMethod
from weightspectra.errors import OptionError
from weightspectra.fitting.fingers import fix_fingers
from weightspectra.fitting.mp import MPFit, MPFitError, count_zeros, fit_mp
from weightspectra.fitting.powerlaw import FitError, PowerLawFit
from weightspectra.fitting.tpl import CompareError, compare_fits
from weightspectra.fitting.uncertainty import alpha_bootstrap_ci
from weightspectra.options import Options
from weightspectra.schema import Value

#: A fitted tail shorter than this is flagged ``spurious-fit`` unless ``min_tail`` says otherwise.
SHORT_TAIL = 10
#: Size allowance of the bulk goodness of fit: the KS threshold is ``mp_max_ks + MP_SMALL_D / n``
#: (the KS distance of a Gaussian layer's bulk shrinks like 1/n, eigenvalues being rigid).
MP_SMALL_D = 2.0
#: Histogram bins of ``rand_distance``: √n, clipped to this range.
RAND_BINS = (10, 100)

RANDOM_LIKE = "random-like"
BLEEDING_OUT = "bleeding-out"
BULK_SPIKES = "bulk+spikes"
BULK_DECAY = "bulk-decay"
HEAVY_TAILED = "heavy-tailed"
RANK_COLLAPSE = "rank-collapse"
PHASES: Final = (RANDOM_LIKE, BLEEDING_OUT, BULK_SPIKES, BULK_DECAY, HEAVY_TAILED, RANK_COLLAPSE)

#: Every column :func:`layer_diagnostics` returns, in report order (declared, with their
#: meanings, in :mod:`weightspectra.schema`).
DIAGNOSTIC_COLUMNS: Final = schema.names(lambda c: c.group is schema.Group.DIAGNOSTIC)


def layer_diagnostics(
    evals: np.ndarray,
    N: int,
    M: int,
    *,
    fit: PowerLawFit | None,
    fit_error: str | None,
    rand_evals: np.ndarray | None = None,
    normalized: bool,
    config: Options,
) -> dict[str, Value]:
    """Random-matrix diagnostics of one layer's ESD.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Eigenvalues in the report's units: λ = σ² (un-normalised) unless ``normalized``; any
        overall factor (the pooled-Conv2D ½) is absorbed into ``sigma_mp``. ``n`` may be a
        multiple of ``M`` (pooled slices, each N × M).
    N, M : int
        Larger and smaller side of one matrix.
    fit : PowerLawFit or None
        The layer's power-law fit, or None when it failed or was not run.
    fit_error : str or None
        Why the fit failed (reported as ``fit-failed`` with this cause).
    rand_evals : ndarray or None
        The ESD of the layer's entry-shuffled matrix, in the same units as ``evals`` (computed
        by the pipeline on the same backend and precision when ``config.randomize``); the trap
        columns are filled only when it is given.
    normalized : bool
        Whether ``evals`` are already divided by N.
    config : Options
        The thresholds and switches.

    Returns
    -------
    dict
        Every key of :data:`DIAGNOSTIC_COLUMNS`; None where not computed.

    Raises
    ------
    OptionError
        If N < M.
    """
    if N < M or M < 1:
        raise OptionError(f"expected N ≥ M ≥ 1 (N the larger side), got N={N}, M={M}")
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    scale = 1.0 if normalized else float(N)
    out: dict[str, Value] = dict.fromkeys(DIAGNOSTIC_COLUMNS)
    zeros = count_zeros(x, N)
    out["zero_share"] = zeros / x.size

    mp: MPFit | None = None
    mp_error = ""
    if config.mp_fit:
        try:
            mp = fit_mp(x / scale, N, M, tw_multiplier=config.tw_multiplier)
        except MPFitError as exc:
            mp_error = str(exc)
    if mp is not None:
        out.update(
            sigma_mp=mp.sigma,
            bulk_min=mp.bulk_min * scale,
            bulk_max=mp.bulk_max * scale,
            tw_margin=mp.tw_margin * scale,
            num_spikes=mp.num_spikes,
            spike_share=mp.num_spikes / x.size,
            mp_softrank=mp.softrank,
            mp_fit_D=mp.ks_distance,
        )

    effective = fit
    if config.fingers and fit is not None and mp is not None:
        edge = (mp.bulk_max + mp.tw_margin) * scale
        fixed = fix_fingers(
            x,
            fit,
            outlier_edge=edge,
            max_fingers=config.max_fingers,
            alpha_drop=config.fingers_alpha_drop,
        )
        out["num_fingers"] = fixed.num_removed
        if fixed.num_removed:
            out["alpha_fingers"] = fixed.fit.alpha
            effective = fixed.fit

    label, detail = fit_warnings(effective, fit_error, config)
    out["warning"], out["warning_detail"] = label, detail
    phase, reason = classify_phase(x / scale, mp, zeros, effective, label, config, mp_error)
    out["phase"], out["phase_reason"] = phase, reason

    if config.detx:
        num, val = detx(x)
        out["detX_num"], out["detX_val"] = num, val
        if val is not None and effective is not None and val > 0.0:
            out["detX_gap"] = math.log10(effective.xmin / val)

    if rand_evals is not None:
        out.update(_traps(rand_evals, x, N, M, scale, config))

    if effective is not None and config.bootstrap:
        try:
            ci = alpha_bootstrap_ci(
                x,
                effective,
                replicates=config.bootstrap,
                level=config.ci_level,
                seed=config.seed,
                method=BootstrapMethod(config.bootstrap_method),
            )
            out["alpha_ci_low"], out["alpha_ci_high"] = ci.low, ci.high
        except FitError as exc:
            out["warning_detail"] = _join(str(out["warning_detail"]), f"no α interval: {exc}")

    if effective is not None and config.compare_fits:
        try:
            cmp = compare_fits(
                x[x >= effective.xmin], effective.xmin, p_threshold=config.p_threshold
            )
            out.update(
                best_fit=cmp.best_fit,
                alpha_tpl=cmp.tpl.alpha,
                Lambda=cmp.tpl.Lambda,
                lr_exponential=cmp.lr_exponential,
                p_exponential=cmp.p_exponential,
                lr_lognormal=cmp.lr_lognormal,
                p_lognormal=cmp.p_lognormal,
                lr_tpl=cmp.lr_tpl,
                p_tpl=cmp.p_tpl,
            )
        except CompareError as exc:
            out["warning_detail"] = _join(str(out["warning_detail"]), f"no comparison: {exc}")
    return out


def fit_warnings(
    fit: PowerLawFit | None, fit_error: str | None, config: Options
) -> tuple[str, str]:
    """Warning labels of a power-law fit, and the reason for each ('' when none applies).

    A failed fit gives ``fit-failed`` and never an α-based label. α > ``spurious_alpha`` gives
    ``spurious-fit`` instead of ``under-trained`` (the fit is not meaningful, so neither is the
    verdict); a tail shorter than ``min_tail`` (default :data:`SHORT_TAIL`) adds ``spurious-fit``.
    """
    if fit is None:
        if fit_error is None:
            return "", ""
        return "fit-failed", f"fit-failed: {fit_error}"
    labels: list[str] = []
    details: list[str] = []
    a = fit.alpha
    if a < config.over_trained_alpha:
        labels.append("over-trained")
        details.append(f"over-trained: α={a:.3g} < {config.over_trained_alpha:g}")
    elif a > config.spurious_alpha:
        labels.append("spurious-fit")
        details.append(f"spurious-fit: α={a:.3g} > {config.spurious_alpha:g}")
    elif a > config.under_trained_alpha:
        labels.append("under-trained")
        details.append(f"under-trained: α={a:.3g} > {config.under_trained_alpha:g}")
    min_tail = SHORT_TAIL if config.min_tail is None else config.min_tail
    if fit.num_pl_spikes < min_tail:
        if "spurious-fit" not in labels:
            labels.append("spurious-fit")
        details.append(f"spurious-fit: tail of {fit.num_pl_spikes} < {min_tail} eigenvalues")
    if fit.small_sample:
        labels.append("low-confidence")
        details.append(f"low-confidence: only {fit.num_fit_evals} eigenvalues fitted")
    return ",".join(labels), "; ".join(details)


def classify_phase(
    evals: np.ndarray,
    mp: MPFit | None,
    zeros: int,
    fit: PowerLawFit | None,
    warning: str,
    config: Options,
    mp_error: str = "",
) -> tuple[str | None, str]:
    """Phase of training by the operational rule of metrics.md §6; first matching rule wins.

    Parameters
    ----------
    evals : ndarray of shape (n,)
        Ascending eigenvalues in normalised units (those ``mp`` was fitted to).
    mp : MPFit or None
        MP fit of ``evals`` in normalised units (None: no phase unless rank-collapse).
    zeros : int
        Numerically zero eigenvalues among ``evals``.
    fit : PowerLawFit or None
        Power-law fit (needed for heavy-tailed).
    warning : str
        Labels from :func:`fit_warnings` (a failed or spurious fit is no power law).
    config : Options
    mp_error : str
        Why the MP fit failed, if it did.

    Returns
    -------
    phase : str or None
    reason : str
    """
    n = evals.size
    zero_share = zeros / n
    if zero_share > config.rank_collapse_share:
        return RANK_COLLAPSE, (
            f"{zero_share:.1%} numerically zero eigenvalues > "
            f"{config.rank_collapse_share:.1%} (MP: none)"
        )
    if mp is None:
        return None, f"no MP fit: {mp_error}" if mp_error else "MP fit off"
    share = mp.num_spikes / n
    d_max = config.mp_max_ks + MP_SMALL_D / max(n - zeros, 1)
    mp_ok = mp.ks_distance <= d_max
    pl_ok = (
        fit is not None and "spurious-fit" not in warning and fit.alpha <= config.heavy_alpha_max
    )
    if (not mp_ok or share >= config.heavy_share) and pl_ok and fit is not None:
        why = (
            f"MP bulk KS {mp.ks_distance:.3f} > {d_max:.3f}"
            if not mp_ok
            else f"{share:.1%} beyond the MP edge ≥ {config.heavy_share:.1%}"
        )
        return HEAVY_TAILED, f"{why}; power law α={fit.alpha:.3g} ≤ {config.heavy_alpha_max:g}"
    if not mp_ok:
        return BULK_DECAY, (
            f"MP bulk KS {mp.ks_distance:.3f} > {d_max:.3f} and no power law "
            f"with α ≤ {config.heavy_alpha_max:g}"
        )
    if mp.num_spikes == 0:
        return RANDOM_LIKE, f"MP bulk fits (KS {mp.ks_distance:.3f}); nothing beyond λ₊ + TW"
    if share >= config.bulk_decay_share:
        return BULK_DECAY, f"{share:.1%} beyond the MP edge ≥ {config.bulk_decay_share:.1%}"
    far = mp.bulk_max * (1.0 + config.spike_rel_gap)
    num_far = int(np.count_nonzero(evals > far))
    if num_far:
        return BULK_SPIKES, (
            f"{num_far} of {mp.num_spikes} eigenvalues beyond the edge are "
            f"> λ₊·{1.0 + config.spike_rel_gap:g}"
        )
    return BLEEDING_OUT, (
        f"{mp.num_spikes} eigenvalues ({share:.1%}) just beyond the edge, all "
        f"≤ λ₊·{1.0 + config.spike_rel_gap:g}"
    )


def detx(evals: np.ndarray) -> tuple[int | None, float | None]:
    """ERG / detX condition of an ESD: ``(detX_num, λ_detX)`` (None, None when undefined).

    The eigenvalues are rescaled to mean 1; walking down from the largest, the first one at which
    the running product falls below 1 is λ_detX, and detX_num counts the eigenvalues above it.
    The product is a running sum of logs. ``λ_detX`` is returned in the input's units.

    Examples
    --------
    >>> import numpy as np
    >>> detx(np.array([0.25, 0.25, 1.5, 2.0]))
    (2, 0.25)
    """
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())[::-1]
    mean = float(x.mean())
    if not mean > 0.0:
        return None, None
    with np.errstate(divide="ignore"):
        running = np.cumsum(np.log(x / mean))
    below = np.flatnonzero(running < 0.0)
    if below.size == 0:
        return None, None
    k = int(below[0])
    return k, float(x[k])


def rand_distance(real: np.ndarray, shuffled: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two ESD densities.

    Both ESDs are histogrammed on one grid of log10 λ spanning their positive eigenvalues, with
    √n bins (clipped to :data:`RAND_BINS`); the distance is √JS of the two normalised
    histograms. 0: same density; 1: disjoint supports.
    """
    a = np.log10(real[real > 0.0])
    b = np.log10(shuffled[shuffled > 0.0])
    if a.size == 0 or b.size == 0:
        return math.nan
    bins = int(np.clip(round(math.sqrt(max(a.size, b.size))), *RAND_BINS))
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 0.0
    p, _ = np.histogram(a, bins=bins, range=(lo, hi))
    q, _ = np.histogram(b, bins=bins, range=(lo, hi))
    p_n, q_n = p / p.sum(), q / q.sum()
    m = 0.5 * (p_n + q_n)

    def kl(u: np.ndarray) -> float:
        nz = u > 0.0
        return float(np.sum(u[nz] * np.log2(u[nz] / m[nz])))

    return math.sqrt(max(0.5 * kl(p_n) + 0.5 * kl(q_n), 0.0))


def _traps(
    shuffled: np.ndarray,
    evals: np.ndarray,
    N: int,
    M: int,
    scale: float,
    config: Options,
) -> dict[str, Value]:
    """Correlation traps: MP fit of the ESD of the entry-shuffled matrix (seeded)."""
    rand = np.sort(np.asarray(shuffled, dtype=np.float64).ravel())
    out: dict[str, Value] = {
        "max_rand_eval": float(rand[-1]),
        "rand_distance": rand_distance(evals, rand),
    }
    try:
        rand_mp = fit_mp(rand / scale, N, M, tw_multiplier=config.tw_multiplier)
        out["num_traps"] = rand_mp.num_spikes
    except MPFitError:
        out["num_traps"] = None
    return out


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


__all__ = [
    "DIAGNOSTIC_COLUMNS",
    "PHASES",
    "classify_phase",
    "detx",
    "fit_warnings",
    "layer_diagnostics",
    "rand_distance",
]
