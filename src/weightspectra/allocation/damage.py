"""What quantisation does to the weight spectra, layer by layer (docs/quantization.md).

A pure function of two reports, the full-precision model's and a quantised version's (each from
:func:`weightspectra.analyze`, with ``randomize=True`` so that correlation traps are counted),
paired by layer name with the package's one pairing rule
(:func:`weightspectra.sources.delta.pair_keys`). Per paired layer: Δα, Δ log_norm,
Δ log_spectral_norm, Δ stable_rank, the correlation traps that appeared, the Wasserstein-1
distance of the two ESDs in ``log10 λ`` (:func:`weightspectra.distances.log_esd_w1`), and one
*spectral damage* score:

    damage = mean of the available terms among
        |ln(α_q / α)|                        relative change of the tail exponent
        ln 10 · W1(log10 λ, log10 λ_q)       mean relative move of an eigenvalue (quantiles)
        ln 10 · |Δ log_norm|                 |ln(‖W_q‖_F² / ‖W‖_F²)|, relative energy change

Each term is an absolute log-ratio (nepers): 0 for an unchanged layer, about the relative change
when it is small, unchanged when a layer's weights are scaled before quantising. The score is
absolute (no ranks), so it compares across quantisations of a model and pools over widths.

The α term is left out where either fit failed or either α is above the reports'
``heavy_alpha_max`` (6 by default): such an ESD has no heavy tail, and its fitted tail start
jumps under tiny perturbations (measured on MiniLM: α 8.4 → 2.4 under 8-bit rounding, whose
W1 is 0.004 decades), so its Δα is fit noise, not damage. ``damage_terms`` says how many terms
entered, ``note`` why one did not. A layer whose quantised matrix could not be analysed at all
(all zeros, non-finite values) has damage ``inf``: it is the first to keep at higher precision.

This module works on reports only and imports no framework; ``weightspectra diff FULL QUANT
--damage`` prints its table and the keep list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from weightspectra.allocation.damage_result import LayerDamage, SpectralDamage, UnpairedLayer
from weightspectra.distances import log_esd_w1
from weightspectra.enums import Reason, Status
from weightspectra.errors import InputError, OptionError, UnsupportedInputError
from weightspectra.report.results import LayerResult, Report
from weightspectra.sources.delta import pair_keys

# The result types live in damage_result (documented there); only the computation is listed.
__all__ = [
    "HEAVY_ALPHA_MAX",
    "SPECTRUM_NEUTRAL_OPTIONS",
    "damage_score",
    "keep_at_higher_precision",
    "spectral_damage",
]

#: Options that do not change a layer's spectrum (which layers run, where and how in parallel,
#: and whether traps are counted): they may differ between the two reports.
SPECTRUM_NEUTRAL_OPTIONS = frozenset(
    {"layers", "exclude", "device", "workers", "parallel", "cache", "randomize"}
)
#: α above which the α term is left out, for reports whose options lack ``heavy_alpha_max``.
HEAVY_ALPHA_MAX = 6.0
_LN10 = math.log(10.0)


def _metric(row: LayerResult, column: str) -> float:
    value = row.metrics.get(column)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _traps(row: LayerResult) -> int | None:
    value = row.metrics.get("num_traps")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def damage_score(delta_alpha_log: float, esd_w1: float, delta_log_norm: float) -> tuple[float, int]:
    """The spectral damage of one layer from its three terms, and how many were finite.

    Parameters
    ----------
    delta_alpha_log : float
        ``ln(α_q / α)`` (NaN when a fit failed or the α term is left out).
    esd_w1 : float
        W1 distance of the ESDs in ``log10 λ`` (decades).
    delta_log_norm : float
        ``log10 ‖W_q‖_F² − log10 ‖W‖_F²``.

    Returns
    -------
    (float, int)
        The mean of ``|ln(α_q/α)|``, ``ln 10 · W1`` and ``ln 10 · |Δ log_norm|`` over the
        finite ones (NaN if none), and their number.

    Examples
    --------
    >>> score, terms = damage_score(float("nan"), 0.5, -0.5)
    >>> round(score, 6), terms
    (1.151293, 2)
    """
    terms = [abs(delta_alpha_log), _LN10 * esd_w1, _LN10 * abs(delta_log_norm)]
    finite = [t for t in terms if math.isfinite(t)]
    return (math.fsum(finite) / len(finite) if finite else math.nan), len(finite)


def _check_report(report: object, what: str) -> Report:
    if not isinstance(report, Report):
        raise UnsupportedInputError(
            f"{what} must be a weightspectra Report, got {type(report).__name__}; make one with "
            "weightspectra.analyze(model, randomize=True)"
        )
    return report


def _check_options(full: Report, quantized: Report) -> None:
    keys = (set(full.options) & set(quantized.options)) - SPECTRUM_NEUTRAL_OPTIONS
    differ = sorted(k for k in keys if full.options[k] != quantized.options[k])
    if differ:
        shown = ", ".join(f"{k}={full.options[k]!r} vs {quantized.options[k]!r}" for k in differ)
        raise OptionError(
            f"the two reports were analysed with different options ({shown}), so their spectra "
            "are not comparable; analyse both models with the same options"
        )


def _by_name(
    report: Report, what: str, rename: Callable[[str], str] | None
) -> dict[str, LayerResult]:
    out: dict[str, LayerResult] = {}
    for row in report.layers:
        name = rename(row.name) if rename is not None else row.name
        if not isinstance(name, str):
            raise InputError(
                f"rename({row.name!r}) returned {type(name).__name__}; it must return a str"
            )
        if name in out:
            how = f" (after rename, also {out[name].name!r})" if rename is not None else ""
            raise InputError(
                f"layer name {name!r} appears twice in the {what} report{how}; pair by unique "
                "names (check rename=, or analyse with the same pooling and splitting options)"
            )
        out[name] = row
    return out


def _not_ok(row: LayerResult) -> str:
    return f"{row.status.value}: {row.reason or row.reason_code.value}"


def spectral_damage(
    full: Report,
    quantized: Report,
    *,
    rename: Callable[[str], str] | None = None,
) -> SpectralDamage:
    """Per-layer spectral damage of a quantised model against its full-precision version.

    Parameters
    ----------
    full, quantized : Report
        Reports of the full-precision model and of a quantised version, from
        :func:`weightspectra.analyze` with the same options (``randomize=True`` counts traps).
        Any source works for either: an ``nn.Module``, a safetensors file, a GPTQ/AWQ
        checkpoint, a GGUF file (its matrices are analysed dequantised).
    rename : callable (str) -> str, optional
        Maps each layer name of ``quantized`` to the full model's naming before pairing
        (e.g. llama.cpp's ``blk.0.attn_q`` to ``encoder.layer.0.attention.self.query``).

    Returns
    -------
    SpectralDamage
        One row per paired layer (both analysed), in the full report's order; the layers of
        either side without an analysed partner in ``unpaired``, each with the reason. A layer
        analysed in ``full`` whose quantised matrix failed with ``bad-values`` (all zeros,
        NaN/Inf) is a row with damage ``inf``.

    Raises
    ------
    UnsupportedInputError
        If either argument is not a :class:`~weightspectra.report.results.Report`.
    OptionError
        If the reports were analysed with different spectrum-changing options.
    InputError
        If a name occurs twice in a report, a paired layer has no stored eigenvalues, or no
        layer pairs.

    Examples
    --------
    >>> import numpy as np, weightspectra as ws
    >>> rng = np.random.default_rng(0)
    >>> w = {"fc.weight": rng.standard_t(3, (200, 100)), "out.weight": rng.standard_t(3, (100, 50))}
    >>> q = {"fc.weight": np.round(w["fc.weight"]), "out.weight": w["out.weight"]}
    >>> result = spectral_damage(ws.analyze(w, randomize=True), ws.analyze(q, randomize=True))
    >>> keep_at_higher_precision(result, k=1)
    ('fc',)
    """
    full = _check_report(full, "full")
    quantized = _check_report(quantized, "quantized")
    _check_options(full, quantized)
    alpha_max = float(full.option("heavy_alpha_max", HEAVY_ALPHA_MAX))
    rows_f = _by_name(full, "full", None)
    rows_q = _by_name(quantized, "quantized", rename)
    pairs = {f: q for q, f in pair_keys(rows_q, rows_f).items()}
    if not pairs:
        raise InputError(
            f"no layer of {quantized.source} pairs by name with one of {full.source} (first "
            f"names: {list(rows_q)[:3]} vs {list(rows_f)[:3]}); compare a model with its own "
            "quantised version, or pass rename= to map the quantised names to the full ones"
        )
    damaged: list[LayerDamage] = []
    unpaired: list[UnpairedLayer] = []
    for name, row_f in rows_f.items():
        partner = pairs.get(name)
        row_q = rows_q[partner] if partner is not None else None
        if row_q is None:
            if row_f.ok:
                unpaired.append(
                    UnpairedLayer(
                        name, True, False, "no layer of that name in the quantised report"
                    )
                )
            continue
        if not row_f.ok and not row_q.ok:
            continue  # analysed in neither (biases, norm scales, excluded): nothing to compare
        why = _unusable(row_f, row_q)
        if why:
            unpaired.append(UnpairedLayer(name, True, True, why))
            continue
        damaged.append(_layer_damage(name, row_f, row_q, alpha_max))
    used = set(pairs.values())
    unpaired += [
        UnpairedLayer(n, False, True, "no layer of that name in the full report")
        for n, r in rows_q.items()
        if n not in used and r.ok
    ]
    return SpectralDamage(
        full=full.source,
        quantized=quantized.source,
        rows=_with_ranks(damaged),
        unpaired=tuple(unpaired),
    )


def _broken_by_quantisation(row_f: LayerResult, row_q: LayerResult) -> bool:
    """The full layer was analysed and its quantised matrix has unusable values (all zeros,
    NaN/Inf): the quantisation destroyed it."""
    return row_f.ok and row_q.status is Status.FAILED and row_q.reason_code is Reason.BAD_VALUES


def _unusable(row_f: LayerResult, row_q: LayerResult) -> str:
    """Why a paired layer cannot be compared ('' when it can, or when its damage is inf)."""
    if not row_f.ok:
        return f"not analysed in the full report ({_not_ok(row_f)})"
    if _broken_by_quantisation(row_f, row_q):
        return ""
    if not row_q.ok:
        return f"not analysed in the quantised report ({_not_ok(row_q)})"
    if (row_f.N, row_f.M) != (row_q.N, row_q.M):
        return f"matrix {row_f.N}×{row_f.M} in full vs {row_q.N}×{row_q.M} in quantised"
    for side, row in (("full", row_f), ("quantised", row_q)):
        if row.evals is None:
            raise InputError(
                f"layer {row.name!r} of the {side} report has no stored eigenvalues; use the "
                "report that weightspectra.analyze returned, or its to_json() (which keeps them)"
            )
    return ""


def _layer_damage(
    name: str, row_f: LayerResult, row_q: LayerResult, alpha_max: float
) -> LayerDamage:
    broken = _broken_by_quantisation(row_f, row_q)

    def delta(column: str) -> float:
        return (math.nan if broken else _metric(row_q, column)) - _metric(row_f, column)

    alpha = _metric(row_f, "alpha")
    alpha_q = math.nan if broken else _metric(row_q, "alpha")
    d_log_norm = delta("log_norm")
    traps, traps_q = _traps(row_f), None if broken else _traps(row_q)
    if broken:
        w1, damage, terms = math.nan, math.inf, 0
        note = f"the quantised matrix could not be analysed ({_not_ok(row_q)})"
    else:
        assert row_f.evals is not None and row_q.evals is not None  # checked by _unusable
        w1 = log_esd_w1(row_f.evals, row_q.evals)
        alpha_log = math.log(alpha_q / alpha) if alpha > 0 and alpha_q > 0 else math.nan
        notes = [
            f"no α in the {side} report ({row.metrics.get('fit_error') or 'fit failed'})"
            for side, row, a in (("full", row_f, alpha), ("quantised", row_q, alpha_q))
            if not math.isfinite(a)
        ]
        if not notes and max(alpha, alpha_q) > alpha_max:
            alpha_log = math.nan
            notes.append(
                f"α term left out: α {alpha:.3g} → {alpha_q:.3g} is above heavy_alpha_max "
                f"{alpha_max:g} (no heavy tail; its fit is unstable)"
            )
        damage, terms = damage_score(alpha_log, w1, d_log_norm)
        note = "; ".join(notes)
    return LayerDamage(
        name=name,
        layer_type=row_f.layer_type,
        N=row_f.N,
        M=row_f.M,
        quantization=row_q.quantization,
        alpha=alpha,
        alpha_q=alpha_q,
        delta_alpha=alpha_q - alpha,
        delta_log_norm=d_log_norm,
        rel_norm_change=10.0**d_log_norm - 1.0,
        delta_log_spectral_norm=delta("log_spectral_norm"),
        delta_stable_rank=delta("stable_rank"),
        esd_w1=w1,
        traps=traps,
        traps_q=traps_q,
        traps_appearing=traps_q - traps if traps is not None and traps_q is not None else None,
        damage=damage,
        damage_terms=terms,
        rank=0,
        note=note,
    )


def _with_ranks(rows: Sequence[LayerDamage]) -> tuple[LayerDamage, ...]:
    """The rows (model order kept) with ``rank``: by damage, descending, ties in model order."""
    order = sorted(
        range(len(rows)),
        key=lambda i: (
            math.isnan(rows[i].damage),
            -rows[i].damage if not math.isnan(rows[i].damage) else 0.0,
            i,
        ),
    )
    rank = {i: k + 1 for k, i in enumerate(order)}
    return tuple(replace(r, rank=rank[i]) for i, r in enumerate(rows))


def keep_at_higher_precision(result: SpectralDamage, k: int | None = None) -> tuple[str, ...]:
    """The layers to keep at higher precision: names by spectral damage, most damaged first.

    Parameters
    ----------
    result : SpectralDamage
    k : int, optional
        How many to return (all paired layers when None). Layers with NaN damage come last.

    Returns
    -------
    tuple of str

    Raises
    ------
    UnsupportedInputError
        If ``result`` is not a :class:`SpectralDamage`.
    OptionError
        If ``k`` is not an integer from 0 to the number of paired layers.

    Examples
    --------
    >>> row = dict(layer_type="dense", N=4, M=4, quantization="", alpha=2.0, alpha_q=2.0,
    ...            delta_alpha=0.0, delta_log_norm=0.0, rel_norm_change=0.0,
    ...            delta_log_spectral_norm=0.0, delta_stable_rank=0.0, esd_w1=0.0, traps=None,
    ...            traps_q=None, traps_appearing=None, damage_terms=3)
    >>> rows = (LayerDamage("a", damage=0.1, rank=2, **row),
    ...         LayerDamage("b", damage=0.5, rank=1, **row))
    >>> keep_at_higher_precision(SpectralDamage("fp", "q", rows), k=1)
    ('b',)
    """
    if not isinstance(result, SpectralDamage):
        raise UnsupportedInputError(
            f"result must be a SpectralDamage, got {type(result).__name__}; make one with "
            "spectral_damage(full_report, quantized_report)"
        )
    n = len(result.rows)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n):
        raise OptionError(
            f"k={k!r} is not valid: use an integer from 0 to {n} (the paired layers), or None "
            "for all of them"
        )
    names = tuple(r.name for r in result.ranked())
    return names if k is None else names[:k]
