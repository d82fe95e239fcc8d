"""The worker side of :mod:`weightspectra.runtime.cluster`: what a Dask worker runs.

A :class:`TensorTask` names the model's path, the tensors' keys and layer ids, and the options;
:func:`run_task` opens the path on the worker (its :class:`~weightspectra.sources.Source`, plan
and backend kept on the Dask worker object between tasks, reopened when the files change),
sets the worker's BLAS thread budget once, analyses the tensors with
:func:`~weightspectra.analysis.analyze_tensor` and returns only their rows. This module never
imports ``distributed`` at import time: it is unpickled on the workers by reference.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightspectra._version import __version__
from weightspectra.analysis import TensorPlan, analyze_tensor, gram_orders, plan
from weightspectra.backends import Backend, resolve_backend
from weightspectra.errors import InputError
from weightspectra.options import Options
from weightspectra.report.results import LayerResult
from weightspectra.runtime.cache import ResultCache
from weightspectra.runtime.parallel import available_cores
from weightspectra.sources import Source, open_model

#: Models whose opened source a worker keeps between tasks (each holds its files' maps).
_KEPT_RUNS = 4
#: The attribute of a Dask worker object that holds weightspectra's per-worker state.
_STATE_ATTRIBUTE = "_weightspectra_state"


@dataclass(frozen=True)
class TensorTask:
    """What a worker needs to analyse some tensors of a model: paths, keys, ids and options.

    Attributes
    ----------
    model : str
        Absolute path of the model file or folder, as every worker sees it.
    base : str or None
        Absolute path of the base model of a delta (``base=``), or ``None``.
    keys, layer_ids : tuple
        The tensors, by key and by their position in the model (checked on the worker).
    options : dict
        ``Options.to_dict()`` (the cache folder made absolute).
    threads_on_host : dict of str to int
        Task threads of all workers of each host, for the BLAS thread budget.
    """

    model: str
    base: str | None
    keys: tuple[str, ...]
    layer_ids: tuple[int, ...]
    options: dict[str, Any]
    threads_on_host: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Opened:
    """A model opened and planned on a worker, with the files' state it was opened from."""

    signature: tuple[tuple[str, int, int], ...]
    plans: tuple[TensorPlan, ...]
    backend: Backend


@dataclass
class _WorkerState:
    """What a worker keeps between tasks (on the worker object, never in a module global)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[str, _Opened] = field(default_factory=dict)
    caches: dict[str, ResultCache] = field(default_factory=dict)
    blas_threads: int | None = None


def _signature(path: str) -> tuple[tuple[str, int, int], ...]:
    """Name, mtime and size of a file, or of every file in a folder: what a stale open misses."""
    target = Path(path)
    files = sorted(p for p in target.iterdir() if p.is_file()) if target.is_dir() else [target]
    out = []
    for p in files:
        stat = p.stat()
        out.append((p.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


def open_source(model: str, base: str | None) -> Source:
    source = open_model(model)
    if base is not None:
        from weightspectra.deltas import with_base

        source = with_base(source, open_model(base))
    return source


def _worker_state(worker: Any) -> _WorkerState:
    state = getattr(worker, _STATE_ATTRIBUTE, None)
    if not isinstance(state, _WorkerState):
        state = _WorkerState()
        setattr(worker, _STATE_ATTRIBUTE, state)
    return state


def _opened(state: _WorkerState, task: TensorTask, options: Options) -> _Opened:
    """The task's model opened and planned on this worker, reused while its files are unchanged."""
    run_key = json.dumps([task.model, task.base, task.options], sort_keys=True, default=str)
    signature = _signature(task.model) + (_signature(task.base) if task.base else ())
    with state.lock:
        found = state.runs.get(run_key)
        if found is not None and found.signature == signature:
            return found
        plans = tuple(plan(open_source(task.model, task.base), options))
        backend = resolve_backend(options.device, work=gram_orders(list(plans), options))
        opened = _Opened(signature, plans, backend)
        state.runs.pop(run_key, None)
        state.runs[run_key] = opened
        while len(state.runs) > _KEPT_RUNS:
            state.runs.pop(next(iter(state.runs)))
        return opened


def _budget_blas(state: _WorkerState, worker: Any, task: TensorTask) -> None:
    """Give each of this worker's task threads its share of the host's cores, once per worker.

    Dask's nannies start workers with one BLAS thread; a worker that owns a host's cores should
    use them. The share is cores ÷ (task threads of all workers on this host).
    """
    if state.blas_threads is not None:
        return
    from distributed.comm.addressing import get_address_host
    from threadpoolctl import threadpool_limits

    nthreads = int(worker.state.nthreads)
    on_host = task.threads_on_host.get(get_address_host(worker.address), nthreads)
    threads = max(1, available_cores() // max(1, on_host, nthreads))
    threadpool_limits(limits=threads)  # process-wide; the worker process is ours alone
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    state.blas_threads = threads


def run_task(task: TensorTask) -> list[list[LayerResult]]:
    """Run on a Dask worker: the rows of each tensor of ``task``, in the task's order.

    The worker opens the model from its path (kept open between tasks), checks that it sees the
    same tensors as the client, and analyses each with
    :func:`~weightspectra.analysis.analyze_tensor` (with the cache of ``options.cache``).

    Raises
    ------
    InputError
        If the model at the path is not the one the client planned (another checkpoint there).
    ValueError
        If called outside a Dask worker.
    """
    from distributed import get_worker

    worker = get_worker()
    state = _worker_state(worker)
    options = Options.from_dict(task.options)
    opened = _opened(state, task, options)
    _budget_blas(state, worker, task)
    cache = None
    if options.cache is not None:
        with state.lock:
            cache = state.caches.get(options.cache)
            if cache is None:
                cache = state.caches[options.cache] = ResultCache(options.cache)
    out = []
    for key, layer_id in zip(task.keys, task.layer_ids, strict=True):
        if layer_id >= len(opened.plans) or opened.plans[layer_id].entry.key != key:
            raise InputError(
                f"worker {worker.address} reads a different model at {task.model}: tensor "
                f"#{layer_id} is not {key!r} there; give every worker the same copy of the "
                "checkpoint"
            )
        out.append(
            analyze_tensor(opened.plans[layer_id], options, backend=opened.backend, cache=cache)
        )
    return out


def worker_facts(model: str, base: str | None) -> tuple[str, bool]:
    """Run on each worker before a run: its weightspectra version, and whether it sees the paths."""
    seen = os.path.exists(model) and (base is None or os.path.exists(base))
    return __version__, seen
