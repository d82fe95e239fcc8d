"""Spectral damage of a quantised model against its full-precision version, on reports of
hand-made matrices whose damage is known, against expectations computed here: Δ columns from
the two reports' own rows, W1 as the mean gap of the sorted log-eigenvalues (equal counts), the
damage score from its three terms."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra
from weightspectra.errors import InputError, OptionError, UnsupportedInputError
from weightspectra.report.results import Report

pytest.importorskip("weightspectra.quantize", reason="weightspectra.quantize needs torch")
from weightspectra.allocation import (
    LayerDamage,
    SpectralDamage,
    keep_at_higher_precision,
    spectral_damage,
)
from weightspectra.allocation.damage import damage_score
from weightspectra.allocation.damage_result import TABLE_COLUMNS

#: Differences of stored metrics are exact subtractions of the same floats.
EXACT = 0.0
#: W1 through scipy against the sorted-gap formula: summation order only.
W1_TOL = 1e-12


def rtn(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-row round-to-nearest, written from its definition (not the package's)."""
    qmax = 2 ** (bits - 1) - 1
    out = np.empty_like(w)
    for i, row in enumerate(w):
        s = np.abs(row).max() / qmax
        out[i] = [max(-qmax, min(qmax, round(v / s))) * s for v in row]
    return out


def naive_w1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 of two equal-size samples: the mean gap between their sorted values."""
    assert a.size == b.size
    return float(np.mean(np.abs(np.sort(np.log10(a)) - np.sort(np.log10(b)))))


def num(value: object) -> float:
    """A stored metric as a float (failing on None or text)."""
    assert isinstance(value, (int, float)), value
    return float(value)


def count(value: object) -> int:
    assert isinstance(value, int), value
    return value


def analyze(weights: dict[str, np.ndarray], **kwargs: Any) -> Report:
    return weightspectra.analyze(weights, randomize=True, **kwargs)


def alphas(report: Report) -> dict[str, float]:
    return {str(r["name"]): num(r["alpha"]) for r in report.rows()}


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240615)
    return {
        "enc.0.weight": rng.standard_t(3.0, (300, 150)),
        "enc.0.bias": rng.standard_normal(300),
        "enc.1.weight": rng.standard_t(3.0, (200, 100)),
        "head.weight": rng.standard_t(3.0, (120, 60)),
    }


@pytest.fixture(scope="module")
def full(weights: dict[str, np.ndarray]) -> Report:
    return analyze(weights)


@pytest.fixture(scope="module")
def quantised(weights: dict[str, np.ndarray]) -> Report:
    """enc.1 at 2 bits (ternary), enc.0 at 8 bits, the head untouched."""
    q = dict(weights)
    q["enc.0.weight"] = rtn(weights["enc.0.weight"], 8)
    q["enc.1.weight"] = rtn(weights["enc.1.weight"], 2)
    return analyze(q)


@pytest.fixture(scope="module")
def result(full: Report, quantised: Report) -> SpectralDamage:
    return spectral_damage(full, quantised)


def test_the_heavily_quantised_layer_ranks_first_and_the_untouched_one_last(
    result: SpectralDamage,
) -> None:
    assert [r.name for r in result.rows] == ["enc.0", "enc.1", "head"]  # model order kept
    assert keep_at_higher_precision(result) == ("enc.1", "enc.0", "head")
    assert keep_at_higher_precision(result, k=1) == ("enc.1",)
    assert keep_at_higher_precision(result, k=0) == ()
    assert [r.rank for r in result.ranked()] == [1, 2, 3]
    head = result["head"]
    # the same matrix on both sides: every difference and the damage are exactly zero
    assert (head.delta_alpha, head.esd_w1, head.delta_log_norm, head.damage) == (0, 0, 0, 0)
    assert head.traps_appearing == 0 and head.damage_terms == 3
    # 8 bits moves the spectrum far less than 2 bits
    assert result["enc.0"].damage < 0.1 * result["enc.1"].damage
    assert result.unpaired == ()  # the bias is analysed in neither report: not listed


def test_deltas_equal_the_reports_own_columns(
    result: SpectralDamage, full: Report, quantised: Report
) -> None:
    a_f, a_q = alphas(full), alphas(quantised)
    for row in result.rows:
        f, q = full[row.name].metrics, quantised[row.name].metrics
        assert row.alpha == a_f[row.name] and row.alpha_q == a_q[row.name]
        assert row.delta_alpha == pytest.approx(a_q[row.name] - a_f[row.name], abs=EXACT)
        for column in ("log_norm", "log_spectral_norm", "stable_rank"):
            expected = num(q[column]) - num(f[column])
            assert getattr(row, f"delta_{column}") == pytest.approx(expected, abs=EXACT), column
        assert row.rel_norm_change == pytest.approx(
            num(q["norm"]) / num(f["norm"]) - 1,
            rel=1e-12,
        )
        assert row.traps_appearing == count(q["num_traps"]) - count(f["num_traps"])


def test_w1_and_damage_against_their_definitions(
    result: SpectralDamage, full: Report, quantised: Report
) -> None:
    for row in result.rows:
        ev_f, ev_q = full[row.name].evals, quantised[row.name].evals
        assert ev_f is not None and ev_q is not None
        assert row.esd_w1 == pytest.approx(naive_w1(ev_f, ev_q), abs=W1_TOL)
        terms = [math.log(10) * row.esd_w1, math.log(10) * abs(row.delta_log_norm)]
        if max(row.alpha, row.alpha_q) <= 6.0:  # the default heavy_alpha_max
            terms.append(abs(math.log(row.alpha_q / row.alpha)))
        assert row.damage_terms == len(terms)
        assert row.damage == pytest.approx(sum(terms) / len(terms), rel=1e-12, abs=1e-15)


def test_scaling_every_weight_gives_the_scale_as_damage(
    weights: dict[str, np.ndarray], full: Report
) -> None:
    """W_q = 3 W: each ESD is 9 times the other, α is unchanged, so W1 = Δ log_norm = log10 9
    and damage = (0 + 2 ln 9) / 3."""
    scaled = analyze({k: 3.0 * v for k, v in weights.items()})
    res = spectral_damage(full, scaled)
    for row in res.rows:
        assert row.esd_w1 == pytest.approx(math.log10(9), rel=1e-12)
        assert row.delta_log_norm == pytest.approx(math.log10(9), rel=1e-12)
        assert row.delta_log_spectral_norm == pytest.approx(math.log10(9), rel=1e-12)
        assert row.rel_norm_change == pytest.approx(8.0, rel=1e-12)
        assert row.delta_alpha == pytest.approx(0.0, abs=1e-9)
        assert row.delta_stable_rank == pytest.approx(0.0, abs=1e-9)
        assert row.damage == pytest.approx(2 * math.log(9) / 3, rel=1e-9)


def test_pairing_by_name_reports_the_unpaired_layers(weights: dict[str, np.ndarray]) -> None:
    full = analyze({k: weights[k] for k in ("enc.0.weight", "enc.1.weight", "head.weight")})
    other = {
        "enc.0.weight": weights["enc.0.weight"],
        "enc.1.weight": weights["enc.1.weight"],
        "extra.weight": weights["head.weight"],
    }
    res = spectral_damage(full, analyze(other))
    assert [r.name for r in res.rows] == ["enc.0", "enc.1"]
    assert [(u.name, u.in_full, u.in_quantized) for u in res.unpaired] == [
        ("head", True, False),
        ("extra", False, True),
    ]
    assert "no layer of that name in the quantised report" in res.unpaired[0].reason
    # a leading path is set aside (the package's pairing rule, sources.delta.pair_keys) ...
    prefixed = analyze({f"model.{k}": v for k, v in other.items()})
    assert [r.name for r in spectral_damage(full, prefixed).rows] == ["enc.0", "enc.1"]
    # ... other names pair only through rename=
    renamed = analyze({f"q_{k}": v for k, v in other.items()})
    with pytest.raises(InputError, match="pass rename= to map"):
        spectral_damage(full, renamed)
    res2 = spectral_damage(full, renamed, rename=lambda n: n.removeprefix("q_"))
    assert [r.name for r in res2.rows] == ["enc.0", "enc.1"]
    assert [r.damage for r in res2.rows] == [0.0, 0.0]


def test_traps_appearing_are_counted() -> None:
    """A few huge entries (an outlier a quantiser's scale would be set by) survive shuffling:
    the entry-shuffled matrix has spikes, i.e. correlation traps."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((300, 150))
    q = w.copy()
    q.flat[rng.choice(w.size, 4, replace=False)] = 40.0
    f_rep, q_rep = analyze({"a.weight": w}), analyze({"a.weight": q})
    row = spectral_damage(f_rep, q_rep)["a"]
    expected = count(q_rep["a"].metrics["num_traps"]) - count(f_rep["a"].metrics["num_traps"])
    assert row.traps_appearing == expected
    assert row.traps_appearing >= 1
    # without randomize there is nothing to count: None, not 0
    plain = weightspectra.analyze({"a.weight": q})
    no_traps = spectral_damage(f_rep, plain)["a"]
    assert no_traps.traps_q is None and no_traps.traps_appearing is None


def test_a_layer_quantised_to_zeros_ranks_first_with_infinite_damage(
    weights: dict[str, np.ndarray], full: Report
) -> None:
    q = dict(weights)
    q["head.weight"] = np.zeros_like(weights["head.weight"])
    res = spectral_damage(full, analyze(q))
    head = res["head"]
    assert head.damage == math.inf and head.damage_terms == 0
    assert "could not be analysed" in head.note and "all zeros" in head.note
    assert keep_at_higher_precision(res, k=1) == ("head",)


def test_a_failed_alpha_fit_drops_only_the_alpha_term() -> None:
    """An orthogonal matrix has a flat ESD, so no power law: the damage averages two terms."""
    rng = np.random.default_rng(3)
    o = np.linalg.qr(rng.standard_normal((100, 100)))[0]
    f_rep = analyze({"o.weight": o})
    q_rep = analyze({"o.weight": rtn(o, 4)})
    row = spectral_damage(f_rep, q_rep)["o"]
    assert math.isnan(row.alpha) and math.isnan(row.delta_alpha)
    assert row.damage_terms == 2 and "no α in the full report" in row.note
    expected = (math.log(10) * row.esd_w1 + math.log(10) * abs(row.delta_log_norm)) / 2
    assert row.damage == pytest.approx(expected, rel=1e-12)
    score, terms = damage_score(math.nan, math.nan, math.nan)
    assert math.isnan(score) and terms == 0


def test_alpha_term_is_left_out_above_heavy_alpha_max() -> None:
    """A Gaussian matrix has no heavy tail (α above 6 here): its Δα is not counted, unless the
    threshold is raised."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((300, 150))
    q = rtn(w, 4)
    f_rep, q_rep = analyze({"g.weight": w}), analyze({"g.weight": q})
    row = spectral_damage(f_rep, q_rep)["g"]
    assert row.alpha > 6.0, "the premise: a Gaussian ESD fits with a large α"
    assert row.damage_terms == 2 and "above heavy_alpha_max 6" in row.note
    two = (math.log(10) * row.esd_w1 + math.log(10) * abs(row.delta_log_norm)) / 2
    assert row.damage == pytest.approx(two, rel=1e-12)
    high = {"heavy_alpha_max": 50.0}
    raised = spectral_damage(analyze({"g.weight": w}, **high), analyze({"g.weight": q}, **high))
    row3 = raised["g"]
    assert row3.damage_terms == 3 and row3.note == ""
    three = (2 * two + abs(math.log(row3.alpha_q / row3.alpha))) / 3
    assert row3.damage == pytest.approx(three, rel=1e-12)


def test_json_round_trip(weights: dict[str, np.ndarray], full: Report, tmp_path: Path) -> None:
    q = dict(weights)
    q["head.weight"] = np.zeros_like(weights["head.weight"])  # inf and NaN cells
    del q["enc.0.weight"]  # an unpaired layer
    res = spectral_damage(full, analyze(q))
    text = res.to_json(tmp_path / "damage.json")
    for back in (
        SpectralDamage.from_json(text),
        SpectralDamage.from_json(tmp_path / "damage.json"),
    ):
        assert back.to_dict() == res.to_dict()
        assert back.unpaired == res.unpaired
        for a, b in zip(back.rows, res.rows, strict=True):
            for f in dataclasses.fields(LayerDamage):
                x, y = getattr(a, f.name), getattr(b, f.name)
                assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), f.name
                assert type(x) is type(y), f.name
    assert '"Infinity"' in text and '"NaN"' in text
    with pytest.raises(InputError, match="not a spectral-damage result"):
        SpectralDamage.from_json(full.to_json())
    with pytest.raises(InputError, match="no such spectral-damage file"):
        SpectralDamage.from_json(tmp_path / "missing.json")


def test_table_and_frame(result: SpectralDamage) -> None:
    lines = result.table().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(TABLE_COLUMNS)
    assert len(lines) == 2 + len(result.rows)
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first[:2] == ["1", "enc.1"]
    assert float(first[-1]) == pytest.approx(result["enc.1"].damage, rel=1e-3)
    with pytest.raises(InputError, match="unknown columns"):
        result.table(columns=["name", "alpah"])
    pd = pytest.importorskip("pandas")
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [f.name for f in dataclasses.fields(LayerDamage)]
    assert frame["damage"].tolist() == [r.damage for r in result.rows]


def test_bad_inputs_name_the_fix(
    weights: dict[str, np.ndarray], full: Report, result: SpectralDamage
) -> None:
    with pytest.raises(UnsupportedInputError, match=r"quantized must be a weightspectra Report"):
        spectral_damage(full, weights)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"normalize=False vs True.*same options"):
        spectral_damage(full, analyze(weights, normalize=True))
    with pytest.raises(InputError, match=r"appears twice in the quantized report"):
        spectral_damage(full, full, rename=lambda n: "x")
    stripped = Report(
        full.source,
        full.options,
        tuple(dataclasses.replace(r, evals=None) for r in full.layers),
        full.version,
    )
    with pytest.raises(InputError, match=r"layer 'enc.0' of the full report has no stored"):
        spectral_damage(stripped, full)
    for k in (-1, 4, True, 1.0):
        with pytest.raises(OptionError, match=r"from 0 to 3"):
            keep_at_higher_precision(result, k=k)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedInputError, match="must be a SpectralDamage"):
        keep_at_higher_precision(full)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no paired layer named 'nope'"):
        result["nope"]


def test_docstring_examples_run() -> None:
    import doctest

    from weightspectra.allocation import damage

    outcome = doctest.testmod(damage, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted >= 3 and outcome.failed == 0
