"""Ordered parallel maps over tensors, with the BLAS threads budgeted across workers.

Two ways to run ``workers`` tensors at once:

- **Threads** (:func:`ordered_map`) share everything and need no pickling; the heavy BLAS and
  LAPACK calls on large matrices release the GIL and run side by side. On small matrices
  (M ≲ 500, e.g. MiniLM's 384×384 layers) they do not: each LAPACK call is a few milliseconds
  and two threads end up taking turns, so two threads are no faster than one.
- **Forked processes** (:func:`ordered_process_map`) scale on small matrices too. Each child is a
  ``fork`` of this process: it inherits the planned tensors (memory-mapped files and in-memory
  tensors alike, copy-on-write), so only a tensor index goes to it and only the result rows come
  back. ``fork`` exists on Linux; elsewhere threads are used.

The BLAS thread count is process-wide, so it is set once, for the whole run, with
``threadpoolctl`` (the environment variables ``OMP_NUM_THREADS`` etc. only act before BLAS is
loaded, which is too late inside a library); forked children inherit the limit, set in the
parent before they are forked.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from weightspectra.errors import WorkerError

_T = TypeVar("_T")
_R = TypeVar("_R")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def blas_threads_per_worker(workers: int, cores: int, current: int) -> int:
    """BLAS threads each of ``workers`` may use: ``workers × threads ≤ cores``, never more than
    the ``current`` setting (a user who pinned fewer threads keeps that), and at least 1.

    Examples
    --------
    >>> blas_threads_per_worker(2, 16, 16), blas_threads_per_worker(2, 16, 1)
    (8, 1)
    """
    return max(1, min(current, cores // max(1, workers)))


def blas_threads_now() -> int:
    """The largest thread count of the BLAS libraries loaded in this process (1 if none): the
    caller's setting, or the workers' budget while one is in force."""
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return max((int(p.get("num_threads", 1)) for p in blas), default=1)


@contextmanager
def blas_budget(workers: int, cores: int | None = None) -> Iterator[int | None]:
    """Limit BLAS threads for ``workers`` concurrent tasks while the context is open.

    Yields the per-worker thread count, or ``None`` when nothing was changed (``workers == 1``:
    a serial run keeps the caller's BLAS setting).
    """
    if workers <= 1:
        yield None
        return
    from threadpoolctl import threadpool_limits

    per_worker = blas_threads_per_worker(workers, cores or available_cores(), blas_threads_now())
    with threadpool_limits(limits=per_worker, user_api="blas"):
        yield per_worker


def ordered_map(
    fn: Callable[[_T], _R], items: Iterable[_T], workers: int = 1
) -> Generator[_R, None, None]:
    """``fn`` over ``items`` on ``workers`` threads, yielding results in input order.

    At most ``workers`` calls run at once and one more item is taken from ``items`` ahead of
    them, so a lazy ``items`` can announce the next tensor (e.g. ask the kernel to read it in)
    before it is needed. Nothing else is buffered: memory stays bounded by ``workers`` tensors.
    If the consumer stops early or ``fn`` raises, queued calls are cancelled and running ones
    finish before this returns.

    Examples
    --------
    >>> list(ordered_map(lambda x: x * x, range(5), workers=2))
    [0, 1, 4, 9, 16]
    """
    if workers <= 1:
        it = iter(items)
        sentinel = object()
        nxt: object = next(it, sentinel)
        while nxt is not sentinel:
            current = nxt
            nxt = next(it, sentinel)  # take the next item before computing this one
            yield fn(current)  # type: ignore[arg-type]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weightspectra")
    pending: deque[Future[_R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pending.clear()
        pool.shutdown(wait=True, cancel_futures=True)


def fork_available() -> bool:
    """Whether worker processes can be forked here (Linux; macOS forks unsafely, Windows not)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


#: In a forked worker only: the task it runs (set by its initializer, never in the parent).
_child_task: Callable[[int], Any] | None = None


def _child_init(task: Callable[[int], Any], blas_threads: int) -> None:
    global _child_task
    _child_task = task
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    # The BLAS limit is inherited from the parent, which sets it before forking. Setting it
    # again here makes OpenBLAS start a fresh thread pool that busy-waits: 0.16 s of CPU burnt
    # by an idle child (benchmarks/bench_internals.py).
    torch = sys.modules.get("torch")
    if torch is not None and blas_threads > 0:  # as torch's DataLoader workers do
        torch.set_num_threads(blas_threads)


def in_worker_process() -> bool:
    """Whether this process is a worker forked by :func:`ordered_process_map`."""
    return _child_task is not None


def _child_run(index: int) -> Any:
    assert _child_task is not None, "worker started without its task"
    return _child_task(index)


def ordered_process_map(
    task: Callable[[int], _R],
    count: int,
    workers: int,
    *,
    order: Sequence[int] | None = None,
    cores: int | None = None,
) -> Generator[_R, None, None]:
    """``task(i)`` for ``i`` in ``range(count)`` on ``workers`` forked processes, yielded in
    index order.

    ``task`` may be any callable, a closure included: the children are forks and inherit it,
    so only indices and results cross processes (results must pickle). ``order`` is the order
    in which indices are started (e.g. largest first, so one big tensor does not finish last
    alone); results are still yielded ``0, 1, 2, …``. Each child runs one task at a time, so at
    most ``workers`` tensors are in memory at once; finished results wait in the parent until
    their turn. BLAS threads are budgeted per child as in :func:`blas_budget`. If the consumer
    stops early or a task raises, the children are terminated before this returns.

    Raises
    ------
    WorkerError
        If a worker process dies (e.g. killed when memory ran out): no result is waited for
        forever.
    RuntimeError
        If processes cannot be forked here (see :func:`fork_available`).
    """
    if not fork_available():
        raise RuntimeError("worker processes need the fork start method (Linux)")
    if count == 0:
        return
    starts = list(range(count)) if order is None else list(order)
    if sorted(starts) != list(range(count)):
        raise ValueError(f"order must be a permutation of range({count})")
    workers = max(1, min(workers, count))
    context = multiprocessing.get_context("fork")
    with blas_budget(workers, cores) as blas:
        # Python ≥ 3.12 warns (DeprecationWarning, hidden by default) when a process with
        # threads forks; the children only read tensors and call numpy/LAPACK, which reset their
        # locks at fork, and MKL runs in them on one thread only (see backends.cpu_solver).
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_child_init, initargs=(task, blas or 0)
        )
        # With fork, every worker is started by the first submit, from this thread.
        pending = {i: pool.submit(_child_run, i) for i in starts}
        finished = False
        try:
            for i in range(count):
                try:
                    result = pending.pop(i).result()
                except BrokenProcessPool as exc:
                    raise WorkerError(
                        f"a worker process stopped abruptly (killed by the system, for example "
                        f"when memory ran out) with {len(pending) + 1} of {count} tensors left; "
                        f"each of the {workers} workers holds one tensor and its Gram matrix: "
                        "rerun with fewer workers, or workers=1 (with cache=DIR, finished "
                        "tensors are not recomputed)"
                    ) from exc
                yield result
            finished = True
        finally:
            if not finished:
                _terminate(pool)
            pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now: a running tensor may take minutes, and nobody wants its result."""
    processes = getattr(pool, "_processes", None) or {}  # no public API before Python 3.14
    for process in list(processes.values()):
        process.terminate()
