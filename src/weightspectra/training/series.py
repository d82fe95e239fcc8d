"""Checkpoint series: the spectra of saved checkpoints, ordered by step, as a run folder.

:func:`find_checkpoints` lists the checkpoints of a folder with their steps (Hugging Face
``checkpoint-N`` folders, Lightning ``epoch=E-step=N.ckpt`` files, numbered weight files such
as ``step_000100.safetensors``); :func:`analyze_series` analyses each with
:func:`weightspectra.analyze` and writes the same records as the training monitor.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightspectra.analysis import analyze
from weightspectra.enums import Precision
from weightspectra.errors import InputError, ModelFileNotFoundError, OptionError
from weightspectra.options import Options
from weightspectra.training.alarms import AlarmRules, check_alarms
from weightspectra.training.monitor import recorded_rows
from weightspectra.training.run import Resume, Run, RunWriter, read_run

__all__ = ["Checkpoint", "analyze_series", "find_checkpoints"]

#: Suffixes of single-file checkpoints a series may hold.
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".npz")

_HF_DIR = re.compile(r"^checkpoint-(\d+)$")
_STEP = re.compile(r"step[=_-]?(\d+)", re.IGNORECASE)
_EPOCH = re.compile(r"epoch[=_-]?(\d+)", re.IGNORECASE)
_SHARD = re.compile(r"-\d+-of-\d+$")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a series: its path, step and (when known) epoch."""

    path: Path
    step: int
    epoch: float | None = None


def _file_step(path: Path) -> tuple[int, float | None] | None:
    stem = path.name[: -len(path.suffix)]
    if _SHARD.search(stem):
        return None  # one shard of a sharded checkpoint, not a step of a series
    epoch_match = _EPOCH.search(stem)
    epoch = float(epoch_match.group(1)) if epoch_match else None
    step = _STEP.search(stem)
    if step is not None:
        return int(step.group(1)), epoch
    last = _LAST_NUMBER.search(stem)
    if last is None or epoch_match is not None:
        return None
    return int(last.group(1)), None


def _hf_epoch(folder: Path) -> float | None:
    state = folder / "trainer_state.json"
    if not state.is_file():
        return None
    try:
        epoch = json.loads(state.read_text(encoding="utf-8")).get("epoch")
    except (json.JSONDecodeError, OSError):
        return None
    return float(epoch) if isinstance(epoch, (int, float)) else None


def find_checkpoints(folder: str | os.PathLike[str]) -> list[Checkpoint]:
    """The checkpoints of ``folder``, ordered by step.

    Recognised: sub-folders ``checkpoint-N`` (Hugging Face; epoch from their
    ``trainer_state.json``), and files with a suffix of :data:`FILE_SUFFIXES` whose name holds
    the step (``step=N``, ``step_N``, ``stepN``; else the last number of the name, unless the
    name also has an epoch and no step). Shards (``-00001-of-00002``) and names without a
    number (``last.ckpt``) are not steps.

    Raises
    ------
    ModelFileNotFoundError
        If ``folder`` is not a folder.
    InputError
        If it holds no checkpoint, or two checkpoints of the same step (both are named).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ModelFileNotFoundError(f"{root} is not a folder of checkpoints")
    found: list[Checkpoint] = []
    for child in sorted(root.iterdir()):
        if child.is_dir():
            match = _HF_DIR.match(child.name)
            if match:
                found.append(Checkpoint(child, int(match.group(1)), _hf_epoch(child)))
        elif child.suffix in FILE_SUFFIXES:
            parsed = _file_step(child)
            if parsed is not None:
                found.append(Checkpoint(child, *parsed))
    if not found:
        raise InputError(
            f"no checkpoints found in {root}: expected checkpoint-N folders or files named "
            f"with their step (step_100.safetensors, epoch=0-step=100.ckpt); suffixes "
            f"{', '.join(FILE_SUFFIXES)}"
        )
    found.sort(key=lambda c: c.step)
    for a, b in itertools.pairwise(found):
        if a.step == b.step:
            raise InputError(
                f"two checkpoints of step {a.step} in {root}: {a.path.name} and {b.path.name}; "
                "move one out of the folder"
            )
    return found


def _hf_scalars(checkpoints: list[Checkpoint]) -> list[tuple[int, float | None, dict[str, float]]]:
    """The logged numbers of the last Hugging Face checkpoint's ``trainer_state.json``."""
    for ckpt in reversed(checkpoints):
        state = ckpt.path / "trainer_state.json"
        if ckpt.path.is_dir() and state.is_file():
            try:
                history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
            except (json.JSONDecodeError, OSError):
                return []
            out = []
            for entry in history:
                if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                    continue
                values = {
                    k: float(v)
                    for k, v in entry.items()
                    if k not in ("step", "epoch") and isinstance(v, (int, float))
                }
                epoch = entry.get("epoch")
                out.append((entry["step"], float(epoch) if epoch is not None else None, values))
            return out
    return []


def analyze_series(
    folder: str | os.PathLike[str],
    options: Options | None = None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: Resume | str = Resume.APPEND,
    late_fraction: float = 0.5,
    progress: Callable[[Checkpoint], None] | None = None,
    **kwargs: Any,
) -> Run:
    """Analyse every checkpoint of ``folder`` in step order into a run folder, and read it back.

    Parameters
    ----------
    folder : path-like
        A folder of checkpoints (see :func:`find_checkpoints`).
    options : Options, optional
        Analysis options; by default those of the training monitor
        (``Options(precision="float32", randomize=True)``), so that a series and a monitored run
        give the same records. Keyword arguments are set on top.
    run_dir : path-like, optional
        The run folder (default: ``folder/spectra-run``). Checkpoints already recorded there
        are not analysed again (a rerun after new checkpoints appeared analyses only those);
        with ``options.cache`` each tensor's result is cached as well.
    resume : Resume or str, default "append"
    late_fraction : float, default 0.5
        "Late in training" (the late-α alarm) starts at this fraction of the last step.
    progress : callable, optional
        Called with each :class:`Checkpoint` before it is analysed.

    Returns
    -------
    Run
        The run folder read back (:meth:`Run.to_pandas`).

    Raises
    ------
    InputError, ModelFileNotFoundError
        From :func:`find_checkpoints` or when a checkpoint cannot be opened.
    OptionError
        On invalid options, or a run folder recorded with other options.
    """
    if not 0.0 <= late_fraction <= 1.0:
        raise OptionError(f"late_fraction must be in [0, 1], got {late_fraction!r}")
    base = options if options is not None else Options(precision=Precision.FLOAT32, randomize=True)
    opts = base.replace(**kwargs) if kwargs else base
    checkpoints = find_checkpoints(folder)
    target = Path(run_dir) if run_dir is not None else Path(folder) / "spectra-run"
    config = {"producer": "series", "folder": str(Path(folder).resolve())}
    writer = RunWriter(target, opts.to_dict(), config, Resume(resume))
    late_step = int(late_fraction * checkpoints[-1].step)
    for ckpt in checkpoints:
        if writer.has_step(ckpt.step):
            continue
        if progress is not None:
            progress(ckpt)
        start = time.perf_counter()
        try:
            report = analyze(ckpt.path, opts)
        except InputError as exc:
            raise type(exc)(f"checkpoint of step {ckpt.step} ({ckpt.path}): {exc}") from exc
        rows = recorded_rows(report)
        alarms = check_alarms(
            [r for r in rows if r.get("status") == "ok"],
            report.diagnostics,
            AlarmRules.from_options(report.options, late_step),
            step=ckpt.step,
            epoch=ckpt.epoch,
        )
        writer.write_step(
            ckpt.step,
            ckpt.epoch,
            rows,
            alarms,
            seconds=time.perf_counter() - start,
            source=str(ckpt.path),
        )
    for step, epoch, values in _hf_scalars(checkpoints):
        writer.log_scalars(step, epoch, values)
    return read_run(target)
