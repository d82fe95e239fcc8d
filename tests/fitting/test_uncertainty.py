"""Bootstrap interval of α: coverage on seeded Pareto samples, determinism, option checks."""

from __future__ import annotations

import numpy as np
import pytest

from weightspectra.errors import OptionError
from weightspectra.fitting.powerlaw import fit_power_law
from weightspectra.fitting.uncertainty import BootstrapMethod, alpha_bootstrap_ci


def test_full_bootstrap_covers_true_alpha_at_nominal_90_percent() -> None:
    true_alpha = 2.5  # density ∝ x^(−2.5) for numpy's pareto(1.5) + 1
    covered = 0
    for seed in range(100):
        x = np.random.default_rng(seed).pareto(1.5, 100) + 1.0
        ci = alpha_bootstrap_ci(
            x, fit_power_law(x), replicates=200, level=0.9, seed=seed, method=BootstrapMethod.FULL
        )
        covered += ci.low <= true_alpha <= ci.high
    assert covered >= 85


def test_tail_bootstrap_brackets_alpha_and_is_seeded() -> None:
    x = np.random.default_rng(1).pareto(2.0, 3000) + 1.0
    fit = fit_power_law(x)
    a = alpha_bootstrap_ci(x, fit, seed=7, method=BootstrapMethod.TAIL)
    b = alpha_bootstrap_ci(x, fit, seed=7, method=BootstrapMethod.TAIL)
    c = alpha_bootstrap_ci(x, fit, seed=8, method=BootstrapMethod.TAIL)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < fit.alpha < a.high
    # the tail scheme's width is close to the analytic 90 % width 2·1.645·(α−1)/√m
    analytic = 2 * 1.645 * (fit.alpha - 1.0) / np.sqrt(fit.num_pl_spikes)
    assert a.high - a.low == pytest.approx(analytic, rel=0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"replicates": 5}, "integer ≥ 10"),
        ({"replicates": True}, "integer ≥ 10"),
        ({"level": 1.0}, r"in \(0, 1\)"),
        ({"level": "0.9"}, r"in \(0, 1\)"),
    ],
)
def test_bad_options_raise(kwargs: dict[str, object], match: str) -> None:
    x = np.random.default_rng(0).pareto(1.5, 200) + 1.0
    with pytest.raises(OptionError, match=match):
        alpha_bootstrap_ci(x, fit_power_law(x), **kwargs)  # type: ignore[arg-type]
