"""The CPU eigensolvers chosen by measurement: every candidate gives the eigenvalues of a matrix
built from known ones, the stored table, the choice (torch's import counted against the work
left), a run's own measurement, and ``weightspectra bench-solvers``."""

from __future__ import annotations

import io
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ortho_group

import weightspectra as ws
from weightspectra.analysis import gram_orders, plan
from weightspectra.backends import solvers
from weightspectra.backends.solvers import (
    ROUTINES,
    SolverPolicy,
    SolverTable,
    available_solvers,
    load_table,
    machine_key,
    save_table,
)
from weightspectra.cli import run
from weightspectra.enums import Precision, Solver
from weightspectra.options import Options
from weightspectra.sources import open_model

CANDIDATES = available_solvers(with_mkl=True)


@pytest.fixture(autouse=True)
def own_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables stored here stay here: other tests see no measured table."""
    monkeypatch.setenv("WEIGHTSPECTRA_CACHE_DIR", str(tmp_path / "cache"))


def known_gram(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric matrix Q·diag(λ)·Qᵀ with λ chosen (log-spread over 6 decades), and λ."""
    rng = np.random.default_rng(seed)
    evals = np.sort(10.0 ** rng.uniform(-3, 3, n))
    q = ortho_group.rvs(n, random_state=seed)
    return (q * evals) @ q.T, evals


@pytest.mark.parametrize("solver", CANDIDATES, ids=lambda s: s.value)
@pytest.mark.parametrize("n", [5, 64, 400])
def test_every_candidate_finds_the_chosen_eigenvalues(solver: Solver, n: int) -> None:
    gram, evals = known_gram(n, seed=n)
    junk = gram.copy()
    junk[np.triu_indices(n, 1)] = 1e9  # only the lower triangle may be read
    got = ROUTINES[solver](junk)
    np.testing.assert_allclose(got, evals, rtol=0, atol=1e-12 * evals[-1])
    # float32 input: float32 accuracy (relative to λ_max, about n·eps32)
    got32 = ROUTINES[solver](gram.astype(np.float32))
    np.testing.assert_allclose(got32, evals, rtol=0, atol=2e-5 * evals[-1])


def test_the_two_stage_routine_is_found_in_numpys_openblas() -> None:
    # numpy ≥ 2 wheels bundle scipy-openblas, which exports LAPACKE's syevd_2stage
    assert Solver.TWO_STAGE in available_solvers(with_mkl=False)


def _table(seconds: dict[int, dict[Solver, float]], mkl_import: float = 1.0) -> SolverTable:
    return SolverTable(machine_key(1), 1, {Precision.FLOAT64: seconds}, {Solver.MKL: mkl_import})


def test_table_round_trip_and_estimates() -> None:
    table = _table({1024: {Solver.NUMPY: 0.1, Solver.MKL: 0.05}, 4096: {Solver.NUMPY: 6.0}})
    again = SolverTable.from_json(json.loads(json.dumps(table.to_json())))
    assert again == table
    # nearest class in log order, scaled by the cube of the order
    assert table.estimate(Solver.NUMPY, 2048, Precision.FLOAT64) == pytest.approx(0.1 * 8)
    assert table.estimate(Solver.NUMPY, 3000, Precision.FLOAT64) == pytest.approx(
        6.0 * (3000 / 4096) ** 3
    )
    assert table.estimate(Solver.MKL, 4096, Precision.FLOAT64) is None  # not measured there
    assert table.estimate(Solver.NUMPY, 1024, Precision.FLOAT32) is None
    with pytest.raises(ValueError, match="format"):
        SolverTable.from_json({"format": 99})


def test_stored_tables_are_per_thread_count_and_corrupt_ones_ignored() -> None:
    table = _table({512: {Solver.NUMPY: 0.01}})
    path = save_table(table)
    assert path is not None and path.parent == solvers.cache_folder()
    assert load_table(1) == table
    assert load_table(2) is None  # another thread count: another key
    path.write_text("{not json")
    assert load_table(1) is None


def test_a_table_of_the_previous_format_is_measured_again() -> None:
    table = _table({512: {Solver.NUMPY: 0.01}})
    path = save_table(table)
    assert path is not None
    data = json.loads(path.read_text())
    data["format"] = 1  # one timed import, possibly a cold one
    path.write_text(json.dumps(data))
    assert load_table(1) is None


def test_torch_import_cost_is_the_median_of_fresh_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cold first import (libraries read from disk) must not stand for every later run."""
    printed = iter(["4.3\n", "0.9\n", "1.1\n"])
    calls: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=next(printed), stderr="")

    monkeypatch.setattr(solvers.subprocess, "run", fake_run)
    assert solvers.torch_import_seconds(3) == pytest.approx(1.1)
    assert len(calls) == 3 and all("import torch" in c[-1] for c in calls)


def test_torch_import_cost_is_none_when_a_process_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(solvers.subprocess, "run", failing)
    assert solvers.torch_import_seconds(3) is None


def test_choice_counts_torch_import_against_the_work_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(solvers, "_torch_loaded", lambda: False)
    fast_mkl = {
        2048: {Solver.NUMPY: 1.0, Solver.TWO_STAGE: 0.9, Solver.MKL: 0.5},
        4096: {Solver.NUMPY: 8.0, Solver.TWO_STAGE: 5.5, Solver.MKL: 4.0},
    }
    table = _table(fast_mkl, mkl_import=2.0)

    def policy(work: dict[int, int]) -> SolverPolicy:
        return SolverPolicy(work, load=lambda threads: table)

    # one 2048 matrix saves 0.4 s over the two-stage solver: not worth a 2 s import
    assert policy({2048: 1}).choose(2048, Precision.FLOAT64, 1) is Solver.TWO_STAGE
    # ten of them save 4 s: worth it
    assert policy({2048: 10}).choose(2048, Precision.FLOAT64, 1) is Solver.MKL
    # torch already imported: the fastest, whatever the work
    monkeypatch.setattr(solvers, "_torch_loaded", lambda: True)
    assert policy({2048: 1}).choose(2048, Precision.FLOAT64, 1) is Solver.MKL
    # MKL not allowed (a multithreaded forked worker): the fastest of the others
    assert (
        policy({2048: 10}).choose(2048, Precision.FLOAT64, 1, allow_mkl=False) is Solver.TWO_STAGE
    )
    # below the smallest order that is worth a choice: numpy
    assert policy({100: 10}).choose(100, Precision.FLOAT64, 1) is Solver.NUMPY


def test_each_call_takes_one_matrix_off_the_work_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(solvers, "_torch_loaded", lambda: False)
    table = _table(
        {512: {Solver.NUMPY: 0.5, Solver.MKL: 0.1, Solver.TWO_STAGE: 0.6}}, mkl_import=0.7
    )
    used: list[Solver] = []
    for solver in Solver:
        monkeypatch.setitem(ROUTINES, solver, lambda g, s=solver: used.append(s) or np.zeros(1))
    policy = SolverPolicy({512: 2}, load=lambda threads: table)
    gram = np.eye(512)
    policy(gram)  # two left: saving 0.8 s > 0.7 s import
    policy(gram)  # one left: saving 0.4 s < 0.7 s, torch still not imported
    assert used == [Solver.MKL, Solver.NUMPY]
    assert policy.chosen == {Solver.MKL: 1, Solver.NUMPY: 1}


def test_without_a_table_the_static_rule_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(solvers, "_mkl_usable", lambda: True)
    policy = SolverPolicy({}, load=lambda threads: None)
    assert policy.choose(solvers.STATIC_MKL_MIN_ORDER - 1, Precision.FLOAT64, 1) is Solver.NUMPY
    assert policy.choose(solvers.STATIC_MKL_MIN_ORDER, Precision.FLOAT64, 1) is Solver.MKL


def test_a_long_run_measures_the_classes_it_needs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[tuple[int, ...]] = []

    def fake_measure(
        orders: list[int], precisions: tuple[Precision, ...], **kw: object
    ) -> SolverTable:
        timed.append(tuple(orders))
        base = kw["base"] or _table({})
        assert isinstance(base, SolverTable)
        for order in orders:
            base = base.with_class(precisions[0], order, {Solver.NUMPY: 1.0})
        return base

    monkeypatch.setattr(solvers, "measure", fake_measure)
    stored = solvers.cache_folder() / f"solvers-{machine_key(1)}.json"
    stored.unlink(missing_ok=True)
    # a few matrices: measuring would cost more than it could save
    assert SolverPolicy({1024: 3}).prepare(1) is None and timed == []
    # 200 matrices of order 4000 and 100 of 1000: both classes measured, stored, then reused
    table = SolverPolicy({4000: 200, 1000: 100}).prepare(1)
    assert timed == [(1024, 4096)] and table is not None
    assert load_table(1) == table
    SolverPolicy({4000: 200}).prepare(1)
    assert timed == [(1024, 4096)]  # the stored table has it now


def test_gram_orders_of_a_plan() -> None:
    rng = np.random.default_rng(0)
    model = {
        "a.weight": rng.standard_normal((50, 20)),
        "b.weight": rng.standard_normal((30, 60)),
        "c.weight": rng.standard_normal((40, 20)),
        "tiny.weight": rng.standard_normal((2, 2)),  # below min_evals: skipped
    }
    options = Options()
    plans = plan(open_model(model), options)
    assert gram_orders(plans, options) == {20: 2, 30: 1}
    randomized = Options(randomize=True)
    assert gram_orders(plan(open_model(model), randomized), randomized) == {20: 4, 30: 2}


@pytest.mark.parametrize("solver", CANDIDATES, ids=lambda s: s.value)
def test_a_run_gives_the_same_numbers_with_every_solver(
    solver: Solver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    model = {f"l{i}.weight": rng.standard_t(3, (700, 420 + 10 * i)) for i in range(3)}
    reference = ws.analyze(model)
    monkeypatch.setattr(SolverPolicy, "choose", lambda self, *a, **k: solver)
    ours = ws.analyze(model)
    for got, ref in zip(ours.analysed, reference.analysed, strict=True):
        assert got.evals is not None and ref.evals is not None
        np.testing.assert_allclose(got.evals, ref.evals, rtol=0, atol=1e-12 * ref.evals[-1])
        assert got.metrics["matrix_rank"] == ref.metrics["matrix_rank"]


def test_bench_solvers_prints_and_stores_the_table() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run(["bench-solvers", "--orders", "16", "48", "--no-mkl", "--repeats", "1"], out, err)
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["precision", "order", "numpy", "s"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("float64", "16"),
        ("float64", "48"),
        ("float32", "16"),
        ("float32", "48"),
    ]
    assert all(math.isfinite(float(r[2])) for r in rows)
    assert "stored the table in" in err.getvalue()
    stored = list(solvers.cache_folder().glob("solvers-*.json"))
    assert stored and any(
        48 in SolverTable.from_json(json.loads(p.read_text())).classes(Precision.FLOAT32)
        for p in stored
    )
    code = run(["bench-solvers", "--orders", "1"], out, err)
    assert code == 2 and "--orders must be" in err.getvalue()


def test_the_policy_sees_the_blas_thread_count_in_force() -> None:
    """The cached controller follows threadpool limits set after it was made."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    policy = SolverPolicy({}, load=lambda threads: None)
    from weightspectra.runtime.parallel import blas_threads_now

    assert policy._blas_threads() == blas_threads_now()
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert policy._blas_threads() == 1 == blas_threads_now()


def test_a_class_far_from_the_order_gives_no_estimate() -> None:
    from weightspectra.backends.solvers import ESTIMATE_MAX_RATIO, SolverTable
    from weightspectra.enums import Precision, Solver

    table = SolverTable("k", 2, {Precision.FLOAT64: {512: {Solver.NUMPY: 0.01}}})
    assert table.estimate(Solver.NUMPY, 1024, Precision.FLOAT64) == pytest.approx(0.08)
    assert ESTIMATE_MAX_RATIO == 2.0
    # a 512 measurement says nothing about which solver is fastest at 4096
    assert table.estimate(Solver.NUMPY, 4096, Precision.FLOAT64) is None
