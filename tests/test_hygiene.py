"""Library hygiene: analysing and rendering write nothing to the terminal and leave the process's
logging configuration and warning filters as they were (STYLE.md habit 4; the peer reconfigures
root logging and silences all warnings at import: peer.md)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.report.render import Format, render

PACKAGE_ROOT = str(Path(ws.__file__).resolve().parents[1])  # the weightspectra under test


def model(seed: int) -> dict[str, np.ndarray]:
    """Rows of every status: dense and conv (ok), a bias and a tiny matrix (skipped), a NaN
    matrix (failed)."""
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.standard_t(3.0, size=(96, 48)),
        "fc1.bias": np.zeros(96),
        "conv.weight": rng.standard_normal((16, 8, 3, 3)),
        "tiny.weight": rng.standard_normal((4, 3)),
        "broken.weight": np.full((30, 20), np.nan),
    }


def logging_state() -> dict[str, Any]:
    """Everything a library could change in logging, by identity where it is an object."""
    loggers = {
        name: (lg.level, tuple(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root = logging.getLogger()
    return {
        "root": (root.level, tuple(root.handlers), root.disabled),
        "last_resort": logging.lastResort,
        "disable": logging.root.manager.disable,
        "logger_class": logging.getLoggerClass(),
        "loggers": loggers,
    }


def assert_logging_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["root"] == before["root"]
    assert after["last_resort"] is before["last_resort"]
    assert after["disable"] == before["disable"]
    assert after["logger_class"] is before["logger_class"]
    for name, state in before["loggers"].items():
        assert after["loggers"][name] == state, name
    for name in after["loggers"].keys() - before["loggers"].keys():
        # loggers created since: the library's own getLogger(__name__), unconfigured (a
        # NullHandler is the documented library practice)
        level, handlers, propagate, disabled = after["loggers"][name]
        assert name.startswith("weightspectra"), name
        assert level == logging.NOTSET and propagate and not disabled, name
        assert all(type(h) is logging.NullHandler for h in handlers), (name, handlers)


def test_analyze_and_render_are_silent_and_leave_global_state(
    capfd: pytest.CaptureFixture[str],
) -> None:
    filters = list(warnings.filters)
    showwarning = warnings.showwarning
    streams = (sys.stdout, sys.stderr)
    before = logging_state()
    report = ws.analyze(model(0))
    assert {r.status.value for r in report.layers} >= {"ok", "skipped", "failed"}
    texts = [render(report, fmt) for fmt in Format]
    report.to_json()
    assert all(texts)
    captured = capfd.readouterr()  # file-descriptor level: C extensions included
    assert captured.out == ""
    assert captured.err == ""
    assert warnings.filters == filters
    assert warnings.showwarning is showwarning
    assert (sys.stdout, sys.stderr) == streams
    assert_logging_unchanged(before, logging_state())


def test_workers_are_silent(capfd: pytest.CaptureFixture[str]) -> None:
    filters = list(warnings.filters)
    before = logging_state()
    ws.analyze(model(1), workers=2, parallel="threads")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert warnings.filters == filters
    assert_logging_unchanged(before, logging_state())


_FRESH = r"""
import json, logging, os, sys, warnings

class Recording(list):
    # warnings.filters, recording the module that added each filter (the direct caller of
    # filterwarnings/simplefilter, past the warnings module itself)
    added = []

    def insert(self, index, item):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") == "warnings":
            frame = frame.f_back
        who = frame.f_globals.get("__name__", "?") if frame is not None else "?"
        Recording.added.append([who, repr(item)])
        super().insert(index, item)

    def append(self, item):
        self.insert(len(self), item)

warnings.filters = Recording(warnings.filters)

def snapshot():
    root = logging.getLogger()
    loggers = {
        name: [lg.level, [type(h).__name__ for h in lg.handlers], lg.propagate, lg.disabled]
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    return {
        "root_level": root.level,
        "root_handlers": [id(h) for h in root.handlers],
        "last_resort": id(logging.lastResort),
        "disable": logging.root.manager.disable,
        "showwarning": id(warnings.showwarning),
        "filters_object": id(warnings.filters),
        "loggers": loggers,
    }

before = snapshot()
import numpy as np
import weightspectra as ws
from weightspectra.report.render import Format, render

rng = np.random.default_rng(0)
report = ws.analyze({"fc.weight": rng.standard_normal((80, 40)),
                     "conv.weight": rng.standard_normal((12, 6, 3, 3)),
                     "fc.bias": np.zeros(80)})
texts = [render(report, fmt) for fmt in Format]
after = snapshot()
sys.__stdout__.write("RESULT " + json.dumps({
    "before": before, "after": after, "rendered": all(texts), "added": Recording.added,
}) + "\n")
"""


def test_fresh_import_and_analysis_change_no_global_state() -> None:
    """In a fresh interpreter, from before ``import weightspectra`` to after an analysis and
    its renderings: stdout carries only the test's own line, stderr nothing, logging is as
    Python started it, and no warning filter was added by weightspectra (numpy and scipy add
    their own at import: those are recorded with their module and allowed)."""
    paths = [PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("PYTHONWARNINGS", None)
    out = subprocess.run(
        [sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("RESULT "), out.stdout
    result = json.loads(lines[0].removeprefix("RESULT "))
    before, after = result["before"], result["after"]
    assert result["rendered"]
    for key in ("root_level", "root_handlers", "last_resort", "disable", "showwarning"):
        assert after[key] == before[key], key
    assert after["filters_object"] == before["filters_object"]  # not replaced either
    by_us = [(who, f) for who, f in result["added"] if who.startswith("weightspectra")]
    assert by_us == []
    for name, state in before["loggers"].items():
        assert after["loggers"][name] == state, name
    for name in after["loggers"].keys() - before["loggers"].keys():
        level, handlers, propagate, disabled = after["loggers"][name]
        if name.startswith("weightspectra"):
            assert level == logging.NOTSET and propagate and not disabled, name
            assert set(handlers) <= {"NullHandler"}, (name, handlers)
        else:  # a dependency's logger: nothing configured it
            assert handlers == [] or set(handlers) <= {"NullHandler"}, (name, handlers)
