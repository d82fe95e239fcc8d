"""Alarms: the pure rule on hand-made rows, and first firings recorded once by the monitor on
weights built to trip each alarm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from weightspectra.training import AlarmKind, AlarmRules, Monitor, check_alarms, read_run


def kinds(rows: list[dict[str, object]], diagnostics: dict[str, object] | None = None,
          **rules: int) -> list[tuple[str, str]]:  # fmt: skip
    alarms = check_alarms(rows, diagnostics or {}, AlarmRules(**rules), step=7)  # type: ignore[arg-type]
    assert all(a.step == 7 for a in alarms)
    return [(a.kind.value, a.layer) for a in alarms]


def test_low_alpha_needs_traps() -> None:
    assert kinds([{"name": "a", "alpha": 1.8, "num_traps": 3}]) == [("alpha-low-traps", "a")]
    assert kinds([{"name": "a", "alpha": 1.8, "num_traps": 0}]) == []
    assert kinds([{"name": "a", "alpha": 1.8, "num_traps": None}]) == []  # randomize off
    assert kinds([{"name": "a", "alpha": 2.2, "num_traps": 3}]) == []
    assert kinds([{"name": "a", "alpha": float("nan"), "num_traps": 3}]) == []


def test_high_alpha_only_late() -> None:
    rows = [{"name": "a", "alpha": 6.5}]
    assert kinds(rows) == []  # no late step known: off
    assert kinds(rows, late_step=8) == []
    assert kinds(rows, late_step=7) == [("alpha-high-late", "a")]
    assert kinds([{"name": "a", "alpha": 5.9}], late_step=0) == []


def test_rank_and_scale_collapse() -> None:
    rows = [{"name": "a", "phase": "rank-collapse", "zero_share": 0.5}, {"name": "b"}]
    diagnostics = {"scale_collapse": [{"name": "b", "log_spectral_norm": -3.0}]}
    assert kinds(rows, diagnostics) == [("rank-collapse", "a"), ("scale-collapse", "b")]


@pytest.mark.filterwarnings("ignore:tiny negative Gram eigenvalues")
def test_monitor_records_first_firing_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gaussian = {f"block{i}.weight": rng.standard_normal((200, 100)) for i in range(4)}
    heavy = rng.standard_t(1.2, size=(200, 100))  # α < 2, huge entries survive shuffling
    low_rank = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 100))
    steps = {
        1: dict(gaussian),
        2: {**gaussian, "block0.weight": heavy, "block3.weight": 1e-4 * gaussian["block3.weight"]},
        3: {**gaussian, "block0.weight": heavy, "block1.weight": low_rank},
    }
    with Monitor(tmp_path, every=1, late_step=3) as monitor:
        for step, weights in steps.items():
            monitor.step(weights, step=step)
    run = read_run(tmp_path)
    events = {(a.kind, a.layer): a.step for a in run.events}
    assert events[(AlarmKind.OVER_TRAINED_TRAPS, "block0")] == 2
    assert events[(AlarmKind.SCALE_COLLAPSE, "block3")] == 2
    assert events[(AlarmKind.RANK_COLLAPSE, "block1")] == 3
    assert len(run.events) == len(events)  # each (kind, layer) once, at its first step
    (trap,) = [a for a in run.events if a.kind is AlarmKind.OVER_TRAINED_TRAPS]
    record = next(r for r in run.layers if r["step"] == 2 and r["name"] == "block0")
    assert trap.value == pytest.approx(record["alpha"]) and record["num_traps"] > 0
    # a Gaussian layer's α is large: at the late step 3 it fires for the Gaussian layers only
    late = {a.layer for a in run.events if a.kind is AlarmKind.LATE_HIGH_ALPHA}
    high = {
        r["name"] for r in run.layers
        if r["step"] == 3 and r["alpha"] is not None and r["alpha"] > 6
    }  # fmt: skip
    assert late == high and high
    assert all(a.step == 3 for a in run.events if a.kind is AlarmKind.LATE_HIGH_ALPHA)
    # resuming does not fire again what already fired
    with Monitor(tmp_path, every=1, late_step=3) as monitor:
        monitor.step(steps[3], step=4)
    assert len(read_run(tmp_path).events) == len(run.events)
