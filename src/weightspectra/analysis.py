"""The pipeline: source → tensors → matrices → spectra → fits → layer results → report.

Every tensor of the source becomes one or more rows; a tensor that is not analysed, or whose
analysis fails, keeps its row with the reason, and never stops the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from weightspectra._version import __version__
from weightspectra.backends import Backend, resolve_backend, torch_threads_kept
from weightspectra.core.eigen import (
    GRAM_BLOCKED_ABOVE_BYTES,
    RowReader,
    layer_eigenvalues,
    shuffled_entries,
    streamed_layer_eigenvalues,
    streamed_row_chunks,
)
from weightspectra.core.layers import GroupPlan, plan_groups
from weightspectra.enums import EigenMethod, Reason, Status
from weightspectra.errors import LayerError, OptionError
from weightspectra.metrics.model_diagnostics import model_diagnostics
from weightspectra.metrics.spectrum import internal_error_reason, spectrum_metrics
from weightspectra.metrics.summary import model_summary
from weightspectra.options import LayerType, Options, Parallel, selects
from weightspectra.report.results import LayerResult, Report
from weightspectra.runtime.cache import ResultCache
from weightspectra.runtime.parallel import (
    blas_budget,
    fork_available,
    ordered_map,
    ordered_process_map,
)
from weightspectra.schema import LayerSpectrum, registered_metrics
from weightspectra.sources import Source, TensorEntry, open_model


@dataclass(frozen=True)
class Progress:
    """One step of a running analysis, passed to a ``progress`` callback.

    Attributes
    ----------
    done, total : int
        Tensors finished so far, and in all.
    name : str
        The tensor just finished.
    """

    done: int
    total: int
    name: str


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class TensorPlan:
    """What will be done with one tensor: its rows, or the reason it gives a single skipped row."""

    layer_id: int
    entry: TensorEntry
    layer_type: LayerType
    groups: tuple[GroupPlan, ...]
    skip_reason: str = ""
    skip_code: Reason = Reason.NONE


def _resolve_options(options: Options | None, kwargs: Mapping[str, Any]) -> Options:
    if options is None:
        return Options.from_kwargs(**kwargs)
    if not isinstance(options, Options):
        raise OptionError(
            f"options must be a weightspectra.Options, got {type(options).__name__}; "
            "or pass the options as keyword arguments"
        )
    return options.replace(**kwargs) if kwargs else options


def plan(source: Source, options: Options) -> list[TensorPlan]:
    """Decide, from names and shapes alone, what each tensor of ``source`` becomes."""
    plans = []
    for layer_id, entry in enumerate(source.entries):
        plans.append(_plan_entry(layer_id, entry, options))
    return plans


def _plan_entry(layer_id: int, entry: TensorEntry, options: Options) -> TensorPlan:
    def skip(code: Reason, reason: str, layer_type: LayerType = LayerType.UNKNOWN) -> TensorPlan:
        return TensorPlan(layer_id, entry, layer_type, (), reason, code)

    if entry.tied_to is not None:
        return skip(Reason.TIED, f"tied to {entry.tied_to} (shared weights are analysed once)")
    told = entry.type_code in (Reason.BUFFER, Reason.NOT_MATRIX, Reason.BIAS)
    if told and entry.layer_type is LayerType.UNKNOWN and entry.type_reason:
        # A source that knows what the tensor feeds (an ONNX graph) says it better than the
        # generic dtype and rank rules below.
        return skip(entry.type_code, entry.type_reason)
    if not entry.is_float:
        return skip(
            Reason.BUFFER, f"{entry.dtype} tensor (a buffer such as ids or a mask), not weights"
        )
    if len(entry.shape) < 2:
        return skip(
            Reason.NOT_MATRIX, f"{len(entry.shape)}-D tensor (a bias or norm scale), not a matrix"
        )
    if entry.key.endswith("bias"):
        return skip(Reason.BIAS, "bias, not a weight matrix")
    layer_type = entry.layer_type or LayerType.UNKNOWN  # typed by the source's adapter
    if layer_type is LayerType.UNKNOWN:
        why = entry.type_reason or "the source gave no layer type (open it with open_model)"
        code = entry.type_code if entry.type_code is not Reason.NONE else Reason.UNKNOWN_TYPE
        return skip(code, why)
    if options.layers is not None and not selects(options.layers, layer_id, entry.name, layer_type):
        return skip(Reason.NOT_SELECTED, "not selected by the layers option", layer_type)
    if options.exclude and selects(options.exclude, layer_id, entry.name, layer_type):
        return skip(Reason.EXCLUDED, "excluded by the exclude option", layer_type)
    try:
        groups = plan_groups(
            entry.key,
            entry.shape,
            layer_type,
            pool=options.pool,
            conv_scaling=options.conv_scaling,
            split_fused_qkv=options.split_fused_qkv,
            gate_up=entry.gate_up,
        )
    except ValueError as exc:
        return skip(Reason.BAD_SHAPE, str(exc), layer_type)
    return TensorPlan(layer_id, entry, layer_type, tuple(groups))


def _group_skip_reason(group: GroupPlan, options: Options) -> tuple[Reason, str]:
    if group.num_evals < options.min_evals:
        return Reason.TOO_FEW_EVALS, (
            f"only {group.num_evals} eigenvalues ({group.rows}×{group.cols}"
            f"{f' ×{group.count} slices' if group.count > 1 else ''}), fewer than "
            f"min_evals={options.min_evals}"
        )
    if options.max_evals is not None and options.max_evals < group.M:
        return Reason.TOO_MANY_EVALS, f"M={group.M} exceeds max_evals={options.max_evals}"
    return Reason.NONE, ""


def base_row(
    tp: TensorPlan,
    group: GroupPlan | None,
    status: Status,
    reason: str = "",
    code: Reason = Reason.NONE,
) -> LayerResult:
    suffix = group.suffix if group is not None else ""
    return LayerResult(
        layer_id=tp.layer_id,
        name=tp.entry.name + suffix,
        key=tp.entry.key,
        layer_type=tp.layer_type.value,
        status=status,
        reason=reason,
        reason_code=code,
        quantization=tp.entry.quantization,
        shape=tp.entry.shape,
        N=group.N if group else (max(tp.entry.shape[-2:]) if len(tp.entry.shape) >= 2 else 0),
        M=group.M if group else (min(tp.entry.shape[-2:]) if len(tp.entry.shape) >= 2 else 0),
        rf=group.rf if group else 1,
        num_evals=group.num_evals if group else 0,
    )


def analyze_tensor(
    tp: TensorPlan,
    options: Options,
    *,
    backend: Backend | None = None,
    cache: ResultCache | None = None,
) -> list[LayerResult]:
    """Rows of one planned tensor; loads it once if any of its groups is analysed.

    ``backend`` (default: resolved from ``options.device``) computes the spectra; with a
    ``cache``, rows stored for the same tensor content and options are returned without
    computing, and new rows are stored. The tensor is released (its memory-mapped pages dropped)
    as soon as its rows are computed.
    """
    if backend is None:
        backend = resolve_backend(options.device)
    if tp.skip_reason:
        return [base_row(tp, None, Status.SKIPPED, tp.skip_reason, tp.skip_code)]
    reasons = [_group_skip_reason(g, options) for g in tp.groups]
    if all(code is not Reason.NONE for code, _ in reasons):
        pairs = zip(tp.groups, reasons, strict=True)
        return [base_row(tp, g, Status.SKIPPED, r, c) for g, (c, r) in pairs]
    read_rows = _row_reader(tp, options, backend)
    tensor: np.ndarray | None = None
    if read_rows is None:
        try:
            tensor = tp.entry.load()
        except Exception as exc:
            why = f"could not read the tensor: {exc}"
            return [base_row(tp, g, Status.FAILED, why, Reason.READ_ERROR) for g in tp.groups]
    cache_key = None
    if cache is not None:
        identity = {"key": tp.entry.key, "layer_id": tp.layer_id, "type": tp.layer_type.value}
        try:
            if read_rows is None:
                assert tensor is not None
                cache_key = cache.key(tensor, identity, options.to_dict(), backend.name)
            else:  # the same key as the whole tensor's, from its rows in order
                shape = tp.entry.shape
                in_order = streamed_row_chunks(read_rows, (shape[0], shape[1]))
                cache_key = cache.streamed_key(
                    in_order, shape, identity, options.to_dict(), backend.name
                )
        except Exception as exc:
            why = f"could not read the tensor: {exc}"
            return [base_row(tp, g, Status.FAILED, why, Reason.READ_ERROR) for g in tp.groups]
        stored = cache.get(cache_key)
        if stored is not None:
            del tensor
            tp.entry.release()
            return stored
    rows = []
    for group, (code, reason) in zip(tp.groups, reasons, strict=True):
        if code is not Reason.NONE:
            rows.append(base_row(tp, group, Status.SKIPPED, reason, code))
            continue
        base = base_row(tp, group, Status.OK)
        what = f"layer {base.name} {tp.entry.shape} {tp.entry.dtype}"
        try:
            evals, rand = _group_spectra(tp, group, tensor, read_rows, options, backend, what)
        except LayerError as exc:
            rows.append(base_row(tp, group, Status.FAILED, str(exc), Reason.BAD_VALUES))
            continue
        except MemoryError as exc:
            why = f"out of memory computing its eigenvalues ({exc}); use fewer --workers"
            rows.append(base_row(tp, group, Status.FAILED, why, Reason.INTERNAL))
            continue
        except Exception as exc:  # an engine failure in one layer fails that row, not the run
            why = internal_error_reason(exc, what)
            rows.append(base_row(tp, group, Status.FAILED, why, Reason.INTERNAL))
            continue
        # read for exact ranks only, within this step (a streamed tensor is loaded whole then)
        matrix = partial(group.take, tensor) if tensor is not None else _whole(tp.entry, group)
        try:
            metrics = spectrum_metrics(
                evals,
                group.N,
                group.M,
                options,
                matrix=matrix,
                rand_evals=rand,
                eig_scale=group.eig_scale,
                read_rows=read_rows,
            )
            metrics.update(registered_columns(evals, group.N, group.M, metrics))
        except Exception as exc:  # a bug in one layer's metrics fails that row, not the run
            why = internal_error_reason(exc, what)
            rows.append(base_row(tp, group, Status.FAILED, why, Reason.INTERNAL))
            continue
        rows.append(_with(base, metrics=metrics, evals=evals, rand_evals=rand))
    del tensor
    tp.entry.release()
    if cache is not None and cache_key is not None:
        cache.put(cache_key, rows)
    return rows


def _row_reader(tp: TensorPlan, options: Options, backend: Backend) -> RowReader | None:
    """The entry's row reader when its one matrix is better streamed into its Gram matrix
    than loaded whole: a tall 2-D tensor whose float32 copy exceeds
    :data:`~weightspectra.core.eigen.GRAM_BLOCKED_ABOVE_BYTES`, analysed by the Gram method
    without a shuffled copy, on a host backend that names its solver. Else ``None``."""
    entry = tp.entry
    if entry.load_rows is None or backend.solver is None or len(entry.shape) != 2:
        return None
    if options.eig_method is not EigenMethod.GRAM or options.randomize or len(tp.groups) != 1:
        return None
    rows, cols = entry.shape
    group = tp.groups[0]
    if group.suffix or group.count != 1 or (group.rows, group.cols) != (rows, cols):
        return None
    if rows < cols or rows * cols * 4 <= GRAM_BLOCKED_ABOVE_BYTES:
        return None
    return entry.load_rows


def _group_spectra(
    tp: TensorPlan,
    group: GroupPlan,
    tensor: np.ndarray | None,
    read_rows: RowReader | None,
    options: Options,
    backend: Backend,
    what: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One group's eigenvalues and, with ``randomize``, those of its shuffled matrix."""
    normalize_by = group.N if options.normalize else None
    if tensor is None:
        assert read_rows is not None and backend.solver is not None  # by _row_reader
        shape = (group.rows, group.cols)
        evals = streamed_layer_eigenvalues(
            read_rows,
            shape,
            precision=options.precision,
            eig_scale=group.eig_scale,
            normalize_by=normalize_by,
            what=what,
            solver=backend.solver,
        )
        return evals, None
    eigenvalues = partial(
        layer_eigenvalues,
        method=options.eig_method,
        precision=options.precision,
        eig_scale=group.eig_scale,
        normalize_by=normalize_by,
        what=what,
        engine=backend.engine,
    )
    evals = eigenvalues(group.take(tensor))
    # The shuffled matrix goes through the same engine, precision and scaling.
    rand = (
        eigenvalues(shuffled_entries(group.take(tensor), options.seed))
        if options.randomize
        else None
    )
    return evals, rand


def _whole(entry: TensorEntry, group: GroupPlan) -> Callable[[], np.ndarray]:
    def take() -> np.ndarray:
        return group.take(entry.load())

    return take


def _with(row: LayerResult, **changes: Any) -> LayerResult:
    from dataclasses import replace

    return replace(row, **changes)


def tensor_cost(tp: TensorPlan, options: Options) -> float:
    """Rough work of one tensor (flops of its Gram matrices and eigenvalues); 0 when nothing of
    it is analysed (it is then never read)."""
    if tp.skip_reason:
        return 0.0
    return float(
        sum(
            g.count * (g.N * g.M * g.M + g.M**3)
            for g in tp.groups
            if _group_skip_reason(g, options)[0] is Reason.NONE
        )
    )


def gram_orders(plans: list[TensorPlan], options: Options) -> Counter[int]:
    """How many Gram matrices of each order the analysis of ``plans`` will diagonalise (each
    shuffled copy counted too); empty for the SVD method."""
    orders: Counter[int] = Counter()
    if options.eig_method is not EigenMethod.GRAM:
        return orders
    copies = 2 if options.randomize else 1
    for tp in plans:
        if tp.skip_reason:
            continue
        for group in tp.groups:
            if _group_skip_reason(group, options)[0] is Reason.NONE:
                orders[group.M] += group.count * copies
    return orders


def _use_processes(options: Options, backend: Backend) -> bool:
    """Whether ``workers > 1`` run as forked processes (see :class:`Parallel`)."""
    if options.parallel is Parallel.THREADS:
        return False
    usable = fork_available() and backend.on_host
    if options.parallel is Parallel.PROCESSES and not usable:
        why = "spectra are computed on a GPU" if not backend.on_host else "fork is missing"
        raise OptionError(
            f"parallel='processes' cannot be used here ({why}); use parallel='threads' or "
            "parallel='auto'"
        )
    return usable


def iter_results(
    source: Source, options: Options, progress: ProgressCallback | None = None
) -> Iterator[LayerResult]:
    """Analyse ``source`` tensor by tensor, yielding rows as they are ready, in model order.

    With ``options.workers > 1`` tensors are analysed on that many forked processes or threads
    (``options.parallel``; BLAS threads budgeted so that workers × threads ≤ cores), largest
    first in processes. Tensors still to come are announced to the source ahead of time (the
    kernel reads them in while the current ones are computed).

    Raises
    ------
    OptionError
        If ``options.device`` cannot be used, or ``options.cache`` is not a usable folder.
    """
    with torch_threads_kept():
        yield from _iter_results(source, options, progress)


def _iter_results(
    source: Source, options: Options, progress: ProgressCallback | None
) -> Iterator[LayerResult]:
    plans = plan(source, options)
    total = len(plans)
    backend = resolve_backend(options.device, work=gram_orders(plans, options))
    if options.workers == 1:
        backend.prepare(options.precision)
    cache = ResultCache(options.cache) if options.cache is not None else None

    def run(tp: TensorPlan) -> list[LayerResult]:
        return analyze_tensor(tp, options, backend=backend, cache=cache)

    def announced() -> Iterator[TensorPlan]:
        for tp in plans:
            if tensor_cost(tp, options) > 0:  # it will be read
                tp.entry.prefetch()
            yield tp

    results: Generator[list[LayerResult], None, None]
    with ExitStack() as context:
        if options.workers > 1 and _use_processes(options, backend):
            results = _in_processes(plans, options, run)
        else:
            context.enter_context(blas_budget(options.workers))
            results = ordered_map(run, announced(), options.workers)
        try:
            for i, (tp, rows) in enumerate(zip(plans, results, strict=True)):
                yield from rows
                if progress is not None:
                    progress(Progress(i + 1, total, tp.entry.name))
        finally:
            results.close()


def _in_processes(
    plans: list[TensorPlan],
    options: Options,
    run: Callable[[TensorPlan], list[LayerResult]],
) -> Generator[list[LayerResult], None, None]:
    """The rows of each plan, in model order, computed on ``options.workers`` forked processes.

    Only tensors with work go to the workers, largest first (so that one big tensor is not left
    to run alone at the end); skipped ones are answered here. Tensors still to come are
    announced to the source ahead of time.
    """
    costs = [tensor_cost(tp, options) for tp in plans]
    work = [i for i, cost in enumerate(costs) if cost > 0]
    order = sorted(range(len(work)), key=lambda j: -costs[work[j]])
    position = {j: k for k, j in enumerate(order)}
    for j in order[: options.workers]:
        plans[work[j]].entry.prefetch()  # read in while the workers start

    def read_ahead_and_run(j: int) -> list[LayerResult]:
        # The tensor started `workers` places later is likely next for a free worker: ask the
        # kernel to read it in now (the page cache is shared by the processes).
        later = position[j] + options.workers
        if later < len(order):
            plans[work[order[later]]].entry.prefetch()
        return run(plans[work[j]])

    computed = ordered_process_map(read_ahead_and_run, len(work), options.workers, order=order)
    try:
        for tp, cost in zip(plans, costs, strict=True):
            yield next(computed) if cost > 0 else run(tp)
    finally:
        computed.close()


def analyze(
    model: object,
    options: Options | None = None,
    *,
    progress: ProgressCallback | None = None,
    base: object = None,
    client: Any = None,
    **kwargs: Any,
) -> Report:
    """Analyse the weight spectra of a model, layer by layer.

    Parameters
    ----------
    model : nn.Module, mapping or path
        An ``nn.Module``, a state dict, a ``{name: ndarray}`` dict, or a path to a
        ``.safetensors`` / ``.pt`` / ``.bin`` / ``.npz`` file or a (sharded) checkpoint folder.
    options : Options, optional
        Analysis options; keyword arguments (``min_evals=8``, ``pool=True``, ``layers=[...]``,
        ...) are accepted instead or on top (see :class:`~weightspectra.options.Options`).
    progress : callable, optional
        Called with a :class:`Progress` after each tensor.
    base : model, optional
        A base model (any input ``model`` may be, of any format): every matrix becomes
        ``W − W_base``, paired by name (:mod:`weightspectra.sources.delta`); unpaired or
        shape-mismatched tensors are skipped rows saying so. When ``model`` is a PEFT adapter
        folder, the merged ``W + ΔW`` is analysed instead (:mod:`weightspectra.sources.peft`).
        Rows of a delta or an adapter with fewer non-zero eigenvalues than ``min_evals`` keep
        their norms but no fit (``warning`` says ``low-rank``).
    client : distributed.Client, optional
        Analyse on this Dask cluster (``model`` and ``base`` must be paths every worker reads;
        :mod:`weightspectra.runtime.cluster`, the ``cluster`` extra; docs/cluster.md).

    Returns
    -------
    Report
        One row per matrix (``report.to_pandas()``), ``report.summary``, ``report.skipped``.

    Raises
    ------
    OptionError
        On an unknown or invalid option.
    InputError, UnsupportedInputError, MissingDependencyError
        If the model cannot be opened (the message names the file and the fix).

    Examples
    --------
    >>> import numpy as np, weightspectra as ws
    >>> w = np.random.default_rng(0).standard_normal((300, 100))
    >>> report = ws.analyze({"fc.weight": w})
    >>> report.analysed[0].num_evals
    100
    """
    from weightspectra.deltas import flag_low_rank, with_base

    opts = _resolve_options(options, kwargs)
    if client is not None:
        from weightspectra.runtime.cluster import analyze_on_cluster

        return analyze_on_cluster(model, client, opts, progress=progress, base=base)
    source = open_model(model)
    if base is not None:
        source = with_base(source, open_model(base))
    layers = tuple(iter_results(source, opts, progress))
    layers = flag_low_rank(source, layers, opts.min_evals)
    return make_report(source.description, opts, layers)


def describe(model: object, options: Options | None = None, **kwargs: Any) -> Report:
    """Plan an analysis without computing anything: layer names, types, shapes, eigenvalue
    counts, and what would be skipped and why. Reads file headers only."""
    opts = _resolve_options(options, kwargs)
    source = open_model(model)
    rows: list[LayerResult] = []
    for tp in plan(source, opts):
        if tp.skip_reason:
            rows.append(base_row(tp, None, Status.SKIPPED, tp.skip_reason, tp.skip_code))
            continue
        for group in tp.groups:
            code, reason = _group_skip_reason(group, opts)
            status = Status.SKIPPED if code is not Reason.NONE else Status.PLANNED
            rows.append(base_row(tp, group, status, reason, code))
    return make_report(source.description, opts, tuple(rows))


def make_report(source: str, options: Options, layers: tuple[LayerResult, ...]) -> Report:
    """The report of ``layers``: the model summary and diagnostics are computed here, with the
    thresholds of ``options``, and stored frozen on the report."""
    rows = [r.row() for r in layers]
    analysed = [
        row for row, r in zip(rows, layers, strict=True) if r.status in (Status.OK, Status.PLANNED)
    ]
    diagnostics = model_diagnostics(
        analysed,
        collapse_z=options.collapse_z,
        collapse_decades=options.collapse_decades,
        min_group=options.collapse_min_group,
    )
    return Report(
        source=source,
        options=options.to_dict(),
        layers=layers,
        version=__version__,
        summary=model_summary(rows),
        diagnostics=diagnostics,
    )


def registered_columns(
    evals: np.ndarray, N: int, M: int, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """The columns added through :func:`weightspectra.schema.register_column` for one ESD."""
    spectrum = LayerSpectrum(evals=evals, N=N, M=M, metrics=MappingProxyType(dict(metrics)))
    return {column.name: compute(spectrum) for column, compute in registered_metrics()}
