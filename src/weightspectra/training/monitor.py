"""The training monitor: analyse a model's weight spectra every k steps or epochs, into a run.

A plain loop calls :meth:`Monitor.step` after each optimiser step; the framework callbacks
(:mod:`~weightspectra.training.lightning`, :mod:`~weightspectra.training.hf`,
:mod:`~weightspectra.training.keras`) do it for their trainers. When a step is due, the chosen
layers' weights are copied (a snapshot, so training may go on changing them), analysed with the
run's options, and written to the run folder with the alarms that fire for the first time.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from weightspectra.analysis import iter_results, make_report, plan
from weightspectra.enums import LayerType, Precision, Status, parse_enum
from weightspectra.errors import OptionError
from weightspectra.options import Options
from weightspectra.report.results import Report
from weightspectra.sources import Source, open_model
from weightspectra.training.alarms import AlarmRules, check_alarms
from weightspectra.training.run import Resume, RunWriter

__all__ = ["DEFAULT_EVERY", "Cadence", "Monitor", "monitor_options", "snapshot"]

#: Analyse every this many steps by default (see docs/training.md for its measured cost).
DEFAULT_EVERY = 100

Selector = Sequence[int | str | LayerType]


class Cadence(str, Enum):
    """What ``every`` counts: optimiser steps or epochs."""

    STEPS = "steps"
    EPOCHS = "epochs"


def monitor_options(
    options: Options | None = None,
    layers: Selector | None = None,
    **kwargs: Any,
) -> Options:
    """The analysis options of a monitor: ``options`` (default: the fast precision, float32,
    and ``randomize=True`` for the correlation-trap alarm) with ``layers`` and ``kwargs`` on
    top.

    Raises
    ------
    OptionError
        On an invalid option, or a ``cache`` (weights change at every step: nothing to reuse).
    """
    base = options if options is not None else Options(precision=Precision.FLOAT32, randomize=True)
    if not isinstance(base, Options):
        raise OptionError(f"options must be a weightspectra.Options, got {type(base).__name__}")
    changes = dict(kwargs)
    if layers is not None:
        changes["layers"] = tuple(layers)
    opts = base.replace(**changes) if changes else base
    if opts.cache is not None:
        raise OptionError(
            "a monitor does not use options.cache (the weights differ at every step); drop "
            "cache=..., or use weightspectra.analyze_series for saved checkpoints"
        )
    return opts


def snapshot(model: object, options: Options) -> Source:
    """``model`` opened as a :class:`~weightspectra.sources.Source` whose analysed tensors are
    copied now (training may change them afterwards); the others stay lazy and are never read.

    Raises
    ------
    InputError, UnsupportedInputError
        If ``model`` cannot be opened.
    """
    source = open_model(model)
    entries = []
    for tp in plan(source, options):
        entry = tp.entry
        if not tp.skip_reason:
            array = np.array(entry.load(), copy=True)
            array.setflags(write=False)
            entry.release()
            entry = replace(
                entry,
                load=_constant(array),
                prefetch_hook=None,
                release_hook=None,
                load_rows=None,
            )
        entries.append(entry)
    return Source(source.description, tuple(entries))


def _constant(array: np.ndarray) -> Any:
    def load() -> np.ndarray:
        return array

    return load


def analyse_source(source: Source, options: Options) -> Report:
    """The report of a snapshot (the analysis pipeline, no progress)."""
    return make_report(source.description, options, tuple(iter_results(source, options)))


def recorded_rows(report: Report) -> list[dict[str, Any]]:
    """The rows a run keeps of a report: every analysed or failed layer (skipped ones, which
    are the same at every step, are left out)."""
    return [r.row() for r in report.layers if r.status is not Status.SKIPPED]


class Monitor:
    """Watch weight spectra while a model trains; records go to a run folder.

    Parameters
    ----------
    run_dir : path-like
        The run folder (see :mod:`weightspectra.training.run`); created if missing.
    every : int, default 100
        Analyse every ``every`` steps (or epochs, with ``unit="epochs"``): at steps that are
        multiples of it.
    unit : Cadence or str, default "steps"
        What :meth:`step` (``"steps"``) or :meth:`epoch_end` (``"epochs"``) counts.
    layers : sequence of int, str or LayerType, optional
        The layers to analyse (as ``Options.layers``: ids, types, name regexes); all by default.
    options : Options, optional
        Analysis options; default ``Options(precision="float32", randomize=True)``. Extra
        keyword arguments are set on top.
    background : bool, default False
        Analyse on a worker thread: :meth:`step` copies the weights and returns at once. Call
        :meth:`close` (or use the monitor as a context manager) to wait for the last steps.
    max_pending : int, default 2
        In the background, at most this many steps wait for analysis; a further due step waits
        for the oldest (the memory of the copies stays bounded).
    resume : Resume or str, default "append"
        With records in ``run_dir``: continue (steps already recorded are not recorded again,
        the options must be the same), ``"overwrite"``, or ``"never"`` (an error).
    total_steps : int, optional
        The length of training; with it, "late in training" starts at ``late_fraction`` of it.
    late_fraction : float, default 0.5
    late_step : int, optional
        The step from which "late in training" holds (overrides ``total_steps``); without
        either, the late-α alarm is off.
    blas_threads : int or None, default 1
        BLAS threads of the analysis (``threadpoolctl``, for the length of each analysis).
        Training already keeps the cores busy: on this project's loaded 2-core machine the
        example of docs/training.md took 2.5 s per analysis and 228 s in all with numpy's
        default BLAS threads, 0.03 s and 11 s with one. ``None`` leaves the BLAS setting as
        it is.

    Raises
    ------
    OptionError
        On invalid settings, or a run folder recorded with other settings.

    Examples
    --------
    >>> monitor = Monitor("runs/demo", every=50, layers=["dense"])   # doctest: +SKIP
    >>> for step in range(1, 1001):                                  # doctest: +SKIP
    ...     train_step()
    ...     monitor.step(model, step=step)
    >>> monitor.close()                                              # doctest: +SKIP
    >>> weightspectra.training.read_run("runs/demo").to_pandas()     # doctest: +SKIP
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        every: int = DEFAULT_EVERY,
        unit: Cadence | str = Cadence.STEPS,
        layers: Selector | None = None,
        options: Options | None = None,
        background: bool = False,
        max_pending: int = 2,
        resume: Resume | str = Resume.APPEND,
        total_steps: int | None = None,
        late_fraction: float = 0.5,
        late_step: int | None = None,
        blas_threads: int | None = 1,
        **kwargs: Any,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise OptionError(f"every must be an integer ≥ 1, got {every!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise OptionError(f"max_pending must be an integer ≥ 1, got {max_pending!r}")
        if not 0.0 <= late_fraction <= 1.0:
            raise OptionError(f"late_fraction must be in [0, 1], got {late_fraction!r}")
        if blas_threads is not None and (
            isinstance(blas_threads, bool) or not isinstance(blas_threads, int) or blas_threads < 1
        ):
            raise OptionError(f"blas_threads must be an integer ≥ 1 or None, got {blas_threads!r}")
        self.blas_threads = blas_threads
        self.every = every
        self.unit = parse_enum(Cadence, unit, "unit")
        self.options = monitor_options(options, layers, **kwargs)
        self.background = bool(background)
        self.max_pending = max_pending
        self.total_steps = total_steps
        self.late_fraction = late_fraction
        self._late_step = late_step
        config = {"every": every, "unit": self.unit.value, "producer": "monitor"}
        self.writer = RunWriter(
            Path(run_dir), self.options.to_dict(), config, parse_enum(Resume, resume, "resume")
        )
        self.seconds_blocking = 0.0  #: time :meth:`step` held the training loop, in all
        self.seconds_analysing = 0.0  #: time spent analysing, in all (on whichever thread)
        self.last_report: Report | None = None  #: the report of the last analysed step
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._scheduled: set[int] = set()
        self._closed = False

    @property
    def run_dir(self) -> Path:
        return self.writer.path

    @property
    def late_step(self) -> int | None:
        """The step from which the late-α alarm applies (None: off)."""
        if self._late_step is not None:
            return self._late_step
        if self.total_steps is not None:
            return int(self.late_fraction * self.total_steps)
        return None

    @property
    def recorded_steps(self) -> tuple[int, ...]:
        """The steps recorded so far (committed), ascending; pending ones are not included."""
        return tuple(sorted(self.writer.committed))

    def due(self, count: int) -> bool:
        """Whether a step (or epoch) number is one to analyse at this cadence."""
        return count % self.every == 0

    def step(self, model: object, *, step: int, epoch: float | None = None) -> Report | None:
        """Call after optimiser step ``step`` (1-based); analyses when due (``unit="steps"``).

        Returns the step's report when it was analysed on this thread, else ``None`` (not due,
        already recorded, or analysed in the background).
        """
        if self.unit is not Cadence.STEPS or not self.due(step):
            return None
        return self.analyze_now(model, step=step, epoch=epoch)

    def epoch_end(self, model: object, *, epoch: int, step: int | None = None) -> Report | None:
        """Call at the end of epoch ``epoch`` (1-based); analyses when due (``unit="epochs"``).
        Records are keyed by ``step`` (default: the epoch number)."""
        if self.unit is not Cadence.EPOCHS or not self.due(epoch):
            return None
        return self.analyze_now(model, step=epoch if step is None else step, epoch=epoch)

    def analyze_now(self, model: object, *, step: int, epoch: float | None = None) -> Report | None:
        """Analyse ``model`` as step ``step`` whatever the cadence (unless already recorded).

        Raises
        ------
        Exception
            The error of an earlier background step, re-raised here (and by :meth:`close`).
        """
        self._check_open()
        self._raise_finished()
        if self.writer.has_step(step) or step in self._scheduled:
            return None
        start = time.perf_counter()
        source = snapshot(model, self.options)
        if not self.background:
            report = self._analyse(source, step, epoch, start)
            self.seconds_blocking += time.perf_counter() - start
            return report
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="weightspectra-monitor")
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._scheduled.add(step)
        self._pending.append(self._pool.submit(self._analyse_job, source, step, epoch, start))
        self.seconds_blocking += time.perf_counter() - start
        return None

    def _analyse_job(self, source: Source, step: int, epoch: float | None, start: float) -> None:
        try:
            self._analyse(source, step, epoch, start)
        finally:
            self._scheduled.discard(step)

    def _analyse(self, source: Source, step: int, epoch: float | None, start: float) -> Report:
        t0 = time.perf_counter()
        if self.blas_threads is None:
            report = analyse_source(source, self.options)
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=self.blas_threads, user_api="blas"):
                report = analyse_source(source, self.options)
        rows = recorded_rows(report)
        rules = AlarmRules.from_options(report.options, self.late_step)
        alarms = check_alarms(
            [r for r in rows if r.get("status") == "ok"],
            report.diagnostics,
            rules,
            step=step,
            epoch=epoch,
        )
        self.seconds_analysing += time.perf_counter() - t0
        self.writer.write_step(
            step, epoch, rows, alarms, seconds=time.perf_counter() - start, source="monitor"
        )
        self.last_report = report
        return report

    def log(self, step: int, epoch: float | None = None, **values: float) -> None:
        """Record training numbers (loss, accuracy) at ``step``, for the run's pictures."""
        self._check_open()
        self.writer.log_scalars(step, epoch, values)

    def log_mapping(
        self, step: int, values: Mapping[str, float], epoch: float | None = None
    ) -> None:
        """:meth:`log` for names that are not identifiers (``"train/loss"``)."""
        self._check_open()
        self.writer.log_scalars(step, epoch, values)

    def _raise_finished(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()  # re-raises a background failure

    def wait(self) -> None:
        """Wait until every pending background step is recorded (re-raising its error)."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for pending steps and stop the worker; the monitor cannot be used after."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise OptionError("this Monitor is closed; make a new one on the same run_dir")

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
