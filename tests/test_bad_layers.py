"""A bad layer never stops the run: flat spectra fail their fit with the reason, an unexpected
error in one layer's metrics becomes that layer's failed row, and the CLI still exits 0."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra as ws
import weightspectra.metrics.spectrum as spectrum
from weightspectra import cli

FLAT = "a flat spectrum, e.g. a scaled orthogonal matrix, has no power-law tail"


def _issue_arrays() -> dict[str, np.ndarray]:
    """The issue's acceptance case: 0.5·I(32) before a Gaussian 64×32 layer."""
    return {
        "eye.weight": 0.5 * np.eye(32),
        "w": np.random.default_rng(0).standard_normal((64, 32)),
    }


def _orthogonal(n: int, gain: float, dtype: type[np.floating[Any]]) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(n).standard_normal((n, n)))
    return (gain * q * np.sign(np.diag(r))).astype(dtype)


def test_issue_case_gives_two_rows_the_first_saying_why_it_has_no_alpha() -> None:
    report = ws.analyze(_issue_arrays())
    assert [r.name for r in report.layers] == ["eye", "w"]
    eye, w = report.layers
    assert eye.ok and w.ok
    assert eye.metrics["alpha"] is None
    assert eye.metrics["warning"] == "fit-failed"
    assert eye.metrics["warning_detail"] == (
        f"fit-failed: all 32 eigenvalues are equal (0.25): {FLAT}"
    )
    assert eye.metrics["log_norm"] == pytest.approx(np.log10(32 * 0.25), rel=1e-12)
    assert isinstance(w.metrics["alpha"], float) and 1.0 < w.metrics["alpha"] < 20.0
    assert report.summary["num_fit_failed"] == 1


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (2.0 * np.eye(32), "all 32 eigenvalues are equal (4)"),  # equal and above 1
        (_orthogonal(48, 0.7, np.float64), "all 48 eigenvalues are equal (0.49) to"),
        # float32 storage spreads the singular values to ~1e-7: near-flat, α in the millions
        (_orthogonal(48, 0.7, np.float32), "near-flat spectrum"),
        (
            0.5 * np.eye(40) + 1e-9 * np.random.default_rng(1).standard_normal((40, 40)),
            "near-flat spectrum",
        ),
    ],
    ids=["2I", "orthogonal", "orthogonal-float32", "near-equal"],
)
def test_flat_and_near_flat_layers_fail_their_fit_only(weight: np.ndarray, match: str) -> None:
    report = ws.analyze({"flat.weight": weight, "w": _issue_arrays()["w"]})
    flat, other = report.layers
    assert flat.ok and other.ok
    assert flat.metrics["alpha"] is None and flat.metrics["warning"] == "fit-failed"
    assert match in str(flat.metrics["warning_detail"])
    for key in ("log_norm", "log_spectral_norm", "stable_rank", "entropy"):
        assert np.isfinite(float(flat.metrics[key])), key  # type: ignore[arg-type]


def test_an_unexpected_error_fails_only_that_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    real = spectrum.fit_power_law

    def broken(evals: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        if evals.size == 20:  # only the 30×20 layer
            raise ZeroDivisionError("float division by zero")
        return real(evals, *args, **kwargs)

    monkeypatch.setattr(spectrum, "fit_power_law", broken)
    rng = np.random.default_rng(2)
    arrays = {
        "a.weight": rng.standard_normal((40, 30)),
        "b.weight": rng.standard_normal((30, 20)),
        "c.weight": rng.standard_normal((50, 25)),
    }
    report = ws.analyze(arrays)
    a, b, c = report.layers
    assert a.ok and c.ok and isinstance(c.metrics["alpha"], float)
    assert b.status.value == "failed" and not b.metrics
    assert b.reason.startswith("layer b (30, 20) float64: internal error while computing its ")
    assert "(ZeroDivisionError: float division by zero at test_bad_layers.py:" in b.reason
    assert "rerun with --debug for the traceback and please report it" in b.reason


def test_the_traceback_is_logged_at_debug_level(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(spectrum, "fit_power_law", broken)
    with caplog.at_level(logging.DEBUG, logger="weightspectra.metrics.spectrum"):
        report = ws.analyze({"w": _issue_arrays()["w"]})
    assert report.layers[0].status.value == "failed"
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG and record.name == "weightspectra.metrics.spectrum"
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "layer w (64, 32) float64: internal error" in record.getMessage()


def test_keyboard_interrupt_still_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(spectrum, "fit_power_law", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ws.analyze(_issue_arrays())


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_on_the_issue_npz_exits_0_with_both_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **_issue_arrays())
    code, out, err = _run(["analyze", str(path)])
    assert code == 0, err
    names = [line.split()[1] for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert names == ["eye", "w"]
    assert "fit-failed" in out
    code, out, err = _run(["analyze", str(path), "--format", "json"])
    assert code == 0, err
    assert f"all 32 eigenvalues are equal (0.25): {FLAT}" in out
    json.loads(out)  # one JSON document
