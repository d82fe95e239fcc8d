"""The ``weightspectra runs`` command: ``runs show RUNDIR`` (terminal summary, optional HTML
page) and ``runs series FOLDER`` (a folder of checkpoints analysed into a run folder).

:mod:`weightspectra.cli` adds the parser (:func:`add_runs_parser`) and calls :func:`run_runs`;
only that module writes to the terminal, through the streams it passes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from weightspectra.enums import Precision
from weightspectra.options import Options

__all__ = ["add_runs_parser", "run_runs"]


def add_runs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``runs`` command and its two actions."""
    runs = sub.add_parser("runs", help="spectra during training: show a run, analyse checkpoints")
    actions = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="summarise a run folder (and write an HTML page)")
    show.add_argument("run_dir", type=Path, metavar="RUNDIR")
    show.add_argument("--html", type=Path, metavar="PATH", help="also write an HTML page here")
    show.add_argument(
        "--format",
        "-f",
        default="text",
        choices=["text", "csv", "json"],
        help="text summary (default), or every layer record as CSV or JSON lines",
    )
    show.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    series = actions.add_parser(
        "series", help="analyse a folder of checkpoints (checkpoint-N, step_N.safetensors, .ckpt)"
    )
    series.add_argument("folder", type=Path, metavar="FOLDER")
    series.add_argument(
        "--run", type=Path, metavar="RUNDIR", help="the run folder (default: FOLDER/spectra-run)"
    )
    series.add_argument(
        "--precision",
        default=Precision.FLOAT32.value,
        choices=[p.value for p in Precision],
        help="precision of the eigenvalues (default: float32, as the training monitor)",
    )
    series.add_argument(
        "--no-randomize",
        action="store_true",
        help="skip the shuffled-matrix spectra (no correlation traps, about half the time)",
    )
    series.add_argument(
        "--layers", action="append", metavar="SEL", help="keep only these layers (as analyze)"
    )
    series.add_argument("--html", type=Path, metavar="PATH", help="also write an HTML page here")
    series.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _selectors(values: list[str] | None) -> tuple[int | str, ...] | None:
    if not values:
        return None
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(int(v) if v.isdigit() else v for v in items)


def run_runs(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``runs show`` or ``runs series``; returns the exit code (0)."""
    from weightspectra.training.render import run_summary
    from weightspectra.training.run import read_run

    if args.runs_command == "series":
        from weightspectra.training.series import analyze_series

        options = Options(
            precision=args.precision,
            randomize=not args.no_randomize,
            layers=_selectors(args.layers),
        )

        def progress(ckpt: object) -> None:
            stderr.write(f"weightspectra: analysing {getattr(ckpt, 'path', ckpt)}\n")

        run = analyze_series(args.folder, options, run_dir=args.run, progress=progress)
        stdout.write(run_summary(run))
    else:
        run = read_run(args.run_dir)
        if args.format == "text":
            stdout.write(run_summary(run))
        elif args.format == "csv":
            stdout.write(run.to_pandas().to_csv(index=False))
        else:
            import json

            for record in run.layers:
                stdout.write(json.dumps(dict(record), default=str) + "\n")
    if args.html is not None:
        from weightspectra.training.html import write_run_html

        path = write_run_html(run, args.html)
        stderr.write(f"weightspectra: wrote the HTML page of the run to {path}\n")
    return 0
