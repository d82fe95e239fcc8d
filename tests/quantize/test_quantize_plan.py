"""The bit ILP against exhaustive search, constraints, and sensitivity tables."""

from __future__ import annotations

import functools
import itertools
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from weightspectra.curvature import HessianOperator  # noqa: E402
from weightspectra.errors import InputError, NumericalWarning, OptionError  # noqa: E402
from weightspectra.quantize import (  # noqa: E402
    PlanError,
    alpha_importance,
    count_macs,
    damage_correlation,
    make_problem,
    plan_bits,
    quantization_error,
    sensitivity_table,
    solve_exhaustive,
    solve_milp,
    uniform_plan,
)

CE = nn.functional.cross_entropy
WIDTHS = [2, 3, 4, 8]


def _random_problem(seed: int, tie: bool, pin: bool, bops: bool):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 1000, size=4)
    # Damage falls with width for each layer, at layer-specific rates.
    omega = (
        rng.uniform(0.1, 10, size=(4, 1))
        * 4.0 ** (-np.arange(4))[None, :]
        * rng.uniform(0.5, 1.5, (4, 4))
    )
    budget = rng.uniform(2.2, 6.0) * sizes.sum()
    allowed = np.ones((4, 4), dtype=bool)
    if pin:
        allowed[0] = [False, False, False, True]
    groups = [[1, 2]] if tie else []
    extra = []
    if bops:
        macs = rng.uniform(1, 100, size=4)
        extra.append((np.outer(macs, WIDTHS) * 8, float(rng.uniform(3, 6) * 8 * macs.sum())))
    return make_problem(omega, sizes, WIDTHS, budget, allowed, groups, extra)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("tie", "pin", "bops"),
    [(False, False, False), (True, True, False), (False, False, True), (True, False, True)],
)
def test_milp_equals_exhaustive_search(seed: int, tie: bool, pin: bool, bops: bool) -> None:
    problem = _random_problem(seed, tie, pin, bops)
    try:
        oracle = solve_exhaustive(problem)
    except PlanError:
        with pytest.raises(PlanError, match="no bit assignment meets the budget"):
            solve_milp(problem)
        return
    got = solve_milp(problem)
    rows = np.arange(4)
    assert problem.omega[rows, got].sum() == pytest.approx(
        problem.omega[rows, oracle].sum(), rel=1e-9
    )
    assert problem.cost[rows, got].sum() <= problem.budget * (1 + 1e-9)
    if tie:
        assert got[1] == got[2]
    if pin:
        assert got[0] == 3


def test_exhaustive_is_a_true_oracle() -> None:
    # Independent brute force written directly over width tuples.
    problem = _random_problem(99, False, False, False)
    best = min(
        (
            combo
            for combo in itertools.product(range(4), repeat=4)
            if sum(problem.cost[i, k] for i, k in enumerate(combo)) <= problem.budget
        ),
        key=lambda combo: sum(problem.omega[i, k] for i, k in enumerate(combo)),
    )
    assert list(solve_exhaustive(problem)) == list(best)


@functools.lru_cache(maxsize=1)
def _tiny_classifier() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long()
    net = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 10), nn.Tanh(), nn.Linear(10, 3)
    ).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        CE(net(x), y).backward()
        opt.step()
    net.eval()
    return net, [(x[:128], y[:128]), (x[128:], y[128:])]


def test_sensitivity_table_matches_formula_and_exact_traces() -> None:
    net, data = _tiny_classifier()
    tab = sensitivity_table(
        net,
        loss_fn=CE,
        batches=data,
        seed=1,
        trace_options={"rtol": 0.05, "layer_rtol": 0.1, "max_probes": 400},
    )
    assert tab.names == ["0", "2", "4"]
    H = HessianOperator(net, CE, data, params=[f"{n}.weight" for n in tab.names])
    exact = np.column_stack([H.matvec(e) for e in np.eye(H.dim)])
    for layer in tab.layers:
        s = H.param_slices[f"{layer.name}.weight"]
        true = np.trace(exact[s, s])
        assert abs(layer.trace - true) <= 4 * layer.trace_stderr
        w = dict(net.named_modules())[layer.name].weight
        for b in tab.bits:
            naive = (
                max(layer.trace, 0) / w.numel() * float(((w - _naive_q(w, b)) ** 2).sum().detach())
            )
            assert layer.omega_hessian(b) == pytest.approx(naive, rel=1e-9)
            assert layer.omega_alpha(b) == pytest.approx(
                layer.importance * quantization_error(w, b) / float((w.detach() ** 2).sum()),
                rel=1e-12,
            )
    om = tab.omega("hessian")
    assert om.shape == (3, 4) and np.all(np.diff(om, axis=1) < 0)
    head = tab.layers[-1]  # the 3 × 10 head has 3 eigenvalues: no usable α, and the row says so
    assert np.isnan(head.alpha) and "α fit failed" in head.note and head.importance == 1.5
    assert "omega_h@2" in tab.table()


def _naive_q(w: torch.Tensor, b: int) -> torch.Tensor:
    qmax = 2 ** (b - 1) - 1
    w = w.detach()
    out = torch.empty_like(w)
    for c in range(w.shape[0]):
        s = w[c].abs().max() / qmax
        out[c] = torch.clamp(torch.round(w[c] / s), -qmax, qmax) * s
    return out


def test_plan_bits_respects_budget_pins_and_ties() -> None:
    net, data = _tiny_classifier()
    tab = sensitivity_table(net, loss_fn=CE, batches=data, seed=0)
    sizes = dict(zip(tab.names, tab.sizes, strict=True))
    for avg in (2.5, 3.0, 4.0):
        for kind in ("hessian", "alpha"):
            plan = plan_bits(tab, avg_bits=avg, sensitivity=kind)
            assert plan.avg_bits <= avg + 1e-12
            assert plan.size_bits == sum(sizes[n] * b for n, b in plan.bits.items())
            ex = plan_bits(tab, avg_bits=avg, sensitivity=kind, solver="exhaustive")
            assert ex.predicted_damage == pytest.approx(plan.predicted_damage, rel=1e-9)
    pinned = plan_bits(tab, avg_bits=5.0, pinned={"0": 8, "4": 8})
    assert pinned.bits["0"] == 8 and pinned.bits["4"] == 8
    tied = plan_bits(tab, avg_bits=3.0, tied=[["0", "2"]])
    assert tied.bits["0"] == tied.bits["2"]
    macs = count_macs(net, data[0][0])
    assert macs == {"0": 8 * 16, "2": 16 * 10, "4": 10 * 3}
    capped = plan_bits(tab, avg_bits=8.0, macs=macs, bops_budget=3.0 * 8 * sum(macs.values()))
    assert capped.bops is not None and capped.bops <= 3.0 * 8 * sum(macs.values())
    assert uniform_plan(tab, 2.5).bits == dict.fromkeys(tab.names, 2)


def test_plan_bad_inputs() -> None:
    net, data = _tiny_classifier()
    tab = sensitivity_table(net, loss_fn=CE, batches=data, seed=0)
    with pytest.raises(PlanError, match="smallest allowed assignment needs"):
        plan_bits(tab, avg_bits=1.5)
    with pytest.raises(PlanError, match="smallest allowed assignment needs"):
        plan_bits(tab, avg_bits=2.5, pinned={"2": 8}, solver="exhaustive")
    with pytest.raises(OptionError, match="exactly one of avg_bits or size_budget_bits"):
        plan_bits(tab)
    with pytest.raises(InputError, match="'fc' is not a layer of the table"):
        plan_bits(tab, avg_bits=3, pinned={"fc": 8})
    with pytest.raises(OptionError, match="not widths of the table"):
        plan_bits(tab, avg_bits=3, candidates=[5])
    with pytest.raises(OptionError, match="bops_budget needs macs"):
        plan_bits(tab, avg_bits=3, bops_budget=1e6)
    with pytest.raises(OptionError, match="sensitivity='hawq' is not valid"):
        plan_bits(tab, avg_bits=3, sensitivity="hawq")
    free = sensitivity_table(net)
    assert not free.has_hessian
    with pytest.raises(InputError, match="no Hessian traces"):
        plan_bits(free, avg_bits=3)
    with pytest.raises(InputError, match="give both loss_fn and batches"):
        sensitivity_table(net, loss_fn=CE)
    with pytest.raises(OptionError, match="spread must be in"):
        sensitivity_table(net, spread=1.5)
    with pytest.raises(InputError, match="omega has shape"):
        make_problem(np.ones((2, 3)), np.ones(2), WIDTHS, 10.0)


def test_alpha_importance_map() -> None:
    imp = alpha_importance(np.array([2.0, 4.0, 3.0, np.nan]), spread=0.4)
    np.testing.assert_allclose(imp, [1.4, 0.6, 1.0, 1.4])
    np.testing.assert_allclose(alpha_importance(np.array([3.0, 3.0]), 0.4), [1.0, 1.0])


def test_damage_correlation_and_negative_trace_warning() -> None:
    net, data = _tiny_classifier()
    tab = sensitivity_table(net, loss_fn=CE, batches=data, seed=0)
    perfect = damage_correlation(net, CE, data, tab, measured=tab.omega() * 3.0)
    assert perfect.spearman == pytest.approx(1.0) and perfect.kendall == pytest.approx(1.0)
    real = damage_correlation(net, CE, data, tab)
    assert -1.0 <= real.spearman <= 1.0 and len(real.pairs) == 12
    assert real.spearman > 0.5  # more bits means less damage for every layer
    with pytest.raises(InputError, match="measured has shape"):
        damage_correlation(net, CE, data, tab, measured=np.ones(3))
    broken = tab.omega().copy()
    broken[1, 2] = np.inf
    name, bits = tab.names[1], tab.bits[2]
    with pytest.raises(InputError, match=rf"layer '{re.escape(name)}' at {bits} bits .* finite"):
        damage_correlation(net, CE, data, tab, measured=broken)

    # Far from a minimum the trace can be negative: warned about, never silently used.
    def concave(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -CE(out, t)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        neg = sensitivity_table(net, loss_fn=concave, batches=data, seed=0)
    assert any(issubclass(w.category, NumericalWarning) for w in caught)
    assert all(layer.omega_hessian(2) >= 0 for layer in neg.layers)


def test_plan_bits_takes_a_given_omega() -> None:
    """A measured Ω (here a hand-made one that makes 2 bits ruinous for layer "2") steers the
    plan; the plan equals the exhaustive optimum of that Ω."""
    net, data = _tiny_classifier()
    tab = sensitivity_table(net, loss_fn=CE, batches=data, seed=0)
    omega = np.array([[1.0, 0.1, 0.01, 0.0]] * len(tab.names))
    omega[tab.names.index("2"), 0] = 1e6  # ternary layer "2" would be a disaster
    plan = plan_bits(tab, avg_bits=3.0, omega=omega)
    assert plan.bits["2"] >= 3 and plan.sensitivity == "given"
    problem = make_problem(omega, tab.sizes, list(tab.bits), 3.0 * float(tab.sizes.sum()))
    best = solve_exhaustive(problem)
    assert plan.bits == {n: int(tab.bits[k]) for n, k in zip(tab.names, best, strict=True)}
    with pytest.raises(InputError, match="one row per layer"):
        plan_bits(tab, avg_bits=3.0, omega=omega[:1])
