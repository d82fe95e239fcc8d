"""Plots: the numbers behind them (xmin scan, MP density, fitted lines) and what gets drawn."""

from __future__ import annotations

import io
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


# -- readable plots: log bins, the zoomed bulk, one colour per layer type ---------------------


def test_log_binned_density_against_a_loop(report: ws.Report) -> None:
    evals = report["fc1"].evals
    edges, density = plots.log_binned_density(evals, bins=12)
    pos = evals[evals > 1e-5]
    assert edges[0] == pos.min() and edges[-1] == pos.max()
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]))
    for k in range(12):
        last = k == 11  # numpy's last bin is closed on the right
        inside = [
            x for x in pos if edges[k] <= x and (x < edges[k + 1] or (last and x <= edges[-1]))
        ]
        assert density[k] == pytest.approx(len(inside) / (pos.size * (edges[k + 1] - edges[k])))
    assert float(np.sum(density * np.diff(edges))) == pytest.approx(1.0)
    with pytest.raises(InputError, match="two distinct positive eigenvalues"):
        plots.log_binned_density(np.ones(5))


def test_log_bin_count_follows_the_data() -> None:
    # Freedman–Diaconis on log10: 4 decades, IQR 2 decades, n = 1000 -> width 0.4, 10 bins.
    x = np.geomspace(1e-2, 1e2, 1000)
    assert plots.log_bin_count(x) == 10
    assert plots.log_bin_count(np.geomspace(1e-6, 1e6, 10**6)) == 50  # clipped above
    assert plots.log_bin_count(np.array([1.0, 1.0])) == 8  # and below


def test_bulk_view_zooms_only_when_the_tail_reaches_far() -> None:
    bulk = np.linspace(0.1, 1.0, 95)
    far = np.concatenate([bulk, [10.0, 20.0, 30.0, 40.0, 50.0]])
    view, beyond = plots.bulk_view(far, bulk_end=1.0)
    assert view == pytest.approx(1.25) and beyond == 5
    near = np.concatenate([bulk, [1.5]])
    view, beyond = plots.bulk_view(near, bulk_end=1.0)
    assert view == pytest.approx(1.5 * 1.02) and beyond == 0
    # Without an MP edge the bulk ends at the 95 % quantile.
    view, beyond = plots.bulk_view(far)
    assert view == pytest.approx(np.quantile(far, 0.95) * 1.25)
    assert beyond == int(np.count_nonzero(far > view))


def test_linear_esd_counts_the_eigenvalues_beyond_the_view(report: ws.Report) -> None:
    row = report["fc1"]
    far = replace(row, evals=np.sort(np.concatenate([row.evals, [row.evals.max() * 50]])))
    far = replace(far, metrics={**far.metrics, "bulk_max": float(np.median(row.evals))})
    ax = plots.plot_esd_linear(far, _fresh())
    view, beyond = plots.bulk_view(far.evals, plots.mp_edge(far) + far.metrics["tw_margin"])
    assert ax.get_xlim()[1] == pytest.approx(view) and beyond > 0
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith(f"{beyond} eigenvalues beyond") for t in texts), texts
    assert "zoomed to the bulk" in ax.get_xlabel()


def test_one_colour_per_layer_type_in_every_plot(report: ws.Report) -> None:
    from matplotlib.colors import to_hex

    embed = report["embed"]
    assert embed.layer_type == "embedding"
    colour = plots.type_colour("embedding")
    assert colour == plots.TYPE_COLOURS["embedding"]
    loglog = plots.plot_esd_loglog(embed, _fresh())
    assert to_hex(loglog.collections[0].get_facecolor()[0]) == colour
    linear = plots.plot_esd_linear(embed, _fresh())
    assert to_hex(linear.patches[0].get_facecolor()) == colour
    flow = plots.plot_correlation_flow(report, _fresh())
    by_label = {c.get_label(): to_hex(c.get_facecolor()[0]) for c in flow.collections}
    assert by_label == {t: plots.type_colour(t) for t in by_label}
    hist = plots.plot_alpha_histogram(report, _fresh())
    _, labels = hist.get_legend_handles_labels()
    types = [lab for lab in labels if not lab.startswith("mean")]
    assert sorted(types) == sorted({r.layer_type for r in report.analysed})
    # A type no table names keeps one colour wherever it is drawn.
    assert plots.type_colour("my_adapter") == plots.type_colour("my_adapter")
    assert plots.type_colour("my_adapter") not in plots.TYPE_COLOURS.values()


def test_alpha_overlay_by_relative_depth(report: ws.Report) -> None:
    ax = plots.plot_alpha_overlay([("a", report), ("b", report)], _fresh())
    assert [ln.get_label() for ln in ax.lines] == ["a", "b"]
    depth = ax.lines[0].get_xdata()
    assert depth[0] == 0.0 and depth[-1] == pytest.approx(1.0)
    with pytest.raises(InputError, match="at least one"):
        plots.plot_alpha_overlay([])


def test_palette_png_is_smaller_and_indexed(report: ws.Report) -> None:
    from PIL import Image

    fig, axs = plots.new_figure(3, managed=False)
    plots.plot_layer(report["fc1"], axs)
    full = plots.figure_png(fig, 60, tight=False)
    small = plots.figure_png(fig, 60, tight=False, palette=64)
    assert len(small) < len(full)
    with Image.open(io.BytesIO(small)) as im:
        assert im.mode == "P" and len(im.getcolors()) <= 64


def test_alpha_over_steps_mean_and_type_colours() -> None:
    from matplotlib.colors import to_hex

    series = {
        "a": [(0, 6.0), (100, 4.0), (200, 3.0)],
        "b": [(200, 2.0), (0, 8.0), (100, float("nan"))],  # any order; NaN left out
        "c": [(0, float("nan"))],
    }
    ax = plots.plot_alpha_over_steps(series, _fresh(), layer_types={"a": "dense", "b": "dense"})
    mean = next(ln for ln in ax.lines if ln.get_label() == "mean α")
    assert mean.get_xdata().tolist() == [0, 100, 200]
    assert mean.get_ydata().tolist() == [7.0, 4.0, 2.5]  # the mean of the layers present
    layer_lines = [ln for ln in ax.lines if ln is not mean]
    assert len(layer_lines) == 2
    assert {to_hex(ln.get_color()) for ln in layer_lines} == {plots.type_colour("dense")}
    assert [ln.get_label() for ln in layer_lines].count("dense") == 1  # one legend entry
    with pytest.raises(InputError, match="no layer has a finite α"):
        plots.plot_alpha_over_steps({"c": [(0, float("nan"))]})
