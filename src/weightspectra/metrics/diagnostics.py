"""Per-layer random-matrix diagnostics (metrics.md §3, §5, §6).

One pure entry point, :func:`layer_diagnostics`, turns a layer's eigenvalues (and optionally its
power-law fit and a lazy loader of its matrix) into extra report columns: the Marchenko–Pastur
fit of the bulk, the phase of training with the rule that fired, correlation traps, the detX /
ERG condition, honest fit warnings, a bootstrap interval for α, the fingers fix and likelihood
ratio comparisons. :class:`DiagnosticsConfig` holds every threshold, validated at construction.
Definitions and defaults are documented in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np

from weightspectra.core.eigen import gram_eigenvalues
from weightspectra.errors import OptionError
from weightspectra.fitting.fingers import FINGERS_ALPHA_DROP, MAX_FINGERS, fix_fingers
from weightspectra.fitting.mp import TW_MULTIPLIER, MPFit, MPFitError, count_zeros, fit_mp
from weightspectra.fitting.powerlaw import FitError, PowerLawFit
from weightspectra.fitting.tpl import P_THRESHOLD, CompareError, compare_fits
from weightspectra.fitting.uncertainty import (
    BOOTSTRAP_REPLICATES,
    CI_LEVEL,
    BootstrapMethod,
    alpha_bootstrap_ci,
)
from weightspectra.enums import parse_enum

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

#: Every column :func:`layer_diagnostics` returns, in report order, with a one-line meaning.
DIAGNOSTIC_COLUMNS: Final = MappingProxyType(
    {
        "sigma_mp": "fitted entry std σ of the MP bulk (normalised units, incl. any conv scaling)",
        "bulk_min": "MP lower edge λ₋ in the report's eigenvalue units",
        "bulk_max": "MP upper edge λ₊ in the report's eigenvalue units",
        "tw_margin": "Tracy–Widom margin above λ₊ (multiplier × TW scale), report units",
        "num_spikes": "eigenvalues above λ₊ + tw_margin",
        "spike_share": "num_spikes / number of eigenvalues",
        "mp_softrank": "λ₊ / λ_max",
        "mp_fit_D": "KS distance between the bulk (nonzero, non-spike) and the fitted MP law",
        "zero_share": "share of numerically zero eigenvalues",
        "phase": "phase of training: " + ", ".join(PHASES),
        "phase_reason": "the rule of the phase table that fired, with its numbers",
        "num_traps": "shuffled-matrix eigenvalues beyond the shuffled MP edge (randomize=True)",
        "max_rand_eval": "largest eigenvalue of the shuffled matrix, report units (randomize=True)",
        "rand_distance": "Jensen–Shannon distance of log10-eigenvalue densities, real vs shuffled",
        "detX_num": "eigenvalues above λ_detX (ERG condition)",
        "detX_val": "λ_detX: where the running product of top (mean-1) eigenvalues drops below 1",
        "detX_gap": "log10(xmin / λ_detX): 0 when the ERG and power-law tail starts coincide",
        "warning": "comma-separated fit labels: fit-failed, over-trained, under-trained, "
        "spurious-fit, low-confidence",
        "warning_detail": "the reason for each warning label",
        "alpha_ci_low": "lower end of the seeded bootstrap interval of α (bootstrap > 0)",
        "alpha_ci_high": "upper end of the seeded bootstrap interval of α (bootstrap > 0)",
        "num_fingers": "top eigenvalues removed by the fingers fix (fingers=True)",
        "alpha_fingers": "α after the fingers fix (None when nothing was removed)",
        "best_fit": "power_law, truncated_power_law, lognormal or exponential (compare_fits=True)",
        "alpha_tpl": "α of the truncated power law fit (compare_fits=True)",
        "Lambda": "cut-off rate Λ of the truncated power law, 1/report units (compare_fits=True)",
        "lr_exponential": "Σ log-likelihood ratio power law − exponential (> 0 favours power law)",
        "p_exponential": "Vuong p-value of lr_exponential",
        "lr_lognormal": "Σ log-likelihood ratio power law − log-normal",
        "p_lognormal": "Vuong p-value of lr_lognormal",
        "lr_tpl": "Σ log-likelihood ratio power law − truncated power law (≤ 0, nested)",
        "p_tpl": "Wilks p-value (½χ²₀ + ½χ²₁) of lr_tpl",
    }
)

Value = float | int | str | None


def _check(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise OptionError(f"{name} must be {expected}, got {value!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Validated thresholds and switches of :func:`layer_diagnostics`.

    Parameters
    ----------
    mp_fit : bool, default True
        Fit the MP law (cost O(n) after the eigenvalues; needed for phases and fingers).
    tw_multiplier : float, default 3.0
        Spikes are eigenvalues above λ₊ + tw_multiplier × Tracy–Widom scale.
    mp_max_ks : float, default 0.05
        The MP bulk "fits" when its KS distance is ≤ mp_max_ks + 2/n.
    spike_rel_gap : float, default 0.1
        An eigenvalue above λ₊·(1 + spike_rel_gap) is "well beyond" the edge (a spike, not
        bleeding-out).
    bulk_decay_share : float, default 0.05
        Share of eigenvalues beyond the edge from which the phase is bulk-decay.
    heavy_share : float, default 0.1
        Share beyond the edge from which the MP law no longer describes the ESD (heavy-tailed
        if the power law also fits). Must be ≥ ``bulk_decay_share``.
    rank_collapse_share : float, default 0.1
        Share of numerically zero eigenvalues from which the phase is rank-collapse (MP has none).
    heavy_alpha_max : float, default 6.0
        Largest α of a heavy-tailed phase.
    over_trained_alpha, under_trained_alpha, spurious_alpha : float, default 2, 6, 8
        α thresholds of the warnings (``1 < over < under ≤ spurious``).
    min_tail : int or None, default None
        Fits with a tail shorter than this are ``spurious-fit`` (None: :data:`SHORT_TAIL`).
    randomize : bool, default False
        Shuffle the matrix (seeded) for correlation traps and ``rand_distance``; one more
        eigenvalue computation per layer. Needs ``matrix``.
    seed : int, default 0
        Seed of the shuffle and of the bootstrap (≥ 0).
    bootstrap : int, default 0
        Bootstrap replicates for the α interval; 0 turns it off, else ≥ 10. Cost: B power-law
        fits per layer with ``bootstrap_method="full"``; O(B·m) with ``"tail"``.
    bootstrap_method : {"full", "tail"}, default "full"
        Resampling scheme (see :mod:`weightspectra.fitting.uncertainty`).
    ci_level : float, default 0.9
        Nominal coverage of the interval.
    fingers : bool, default False
        Apply the fingers fix (only MP outliers may be removed).
    max_fingers : int, default 10
        Largest number of top eigenvalues the fingers fix tries.
    fingers_alpha_drop : float, default 0.5
        α decrease that makes a removal worthwhile.
    compare_fits : bool, default False
        Fit the truncated power law and run the likelihood-ratio comparisons.
    p_threshold : float, default 0.05
        Significance level of the comparisons.
    detx : bool, default True
        Compute the detX / ERG columns (O(n)).

    Raises
    ------
    OptionError
        On any value of the wrong type or out of range; the message says which.
    """

    mp_fit: bool = True
    tw_multiplier: float = TW_MULTIPLIER
    mp_max_ks: float = 0.05
    spike_rel_gap: float = 0.1
    bulk_decay_share: float = 0.05
    heavy_share: float = 0.10
    rank_collapse_share: float = 0.10
    heavy_alpha_max: float = 6.0
    over_trained_alpha: float = 2.0
    under_trained_alpha: float = 6.0
    spurious_alpha: float = 8.0
    min_tail: int | None = None
    randomize: bool = False
    seed: int = 0
    bootstrap: int = 0
    bootstrap_method: BootstrapMethod | str = BootstrapMethod.FULL
    ci_level: float = CI_LEVEL
    fingers: bool = False
    max_fingers: int = MAX_FINGERS
    fingers_alpha_drop: float = FINGERS_ALPHA_DROP
    compare_fits: bool = False
    p_threshold: float = P_THRESHOLD
    detx: bool = True

    def __post_init__(self) -> None:
        for name in ("mp_fit", "randomize", "fingers", "compare_fits", "detx"):
            value = getattr(self, name)
            _check(isinstance(value, bool), name, "True or False", value)
        for name in ("tw_multiplier", "fingers_alpha_drop"):
            value = getattr(self, name)
            _check(_is_real(value) and value > 0, name, "a positive finite number", value)
        _check(
            _is_real(self.spike_rel_gap) and self.spike_rel_gap >= 0,
            "spike_rel_gap",
            "a finite number ≥ 0",
            self.spike_rel_gap,
        )
        for name in (
            "mp_max_ks",
            "bulk_decay_share",
            "heavy_share",
            "rank_collapse_share",
            "ci_level",
            "p_threshold",
        ):
            value = getattr(self, name)
            _check(_is_real(value) and 0 < value < 1, name, "a number in (0, 1)", value)
        if self.heavy_share < self.bulk_decay_share:
            raise OptionError(
                f"heavy_share={self.heavy_share} is below bulk_decay_share="
                f"{self.bulk_decay_share}; raise heavy_share or lower bulk_decay_share"
            )
        for name in (
            "heavy_alpha_max",
            "over_trained_alpha",
            "under_trained_alpha",
            "spurious_alpha",
        ):
            value = getattr(self, name)
            _check(_is_real(value) and value > 1, name, "a finite number > 1", value)
        if not self.over_trained_alpha < self.under_trained_alpha <= self.spurious_alpha:
            raise OptionError(
                "expected over_trained_alpha < under_trained_alpha ≤ spurious_alpha, got "
                f"{self.over_trained_alpha}, {self.under_trained_alpha}, {self.spurious_alpha}"
            )
        if self.min_tail is not None:
            _check(
                _is_int(self.min_tail) and self.min_tail >= 2,
                "min_tail",
                "None or an integer ≥ 2",
                self.min_tail,
            )
        _check(_is_int(self.seed) and self.seed >= 0, "seed", "an integer ≥ 0", self.seed)
        _check(
            _is_int(self.bootstrap) and (self.bootstrap == 0 or self.bootstrap >= 10),
            "bootstrap",
            f"0 (off) or an integer ≥ 10, e.g. {BOOTSTRAP_REPLICATES}",
            self.bootstrap,
        )
        _check(
            _is_int(self.max_fingers) and self.max_fingers >= 1,
            "max_fingers",
            "a positive integer",
            self.max_fingers,
        )
        method = parse_enum(BootstrapMethod, self.bootstrap_method, "bootstrap_method")
        object.__setattr__(self, "bootstrap_method", method)


def layer_diagnostics(
    evals: np.ndarray,
    N: int,
    M: int,
    *,
    fit: PowerLawFit | None,
    fit_error: str | None,
    matrix: Callable[[], np.ndarray] | None,
    normalized: bool,
    config: DiagnosticsConfig,
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
    matrix : callable or None
        Returns the layer's weights, shape (rows, cols) or (k, rows, cols); called only when
        ``config.randomize``.
    normalized : bool
        Whether ``evals`` are already divided by N.
    config : DiagnosticsConfig

    Returns
    -------
    dict
        Every key of :data:`DIAGNOSTIC_COLUMNS`; None where not computed.

    Raises
    ------
    OptionError
        If ``config.randomize`` is set without ``matrix``, or N < M.
    """
    if N < M or M < 1:
        raise OptionError(f"expected N ≥ M ≥ 1 (N the larger side), got N={N}, M={M}")
    if config.randomize and matrix is None:
        raise OptionError("randomize=True needs the layer's matrix: pass matrix=<loader>")
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

    if config.randomize and matrix is not None:
        out.update(_traps(matrix(), x, N, M, scale, config))

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
    fit: PowerLawFit | None, fit_error: str | None, config: DiagnosticsConfig
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
    config: DiagnosticsConfig,
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
    config : DiagnosticsConfig
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
    weights: np.ndarray,
    evals: np.ndarray,
    N: int,
    M: int,
    scale: float,
    config: DiagnosticsConfig,
) -> dict[str, Value]:
    """Correlation traps: MP fit of the ESD of the entry-shuffled matrix (seeded)."""
    w = np.asarray(weights)
    stack = w[None] if w.ndim == 2 else w
    if stack.ndim != 3:
        raise OptionError(f"matrix() must return a 2-D or 3-D array, got shape {w.shape}")
    rng = np.random.default_rng(config.seed)
    flat = rng.permutation(stack.ravel()).reshape(stack.shape)
    parts = [gram_eigenvalues(s) for s in flat]
    raw = np.sort(np.maximum(np.concatenate(parts), 0.0))
    # Shuffling keeps ‖W‖_F, so the sums fix the unit of ``evals`` (conv scaling, 1/N) exactly.
    shuffled = raw * (float(evals.sum()) / float(raw.sum()))
    out: dict[str, Value] = {
        "max_rand_eval": float(shuffled[-1]),
        "rand_distance": rand_distance(evals, shuffled),
    }
    try:
        rand_mp = fit_mp(shuffled / scale, N, M, tw_multiplier=config.tw_multiplier)
        out["num_traps"] = rand_mp.num_spikes
    except MPFitError:
        out["num_traps"] = None
    return out


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


__all__ = [
    "DIAGNOSTIC_COLUMNS",
    "PHASES",
    "DiagnosticsConfig",
    "classify_phase",
    "detx",
    "fit_warnings",
    "layer_diagnostics",
    "rand_distance",
]
