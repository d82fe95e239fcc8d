"""Ordered parallel map over tensors, with the BLAS threads budgeted across workers.

Threads, not processes: every heavy step (BLAS ``syrk``, LAPACK ``syevd``, numpy ufuncs, the
safetensors page-in) releases the GIL, threads share the memory-mapped files, and results need no
pickling. The BLAS thread count is process-wide, so it is set once, for the whole run, with
``threadpoolctl`` (the environment variables ``OMP_NUM_THREADS`` etc. only act before BLAS is
loaded, which is too late inside a library).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

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


@contextmanager
def blas_budget(workers: int, cores: int | None = None) -> Iterator[int | None]:
    """Limit BLAS threads for ``workers`` concurrent tasks while the context is open.

    Yields the per-worker thread count, or ``None`` when nothing was changed (``workers == 1``:
    a serial run keeps the caller's BLAS setting).
    """
    if workers <= 1:
        yield None
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    current = max((int(p.get("num_threads", 1)) for p in blas), default=1)
    per_worker = blas_threads_per_worker(workers, cores or available_cores(), current)
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
