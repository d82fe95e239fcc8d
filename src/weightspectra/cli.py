"""Command-line front end: parse, call the library, render, exit code. The only module that
writes to the terminal."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from weightspectra._version import __version__
from weightspectra.analysis import Progress, analyze, describe
from weightspectra.errors import WeightSpectraError
from weightspectra.options import Device, EigenMethod, Options, Parallel, Precision
from weightspectra.report.render import Format, render

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class ProgressBar:
    """A one-line progress bar on a terminal stream, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.done < p.total and now - self._last < 0.1:
            return
        self._last = now
        filled = int(self.width * p.done / max(p.total, 1))
        elapsed = now - self.start
        eta = elapsed / p.done * (p.total - p.done) if p.done else 0.0
        name = p.name if len(p.name) <= 40 else "…" + p.name[-39:]
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {p.done}/{p.total} "
            f"{elapsed:5.1f}s eta {eta:5.1f}s  {name:40s}"
        )
        if p.done >= p.total:
            self.stream.write("\n")
        self.stream.flush()


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
            "--layers",
            action="append",
            metavar="SEL",
            help="keep only these layers: ids, types (dense, conv2d, embedding, ...) "
            "or name regexes, comma-separated; repeatable",
        )
        p.add_argument(
            "--exclude",
            action="append",
            metavar="SEL",
            help="drop these layers (same forms as --layers)",
        )
        p.add_argument("--min-evals", type=int, default=8, help="skip smaller ESDs (default: 8)")
        p.add_argument("--max-evals", type=int, default=None, help="skip layers with larger M")
        p.add_argument(
            "--no-pool",
            action="store_true",
            help="one row per convolution kernel position instead of a pooled ESD",
        )
        p.add_argument(
            "--normalize",
            action="store_true",
            help="eigenvalues of WᵀW/N (theory convention); changes every norm",
        )
        p.add_argument(
            "--split-qkv",
            action="store_true",
            help="split fused attention projections (GPT-2 c_attn) into Q, K, V",
        )
        p.add_argument(
            "--all-rows", action="store_true", help="also list skipped and failed tensors as rows"
        )
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    analyze_p = sub.add_parser("analyze", help="compute spectra, fits and metrics per layer")
    common(analyze_p)
    analyze_p.add_argument(
        "--eig-method",
        default="gram",
        choices=[m.value for m in EigenMethod],
        help="gram (fast, default) or svd (exact, slow)",
    )
    analyze_p.add_argument(
        "--precision",
        default="float64",
        choices=[p.value for p in Precision],
        help="precision of the eigenvalue computation (default: float64)",
    )
    analyze_p.add_argument(
        "--device",
        default="cpu",
        choices=[d.value for d in Device],
        help="cpu (numpy), cuda (torch on a GPU) or auto (GPU if present)",
    )
    analyze_p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="tensors analysed in parallel; BLAS threads are split so that "
        "workers × threads ≤ cores (default: 1)",
    )
    analyze_p.add_argument(
        "--parallel",
        default="auto",
        choices=[p.value for p in Parallel],
        help="how --workers run: forked processes (scale on small layers too; Linux), threads, "
        "or auto (processes where possible; threads with a GPU)",
    )
    analyze_p.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="store each layer's result in DIR; a rerun (e.g. after an "
        "interruption) recomputes only what is missing",
    )
    analyze_p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        default=None,
        help="also write a self-contained HTML report (plots embedded) here",
    )
    diag = analyze_p.add_argument_group("random-matrix diagnostics (docs/diagnostics.md)")
    diag.add_argument(
        "--no-mp-fit", action="store_true", help="skip the Marchenko–Pastur fit and the phases"
    )
    diag.add_argument(
        "--randomize",
        action="store_true",
        help="shuffle each matrix (seeded) to find correlation traps; one more eigenvalue "
        "computation per layer",
    )
    diag.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    diag.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="B",
        help="B bootstrap refits for an α interval (default 0: off; costs B fits per layer)",
    )
    diag.add_argument(
        "--fingers", action="store_true", help="try removing outlying top eigenvalues (fingers)"
    )
    diag.add_argument(
        "--compare-fits",
        action="store_true",
        help="likelihood-ratio tests of the power law against exponential, log-normal and "
        "truncated power law",
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

    describe_p = sub.add_parser("describe", help="list layers, shapes and plans; compute nothing")
    common(describe_p)
    _add_compare_parser(sub)
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


def _run_compare(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from weightspectra.compare import compare

    metrics = [str(m) for m in _split_list(args.metrics) or ()] or None
    cmp = compare(args.inputs, args.accuracy, metrics=metrics, min_evals=args.min_evals)
    text = cmp.render(args.format)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        stderr.write(f"weightspectra: wrote the comparison ({args.format}) to {args.output}\n")
    else:
        stdout.write(text)
    if args.report is not None:
        cmp.to_html(args.report)
        stderr.write(f"weightspectra: wrote the HTML comparison to {args.report}\n")
    return EXIT_OK


def _options(args: argparse.Namespace) -> Options:
    extra: dict[str, object] = {}
    if args.command == "analyze":
        extra = {
            "eig_method": args.eig_method,
            "precision": args.precision,
            "device": args.device,
            "workers": args.workers,
            "parallel": args.parallel,
            "cache": args.cache,
            "mp_fit": not args.no_mp_fit,
            "randomize": args.randomize,
            "seed": args.seed,
            "bootstrap": args.bootstrap,
            "fingers": args.fingers,
            "compare_fits": args.compare_fits,
        }
    return Options.from_kwargs(
        layers=_split_list(args.layers),
        exclude=_split_list(args.exclude) or (),
        min_evals=args.min_evals,
        max_evals=args.max_evals,
        pool=not args.no_pool,
        normalize=args.normalize,
        split_fused_qkv=args.split_qkv,
        **extra,
    )


def run(argv: Sequence[str] | None, stdout: TextIO, stderr: TextIO) -> int:
    """Run the CLI with ``argv``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            return _run_compare(args, stdout, stderr)
        options = _options(args)
        include = "all" if args.all_rows else "analysed"
        if args.command == "analyze":
            show = args.progress if args.progress is not None else stderr.isatty()
            report = analyze(args.model, options, progress=ProgressBar(stderr) if show else None)
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
