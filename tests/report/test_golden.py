"""Golden files pin the text, markdown and CSV renderings of a small seeded model.

The model is built from seeded numpy arrays. The golden files in ``tests/report/golden/`` were
generated once by running::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/report/test_golden.py

and are compared from then on. When a rendering changes on purpose (a new column, a new layout),
regenerate them the same way and review the diff before committing it.

Table and markdown are compared exactly (their numbers are rounded to 4 significant decimals).
The CSV carries full-precision floats, whose last digits may differ between BLAS builds, so its
numeric cells are compared to 1e-9 relative and every other cell exactly.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.report.render import render

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def seeded_model() -> dict[str, np.ndarray]:
    """Heavy-tailed dense layers, an embedding, a bias, and a layer too small to analyse."""
    rng = np.random.default_rng(20240517)
    low_rank = rng.standard_normal((96, 3)) @ rng.standard_normal((3, 64))
    return {
        "embed.weight": rng.standard_t(3.0, (200, 48)),
        "encoder.0.dense.weight": rng.standard_t(2.5, (96, 64)) + 0.5 * low_rank,
        "encoder.0.dense.bias": rng.standard_normal(96),
        "encoder.1.dense.weight": rng.standard_normal((80, 96)),
        "head.weight": rng.standard_normal((4, 80)),
    }


@pytest.fixture(scope="module")
def report() -> ws.Report:
    return ws.analyze(seeded_model(), eig_method="svd")


def _check(name: str, text: str) -> str:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        pytest.skip(f"golden file {path} rewritten (UPDATE_GOLDEN=1)")
    if not path.is_file():
        pytest.fail(f"{path} is missing; generate it with UPDATE_GOLDEN=1")
    return path.read_text()


@pytest.mark.parametrize(("fmt", "name"), [("table", "table.txt"), ("markdown", "table.md")])
def test_text_renderings(report: ws.Report, fmt: str, name: str) -> None:
    text = render(report, fmt, include="all" if fmt == "table" else "analysed")
    expected = _check(name, text)
    assert text == expected, f"{name} changed; if on purpose, regenerate with UPDATE_GOLDEN=1"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_csv_rendering(report: ws.Report) -> None:
    text = render(report, "csv")
    expected = _check("table.csv", text)
    got_rows = list(csv.reader(io.StringIO(text)))
    want_rows = list(csv.reader(io.StringIO(expected)))
    assert got_rows[0] == want_rows[0], "CSV header changed"
    assert len(got_rows) == len(want_rows)
    for got, want in zip(got_rows[1:], want_rows[1:], strict=True):
        assert len(got) == len(want)
        for g, w, col in zip(got, want, want_rows[0], strict=True):
            if _is_number(w) and _is_number(g) and not (w.isdigit() and g.isdigit()):
                gv, wv = float(g), float(w)
                assert (math.isnan(gv) and math.isnan(wv)) or gv == pytest.approx(
                    wv, rel=1e-9, abs=1e-300
                ), (got[1], col)
            else:
                assert g == w, (got[1], col)


def test_golden_model_is_what_the_files_describe(report: ws.Report) -> None:
    # Guards the golden files against a silently different model: shapes and counts by hand.
    assert [r.name for r in report.analysed] == ["embed", "encoder.0.dense", "encoder.1.dense"]
    assert [r.num_evals for r in report.analysed] == [48, 64, 80]
    assert {r.name for r in report.skipped} == {"encoder.0.dense.bias", "head"}
