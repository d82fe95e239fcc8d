"""The analysis on a Dask cluster: tensors read and analysed by the workers, rows sent back.

The client opens the model's headers and plans the run (:func:`~weightspectra.analysis.plan`,
names and shapes only); each tensor with work becomes one task (small tensors are grouped), and
a task carries only the model's path, the tensors' keys and layer ids, and the options as a
plain dict (:class:`TensorTask`). The worker opens the path itself (its :class:`Source` and plan
kept on the worker object between tasks), runs
:func:`~weightspectra.analysis.analyze_tensor` and returns the
:class:`~weightspectra.report.results.LayerResult` rows. No tensor and no closure goes through
the scheduler. The worker side is :mod:`weightspectra.runtime.cluster_worker`.

Tasks are submitted largest first (the priority follows), no more at a time than the cluster
has threads (a task waiting on a worker dies with it). Each declares its memory need under
the worker resource :data:`MEMORY_RESOURCE` when every worker offers it
(``dask worker ... --resources MEMORY=64e9``; ``local:N`` clusters declare it), so Dask never
places two huge layers on one small worker. A task that raises is retried ``retries`` times by
the scheduler; a task whose worker dies is run again elsewhere, ``retries`` times too (each try
allowing the scheduler's ``distributed.scheduler.allowed-failures`` deaths; a dying worker also
takes down the tasks queued on it, which is why the count is kept here, per tensor); a group of
tensors that fails is split into single tensors; a tensor that fails every try becomes a failed
row with the reason. The rows come back in model
order, identical to a local run on the same solver. See ``docs/cluster.md``.

``distributed`` is imported only here, and only when a cluster run starts (the ``cluster``
extra).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightspectra._version import __version__
from weightspectra.analysis import (
    Progress,
    ProgressCallback,
    TensorPlan,
    analyze_tensor,
    base_row,
    make_report,
    plan,
    tensor_cost,
)
from weightspectra.backends import cpu_backend
from weightspectra.enums import Precision, Reason, Status
from weightspectra.errors import (
    InputError,
    MissingDependencyError,
    OptionError,
    UnsupportedInputError,
    WorkerError,
)
from weightspectra.options import Options
from weightspectra.report.results import LayerResult, Report
from weightspectra.runtime.cluster_worker import TensorTask, open_source, run_task, worker_facts
from weightspectra.sources import Source

#: The worker resource a task's memory need is declared under (bytes), when every worker has it.
MEMORY_RESOURCE = "MEMORY"
#: Tensors of less work than this (flops of their Gram matrices and eigenvalues, about 50 ms on
#: one core) are grouped into one task up to this total, so the scheduler's few milliseconds per
#: task stay small against the work.
SMALL_TASK_FLOPS = 5e8
#: The most tensors one grouped task holds.
MAX_GROUP = 64
#: Retries of a tensor's task that raises, and separately of one whose worker died.
DEFAULT_RETRIES = 2
#: The scheduler's settings of a ``local:N`` cluster: a worker death fails its tasks at once
#: (the runner retries them, see :func:`cluster_results`), and a worker holds only the tasks it
#: runs, so that a dying worker takes no queued bystander down with it.
LOCAL_CONFIG: dict[str, object] = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}
#: Seconds to wait for the first worker of a cluster that has none yet (an adaptive one).
WAIT_FOR_WORKERS_S = 60.0


def _require_distributed() -> Any:
    """``distributed``, or the error that names the extra to install."""
    if importlib.util.find_spec("distributed") is None:
        raise MissingDependencyError("distributed", "cluster", "analysing on a Dask cluster")
    import distributed

    return distributed


def memory_need(tp: TensorPlan, options: Options) -> int:
    """Rough peak bytes of analysing one tensor: its float copy (twice with ``randomize``) and,
    for its largest matrix, the Gram matrix with the eigensolver's workspace (3 M² values)."""
    size = math.prod(tp.entry.shape) if tp.entry.shape else 0
    item = 8 if options.precision is Precision.FLOAT64 else 4
    copies = 2 if options.randomize else 1
    order = max((g.M for g in tp.groups), default=0)
    return int(copies * size * max(item, 4) + 3 * item * order * order)


def shard_files(path: Path) -> dict[str, str]:
    """The file holding each tensor of a safetensors checkpoint, by key (the index's
    ``weight_map``, else each file's header); empty for other formats."""
    from weightspectra.sources.safetensors import read_header

    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            return {}
        return dict.fromkeys(read_header(path)[0], path.name)
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if indexes:
        weight_map = json.loads(indexes[0].read_text())["weight_map"]
        return {str(k): str(v) for k, v in weight_map.items()}
    out: dict[str, str] = {}
    for shard in sorted(path.glob("*.safetensors")):
        out.update(dict.fromkeys(read_header(shard)[0], shard.name))
    return out


@dataclass(frozen=True)
class _Unit:
    """Tensors (plan indices) analysed by one task, and where it may run."""

    indices: tuple[int, ...]
    need: int
    workers: tuple[str, ...] | None = None


def _units(
    plans: Sequence[TensorPlan],
    options: Options,
    group_flops: float,
    placement: Mapping[int, tuple[str, ...]],
    largest: float = math.inf,
) -> list[_Unit]:
    """Tasks, largest first: each large tensor alone, small ones grouped (per placement); a
    tensor needing more memory than ``largest`` alone too (it fails without its group)."""
    costs = {i: tensor_cost(tp, options) for i, tp in enumerate(plans)}
    order = sorted((i for i, c in costs.items() if c > 0), key=lambda i: (-costs[i], i))
    units: list[_Unit] = []
    open_groups: dict[tuple[str, ...] | None, list[int]] = {}

    def close(where: tuple[str, ...] | None) -> None:
        members = open_groups.pop(where, [])
        if members:
            need = max(memory_need(plans[i], options) for i in members)
            units.append(_Unit(tuple(sorted(members)), need, where))

    for i in order:
        where = placement.get(i)
        if costs[i] >= group_flops or memory_need(plans[i], options) > largest:
            units.append(_Unit((i,), memory_need(plans[i], options), where))
            continue
        members = open_groups.setdefault(where, [])
        members.append(i)
        if sum(costs[j] for j in members) >= group_flops or len(members) >= MAX_GROUP:
            close(where)
    for where in list(open_groups):
        close(where)
    return units


def _placement(
    path: Path, plans: Sequence[TensorPlan], shard_workers: Mapping[str, str | Sequence[str]]
) -> dict[int, tuple[str, ...]]:
    """Plan index → the workers (addresses or host names) that hold its shard."""
    files = shard_files(path)
    if not files:
        raise OptionError(
            f"shard_workers needs a safetensors checkpoint (a file or a sharded folder); "
            f"{path} is not one: leave shard_workers out"
        )
    known = set(files.values())
    unknown = sorted(set(shard_workers) - known)
    if unknown:
        raise OptionError(
            f"shard_workers names {', '.join(map(repr, unknown))}, not a file of {path}; "
            f"its files are {', '.join(sorted(known))}"
        )
    where = {
        name: (target,) if isinstance(target, str) else tuple(target)
        for name, target in shard_workers.items()
    }
    out: dict[int, tuple[str, ...]] = {}
    for i, tp in enumerate(plans):
        shard = files.get(tp.entry.key)
        if shard is not None and shard in where:
            out[i] = where[shard]
    return out


def _failure(exc: BaseException, tries: int, need: int) -> tuple[Reason, str]:
    """The code and sentence of a tensor whose every one of ``tries`` on the cluster failed."""
    distributed = _require_distributed()
    if isinstance(exc, distributed.KilledWorker):
        deaths = int(exc.allowed_failures) + 1
        each = f", {deaths} worker deaths each" if deaths > 1 else ""
        return Reason.WORKER_LOST, (
            f"its worker died in each of its {tries} tries{each} (killed, or out of memory: it "
            f"needs about {need / 2**30:.2f} GiB); give the workers more memory, or fewer "
            "threads each, and rerun (with cache=DIR the other tensors are not recomputed)"
        )
    code = Reason.READ_ERROR if isinstance(exc, InputError) else Reason.INTERNAL
    return code, f"failed on the cluster in each of {tries} tries: {type(exc).__name__}: {exc}"


def _check_workers(client: Any, model: str, base: str | None) -> tuple[str, ...] | None:
    """Check the workers before a run; the hosts to restrict tasks to (``None``: all)."""
    try:
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
    except TimeoutError as exc:
        raise WorkerError(
            f"the Dask cluster has no worker after {WAIT_FOR_WORKERS_S:.0f} s; start workers "
            "(dask worker SCHEDULER_ADDRESS), or use --cluster local:N"
        ) from exc
    try:
        facts: dict[str, tuple[str, bool]] = client.run(worker_facts, model, base)
    except Exception as exc:
        raise WorkerError(
            f"the Dask workers cannot run weightspectra ({type(exc).__name__}: {exc}); install "
            f"weightspectra[cluster]=={__version__} in the workers' environment"
        ) from exc
    other = sorted(w for w, (version, _) in facts.items() if version != __version__)
    if other:
        raise WorkerError(
            f"workers {', '.join(other)} run another weightspectra version than this client "
            f"({__version__}); install the same version everywhere (rows would differ)"
        )
    blind = {w for w, (_, seen) in facts.items() if not seen}
    if not blind:
        return None
    if len(blind) == len(facts):
        raise InputError(
            f"no Dask worker sees {model}{f' or {base}' if base else ''}; put the checkpoint on "
            "storage every worker mounts at the same path (or a copy on each node)"
        )
    from distributed.comm.addressing import get_address_host

    return tuple(sorted({get_address_host(w) for w in facts if w not in blind}))


def cluster_results(
    model: str | os.PathLike[str],
    options: Options,
    client: Any,
    *,
    progress: ProgressCallback | None = None,
    base: str | os.PathLike[str] | None = None,
    retries: int = DEFAULT_RETRIES,
    shard_workers: Mapping[str, str | Sequence[str]] | None = None,
    group_flops: float = SMALL_TASK_FLOPS,
) -> Iterator[LayerResult]:
    """The rows of the model at ``model`` computed on the Dask cluster of ``client``, in model
    order (the same rows as :func:`~weightspectra.analysis.iter_results`).

    Parameters
    ----------
    model, base : path
        A file or folder every worker reads at the same path (and the base of a delta).
    options : Options
        ``options.cache`` must be a folder the workers can write (shared storage, to resume
        from any node); ``workers`` and ``parallel`` do not apply (the cluster's workers and
        their threads do).
    client : distributed.Client
    progress : callable, optional
        Called with a :class:`~weightspectra.analysis.Progress` as each tensor's rows arrive.
    retries : int, default 2
        Reruns of a tensor's task that raised, and (counted apart) of one whose worker died.
    shard_workers : mapping, optional
        Shard file name (as in the index's ``weight_map``) → the worker addresses or host names
        holding it; its tensors run only there.
    group_flops : float
        Tensors of less work are grouped into tasks of about this much (0: one task per tensor).

    Raises
    ------
    WorkerError
        If the cluster has no worker, or its workers lack weightspectra or run another version.
    InputError
        If no worker sees the path.
    OptionError
        If ``shard_workers`` names a file the checkpoint does not have, or ``retries < 0``.
    """
    path = os.path.abspath(os.fspath(model))
    base_path = os.path.abspath(os.fspath(base)) if base is not None else None
    # opened as given, so that the report names the model as a local run does
    source = open_source(os.fspath(model), os.fspath(base) if base is not None else None)
    yield from _rows(
        source, path, base_path, options, client, progress, retries, shard_workers, group_flops
    )


def _rows(
    source: Source,
    path: str,
    base_path: str | None,
    options: Options,
    client: Any,
    progress: ProgressCallback | None,
    retries: int,
    shard_workers: Mapping[str, str | Sequence[str]] | None,
    group_flops: float,
) -> Iterator[LayerResult]:
    distributed = _require_distributed()
    if not isinstance(retries, int) or retries < 0:
        raise OptionError(f"retries must be a non-negative integer, got {retries!r}")
    plans = plan(source, options)
    total = len(plans)
    sent = options.to_dict()
    if options.cache is not None:
        sent["cache"] = os.path.abspath(options.cache)
    hosts = _check_workers(client, path, base_path)
    info = client.scheduler_info()["workers"]
    threads_on_host: dict[str, int] = {}
    for facts in info.values():
        host = str(facts.get("host", ""))
        threads_on_host[host] = threads_on_host.get(host, 0) + int(facts.get("nthreads", 1))
    offered = [float(w.get("resources", {}).get(MEMORY_RESOURCE, -1)) for w in info.values()]
    declare = bool(offered) and min(offered) >= 0
    placement = _placement(Path(path), plans, shard_workers) if shard_workers else {}
    largest = max((v for v in offered if v >= 0), default=0.0)
    units = _units(plans, options, group_flops, placement, largest if declare else math.inf)

    rows_of: dict[int, list[LayerResult]] = {}
    done = 0

    def finished(i: int, rows: list[LayerResult]) -> None:
        nonlocal done
        rows_of[i] = rows
        done += 1
        if progress is not None:
            progress(Progress(done, total, plans[i].entry.name))

    def fail(unit: _Unit, code: Reason, why: str) -> None:
        for i in unit.indices:
            tp = plans[i]
            finished(i, [base_row(tp, g, Status.FAILED, why, code) for g in tp.groups])

    pending: dict[Any, _Unit] = {}
    run_id = uuid.uuid4().hex[:12]
    counter = 0

    def submit(unit: _Unit, priority: int) -> Any:
        nonlocal counter
        counter += 1
        task = TensorTask(
            model=path,
            base=base_path,
            keys=tuple(plans[i].entry.key for i in unit.indices),
            layer_ids=tuple(plans[i].layer_id for i in unit.indices),
            options=sent,
            threads_on_host=threads_on_host,
        )
        where = unit.workers if unit.workers is not None else hosts
        future = client.submit(
            run_task,
            task,
            key=f"weightspectra-{run_id}-{counter}-{plans[unit.indices[0]].entry.name}",
            pure=False,
            retries=retries,
            priority=priority,
            resources={MEMORY_RESOURCE: unit.need} if declare else None,
            workers=list(where) if where is not None else None,
        )
        pending[future] = unit
        return future

    skipped_backend = cpu_backend()
    for i, tp in enumerate(plans):
        if tensor_cost(tp, options) == 0:  # answered here, without reading the tensor
            finished(i, analyze_tensor(tp, options, backend=skipped_backend))
    queue = distributed.as_completed()
    waiting: deque[tuple[_Unit, int]] = deque()  # not submitted yet, with their priority

    def top_up() -> None:
        # No more tasks in flight than the cluster has threads: a task sent to a worker waits
        # there, and dies with the worker if another task kills it (a bystander's lost try).
        limit = max(1, sum(client.nthreads().values()))
        while waiting and len(pending) < limit:
            queue.add(submit(*waiting.popleft()))

    deaths = dict.fromkeys(range(total), 0)  # retries spent on dead workers, per tensor
    next_index = 0
    try:
        for rank, unit in enumerate(units):
            if declare and unit.need > largest:
                fail(unit, Reason.TOO_LARGE, (
                    f"needs about {unit.need / 2**30:.2f} GiB ({MEMORY_RESOURCE} resource), "
                    f"more than any worker offers ({largest / 2**30:.2f} GiB); add a worker "
                    "with more memory"
                ))  # fmt: skip
                continue
            waiting.append((unit, len(units) - rank))
        top_up()
        while next_index < total:
            while next_index in rows_of:
                yield from rows_of.pop(next_index)
                next_index += 1
            if next_index >= total:
                break
            future = next(queue)
            unit = pending.pop(future)
            if future.status == "finished":
                for i, rows in zip(unit.indices, future.result(), strict=True):
                    finished(i, rows)
                future.release()
                top_up()
                continue
            try:
                exc = future.exception()
            except Exception as cancelled:  # cancelled by the scheduler or another client
                exc = cancelled
            future.release()
            if len(unit.indices) > 1:  # find the tensor that fails; the others still run
                for i in reversed(unit.indices):
                    waiting.appendleft(
                        (_Unit((i,), memory_need(plans[i], options), unit.workers), 0)
                    )
            elif isinstance(exc, distributed.KilledWorker) and deaths[unit.indices[0]] < retries:
                # The scheduler gave up after its allowed failures; the task that killed the
                # worker may have been another one it held: try again, within our budget.
                deaths[unit.indices[0]] += 1
                waiting.appendleft((unit, 0))
            else:
                i = unit.indices[0]
                killed = isinstance(exc, distributed.KilledWorker)
                fail(unit, *_failure(exc, deaths[i] + 1 if killed else retries + 1, unit.need))
            top_up()
    finally:
        if pending:
            client.cancel(list(pending), force=True)
            pending.clear()


def analyze_on_cluster(
    model: object,
    client: Any,
    options: Options,
    *,
    progress: ProgressCallback | None = None,
    base: object = None,
    retries: int = DEFAULT_RETRIES,
    shard_workers: Mapping[str, str | Sequence[str]] | None = None,
    group_flops: float = SMALL_TASK_FLOPS,
) -> Report:
    """:func:`weightspectra.analyze` on the Dask cluster of ``client`` (see
    :func:`cluster_results` for the parameters).

    Raises
    ------
    UnsupportedInputError
        If ``model`` or ``base`` is not a path (an in-memory model cannot go to a cluster).
    MissingDependencyError
        If ``distributed`` is not installed.
    """
    from weightspectra.deltas import flag_low_rank

    distributed = _require_distributed()
    for name, value in (("model", model), ("base", base)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UnsupportedInputError(
                f"client= analyses a path every worker can read; {name} is a "
                f"{type(value).__name__}, which cannot go to a cluster: save it (e.g. as "
                "safetensors) and pass its path, or leave client= out"
            )
    if not isinstance(client, distributed.Client):
        raise OptionError(
            f"client must be a distributed.Client, got {type(client).__name__}; connect with "
            "distributed.Client(SCHEDULER_ADDRESS)"
        )
    assert isinstance(model, (str, os.PathLike))  # by the check above
    path = os.path.abspath(os.fspath(model))
    given_base = os.fspath(base) if isinstance(base, (str, os.PathLike)) else None
    base_path = os.path.abspath(given_base) if given_base is not None else None
    # opened as given, so that the report names the model as a local run does
    source = open_source(os.fspath(model), given_base)
    rows = tuple(
        _rows(
            source, path, base_path, options, client, progress, retries, shard_workers, group_flops
        )
    )
    return make_report(source.description, options, flag_low_rank(source, rows, options.min_evals))


@contextmanager
def connect(spec: str) -> Iterator[Any]:
    """A ``distributed.Client`` for the CLI's ``--cluster`` value, closed on exit.

    ``"local:N"`` starts a ``LocalCluster`` of ``N`` worker processes of one thread each, each
    declaring its memory limit as the :data:`MEMORY_RESOURCE` resource, with the scheduler
    settings :data:`LOCAL_CONFIG`; anything else is a scheduler address
    (``tcp://host:8786``).

    Raises
    ------
    OptionError
        If ``N`` is not a positive integer.
    WorkerError
        If the scheduler cannot be reached.
    """
    distributed = _require_distributed()
    import dask

    if spec.startswith("local:"):
        count = spec[len("local:") :]
        if not count.isdigit() or int(count) < 1:
            raise OptionError(
                f"--cluster {spec!r}: local:N needs a positive number of workers, e.g. local:4"
            )
        n = int(count)
        from distributed.system import MEMORY_LIMIT

        per_worker = int(MEMORY_LIMIT // n)
        with dask.config.set(LOCAL_CONFIG):
            cluster = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                memory_limit=per_worker,
                resources={MEMORY_RESOURCE: per_worker},
                dashboard_address=":0",
            )
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(spec, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise WorkerError(
            f"cannot reach a Dask scheduler at {spec!r} ({exc}); start one with `dask scheduler` "
            "and pass its address (tcp://HOST:8786), or use --cluster local:N"
        ) from exc
    with client:
        yield client


__all__ = [
    "MEMORY_RESOURCE",
    "TensorTask",
    "analyze_on_cluster",
    "cluster_results",
    "connect",
    "memory_need",
    "run_task",
    "shard_files",
]
