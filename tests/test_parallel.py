"""Parallel workers: identical results in model order, BLAS budget, ordered map semantics."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.analysis import Progress, _use_processes, plan, tensor_cost
from weightspectra.backends import Backend
from weightspectra.errors import OptionError
from weightspectra.runtime import parallel
from weightspectra.runtime.parallel import (
    blas_budget,
    blas_threads_per_worker,
    fork_available,
    ordered_map,
    ordered_process_map,
)
from weightspectra.sources import open_model

needs_fork = pytest.mark.skipif(not fork_available(), reason="worker processes need fork")


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
        # identity, status, reason and metrics, exactly (NaN equal to NaN: rows from worker
        # processes hold their own NaN objects)
        np.testing.assert_equal(x.row(), y.row())
        assert x.shape == y.shape and x.key == y.key
        if x.evals is None:
            assert y.evals is None
        else:
            np.testing.assert_array_equal(x.evals, y.evals)


KINDS = ["threads", pytest.param("processes", marks=needs_fork), "auto"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_give_identical_results_in_model_order(
    rng: np.random.Generator, workers: int, kind: str
) -> None:
    model = _model(rng)
    serial = ws.analyze(model)
    par = ws.analyze(model, workers=workers, parallel=kind)
    _same(serial, par)
    assert len(par.failed) == 1
    assert par.options["workers"] == workers
    assert par.options["parallel"] == kind


@pytest.mark.parametrize("kind", KINDS)
def test_workers_on_torch_modules_match_serial(kind: str) -> None:
    pytest.importorskip("torch")
    import models

    for name in ("SmallCNN", "MLP"):
        model = models.build(name, seed=3)
        _same(ws.analyze(model), ws.analyze(model, workers=2, parallel=kind))


@needs_fork
def test_worker_processes_read_a_safetensors_file(rng: np.random.Generator, tmp_path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    model = {k: v for k, v in _model(rng).items() if np.isfinite(v).all()}
    path = tmp_path / "m.safetensors"
    st.save_file(model, str(path))
    _same(ws.analyze(path), ws.analyze(path, workers=2, parallel="processes"))


@pytest.mark.parametrize("kind", KINDS)
def test_progress_is_called_in_order_with_workers(rng: np.random.Generator, kind: str) -> None:
    model = _model(rng)
    seen: list[Progress] = []
    ws.analyze(model, workers=2, parallel=kind, progress=seen.append)
    assert [p.done for p in seen] == list(range(1, len(model) + 1))
    assert [p.name for p in seen] == [k.removesuffix(".weight") for k in model]


def test_bad_parallel_option_lists_the_choices() -> None:
    with pytest.raises(OptionError, match=r"auto.*processes.*threads"):
        ws.Options(parallel="forks")  # type: ignore[arg-type]


def test_auto_uses_processes_only_on_the_cpu_with_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    auto = ws.Options(workers=2)
    cpu, gpu = Backend("numpy"), Backend("torch-cuda", on_host=False)
    assert _use_processes(auto, gpu) is False  # a GPU is shared by threads, never forked
    assert _use_processes(ws.Options(workers=2, parallel="threads"), cpu) is False
    with pytest.raises(OptionError, match=r"GPU.*parallel='threads'"):
        _use_processes(ws.Options(workers=2, parallel="processes"), gpu)
    monkeypatch.setattr("weightspectra.analysis.fork_available", lambda: False)
    assert _use_processes(auto, cpu) is False
    with pytest.raises(OptionError, match="fork is missing"):
        _use_processes(ws.Options(workers=2, parallel="processes"), cpu)


def test_largest_tensors_are_costed_first(rng: np.random.Generator) -> None:
    model = {
        "small.weight": rng.standard_normal((64, 32)),
        "embed.weight": rng.standard_normal((3000, 64)),
        "mid.weight": rng.standard_normal((256, 128)),
        "mid.bias": rng.standard_normal(256),
    }
    options = ws.Options()
    costs = {tp.entry.key: tensor_cost(tp, options) for tp in plan(open_model(model), options)}
    assert costs["mid.bias"] == 0.0  # skipped: stays in the parent
    assert costs["embed.weight"] > costs["mid.weight"] > costs["small.weight"] > 0


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


#: Seconds a synchronising test waits for an event that a correct implementation sets at once:
#: only reached when the code under test is broken (the test then fails instead of hanging).
SYNC_TIMEOUT = 30.0


def test_ordered_map_keeps_order_despite_uneven_durations() -> None:
    finished: list[int] = []
    done = [threading.Event() for _ in range(12)]
    lock = threading.Lock()

    def slow_first(i: int) -> int:
        if i % 3 == 0:  # finishes only after its successor has: out of order, for certain
            assert done[i + 1].wait(SYNC_TIMEOUT), f"task {i + 1} never ran beside task {i}"
        with lock:
            finished.append(i)
        done[i].set()
        return i * 10

    assert list(ordered_map(slow_first, range(12), workers=3)) == [i * 10 for i in range(12)]
    assert finished != sorted(finished)  # they did finish out of order
    for i in range(0, 12, 3):
        assert finished.index(i + 1) < finished.index(i)


def test_ordered_map_runs_concurrently_and_bounds_in_flight() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0
    # Two tasks must be inside at once to pass: proof of concurrency without timing.
    pair = threading.Barrier(2, timeout=SYNC_TIMEOUT)

    def task(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        pair.wait()
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


_FORK = multiprocessing.get_context("fork") if fork_available() else None


def _shared_counter() -> Any:
    """A lock-protected int shared with forked workers (they inherit it)."""
    assert _FORK is not None
    return _FORK.Value("i", 0)


def _bump(counter: Any) -> int:
    with counter.get_lock():
        counter.value += 1
        return int(counter.value)


def _peek(counter: Any) -> int:
    """The counter's value without its lock: a child terminated inside :func:`_bump` may have
    died holding it."""
    return int(counter.get_obj().value)


@needs_fork
def test_ordered_process_map_runs_in_worker_processes_in_order() -> None:
    assert _FORK is not None
    order = list(reversed(range(9)))  # started last-first, still yielded first-first
    seven_done = _FORK.Event()
    ticket = _shared_counter()  # the order in which tasks finish

    def task(i: int) -> tuple[int, int, int]:
        if i == 8:  # started first; finishes only after task 7, run by the other worker
            assert seven_done.wait(SYNC_TIMEOUT), "task 7 never ran beside task 8"
        finished = _bump(ticket)
        if i == 7:
            seven_done.set()
        return i, os.getpid(), finished

    out = list(ordered_process_map(task, 9, workers=2, order=order))
    assert [i for i, _, _ in out] == list(range(9))
    finish = {i: t for i, _, t in out}
    assert finish[7] < finish[8]  # out of order in time, in order in the output
    pids = {pid for _, pid, _ in out}
    assert os.getpid() not in pids and len(pids) == 2
    assert multiprocessing.active_children() == []  # the pool is gone


@needs_fork
def test_ordered_process_map_is_concurrent() -> None:
    assert _FORK is not None
    # Each task waits until another one is inside too: two workers must run at once.
    pair = _FORK.Barrier(2, timeout=SYNC_TIMEOUT)

    def task(i: int) -> tuple[int, int]:
        pair.wait()
        return i, os.getpid()

    out = list(ordered_process_map(task, 4, workers=2))
    assert [i for i, _ in out] == list(range(4))
    assert len({pid for _, pid in out}) == 2


def _blocked_tasks() -> tuple[Any, Any, Any]:
    """A never-set event, and counters of tasks that started and that got past it."""
    assert _FORK is not None
    return _FORK.Event(), _shared_counter(), _shared_counter()


@needs_fork
def test_ordered_process_map_propagates_errors_and_stops_children() -> None:
    never, started, passed = _blocked_tasks()

    def task(i: int) -> int:
        _bump(started)
        if i == 2:
            raise ValueError("boom at 2")
        if i > 2:  # still running when the error arrives: must be terminated, not awaited
            never.wait(SYNC_TIMEOUT)
            _bump(passed)
        return i

    with pytest.raises(ValueError, match="boom at 2"):
        list(ordered_process_map(task, 50, workers=2))
    assert multiprocessing.active_children() == []
    assert _peek(passed) == 0  # the blocked tasks were killed, not waited for
    assert _peek(started) < 50  # the queue was cancelled, not drained


@needs_fork
def test_ordered_process_map_early_stop_terminates_children() -> None:
    never, started, passed = _blocked_tasks()

    def task(i: int) -> int:
        _bump(started)
        if i > 0:  # everything after the first result blocks until terminated
            never.wait(SYNC_TIMEOUT)
            _bump(passed)
        return i

    out = ordered_process_map(task, 40, workers=2)
    assert next(out) == 0
    out.close()
    assert multiprocessing.active_children() == []
    assert _peek(passed) == 0  # terminated, not drained: no blocked task ran on
    assert _peek(started) < 40


def test_ordered_process_map_rejects_a_bad_order() -> None:
    if not fork_available():
        pytest.skip("worker processes need fork")
    with pytest.raises(ValueError, match="permutation"):
        list(ordered_process_map(lambda i: i, 3, workers=2, order=[0, 0, 1]))
    assert list(ordered_process_map(lambda i: i, 0, workers=2)) == []


def test_ordered_process_map_needs_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "fork_available", lambda: False)
    with pytest.raises(RuntimeError, match="fork"):
        list(ordered_process_map(lambda i: i, 3, workers=2))


@pytest.mark.parametrize("kind", KINDS)
def test_workers_announce_tensors_before_reading_them(
    rng: np.random.Generator, tmp_path, kind: str
) -> None:
    import dataclasses

    log = tmp_path / "events.txt"  # appended to by worker processes too

    def note(event: str, key: str) -> None:
        with open(log, "a") as fh:
            fh.write(f"{event} {key}\n")

    source = open_model({f"l{i}.weight": rng.standard_normal((60 + 10 * i, 30)) for i in range(8)})

    def hooked(entry):  # type: ignore[no-untyped-def]
        real_load = entry.load

        def load():  # type: ignore[no-untyped-def]
            note("load", entry.key)
            return real_load()

        return dataclasses.replace(
            entry, load=load, prefetch_hook=lambda: note("prefetch", entry.key)
        )

    source = dataclasses.replace(source, entries=tuple(hooked(e) for e in source.entries))
    report = ws.analyze(source, workers=2, parallel=kind)
    assert len(report.analysed) == 8
    events = [line.split() for line in log.read_text().splitlines()]
    loads = [k for e, k in events if e == "load"]
    prefetched = {k for e, k in events if e == "prefetch"}
    assert sorted(loads) == sorted(f"l{i}.weight" for i in range(8))
    assert prefetched == set(loads)  # every tensor was announced...
    late = [k for k in prefetched if events.index(["prefetch", k]) > events.index(["load", k])]
    # ...before it was read. In worker processes, a worker is announced its successor when it
    # starts: a worker descheduled between taking a task and announcing could (rarely) be late.
    assert len(late) <= (0 if kind == "threads" else 1), late


_KILLED_WORKER = """
import os, signal, sys, time
from weightspectra.errors import WorkerError
from weightspectra.runtime.parallel import ordered_process_map

def task(i):
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    time.sleep(0.01)
    return i

got = []
try:
    for value in ordered_process_map(task, 20, workers=2):
        got.append(value)
except WorkerError as exc:
    print("WorkerError", "got=" + ",".join(map(str, got)), exc)
    sys.exit(0)
print("no error", got)
sys.exit(1)
"""


@needs_fork
def test_a_killed_worker_is_an_error_not_a_hang() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("WorkerError "), out.stdout
    got = [int(v) for v in out.stdout.split()[1].removeprefix("got=").split(",") if v]
    assert got == list(range(len(got))) and len(got) <= 3  # in order, nothing past the kill
    assert "fewer workers" in out.stdout and "workers=1" in out.stdout
