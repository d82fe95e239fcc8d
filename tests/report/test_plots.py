"""Plots: the numbers behind them (xmin scan, MP density, fitted lines) and what gets drawn."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.errors import InputError, MissingDependencyError
from weightspectra.fitting.mp import MPFitError, mp_density_from_edge
from weightspectra.fitting.powerlaw import FitError, xmin_scan
from weightspectra.report import plots

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report() -> ws.Report:
    rng = np.random.default_rng(7)
    return ws.analyze(
        {
            "embed.weight": rng.standard_t(2.5, (300, 40)),
            "fc1.weight": rng.standard_t(3.0, (160, 90)),
            "fc2.weight": rng.standard_normal((120, 70)) + 0.3 * rng.standard_t(2.0, (120, 70)),
            "tiny.weight": rng.standard_t(3.0, (16, 40)),
            "fc2.bias": rng.standard_normal(120),
            "head.weight": rng.standard_normal((3, 70)),
        }
    )


def _fresh() -> Any:
    return plots.new_figure(managed=False)[1][0]


def test_xmin_scan_reproduces_the_fit(report: ws.Report) -> None:
    for row in report.analysed:
        x = np.sort(row.evals[row.evals > 1e-5])
        xs, alphas, ds = xmin_scan(row.evals, max_candidates=None)
        best = int(np.argmin(ds))
        assert xs[best] == row.metrics["xmin"], row.name
        assert alphas[best] == pytest.approx(row.metrics["alpha"], rel=1e-10)
        assert ds[best] == pytest.approx(row.metrics["D"], rel=1e-10, abs=1e-14)
        # α by the textbook estimator at the chosen xmin, computed here from scratch.
        i = int(np.searchsorted(x, xs[best]))
        m = x.size - i
        numer = m - 1 if x.size < 20 else m
        assert alphas[best] == pytest.approx(1 + numer / np.log(x[i:] / x[i]).sum(), rel=1e-12)


def test_xmin_scan_small_sample_and_subsampling(report: ws.Report) -> None:
    tiny = report["tiny"]
    assert tiny.num_evals == 16
    xs, _, _ = xmin_scan(tiny.evals)
    assert xs.size == 16 - 8 + 1  # only tails of at least 8 points
    big = report["embed"]
    xmin = big.metrics["xmin"]
    xs, _, _ = xmin_scan(big.evals, max_candidates=10, include=xmin)
    assert xs.size <= 11 and xmin in xs
    with pytest.raises(FitError, match="no candidate xmin"):
        xmin_scan(np.ones(5))


@pytest.mark.parametrize("Q", [1.0, 2.0, 4.0])
def test_mp_density_integrates_to_one(Q: float) -> None:
    edge = 3.0
    c = 1 / Q
    lo = edge / (1 + math.sqrt(c)) ** 2 * (1 - math.sqrt(c)) ** 2
    quad = pytest.importorskip("scipy.integrate").quad
    total, _ = quad(
        lambda t: float(mp_density_from_edge(np.array([t]), edge, Q)[0]), lo, edge, limit=200
    )
    assert total == pytest.approx(1.0, abs=1e-6)
    outside = [edge * 1.01] + ([lo * 0.99] if lo > 0 else [])
    assert mp_density_from_edge(np.array(outside), edge, Q).tolist() == [0] * len(outside)
    with pytest.raises(MPFitError, match="Q"):
        mp_density_from_edge(np.array([1.0]), edge, 0.5)


def test_loglog_draws_fit_and_xmin(report: ws.Report) -> None:
    row = report["fc1"]
    ax = _fresh()
    assert plots.plot_esd_loglog(row, ax) is ax
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    fit_line, xmin_line = ax.lines[0], ax.lines[1]
    alpha, xmin = row.metrics["alpha"], row.metrics["xmin"]
    x0, y0 = fit_line.get_xdata()[0], fit_line.get_ydata()[0]
    evals = row.evals[row.evals > 1e-5]
    share = np.count_nonzero(evals >= xmin) / evals.size
    assert x0 == pytest.approx(xmin)
    assert y0 == pytest.approx(share * (alpha - 1) / xmin)
    assert list(xmin_line.get_xdata()) == [xmin, xmin]


def test_linear_with_and_without_mp_columns(report: ws.Report) -> None:
    full = report["fc2"]
    mp_keys = {
        "mp_softrank",
        "bulk_max",
        "bulk_min",
        "num_spikes",
        "tw_margin",
        "phase",
        "max_rand_eval",
        "num_traps",
    }
    row = replace(full, metrics={k: v for k, v in full.metrics.items() if k not in mp_keys})
    ax = plots.plot_esd_linear(row, _fresh())
    assert not ax.lines  # no MP columns: histogram only
    lam = row.metrics["lambda_max"]
    with_mp = replace(
        row, metrics={**row.metrics, "mp_softrank": 0.5, "num_spikes": 2, "phase": "bulk+spikes"}
    )
    assert plots.mp_edge(with_mp) == pytest.approx(0.5 * lam)
    ax = plots.plot_esd_linear(with_mp, _fresh())
    labels = [ln.get_label() for ln in ax.lines]
    assert labels == ["MP fit", "bulk edge λ₊", "2 spikes"]
    np.testing.assert_allclose(ax.lines[2].get_xdata(), row.evals[-2:])
    assert "bulk+spikes" in ax.get_title()
    only_edge = replace(row, metrics={**row.metrics, "bulk_max": 7.0})
    assert plots.mp_edge(only_edge) == 7.0
    clipped = replace(row, metrics={**row.metrics, "mp_softrank": 1.0})
    assert plots.mp_edge(clipped) is None  # a clipped soft rank does not locate the edge
    # Bulk edge and TW margin are stored in the report's eigenvalue units.
    tw = replace(
        with_mp,
        metrics={
            **with_mp.metrics,
            "bulk_max": 2.0,
            "tw_margin": 0.2,
            "max_rand_eval": 3.0,
            "num_traps": 1,
        },
    )
    ax = plots.plot_esd_linear(tw, _fresh())
    lines = {ln.get_label(): ln.get_xdata()[0] for ln in ax.lines}
    assert lines["bulk edge λ₊"] == 2.0
    assert lines["edge + TW margin"] == pytest.approx(2.2)
    assert lines["max randomised λ"] == 3.0
    assert "1 traps" in ax.get_title()


def test_randomized_panel(report: ws.Report) -> None:
    row = report["fc1"]
    with pytest.raises(InputError, match="no randomised eigenvalues"):
        plots.plot_randomized(row, _fresh())
    assert plots.layer_panels(row) == ["loglog", "linear", "xmin"]
    rand = np.random.default_rng(0).permutation(row.evals) * 0.5
    with_rand = replace(row, rand_evals=rand)
    assert plots.layer_panels(with_rand)[-1] == "randomized"
    axs = plots.plot_layer(with_rand)
    assert len(axs) == 4 and axs[3].get_title().endswith("real vs randomised ESD")


def test_xmin_scan_plot_marks_fit(report: ws.Report) -> None:
    row = report["fc1"]
    ax = plots.plot_xmin_scan(row, _fresh())
    assert ax.lines[-1].get_xdata()[0] == row.metrics["xmin"]
    twin = next(a for a in ax.figure.axes if a is not ax)
    assert twin.get_ylabel() == "α"


def test_layer_errors(report: ws.Report) -> None:
    skipped = report["head"]
    with pytest.raises(InputError, match="no eigenvalues: its status is skipped"):
        plots.plot_layer(skipped)
    with pytest.raises(InputError, match="expected a LayerResult"):
        plots.plot_esd_loglog(report)  # type: ignore[arg-type]
    _, axs = plots.new_figure(2, managed=False)
    with pytest.raises(InputError, match="3 panels"):
        plots.plot_layer(report["fc1"], axs)


def test_model_plots(report: ws.Report) -> None:
    ax = plots.plot_correlation_flow(report, _fresh())
    n = len(report.analysed)
    pos, vals, types = plots.metric_by_depth(report, "alpha")
    assert pos.tolist() == list(range(n))
    assert vals.tolist() == [r.metrics["alpha"] for r in report.analysed]
    assert len(ax.collections) == len(set(types))  # one scatter per layer type
    band = ax.patches[0]
    assert (band.get_y(), band.get_y() + band.get_height()) == (2.0, 6.0)
    ax = plots.plot_alpha_histogram(report, _fresh())
    assert ax.lines[0].get_xdata()[0] == pytest.approx(np.mean(vals))
    ax = plots.plot_metric_depth(report, "log_norm", _fresh())
    assert ax.get_ylabel() == "log_norm"
    with pytest.raises(InputError, match=r"numeric metrics present: .*alpha"):
        plots.plot_metric_depth(report, "nope")
    assert report.plot("alpha_hist", ax=_fresh()).get_xlabel() == "α"
    with pytest.raises(InputError, match="choose one of"):
        report.plot("pie")


def test_metric_vs_accuracy_line() -> None:
    ax = plots.plot_metric_vs_accuracy(
        [0, 1, 2, 5, 6, 7],
        [1, 3, 5, 10, 8, 6],
        groups=["a", "a", "a", "b", "b", "b"],
        labels=list("uvwxyz"),
        ax=_fresh(),
    )
    line_a, line_b = ax.lines
    assert line_a.get_ydata() == pytest.approx([1, 5])  # y = 2x + 1 on [0, 2]
    assert line_b.get_ydata() == pytest.approx([10, 6])  # y = −2x + 20 on [5, 7]
    assert len(ax.texts) == 6
    with pytest.raises(InputError, match="one entry per model"):
        plots.plot_metric_vs_accuracy([1, 2], [1])


def test_save_report_plots(report: ws.Report, tmp_path: Path) -> None:
    files = plots.save_report_plots(report, tmp_path / "img", dpi=40)
    assert len(files) == 2 + len(report.analysed)
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plots.save_figure(plots.new_figure(managed=False)[0], tmp_path / "f.svg")
    assert svg.read_text().lstrip().startswith("<?xml")


def test_missing_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'weightspectra\[plot\]'"):
        plots.new_figure()


def test_import_does_not_load_matplotlib_or_pandas() -> None:
    code = (
        "import sys, weightspectra, weightspectra.report.plots, weightspectra.compat, "
        "weightspectra.report.html; "
        "print('matplotlib' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
