"""The run folder: JSON-lines records of a training run, appendable, resumable, read back.

Layout of a run folder::

    run.json        what the run is: its analysis options and cadence (written once)
    layers.jsonl    one record per layer per analysed step: step, epoch, then the report row
    events.jsonl    one record per alarm (:class:`~weightspectra.training.alarms.Alarm`)
    scalars.jsonl   logged training numbers (loss, accuracy): step, epoch, name, value
    steps.jsonl     the commit log: one line per analysed step, written after its records

A step counts as recorded only once its line is in ``steps.jsonl``. A process killed while
writing a step leaves records without a commit line (or half a line); reopening the folder drops
them, so a restarted run records that step again, once: no step is duplicated or lost.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightspectra._version import __version__
from weightspectra.errors import InputError, MissingDependencyError, OptionError
from weightspectra.report.results import decode_metrics, encode_value
from weightspectra.training.alarms import Alarm

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RUN_FORMAT", "Resume", "Run", "RunWriter", "read_run"]

#: The ``format`` written in ``run.json``, and its version.
RUN_FORMAT = "weightspectra-run"
RUN_VERSION = 1

_FILES = ("layers.jsonl", "events.jsonl", "scalars.jsonl", "steps.jsonl")


class Resume(str, Enum):
    """What to do with a run folder that already holds records."""

    APPEND = "append"  # continue it: steps already recorded are not recorded again
    OVERWRITE = "overwrite"  # start it afresh (its records are deleted)
    NEVER = "never"  # refuse (an error) if it holds records


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON records of a JSON-lines file; a torn last line is ignored."""
    if not path.is_file():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # the process was killed while writing it
            text = line.strip()
            if text:
                try:
                    yield json.loads(text)
                except json.JSONDecodeError:
                    return


def _encode(record: Mapping[str, Any]) -> str:
    return json.dumps({k: encode_value(v) for k, v in record.items()}, allow_nan=False)


def _decode(record: Mapping[str, Any]) -> dict[str, Any]:
    return dict(decode_metrics(record))


def _same(a: Any, b: Any) -> bool:
    # JSON turns tuples into lists: compare the stored form of both.
    return bool(json.loads(json.dumps(a)) == json.loads(json.dumps(b)))


@dataclass
class RunWriter:
    """Appends the records of one run to its folder (one writer per folder at a time).

    Opening a folder that holds records follows ``resume``; in append mode the stored options
    and config must equal the given ones, and records of steps never committed are dropped.

    Parameters
    ----------
    path : path-like
        The run folder (created if missing).
    options : mapping
        The analysis options as plain values (``Options.to_dict()``).
    config : mapping
        The producer's settings (cadence, layers...), stored in ``run.json``.
    resume : Resume or str, default "append"

    Raises
    ------
    OptionError
        If the folder holds a run with other options or config (the message names them), or
        holds records and ``resume="never"``.
    InputError
        If ``run.json`` is not a weightspectra run.
    """

    path: Path
    options: Mapping[str, Any]
    config: Mapping[str, Any]
    resume: Resume = Resume.APPEND
    committed: dict[int, dict[str, Any]] = field(init=False, default_factory=dict)
    fired: set[tuple[str, str]] = field(init=False, default_factory=set)
    scalars_seen: set[tuple[int, str]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.resume = Resume(self.resume)
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "run.json"
        has_records = any((self.path / name).exists() for name in _FILES)
        if meta_path.exists() or has_records:
            if self.resume is Resume.NEVER:
                raise OptionError(
                    f"run folder {self.path} already holds a run; pass resume='append' to "
                    "continue it, resume='overwrite' to start afresh, or another folder"
                )
            if self.resume is Resume.OVERWRITE:
                for name in (*_FILES, "run.json"):
                    (self.path / name).unlink(missing_ok=True)
        if meta_path.exists():
            self._check_meta(read_meta(self.path))
        else:
            meta = {
                "format": RUN_FORMAT,
                "version": RUN_VERSION,
                "weightspectra": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "options": dict(self.options),
                "config": dict(self.config),
            }
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, meta_path)
        self._recover()

    def _check_meta(self, meta: Mapping[str, Any]) -> None:
        for what, mine in (("options", self.options), ("config", self.config)):
            stored = meta.get(what, {})
            diff = sorted(
                k for k in set(stored) | set(mine) if not _same(stored.get(k), dict(mine).get(k))
            )
            if diff:
                shown = ", ".join(
                    f"{k}: stored {stored.get(k)!r}, given {mine.get(k)!r}" for k in diff
                )
                raise OptionError(
                    f"run folder {self.path} was recorded with other {what} ({shown}); "
                    "resume it with the same settings, or use resume='overwrite' or another folder"
                )

    def _recover(self) -> None:
        """Drop what a killed process left half-written; load the committed steps."""
        self.committed = {int(r["step"]): r for r in _lines(self.path / "steps.jsonl")}
        self._rewrite("steps.jsonl", lambda r: True)
        self._rewrite("layers.jsonl", lambda r: int(r["step"]) in self.committed)
        self._rewrite("events.jsonl", lambda r: int(r["step"]) in self.committed)
        self._rewrite("scalars.jsonl", lambda r: True)
        self.fired = {(r["kind"], r["layer"]) for r in _lines(self.path / "events.jsonl")}
        self.scalars_seen = {
            (int(r["step"]), str(r["name"])) for r in _lines(self.path / "scalars.jsonl")
        }

    def _rewrite(self, name: str, keep: Any) -> None:
        path = self.path / name
        if not path.exists():
            return
        kept = [r for r in _lines(path) if keep(r)]
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept)
        if text.encode("utf-8") == path.read_bytes():
            return
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def has_step(self, step: int) -> bool:
        """Whether ``step`` is recorded (committed)."""
        return step in self.committed

    def _append(self, name: str, records: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(_encode(r) + "\n" for r in records)
        if not text:
            return
        with (self.path / name).open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()

    def write_step(
        self,
        step: int,
        epoch: float | None,
        rows: Sequence[Mapping[str, Any]],
        alarms: Sequence[Alarm],
        *,
        seconds: float,
        source: str = "",
    ) -> list[Alarm]:
        """Record one analysed step: its layer rows, the alarms firing for the first time, and
        its commit line (last). Returns the alarms written (first firings only).

        Raises
        ------
        InputError
            If ``step`` is already recorded.
        """
        if step in self.committed:
            raise InputError(f"step {step} is already recorded in {self.path}")
        self._append("layers.jsonl", ({"step": step, "epoch": epoch, **row} for row in rows))
        new = [a for a in alarms if (a.kind.value, a.layer) not in self.fired]
        self._append("events.jsonl", (a.to_dict() for a in new))
        self.fired.update((a.kind.value, a.layer) for a in new)
        commit = {
            "step": step,
            "epoch": epoch,
            "time": time.time(),
            "seconds": seconds,
            "num_layers": len(rows),
            "source": source,
        }
        self._append("steps.jsonl", [commit])
        self.committed[step] = commit
        return new

    def log_scalars(self, step: int, epoch: float | None, values: Mapping[str, float]) -> None:
        """Record logged training numbers; a (step, name) already recorded is not repeated."""
        fresh = [
            {"step": step, "epoch": epoch, "name": str(k), "value": float(v)}
            for k, v in values.items()
            if (step, str(k)) not in self.scalars_seen
        ]
        self._append("scalars.jsonl", fresh)
        self.scalars_seen.update((step, str(r["name"])) for r in fresh)


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``run.json`` of a run folder.

    Raises
    ------
    InputError
        If the folder has no ``run.json`` or it is not a weightspectra run.
    """
    meta_path = Path(path) / "run.json"
    if not meta_path.is_file():
        raise InputError(
            f"{path} is not a run folder (no run.json); make one with "
            "weightspectra.training.Monitor or weightspectra.analyze_series"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise InputError(f"{meta_path} is not a weightspectra run (format {RUN_FORMAT!r})")
    return meta


@dataclass(frozen=True)
class Run:
    """A run folder read back: its records, in step order.

    Attributes
    ----------
    path : Path
    meta : mapping
        ``run.json``: ``options`` (the analysis options), ``config`` (cadence, layers...).
    steps : tuple of mapping
        The commit line of each recorded step, ascending: step, epoch, time, seconds (the cost
        of analysing it), num_layers, source (a checkpoint's path for a series).
    layers : tuple of mapping
        One record per layer per recorded step: ``step``, ``epoch``, then the report row's
        columns (non-finite numbers decoded back to floats).
    events : tuple of Alarm
    scalars : tuple of mapping
        ``step``, ``epoch``, ``name``, ``value``.
    """

    path: Path
    meta: Mapping[str, Any]
    steps: tuple[Mapping[str, Any], ...]
    layers: tuple[Mapping[str, Any], ...]
    events: tuple[Alarm, ...]
    scalars: tuple[Mapping[str, Any], ...]

    @property
    def options(self) -> Mapping[str, Any]:
        """The analysis options of the run (plain values)."""
        return dict(self.meta.get("options", {}))

    @property
    def step_numbers(self) -> tuple[int, ...]:
        return tuple(int(s["step"]) for s in self.steps)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the recorded layers, in model order (by ``layer_id``, then name)."""
        first: dict[str, tuple[int, str]] = {}
        for r in self.layers:
            first.setdefault(str(r["name"]), (int(r.get("layer_id", 0)), str(r["name"])))
        return tuple(sorted(first, key=lambda n: first[n]))

    def series(self, column: str) -> dict[str, list[tuple[int, float]]]:
        """``{layer: [(step, value), ...]}`` of one numeric column (missing values skipped)."""
        out: dict[str, list[tuple[int, float]]] = {n: [] for n in self.layer_names}
        for r in self.layers:
            v = r.get(column)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[str(r["name"])].append((int(r["step"]), float(v)))
        return out

    def to_pandas(self, what: str = "layers") -> pd.DataFrame:
        """The records as a DataFrame: ``"layers"`` (default), ``"events"``, ``"scalars"`` or
        ``"steps"``.

        Raises
        ------
        MissingDependencyError
            If pandas is not installed.
        InputError
            On another ``what``.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingDependencyError("pandas", "pandas", "Run.to_pandas") from exc
        tables: dict[str, list[Mapping[str, Any]]] = {
            "layers": list(self.layers),
            "events": [a.to_dict() for a in self.events],
            "scalars": list(self.scalars),
            "steps": list(self.steps),
        }
        if what not in tables:
            raise InputError(f"what={what!r}: choose one of {', '.join(map(repr, tables))}")
        return pd.DataFrame.from_records(tables[what])


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a run folder (written by the monitor, a callback or a checkpoint series).

    Only committed steps are read: records a killed process left half-written are ignored.

    Raises
    ------
    InputError
        If ``path`` is not a run folder.

    Examples
    --------
    >>> run = read_run("runs/mnist")                 # doctest: +SKIP
    >>> run.to_pandas().pivot(index="step", columns="name", values="alpha")  # doctest: +SKIP
    """
    folder = Path(path)
    meta = read_meta(folder)
    steps = sorted(_lines(folder / "steps.jsonl"), key=lambda r: int(r["step"]))
    committed = {int(s["step"]) for s in steps}
    layers = [_decode(r) for r in _lines(folder / "layers.jsonl") if int(r["step"]) in committed]
    layers.sort(key=lambda r: (int(r["step"]), int(r.get("layer_id", 0))))
    events = [
        Alarm.from_dict(r) for r in _lines(folder / "events.jsonl") if int(r["step"]) in committed
    ]
    events.sort(key=lambda a: (a.step, a.layer, a.kind.value))
    scalars = sorted(_lines(folder / "scalars.jsonl"), key=lambda r: (int(r["step"]), r["name"]))
    return Run(folder, meta, tuple(steps), tuple(layers), tuple(events), tuple(scalars))
