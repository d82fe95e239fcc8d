"""Command-line front end: parse, call the library, render, exit code. The only module that
writes to the terminal."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO

from weightspectra._version import __version__
from weightspectra.allocation.cli import add_allocate_parser, run_allocate
from weightspectra.analysis import Progress, analyze, describe
from weightspectra.backends.cli import add_bench_solvers_parser, run_bench_solvers
from weightspectra.errors import OptionError, WeightSpectraError
from weightspectra.options import Options, option_specs
from weightspectra.report.render import Format, render
from weightspectra.report.results import Report
from weightspectra.training.cli import add_runs_parser, run_runs

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


#: Longest layer name the progress bar shows (a longer one keeps its end).
_BAR_NAME = 40


@contextmanager
def progress_bar(stream: TextIO, *, enabled: bool) -> Iterator[Callable[[Progress], None] | None]:
    """A progress bar (rich's) on ``stream`` for the length of the block, redrawn at most ten
    times a second; ``None`` when not ``enabled``. On a stream that is not a terminal it writes
    its last state once, at the end."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    bar = Bar(
        TextColumn("analysing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=Console(file=stream),
        # No refresh thread and no redirection of sys.stdout: the CLI draws on each update.
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = bar.add_task("", total=None)
    last = [0.0]

    def update(p: Progress) -> None:
        name = p.name if len(p.name) <= _BAR_NAME else "…" + p.name[-_BAR_NAME + 1 :]
        bar.update(task, completed=p.done, total=p.total, description=name)
        now = time.monotonic()
        if p.done >= p.total or now - last[0] >= 0.1:
            last[0] = now
            bar.refresh()

    with bar:
        yield update


def _write_table(stdout: TextIO, text: str, report: Report, include: str) -> None:
    """The table as text; in colour, with the verdict, when ``stdout`` is a terminal (rich
    honours ``NO_COLOR`` and ``TERM=dumb``)."""
    if not stdout.isatty():
        stdout.write(text)
        return
    from rich.console import Console

    from weightspectra.report.terminal import styled_table

    console = Console(file=stdout, highlight=False, soft_wrap=True)
    console.print(styled_table(report, include), end="")


def _split_list(values: Sequence[str] | None) -> tuple[int | str, ...] | None:
    if not values:
        return None
    out: list[int | str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item:
                out.append(int(item) if item.isdigit() else item)
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightspectra",
        description="Judge trained neural networks by the spectra of their weight matrices.",
    )
    parser.add_argument("--version", action="version", version=f"weightspectra {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="a .safetensors/.pt/.bin/.npz file or a checkpoint folder")
        p.add_argument(
            "--format",
            "-f",
            default="table",
            choices=[f.value for f in Format],
            help="output format (default: table)",
        )
        p.add_argument("--output", "-o", type=Path, help="write the output to this file")
        p.add_argument(
            "--all-rows", action="store_true", help="also list skipped and failed tensors as rows"
        )
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    analyze_p = sub.add_parser("analyze", help="compute spectra, fits and metrics per layer")
    common(analyze_p)
    analyze_p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        default=None,
        help="also write a self-contained HTML report (plots embedded) here",
    )
    bar = analyze_p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show the progress bar on stderr",
    )
    bar.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show the progress bar"
    )
    analyze_p.add_argument(
        "--base",
        metavar="PATH",
        default=None,
        help="a base model: analyse W − W_base paired by name (for a PEFT adapter folder, the "
        "merged W + ΔW)",
    )
    analyze_p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        default=None,
        help="analyse on a Dask cluster: a scheduler address (tcp://HOST:8786), or local:N to "
        "start N local worker processes (needs weightspectra[cluster]; see docs/cluster.md)",
    )
    add_option_flags(analyze_p, describe=False)

    describe_p = sub.add_parser("describe", help="list layers, shapes and plans; compute nothing")
    common(describe_p)
    add_option_flags(describe_p, describe=True)
    _add_compare_parser(sub)
    _add_diff_parser(sub)
    add_runs_parser(sub)
    add_bench_solvers_parser(sub)
    add_allocate_parser(sub)
    return parser


def _add_compare_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compare", help="compare models: summaries, rankings, fits to accuracy")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="models to analyse, saved report JSONs, or CSVs of per-model metrics",
    )
    p.add_argument(
        "--accuracy",
        metavar="CSV_OR_COLUMN",
        default=None,
        help="a CSV of model,accuracy, or a column of the input CSVs (default: a "
        "'top1'/'accuracy' column when there is one)",
    )
    p.add_argument(
        "--metrics",
        action="append",
        metavar="M",
        help="metrics to compare, comma-separated (default: all summary metrics)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        default=None,
        help="also write a self-contained HTML comparison here",
    )
    p.add_argument(
        "--format",
        "-f",
        default="table",
        choices=["table", "markdown", "csv", "json"],
        help="output format (default: table; csv gives the fits)",
    )
    p.add_argument("--output", "-o", type=Path, help="write the output to this file")
    p.add_argument("--min-evals", type=int, default=8, help="for models analysed here")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _emit(text: str, args: argparse.Namespace, what: str, stdout: TextIO, stderr: TextIO) -> None:
    """``text`` to ``--output`` (saying so on stderr) or to stdout."""
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        stderr.write(f"weightspectra: wrote {what} ({args.format}) to {args.output}\n")
    else:
        stdout.write(text)


def _run_compare(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from weightspectra.compare import compare

    metrics = [str(m) for m in _split_list(args.metrics) or ()] or None
    cmp = compare(args.inputs, args.accuracy, metrics=metrics, min_evals=args.min_evals)
    _emit(cmp.render(args.format), args, "the comparison", stdout, stderr)
    if args.report is not None:
        cmp.to_html(args.report)
        stderr.write(f"weightspectra: wrote the HTML comparison to {args.report}\n")
    return EXIT_OK


def _add_diff_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("diff", help="distances between two models, layer by layer")
    p.add_argument("a", help="the first model (e.g. the base)")
    p.add_argument("b", help="the second model (a fine-tune, checkpoint or PEFT adapter folder)")
    p.add_argument("--top-k", type=int, default=10, help="singular directions compared")
    p.add_argument(
        "--format", "-f", default="table", choices=["table", "csv", "json"], help="output format"
    )
    p.add_argument("--output", "-o", type=Path, help="write the output to this file")
    p.add_argument("--plot", type=Path, metavar="PATH", help="also write a plot (png, svg, pdf)")
    p.add_argument(
        "--report", type=Path, metavar="PATH", help="also write a self-contained HTML page"
    )
    p.add_argument("--min-evals", type=int, default=8, help="for the ESD fits")
    p.add_argument(
        "--damage",
        action="store_true",
        help="B is a quantised A: per-layer spectral damage (Δα, W1, norms, traps) and the "
        "layers to keep at higher precision, instead of the distances",
    )
    p.add_argument(
        "--keep", type=int, default=None, metavar="K", help="with --damage: list the top K only"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _run_damage(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from weightspectra.allocation import keep_at_higher_precision, spectral_damage

    if args.format == "csv":
        raise OptionError("diff --damage prints a table or JSON; use --format table or json")
    reports = [analyze(m, randomize=True, min_evals=args.min_evals) for m in (args.a, args.b)]
    result = spectral_damage(*reports)
    keep = keep_at_higher_precision(
        result, None if args.keep is None else min(args.keep, len(result.rows))
    )
    text = (
        result.to_json() + "\n"
        if args.format == "json"
        else result.table()
        + "\nkeep at higher precision, most damaged first: "
        + ", ".join(keep)
        + "\n"
    )
    _emit(text, args, "the spectral damage", stdout, stderr)
    return EXIT_OK


def _run_diff(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.damage:
        return _run_damage(args, stdout, stderr)
    from weightspectra.distances import distances

    result = distances(args.a, args.b, top_k=args.top_k, min_evals=args.min_evals)
    _emit(result.render(args.format), args, "the distances", stdout, stderr)
    if args.plot is not None:
        result.plot(args.plot)
        stderr.write(f"weightspectra: wrote the plot to {args.plot}\n")
    if args.report is not None:
        result.to_html(args.report)
        stderr.write(f"weightspectra: wrote the HTML page to {args.report}\n")
    return EXIT_OK


#: Metavars of the option flags by kind.
_METAVAR = {"int": "N", "float": "X", "str": "DIR", "selector": "SEL"}


def add_option_flags(parser: argparse.ArgumentParser, *, describe: bool) -> None:
    """One flag per analysis option, built from :func:`weightspectra.options.option_specs`
    (``describe`` keeps only those that change the plan), grouped as the options declare."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in option_specs():
        if describe and not spec.describe:
            continue
        title = f"{spec.group} options" if spec.group == "analysis" else spec.group
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        group = groups[title]
        dest = f"opt_{spec.name}"
        if spec.kind == "bool":
            action = "store_false" if spec.default else "store_true"
            group.add_argument(
                spec.flag, dest=dest, action=action, default=spec.default, help=spec.help
            )
        elif spec.kind == "selector":
            group.add_argument(
                spec.flag, dest=dest, action="append", metavar=_METAVAR["selector"],
                help=spec.help,
            )  # fmt: skip
        elif spec.kind == "enum":
            group.add_argument(
                spec.flag, dest=dest, default=spec.default, choices=list(spec.choices),
                help=spec.help,
            )  # fmt: skip
        else:
            kind: type = {"int": int, "float": float, "str": str}[spec.kind]
            shown = "" if spec.default is None else f" (default: {spec.default})"
            help_text = spec.help if "default" in spec.help else spec.help + shown
            group.add_argument(
                spec.flag, dest=dest, type=kind, default=spec.default,
                metavar=_METAVAR[spec.kind], help=help_text,
            )  # fmt: skip


def _options(args: argparse.Namespace) -> Options:
    values: dict[str, object] = {}
    for spec in option_specs():
        dest = f"opt_{spec.name}"
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if spec.kind == "selector":
            value = _split_list(value) or (None if spec.name == "layers" else ())
        values[spec.name] = value
    return Options.from_kwargs(**values)


def run(argv: Sequence[str] | None, stdout: TextIO, stderr: TextIO) -> int:
    """Run the CLI with ``argv``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _debug_log(stderr, enabled=args.debug):
        return _run(args, stdout, stderr)


@contextmanager
def _debug_log(stream: TextIO, *, enabled: bool) -> Iterator[None]:
    """With ``--debug``, the library's DEBUG log (e.g. the traceback behind a failed row's
    'internal error') goes to ``stream`` for the length of the run; nothing is changed
    otherwise, and everything is put back after."""
    if not enabled:
        yield
        return
    logger = logging.getLogger("weightspectra")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("weightspectra: %(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    try:
        if args.command == "compare":
            return _run_compare(args, stdout, stderr)
        if args.command == "diff":
            return _run_diff(args, stdout, stderr)
        if args.command == "runs":
            return run_runs(args, stdout, stderr)
        if args.command == "bench-solvers":
            return run_bench_solvers(args, stdout, stderr)
        if args.command == "allocate":
            return run_allocate(args, stdout, stderr)
        options = _options(args)
        include = "all" if args.all_rows else "analysed"
        if args.command == "analyze":
            show = args.progress if args.progress is not None else stderr.isatty()
            with ExitStack() as stack:
                client = None
                if args.cluster is not None:
                    from weightspectra.runtime.cluster import connect

                    client = stack.enter_context(connect(args.cluster))
                    stderr.write(f"weightspectra: Dask dashboard at {client.dashboard_link}\n")
                bar = stack.enter_context(progress_bar(stderr, enabled=show))
                report = analyze(args.model, options, progress=bar, base=args.base, client=client)
        else:
            report = describe(args.model, options)
        text = render(report, args.format, include=include)
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text)
            stderr.write(
                f"weightspectra: wrote {len(report.rows(include))} rows ({args.format}) "
                f"to {args.output}\n"
            )
        elif args.format == Format.TABLE.value:
            _write_table(stdout, text, report, include)
        else:
            stdout.write(text)
        if getattr(args, "report", None) is not None:
            report.to_html(args.report)
            stderr.write(f"weightspectra: wrote the HTML report to {args.report}\n")
    except WeightSpectraError as exc:
        if args.debug:
            traceback.print_exc(file=stderr)
        stderr.write(f"weightspectra: error: {exc}\n")
        return EXIT_USAGE
    except (OSError, MemoryError) as exc:
        if args.debug:
            traceback.print_exc(file=stderr)
        stderr.write(f"weightspectra: error: {exc}\n")
        return EXIT_ERROR
    except Exception as exc:
        # A bug of ours: one line and the way to see more, never a raw traceback by default.
        if args.debug:
            traceback.print_exc(file=stderr)
        where = "" if args.debug else "; rerun with --debug for the traceback and report it"
        stderr.write(f"weightspectra: internal error: {type(exc).__name__}: {exc}{where}\n")
        return EXIT_ERROR
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        return run(argv, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("weightspectra: interrupted\n")
        return 130


def main_exit() -> None:
    """Console-script wrapper: exits with :func:`main`'s code."""
    sys.exit(main())
