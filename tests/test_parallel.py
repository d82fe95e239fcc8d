"""Parallel workers: identical results in model order, BLAS budget, ordered map semantics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.analysis import Progress
from weightspectra.errors import OptionError
from weightspectra.runtime.parallel import blas_budget, blas_threads_per_worker, ordered_map


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shapes = [(120, 40), (40, 120), (64, 64), (16, 8, 3, 3), (200, 50), (3, 30), (90, 90)]
    out: dict[str, np.ndarray] = {}
    for i, shape in enumerate(shapes):
        w = rng.standard_t(3.0, size=shape).astype(np.float32)
        out[f"block.{i}.weight"] = w
        out[f"block.{i}.bias"] = np.zeros(shape[0], dtype=np.float32)
    out["block.7.weight"] = np.full((30, 20), np.nan, dtype=np.float32)  # a failed row
    return out


def _same(a: ws.Report, b: ws.Report) -> None:
    assert [r.name for r in a.layers] == [r.name for r in b.layers]
    for x, y in zip(a.layers, b.layers, strict=True):
        assert x == y  # identity, status, reason and metrics, exactly
        if x.evals is None:
            assert y.evals is None
        else:
            np.testing.assert_array_equal(x.evals, y.evals)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_give_identical_results_in_model_order(
    rng: np.random.Generator, workers: int
) -> None:
    model = _model(rng)
    serial = ws.analyze(model)
    parallel = ws.analyze(model, workers=workers)
    _same(serial, parallel)
    assert len(parallel.failed) == 1
    assert parallel.options["workers"] == workers


def test_workers_on_torch_modules_match_serial() -> None:
    pytest.importorskip("torch")
    import models

    for name in ("SmallCNN", "MLP"):
        model = models.build(name, seed=3)
        _same(ws.analyze(model), ws.analyze(model, workers=2))


def test_progress_is_called_in_order_with_workers(rng: np.random.Generator) -> None:
    model = _model(rng)
    seen: list[Progress] = []
    ws.analyze(model, workers=2, progress=seen.append)
    assert [p.done for p in seen] == list(range(1, len(model) + 1))
    assert [p.name for p in seen] == [k.removesuffix(".weight") for k in model]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_workers_raise(bad: object) -> None:
    with pytest.raises(OptionError, match="workers must be a positive integer"):
        ws.Options(workers=bad)  # type: ignore[arg-type]


def test_blas_threads_per_worker_budget() -> None:
    assert blas_threads_per_worker(1, 8, 8) == 8
    assert blas_threads_per_worker(2, 8, 8) == 4
    assert blas_threads_per_worker(3, 8, 8) == 2
    assert blas_threads_per_worker(4, 2, 2) == 1  # never below one thread
    assert blas_threads_per_worker(2, 16, 1) == 1  # a user's pinning is kept
    for workers in range(1, 9):
        assert workers * blas_threads_per_worker(workers, 8, 8) <= 8


def test_blas_budget_sets_and_restores_the_limit() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [
            p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
        ]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library visible to threadpoolctl")
    with blas_budget(2, cores=2) as per_worker:
        assert per_worker == 1
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before
    with blas_budget(1) as unchanged:
        assert unchanged is None
        assert blas_threads() == before


def test_ordered_map_keeps_order_despite_uneven_durations() -> None:
    def slow_first(i: int) -> int:
        time.sleep(0.02 if i % 3 == 0 else 0.0)
        return i * 10

    assert list(ordered_map(slow_first, range(12), workers=3)) == [i * 10 for i in range(12)]


def test_ordered_map_runs_concurrently_and_bounds_in_flight() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def task(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return i

    taken: list[int] = []

    def items() -> object:
        for i in range(20):
            taken.append(i)
            yield i

    out = ordered_map(task, items(), workers=2)
    assert next(out) == 0
    assert len(taken) <= 2 + 1  # workers running, plus one item taken ahead
    assert list(out) == list(range(1, 20))
    assert peak == 2


def test_ordered_map_serial_takes_one_item_ahead() -> None:
    taken: list[int] = []

    def items() -> object:
        for i in range(5):
            taken.append(i)
            yield i

    out = ordered_map(lambda i: i, items(), workers=1)
    assert next(out) == 0
    assert taken == [0, 1]


def test_ordered_map_propagates_errors_and_stops() -> None:
    calls: list[int] = []

    def task(i: int) -> int:
        calls.append(i)
        if i == 3:
            raise ValueError("boom at 3")
        return i

    with pytest.raises(ValueError, match="boom at 3"):
        list(ordered_map(task, range(100), workers=2))
    assert len(calls) < 100  # the queue was cancelled, not drained
