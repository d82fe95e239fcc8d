"""ws.allocate: the budget met exactly, the direction of α, pins, exclusions, integer kinds,
and the same plan from the report's JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.allocation import AllocationError, AllocationPlan


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Layers of different shapes and tail weights (Student-t: fewer degrees, heavier tail)."""
    shapes = [(96, 64), (64, 64), (128, 64), (64, 32), (200, 50), (50, 50)]
    dofs = [2.0, 3.0, 5.0, 2.5, 8.0, 4.0]
    model = {
        f"block{i}.fc.weight": rng.standard_t(d, s)
        for i, (s, d) in enumerate(zip(shapes, dofs, strict=True))
    }
    model["embed.weight"] = rng.standard_normal((300, 32))
    model["block0.fc.bias"] = rng.standard_normal(96)
    return model


@pytest.fixture(scope="module")
def report() -> ws.Report:
    return ws.analyze(_model(np.random.default_rng(7)), estimator="farms")


def _mean(plan: AllocationPlan, weight: str = "size") -> float:
    rows = [a for a in plan.layers if a.value is not None]
    w = np.array([a.size if weight == "size" else a.shape[0] + a.shape[1] for a in rows], float)
    v = np.array([a.value for a in rows], float)
    return float(np.sum(w * v) / np.sum(w))


@pytest.mark.parametrize("budget", [0.1, 0.5, 0.7, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("mapping", ["linear", "rank", "uniform"])
@pytest.mark.parametrize("metric", ["alpha", "alpha_farms"])
def test_a_sparsity_plan_meets_its_budget_exactly(
    report: ws.Report, budget: float, mapping: str, metric: str
) -> None:
    plan = ws.allocate(report, budget=budget, metric=metric, mapping=mapping)
    assert _mean(plan) == pytest.approx(budget, abs=1e-12)
    assert plan.achieved == pytest.approx(budget, abs=1e-12)
    assert all(0.0 <= v <= 0.99 for v in plan.values.values())
    if mapping == "uniform":
        assert all(v == pytest.approx(budget, abs=1e-12) for v in plan.values.values())


def test_a_larger_alpha_gets_more_sparsity_fewer_bits_more_rank(report: ws.Report) -> None:
    alpha = {r.name: r.metrics["alpha"] for r in report.analysed if r.layer_type == "dense"}
    by_alpha = sorted(alpha, key=alpha.get)  # type: ignore[arg-type]
    sparsity = ws.allocate(report, budget=0.6).values
    assert [sparsity[n] for n in by_alpha] == sorted(sparsity[n] for n in by_alpha)
    # linear: the gap between the extremes is the spread, the rest in proportion to α
    lo_a, hi_a = alpha[by_alpha[0]], alpha[by_alpha[-1]]
    assert sparsity[by_alpha[-1]] - sparsity[by_alpha[0]] == pytest.approx(0.2, abs=1e-12)
    mid = by_alpha[2]
    share = (alpha[mid] - lo_a) / (hi_a - lo_a)
    assert sparsity[mid] - sparsity[by_alpha[0]] == pytest.approx(0.2 * share, abs=1e-12)
    bits = ws.allocate(report, budget=4, kind="bits", spread=4).values
    assert bits[by_alpha[0]] >= bits[by_alpha[-1]] + 2
    ranks = ws.allocate(report, budget=8, kind="rank").values
    assert ranks[by_alpha[-1]] > ranks[by_alpha[0]]


def test_bounds_clip_and_the_rest_still_meet_the_budget(report: ws.Report) -> None:
    plan = ws.allocate(report, budget=0.8, bounds=(0.75, 0.82), spread=0.5)
    values = plan.values.values()
    assert min(values) == pytest.approx(0.75) and max(values) == pytest.approx(0.82)
    assert _mean(plan) == pytest.approx(0.8, abs=1e-12)
    with pytest.raises(AllocationError, match=r"budgets from 0\.75 to 0\.82 can"):
        ws.allocate(report, budget=0.9, bounds=(0.75, 0.82))


def test_pinned_layers_count_in_the_mean_and_excluded_ones_do_not(report: ws.Report) -> None:
    plan = ws.allocate(report, budget=0.7, pin={"block1.fc": 0.0}, exclude=[r"block5\."])
    roles = {a.name: a.role for a in plan.layers}
    assert roles["block1.fc"] == "pinned" and plan.values["block1.fc"] == 0.0
    assert roles["block5.fc"] == "excluded" and "block5.fc" not in plan.values
    assert roles["embed"] == "excluded" and "embed" not in plan.values  # embeddings by default
    assert "block0.fc.bias" not in roles  # vectors are never planned
    assert _mean(plan) == pytest.approx(0.7, abs=1e-12)
    with_embed = ws.allocate(report, budget=0.7, include_embeddings=True)
    assert "embed" in with_embed.values
    with pytest.raises(AllocationError, match="pin names"):
        ws.allocate(report, budget=0.7, pin={"nope": 0.5})
    with pytest.raises(AllocationError, match="integers"):
        ws.allocate(report, budget=4, kind="bits", pin={"block1.fc": 3.5})


@pytest.mark.parametrize("budget", [2.5, 3.0, 3.7, 4.0, 6.0])
def test_a_bits_plan_is_integer_and_never_above_its_budget(
    report: ws.Report, budget: float
) -> None:
    plan = ws.allocate(report, budget=budget, kind="bits")
    assert all(float(v).is_integer() and 2 <= v <= 8 for v in plan.values.values())
    mean = _mean(plan)
    assert mean <= budget + 1e-12 and plan.achieved == pytest.approx(mean, abs=1e-12)
    sizes = [a.size for a in plan.layers if a.value is not None]
    assert budget - mean < max(sizes) / sum(sizes) + 1e-12  # not one unit of the largest left
    assert plan.bits() == {f"{n}": int(v) for n, v in plan.values.items()}


def test_a_rank_plan_is_weighted_by_in_plus_out_features(report: ws.Report) -> None:
    plan = ws.allocate(report, budget=8, kind="rank")
    mean = _mean(plan, weight="in+out")
    assert mean <= 8 + 1e-12 and 8 - mean < 0.5
    assert all(float(v).is_integer() and v >= 1 for v in plan.values.values())
    small = ws.allocate(report, budget=40, kind="rank", spread=200)
    for a in small.layers:  # never above the layer's smaller side
        if a.value is not None:
            assert a.value <= min(a.shape)


def test_a_model_is_analysed_first(rng: np.random.Generator) -> None:
    model = _model(rng)
    direct = ws.allocate(model, budget=0.6, metric="alpha_farms")
    assert (
        direct.values
        == ws.allocate(
            ws.analyze(model, estimator="farms"), budget=0.6, metric="alpha_farms"
        ).values
    )


def test_the_same_plan_comes_from_the_report_json(report: ws.Report, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    report.to_json(path)
    direct = ws.allocate(report, budget=0.75, metric="alpha_farms")
    again = ws.allocate(path, budget=0.75, metric="alpha_farms")
    assert again.values == direct.values
    text = direct.to_json(tmp_path / "plan.json")
    assert AllocationPlan.from_json(tmp_path / "plan.json") == direct
    assert AllocationPlan.from_json(text) == direct
    assert json.loads(text)["kind"] == "sparsity"


def test_split_rows_share_their_tensor_value(rng: np.random.Generator) -> None:
    # GPT-2's fused c_attn split into q, k, v rows: one tensor, its metric the rows' mean
    model = {
        "h.0.attn.c_attn.weight": rng.standard_t(3, (64, 192)),
        "h.0.mlp.c_fc.weight": rng.standard_t(3, (64, 256)),
    }
    report = ws.analyze(model, split_fused_qkv=True)
    names = [r.name for r in report.analysed]
    assert sum(n.startswith("h.0.attn.c_attn[") for n in names) == 3
    plan = ws.allocate(report, budget=0.5)
    assert set(plan.values) == {"h.0.attn.c_attn", "h.0.mlp.c_fc"}
    parts = [r.metrics["alpha"] for r in report.analysed if r.name.startswith("h.0.attn.c_attn[")]
    (fused,) = [a for a in plan.layers if a.name == "h.0.attn.c_attn"]
    assert fused.metric == pytest.approx(float(np.mean(parts)), rel=1e-12)


def test_missing_metrics_and_bad_arguments_are_refused(report: ws.Report) -> None:
    plain = ws.analyze({"a.weight": np.random.default_rng(0).standard_normal((64, 32))})
    with pytest.raises(AllocationError, match="estimator='farms'"):
        ws.allocate(plain, budget=0.5, metric="alpha_farms")
    with pytest.raises(ws.OptionError, match="kind"):
        ws.allocate(report, budget=0.5, kind="heads")
    with pytest.raises(AllocationError, match=r"sparsity bounds must lie in \[0, 1\)"):
        ws.allocate(report, budget=0.5, bounds=(0.0, 1.0))
    with pytest.raises(ws.UnsupportedInputError):
        ws.allocate(object(), budget=0.5)  # neither a report nor a model
    with pytest.raises(AllocationError, match="finite"):
        ws.allocate(report, budget=math.nan)
    with pytest.raises(AllocationError, match="nothing left"):
        ws.allocate(report, budget=0.5, exclude=["."])


def test_bits_take_only_the_candidates_and_use_the_budget(report: ws.Report) -> None:
    plan = ws.allocate(report, budget=3.0, kind="bits", candidates=(2, 4, 8))
    assert set(plan.values.values()) <= {2.0, 4.0, 8.0}
    assert plan.achieved <= 3.0 + 1e-12
    # the integer plan uses the budget at least as well as rounding every layer down
    free = ws.allocate(report, budget=3.0, kind="bits")
    floor_mean = _mean(ws.allocate(report, budget=3.0, kind="bits", candidates=(2, 3)))
    assert free.achieved >= min(floor_mean, 3.0) - 1e-12
    with pytest.raises(AllocationError, match="no candidate value"):
        ws.allocate(report, budget=3.0, kind="bits", candidates=(16,))


def test_a_group_shares_one_value(rng: np.random.Generator) -> None:
    model = {
        f"layers.{b}.{part}.weight": rng.standard_t(2.0 + b + (part == "up"), (64, 48))
        for b in range(3)
        for part in ("q", "up")
    }
    report = ws.analyze(model)
    plan = ws.allocate(report, budget=0.6, group=r"layers\.(\d+)\.")
    for b in range(3):
        assert plan.values[f"layers.{b}.q"] == plan.values[f"layers.{b}.up"]
    alpha = {r.name: r.metrics["alpha"] for r in report.analysed}
    block = [(alpha[f"layers.{b}.q"] + alpha[f"layers.{b}.up"]) / 2 for b in range(3)]
    order = np.argsort(block)
    values = [plan.values[f"layers.{b}.q"] for b in range(3)]
    assert list(np.argsort(values, kind="stable")) == list(order)  # by the block mean α
    assert _mean(plan) == pytest.approx(0.6, abs=1e-12)


def test_a_small_head_is_noted(rng: np.random.Generator) -> None:
    report = ws.analyze(
        {"body.weight": rng.standard_t(3, (256, 128)), "head.weight": rng.standard_t(3, (10, 128))}
    )
    plan = ws.allocate(report, budget=0.5)
    (head,) = [a for a in plan.layers if a.name == "head"]
    assert "only 10 eigenvalues" in head.note


def test_a_json_that_is_not_a_report_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ws.InputError, match="not a weightspectra report"):
        ws.allocate(path, budget=0.5)
