"""Per-layer diagnostics: phases, traps, detX, warnings and config checks on seeded matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspectra.core.eigen import shuffled_entries
from weightspectra.enums import BootstrapMethod
from weightspectra.errors import OptionError
from weightspectra.fitting.powerlaw import FitError, PowerLawFit, fit_power_law
from weightspectra.metrics.diagnostics import (
    DIAGNOSTIC_COLUMNS,
    detx,
    layer_diagnostics,
    rand_distance,
)
from weightspectra.options import Options


def raw_evals(w: np.ndarray) -> np.ndarray:
    a = w if w.shape[0] >= w.shape[1] else w.T
    return np.maximum(np.linalg.eigvalsh(a.T @ a), 0.0)


def diagnose(
    w: np.ndarray, config: Options | None = None, normalized: bool = False
) -> dict[str, float | int | str | None]:
    config = config or Options()
    N, M = max(w.shape), min(w.shape)
    evals = raw_evals(w) / (N if normalized else 1)
    try:
        fit, err = fit_power_law(evals), None
    except FitError as exc:
        fit, err = None, str(exc)
    rand = None
    if config.randomize:  # as the pipeline does: the shuffled matrix in the same units
        rand = raw_evals(shuffled_entries(w[None], config.seed)[0]) / (N if normalized else 1)
    return layer_diagnostics(
        evals,
        N,
        M,
        fit=fit,
        fit_error=err,
        rand_evals=rand,
        normalized=normalized,
        config=config,
    )


@pytest.mark.parametrize("Q", [1, 2, 4, 10])
def test_gaussian_layers_are_random_like_in_95_percent_of_seeds(Q: int) -> None:
    M = 200
    good = 0
    for seed in range(40):
        w = np.random.default_rng(seed).standard_normal((Q * M, M))
        d = diagnose(w, normalized=True)
        assert d["sigma_mp"] == pytest.approx(1.0, rel=0.02)
        assert isinstance(d["mp_softrank"], float) and d["mp_softrank"] >= 0.9
        good += d["num_spikes"] == 0 and d["phase"] == "random-like"
    assert good >= 38


def test_unnormalised_units_are_reported_in_report_units() -> None:
    w = np.random.default_rng(0).standard_normal((900, 300))
    raw = diagnose(w)
    norm = diagnose(w, normalized=True)
    assert raw["sigma_mp"] == pytest.approx(norm["sigma_mp"], rel=1e-9)
    assert raw["bulk_max"] == pytest.approx(900 * norm["bulk_max"], rel=1e-9)  # type: ignore[operator]


@pytest.mark.parametrize("Q", [1, 4])
def test_rank_one_spike_phase(Q: int) -> None:
    M, rng = 400, np.random.default_rng(7 + Q)
    N = Q * M
    u, v = rng.standard_normal(N), rng.standard_normal(M)
    spike = math.sqrt(N) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    g = rng.standard_normal((N, M))
    above = diagnose(g + 2.0 * Q ** (-0.25) * spike)
    assert above["num_spikes"] == 1
    assert above["phase"] == "bulk+spikes"
    below = diagnose(g + 0.4 * Q ** (-0.25) * spike)
    assert below["num_spikes"] == 0
    assert below["phase"] == "random-like"


def test_pareto_entries_are_heavy_tailed_with_alpha_mu_over_two_plus_one() -> None:
    rng = np.random.default_rng(11)
    w = rng.choice([-1.0, 1.0], size=(1000, 500)) * (rng.pareto(1.0, (1000, 500)) + 1.0)
    d = diagnose(w)
    assert d["phase"] == "heavy-tailed"
    assert fit_power_law(raw_evals(w)).alpha == pytest.approx(1.5, abs=0.15)
    assert isinstance(d["mp_softrank"], float) and d["mp_softrank"] < 0.1


def test_low_rank_product_is_rank_collapse() -> None:
    rng = np.random.default_rng(3)
    M = 500
    w = rng.standard_normal((1000, M // 5)) @ rng.standard_normal((M // 5, M))
    d = diagnose(w)
    assert d["phase"] == "rank-collapse"
    assert d["zero_share"] == pytest.approx(0.8, abs=0.01)


def test_bleeding_out_and_bulk_decay_from_planted_eigenvalues() -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((800, 400))
    evals = np.linalg.eigvalsh(w.T @ w / 800)
    edge = (1 + math.sqrt(0.5)) ** 2
    cfg = Options()
    bleed = evals.copy()
    bleed[-4:] = edge * np.array([1.03, 1.04, 1.05, 1.06])  # 1 % just beyond the edge
    d = layer_diagnostics(bleed, 800, 400, fit=None, fit_error=None, normalized=True, config=cfg)
    assert d["phase"] == "bleeding-out"
    decay = evals.copy()
    decay[-30:] = edge * np.linspace(1.03, 1.5, 30)  # 7.5 % beyond the edge
    d = layer_diagnostics(decay, 800, 400, fit=None, fit_error=None, normalized=True, config=cfg)
    assert d["phase"] == "bulk-decay"


def test_correlation_traps_found_only_with_planted_entries_and_seeded() -> None:
    cfg = Options(randomize=True, seed=4)
    rng = np.random.default_rng(21)
    clean = rng.standard_normal((1000, 500))
    planted = clean.copy()
    planted[rng.integers(0, 1000, 5), rng.integers(0, 500, 5)] = 100.0
    d_planted = diagnose(planted, cfg)
    assert isinstance(d_planted["num_traps"], int) and d_planted["num_traps"] >= 1
    assert diagnose(clean, cfg)["num_traps"] == 0
    again = diagnose(planted, cfg)
    assert again["max_rand_eval"] == d_planted["max_rand_eval"]
    assert again["rand_distance"] == d_planted["rand_distance"]
    other = diagnose(planted, Options(randomize=True, seed=5))
    assert other["max_rand_eval"] != d_planted["max_rand_eval"]


def test_rand_distance_on_densities() -> None:
    x = np.random.default_rng(0).uniform(1.0, 2.0, 500)
    assert rand_distance(x, x) == 0.0
    assert rand_distance(x, x * 1e6) == pytest.approx(1.0)
    # a permutation of the same values has the same density: the peer's vector JS would not say 0
    assert rand_distance(x, x[::-1]) == 0.0


def test_detx_against_a_raw_product_loop() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = rng.pareto(2.0, 30) + 0.1
        y = np.sort(x)[::-1] / x.mean()
        product, k_ref = 1.0, None
        for k, value in enumerate(y):
            product *= value
            if product < 1.0:
                k_ref = k
                break
        num, val = detx(x)
        assert num == k_ref
        assert val == pytest.approx(np.sort(x)[::-1][k_ref])


def test_detx_survives_values_whose_product_overflows() -> None:
    x = np.concatenate([np.full(400, 1e300), np.full(40000, 1e-300)])
    num, val = detx(x)
    assert num is not None and val is not None and math.isfinite(val)


def fake_fit(alpha: float, tail: int = 50, small: bool = False) -> PowerLawFit:
    return PowerLawFit(alpha, 1.0, 10.0, 0.05, (alpha - 1) / math.sqrt(tail), tail, 200, small)


@pytest.mark.parametrize(
    ("alpha", "tail", "label"),
    [
        (1.5, 50, "over-trained"),
        (3.0, 50, ""),
        (6.5, 50, "under-trained"),
        (9.0, 50, "spurious-fit"),
        (3.0, 5, "spurious-fit"),
    ],
)
def test_fit_warnings(alpha: float, tail: int, label: str) -> None:
    evals = np.random.default_rng(0).pareto(1.5, 200) + 1.0
    d = layer_diagnostics(
        evals,
        400,
        200,
        fit=fake_fit(alpha, tail),
        fit_error=None,
        normalized=False,
        config=Options(),
    )
    assert d["warning"] == label


def test_failed_fit_never_yields_a_number() -> None:
    evals = np.random.default_rng(0).pareto(1.5, 200) + 1.0
    cfg = Options(bootstrap=50, compare_fits=True, fingers=True)
    d = layer_diagnostics(
        evals,
        400,
        200,
        fit=None,
        fit_error="only 3 eigenvalues above 1e-05",
        normalized=False,
        config=cfg,
    )
    assert d["warning"] == "fit-failed"
    assert "only 3 eigenvalues" in str(d["warning_detail"])
    for key in ("alpha_ci_low", "alpha_ci_high", "alpha_fingers", "alpha_tpl", "detX_gap"):
        assert d[key] is None
    assert d["phase"] != "heavy-tailed"


def test_min_tail_marks_short_tails_spurious() -> None:
    evals = np.random.default_rng(0).pareto(1.5, 200) + 1.0
    d = layer_diagnostics(
        evals,
        400,
        200,
        fit=fake_fit(3.0, 40),
        fit_error=None,
        normalized=False,
        config=Options(min_tail=50),
    )
    assert d["warning"] == "spurious-fit"


def test_fingers_do_not_turn_a_gaussian_layer_heavy_tailed() -> None:
    cfg = Options(fingers=True)
    for seed in range(5):
        d = diagnose(np.random.default_rng(seed).standard_normal((600, 300)), cfg)
        assert d["num_fingers"] == 0
        assert d["phase"] == "random-like"


def test_all_columns_present_and_options_reproducible() -> None:
    w = np.random.default_rng(1).standard_normal((500, 250))
    w[0, :] *= 30.0
    cfg = Options(randomize=True, bootstrap=20, compare_fits=True, fingers=True, seed=3)
    a, b = diagnose(w, cfg), diagnose(w, cfg)
    assert list(a) == list(DIAGNOSTIC_COLUMNS)
    assert a == b
    assert a["alpha_ci_low"] is not None and a["best_fit"] is not None


def test_n_must_be_the_larger_side() -> None:
    with pytest.raises(OptionError, match="N ≥ M"):
        layer_diagnostics(
            np.ones(10),
            5,
            10,
            fit=None,
            fit_error=None,
            normalized=True,
            config=Options(),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mp_fit": 1}, "mp_fit must be True or False"),
        ({"tw_multiplier": 0.0}, "tw_multiplier must be a positive"),
        ({"tw_multiplier": math.nan}, "tw_multiplier must be a positive"),
        ({"mp_max_ks": 1.5}, r"mp_max_ks must be a number in \(0, 1\)"),
        ({"spike_rel_gap": -0.1}, "spike_rel_gap must be a finite number ≥ 0"),
        ({"bulk_decay_share": 0.0}, r"bulk_decay_share must be a number in \(0, 1\)"),
        ({"heavy_share": 0.01}, "heavy_share=0.01 is below bulk_decay_share"),
        ({"rank_collapse_share": True}, "rank_collapse_share must be"),
        ({"heavy_alpha_max": 1.0}, "heavy_alpha_max must be a finite number > 1"),
        ({"over_trained_alpha": 7.0}, "over_trained_alpha < under_trained_alpha"),
        ({"spurious_alpha": 5.0}, "under_trained_alpha ≤ spurious_alpha"),
        ({"min_tail": 1}, "min_tail must be None or an integer ≥ 2"),
        ({"seed": -1}, "seed must be an integer ≥ 0"),
        ({"seed": 1.5}, "seed must be an integer ≥ 0"),
        ({"bootstrap": 5}, r"bootstrap must be 0 \(off\) or an integer ≥ 10"),
        ({"bootstrap_method": "jackknife"}, "bootstrap_method='jackknife' is not valid"),
        ({"ci_level": 0.0}, r"ci_level must be a number in \(0, 1\)"),
        ({"max_fingers": 0}, "max_fingers must be a positive integer"),
        ({"fingers_alpha_drop": 0}, "fingers_alpha_drop must be a positive"),
        ({"p_threshold": 1.0}, r"p_threshold must be a number in \(0, 1\)"),
        ({"detx": "yes"}, "detx must be True or False"),
    ],
)
def test_bad_config_values_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        Options(**kwargs)  # type: ignore[arg-type]


def test_config_parses_enum_strings() -> None:
    assert Options(bootstrap_method="TAIL").bootstrap_method == BootstrapMethod.TAIL
