"""``weightspectra allocate REPORT.json --kind sparsity --budget 0.7``: a per-layer plan from a
report (or from a model, analysed first), printed as a table and written as JSON.

:mod:`weightspectra.cli` adds the parser (:func:`add_allocate_parser`) and calls
:func:`run_allocate` with its streams; nothing here writes elsewhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from weightspectra.allocation.engine import (
    DEFAULT_BOUNDS,
    DEFAULT_SPREAD,
    allocate,
    is_report_json,
)
from weightspectra.enums import AllocationKind, AllocationMapping, Estimator
from weightspectra.errors import InputError

__all__ = ["add_allocate_parser", "run_allocate"]


def _defaults() -> str:
    parts = []
    for kind in AllocationKind:
        lo, hi = DEFAULT_BOUNDS[kind]
        spread = DEFAULT_SPREAD[kind]
        width = f"{spread:g}×budget" if kind is AllocationKind.RANK else f"{spread:g}"
        parts.append(f"{kind.value}: bounds {lo:g}..{hi:g}, spread {width}")
    return "; ".join(parts)


def add_allocate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``allocate`` command."""
    p = sub.add_parser(
        "allocate",
        help="per-layer sparsity, bits or LoRA ranks from a report's α (budget met exactly)",
        description=f"Defaults: {_defaults()}.",
    )
    p.add_argument(
        "report",
        help="a report JSON (weightspectra analyze MODEL -f json -o R.json) or a model to analyse",
    )
    p.add_argument(
        "--kind", default="sparsity", choices=[k.value for k in AllocationKind], help="what to plan"
    )
    p.add_argument("--budget", type=float, required=True, help="weighted mean to meet")
    p.add_argument(
        "--metric", default="alpha", help="report column to allocate from (default alpha)"
    )
    p.add_argument(
        "--mapping",
        default="linear",
        choices=[m.value for m in AllocationMapping],
        help="metric to offsets: linear (default), rank, or uniform (the baseline)",
    )
    p.add_argument("--bounds", type=float, nargs=2, metavar=("LOW", "HIGH"), help="value range")
    p.add_argument("--spread", type=float, help="offset width before clipping")
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix one layer's value (repeatable)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="REGEX", help="leave layers out"
    )
    p.add_argument("--include-embeddings", action="store_true", help="plan embeddings too")
    p.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        metavar="N",
        help="values bits or ranks may take (e.g. 2 3 4 8); default every integer in the bounds",
    )
    p.add_argument(
        "--group",
        metavar="REGEX",
        help=r"layers matching alike share one value, e.g. 'layers\.(\d+)\.' (block-wise)",
    )
    p.add_argument("--output", "-o", type=Path, help="write the plan JSON here")
    p.add_argument(
        "--format", "-f", default="table", choices=["table", "json"], help="what to print"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _pins(values: list[str]) -> dict[str, float]:
    out = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InputError(f"--pin takes NAME=VALUE (e.g. classifier=0.0), got {item!r}")
    return out


def run_allocate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Plan, print, write; errors propagate to the CLI's handler."""
    if not is_report_json(Path(args.report)):
        estimator = Estimator.FARMS if args.metric.endswith("_farms") else Estimator.PLAIN
        stderr.write(f"weightspectra: analysing {args.report} (estimator {estimator.value})\n")
    plan = allocate(
        args.report,
        budget=args.budget,
        kind=args.kind,
        metric=args.metric,
        mapping=args.mapping,
        bounds=None if args.bounds is None else (args.bounds[0], args.bounds[1]),
        spread=args.spread,
        pin=_pins(args.pin),
        exclude=tuple(args.exclude),
        include_embeddings=args.include_embeddings,
        candidates=args.candidates,
        group=args.group,
    )
    stdout.write(plan.to_json() + "\n" if args.format == "json" else plan.table())
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        plan.to_json(args.output)
        stderr.write(
            f"weightspectra: wrote the plan ({len(plan.values)} layers) to {args.output}\n"
        )
    return 0
