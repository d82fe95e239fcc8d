"""The terminal: colour when stdout is a terminal (checked in a pseudo-terminal with
``script -qc``), plain text byte-identical to the goldens when piped, and rich's progress bar.

``golden/cli_analyze.txt`` and ``golden/cli_compare.txt`` are the piped outputs of::

    weightspectra analyze seeded.npz --eig-method svd --all-rows
    weightspectra compare published_cv_models.csv

run in a folder holding those files (``seeded.npz`` is ``test_golden.seeded_model()``), made
with the code before colour was added; the tests prove the piped output did not change.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.cli import progress_bar, run
from weightspectra.report.render import to_table
from weightspectra.report.terminal import ALPHA_STYLES, styled_table
from weightspectra.report.verdict import alpha_band, alpha_class, verdict

GOLDEN = Path(__file__).parent / "golden"
PUBLISHED = Path(__file__).resolve().parents[1] / "data" / "published_cv_models.csv"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ANALYZE = ["analyze", "seeded.npz", "--eig-method", "svd", "--all-rows"]


def seeded_model() -> dict[str, np.ndarray]:
    """The model of ``test_golden.py`` (loaded from its file: the tests are not a package)."""
    spec = importlib.util.spec_from_file_location(
        "_ws_test_golden", Path(__file__).with_name("test_golden.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model: dict[str, np.ndarray] = module.seeded_model()
    return model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    np.savez(folder / "seeded.npz", **seeded_model())
    shutil.copy(PUBLISHED, folder / "published_cv_models.csv")
    return folder


def _cli(folder: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "weightspectra", *argv],
        cwd=folder,
        capture_output=True,
        timeout=120,
        check=True,
    )


def test_piped_output_is_byte_identical_to_the_goldens(workdir: Path) -> None:
    done = _cli(workdir, *ANALYZE)
    assert done.stdout == (GOLDEN / "cli_analyze.txt").read_bytes()
    assert done.stderr == b""  # no progress bar, no colour codes when piped
    done = _cli(workdir, "compare", "published_cv_models.csv")
    assert done.stdout == (GOLDEN / "cli_compare.txt").read_bytes()


def test_styled_table_adds_only_styles_and_the_verdict() -> None:
    report = ws.analyze(seeded_model(), eig_method="svd")
    text = styled_table(report, "all")
    assert text.plain == to_table(report, "all") + "\n" + verdict(report).line() + "\n"
    band = alpha_band(report)
    coloured = {text.plain[s.start : s.end].strip(): str(s.style) for s in text.spans}
    for row in report.analysed:
        cell = f"{row.metrics['alpha']:.4f}"
        assert coloured[cell] == ALPHA_STYLES[alpha_class(row.metrics["alpha"], band)]
    assert coloured["skipped"] == "dim"
    assert text.plain.splitlines()[0] in coloured  # the header is styled (bold)


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux 'script' is not installed")
def test_a_terminal_gets_colour_and_the_same_text(workdir: Path) -> None:
    command = " ".join([sys.executable, "-m", "weightspectra", *ANALYZE])
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    done = subprocess.run(
        ["script", "-qc", command, "/dev/null"],
        cwd=workdir,
        capture_output=True,
        timeout=120,
        env=env,
        check=True,
    )
    out = done.stdout.decode("utf-8")
    assert "\x1b[32m" in out  # green α cells
    plain = ANSI.sub("", out).replace("\r\n", "\n")
    golden = (GOLDEN / "cli_analyze.txt").read_text(encoding="utf-8")
    # The pseudo-terminal carries stderr too: the progress bar, then the table, then the
    # verdict line that only a terminal gets.
    table_start = plain.index("layer_id")
    assert "analysing" in plain[:table_start] and "5/5" in plain[:table_start]
    rest = plain[table_start:]
    assert rest.startswith(golden)
    assert rest[len(golden) :].strip().startswith("Looks well trained: 3 of 3 layers")
    # NO_COLOR: the same text without colour codes.
    done = subprocess.run(
        ["script", "-qc", command, "/dev/null"],
        cwd=workdir,
        capture_output=True,
        timeout=120,
        env={**env, "NO_COLOR": "1"},
        check=True,
    )
    assert "\x1b[32m" not in done.stdout.decode("utf-8")


def test_progress_bar_from_rich() -> None:
    from weightspectra.analysis import Progress

    stream = io.StringIO()
    with progress_bar(stream, enabled=True) as bar:
        assert bar is not None
        for k in range(1, 4):
            bar(Progress(done=k, total=3, name=f"layer{k}"))
    # A stream that is not a terminal gets the last state once.
    assert stream.getvalue().count("3/3") == 1 and "layer3" in stream.getvalue()
    with progress_bar(stream, enabled=False) as none:
        assert none is None
    out, err = io.StringIO(), io.StringIO()
    assert run(["compare", str(PUBLISHED), "-f", "csv"], out, err) == 0
    assert "\x1b[" not in out.getvalue()
