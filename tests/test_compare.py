"""Model comparison: statistics against numpy/scipy and by hand, inputs, renderings, CLI."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.cli import run
from weightspectra.compare import Comparison, compare, read_summary_csv
from weightspectra.compare.stats import kendall_tau, ols
from weightspectra.errors import InputError, OptionError

DATA = Path(__file__).parent / "data"
PUBLISHED = DATA / "published_cv_models.csv"
PUBLISHED_METRICS = (
    "log_norm",
    "log_spectral_norm",
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "mp_softrank",
)

stats = pytest.importorskip("scipy.stats")


def _published_rows() -> list[dict[str, str]]:
    with PUBLISHED.open() as fh:
        return list(csv.DictReader(fh))


def _arrays(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": scale * rng.standard_t(3.0, (120, 60)),
        "fc2.weight": scale * rng.standard_t(4.0, (90, 50)),
        "fc2.bias": rng.standard_normal(90),
    }


# -- statistics ---------------------------------------------------------------------------------


def test_ols_by_hand() -> None:
    # x = 1..4, y = 2, 4, 5, 8: Sxy = 9.5, Sxx = 5 → slope 1.9, intercept 0; residuals
    # .1, .2, -.7, .4 → SSE .7, RMSE √(.7/4); SST 18.75 → R² = 1 − .7/18.75.
    slope, intercept, rmse, r2 = ols([1, 2, 3, 4], [2, 4, 5, 8])
    assert slope == pytest.approx(1.9, abs=1e-12)
    assert intercept == pytest.approx(0.0, abs=1e-12)
    assert rmse == pytest.approx(math.sqrt(0.7 / 4), rel=1e-12)
    assert r2 == pytest.approx(1 - 0.7 / 18.75, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ols_matches_numpy_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=15)
    y = 3.0 - 2.0 * x + rng.normal(scale=0.5, size=15)
    slope, intercept, rmse, r2 = ols(x, y)
    p_slope, p_intercept = np.polyfit(x, y, 1)
    lr = stats.linregress(x, y)
    assert slope == pytest.approx(p_slope, rel=1e-10) == pytest.approx(lr.slope, rel=1e-10)
    assert intercept == pytest.approx(p_intercept, rel=1e-10)
    assert r2 == pytest.approx(lr.rvalue**2, rel=1e-10)
    resid = y - np.polyval([p_slope, p_intercept], x)
    assert rmse == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-10)


def test_ols_bad_input() -> None:
    with pytest.raises(InputError, match="x is constant"):
        ols([1, 1, 1], [1, 2, 3])
    with pytest.raises(InputError, match="same length"):
        ols([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="finite"):
        ols([1, 2, math.nan], [1, 2, 3])


def test_kendall_by_hand() -> None:
    tau, p = kendall_tau([1, 2, 3, 4], [10, 20, 30, 40])
    assert tau == 1.0
    assert p == pytest.approx(2 / 24)  # exact: only the identity permutation has 0 inversions
    tau, _ = kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])  # 5 concordant, 1 discordant pair
    assert tau == pytest.approx(4 / 6)
    tau, p = kendall_tau([1, 1, 1], [1, 2, 3])
    assert math.isnan(tau) and math.isnan(p)


def _naive_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """τ-b from an O(n²) loop over pairs: concordant, discordant, and ties in x, in y."""
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0:
                tied_x += 1
            if dy == 0:
                tied_y += 1
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    pairs = n * (n - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def _naive_exact_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided permutation p-value of τ without ties: the share of all n! orderings of y
    whose |C − D| is at least the observed one."""
    from itertools import permutations

    def score(yy: tuple[float, ...]) -> int:
        return sum(
            int(np.sign(x[i] - x[j]) * np.sign(yy[i] - yy[j]))
            for i in range(len(x))
            for j in range(i + 1, len(x))
        )

    observed = abs(score(tuple(y)))
    perms = list(permutations(y.tolist()))
    return sum(abs(score(q)) >= observed for q in perms) / len(perms)


@pytest.mark.parametrize("n", [2, 5, 9, 17, 30, 60])
def test_kendall_matches_naive_pair_count_without_ties(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    tau, p = kendall_tau(x, y)
    assert tau == pytest.approx(_naive_tau_b(x, y), rel=1e-12, abs=1e-15)
    assert 0.0 < p <= 1.0


@pytest.mark.parametrize(("seed", "n"), [(3, 25), (4, 25), (5, 8), (6, 80)])
def test_kendall_matches_naive_pair_count_with_ties(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=n).astype(float)
    y = x + rng.integers(0, 3, size=n)
    assert len(set(x)) < n and len(set(y)) < n  # ties on both sides
    tau, p = kendall_tau(x, y)
    assert tau == pytest.approx(_naive_tau_b(x, y), rel=1e-12)
    assert 0.0 < p <= 1.0


def test_kendall_ties_change_tau_b_not_only_tau_a() -> None:
    # 4 points: pairs (0,1) tied in x; C = 4, D = 1 among the 5 untied-in-x pairs.
    x, y = np.array([1.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0, 3.0])
    tau, _ = kendall_tau(x, y)
    assert tau == pytest.approx(_naive_tau_b(x, y))
    assert tau == pytest.approx((4 - 1) / math.sqrt((6 - 1) * 6))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kendall_exact_p_matches_permutation_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=7)
    y = x + 0.7 * rng.normal(size=7)
    _, p = kendall_tau(x, y)
    assert p == pytest.approx(_naive_exact_p(x, y), rel=1e-12)


def test_kendall_symmetric_and_sign() -> None:
    rng = np.random.default_rng(11)
    x = rng.integers(0, 6, size=30).astype(float)
    y = rng.normal(size=30) + x
    tau, p = kendall_tau(x, y)
    assert kendall_tau(y, x) == pytest.approx((tau, p))
    assert kendall_tau(x, -y) == pytest.approx((-tau, p))


def test_kendall_bad_input() -> None:
    with pytest.raises(InputError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="at least 2 points"):
        kendall_tau([1], [1])
    with pytest.raises(InputError, match="finite"):
        kendall_tau([1, 2, math.inf], [1, 2, 3])


def test_quantize_uses_the_same_kendall_tau() -> None:
    pytest.importorskip("torch")
    from weightspectra.quantize import validate

    assert validate.kendall_tau is kendall_tau


# -- the published table ------------------------------------------------------------------------


def test_published_fits_match_scipy() -> None:
    rows = _published_rows()
    cmp = compare([PUBLISHED])
    assert cmp.accuracy_name == "top1"
    assert cmp.metrics == PUBLISHED_METRICS
    assert len(cmp.models) == 17
    groups = {"all": rows}
    for r in rows:
        groups.setdefault(r["series"], []).append(r)
    assert {f.series for f in cmp.fits} == {"VGG", "ResNet", "DenseNet", "all"}
    assert len(cmp.fits) == 4 * len(PUBLISHED_METRICS)
    for series, members in groups.items():
        y = np.array([float(r["top1"]) for r in members])
        for metric in PUBLISHED_METRICS:
            x = np.array([float(r[metric]) for r in members])
            fit = cmp.fit(metric, series)
            lr = stats.linregress(x, y)
            resid = y - (lr.slope * x + lr.intercept)
            ties = len(set(x)) < len(x)
            kt = stats.kendalltau(x, y, method="asymptotic" if ties else "exact")
            assert fit.n == len(members)
            assert fit.slope == pytest.approx(lr.slope, rel=1e-10), (series, metric)
            assert fit.intercept == pytest.approx(lr.intercept, rel=1e-10)
            assert fit.r2 == pytest.approx(lr.rvalue**2, rel=1e-10)
            assert fit.rmse == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-10)
            assert fit.tau == pytest.approx(kt.statistic, rel=1e-10, abs=1e-12)
            assert fit.tau_p == pytest.approx(kt.pvalue, rel=1e-8), (series, metric)


def test_published_rankings_ascending() -> None:
    rows = _published_rows()
    cmp = compare(PUBLISHED)
    for metric in PUBLISHED_METRICS:
        expected = [r["model"] for r in sorted(rows, key=lambda r: float(r[metric]))]
        assert cmp.ranking(metric) == expected
    with pytest.raises(InputError, match="not compared"):
        cmp.ranking("top1")


def test_explicit_accuracy_column_and_metrics() -> None:
    cmp = compare([PUBLISHED], "top1", metrics=["alpha_weighted"])
    assert cmp.metrics == ("alpha_weighted",)
    assert {f.metric for f in cmp.fits} == {"alpha_weighted"}
    with pytest.raises(InputError, match="neither a CSV file nor a column"):
        compare([PUBLISHED], "top7")
    with pytest.raises(InputError, match="not found"):
        compare([PUBLISHED], metrics=["nope"])
    with pytest.raises(InputError, match="no fit"):
        cmp.fit("alpha_weighted", "Inception")


def test_accuracy_from_separate_file(tmp_path: Path) -> None:
    rows = _published_rows()
    metrics_only = tmp_path / "metrics.csv"
    with metrics_only.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "alpha_weighted"])
        w.writerows([r["model"], r["alpha_weighted"]] for r in rows)
    acc = tmp_path / "acc.csv"
    with acc.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "top1"])
        w.writerows([r["model"], r["top1"]] for r in rows)
    cmp = compare([metrics_only], acc)
    x = [float(r["alpha_weighted"]) for r in rows]
    y = [float(r["top1"]) for r in rows]
    assert cmp.fit("alpha_weighted").slope == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-10)
    short = tmp_path / "short.csv"
    short.write_text("model,top1\nvgg11,69.0\n")
    with pytest.raises(InputError, match="no accuracy for"):
        compare([metrics_only], short)


def test_bad_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="'model' or 'name' column"):
        read_summary_csv(bad)
    with pytest.raises(InputError, match="no such CSV"):
        read_summary_csv(tmp_path / "missing.csv")


# -- models, reports, JSON ----------------------------------------------------------------------


def test_models_reports_and_json(tmp_path: Path) -> None:
    reports = [ws.analyze(_arrays(s, scale)) for s, scale in ((0, 1.0), (1, 2.0), (2, 0.5))]
    saved = tmp_path / "third.json"
    reports[2].to_json(saved)
    cmp = compare(
        [reports[0], _arrays(1, 2.0), saved],
        {"a": 70.0, "b": 72.0, "third": 71.0},
        names=["a", "b", None],
    )
    assert cmp.names == ["a", "b", "third"]
    for m, report in zip(cmp.models, reports, strict=True):
        for key in ("alpha", "alpha_weighted", "log_norm"):
            assert m.metrics[key] == pytest.approx(report.summary[key], rel=1e-12)
    x = [r.summary["log_norm"] for r in reports]
    assert cmp.fit("log_norm").slope == pytest.approx(np.polyfit(x, [70, 72, 71], 1)[0])
    assert [f.series for f in cmp.fits] == ["all"] * len(cmp.metrics)


def test_report_json_round_trip(tmp_path: Path) -> None:
    report = ws.analyze(_arrays(5))
    path = tmp_path / "r.json"
    report.to_json(path)
    back = ws.Report.from_json(path)
    assert back.summary == pytest.approx(report.summary)
    assert [r.name for r in back.layers] == [r.name for r in report.layers]
    for a, b in zip(report.analysed, back.analysed, strict=True):
        np.testing.assert_array_equal(a.evals, b.evals)
        assert dict(a.metrics) == pytest.approx(dict(b.metrics))


def test_accuracy_forms_and_errors() -> None:
    reports = [ws.analyze(_arrays(s)) for s in (0, 1, 2)]
    cmp = compare(reports, [1.0, 2.0, 3.0], names=["x", "y", "z"])
    assert [m.accuracy for m in cmp.models] == [1.0, 2.0, 3.0]
    with pytest.raises(InputError, match="3 accuracies for 2 models"):
        compare(reports[:2], [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="names for"):
        compare(reports, names=["x"])
    with pytest.raises(InputError, match="at least one"):
        compare([])
    dup = compare([reports[0], reports[1]], names=["m", "m"])
    assert dup.names == ["m", "m#2"]
    assert dup.fits == () and dup.accuracy_name is None


# -- renderings and CLI -------------------------------------------------------------------------


def test_render_formats() -> None:
    cmp = compare(PUBLISHED)
    text = cmp.render("table")
    for word in ("RMSE", "R²", "Kendall τ", "VGG", "ResNet", "DenseNet", "alpha_weighted"):
        assert word in text
    md = cmp.render("markdown")
    assert "| VGG | alpha_weighted |" in md
    data = json.loads(cmp.render("json"))
    assert len(data["fits"]) == 24 and data["accuracy_name"] == "top1"
    fits = list(csv.DictReader(io.StringIO(cmp.render("csv"))))
    row = next(r for r in fits if r["series"] == "VGG" and r["metric"] == "alpha_weighted")
    assert float(row["r2"]) == pytest.approx(cmp.fit("alpha_weighted", "VGG").r2, rel=1e-15)
    with pytest.raises(OptionError, match="choose one of"):
        cmp.render("yaml")


def test_to_pandas() -> None:
    pytest.importorskip("pandas")
    cmp = compare(PUBLISHED)
    models = cmp.to_pandas()
    assert list(models["model"])[:2] == ["vgg11", "vgg11_bn"]
    assert len(cmp.to_pandas("fits")) == 24
    with pytest.raises(InputError, match="choose 'models' or 'fits'"):
        cmp.to_pandas("nope")


def test_cli_compare_published(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(["compare", str(PUBLISHED)], out, err) == 0
    text = out.getvalue()
    for series in ("VGG", "ResNet", "DenseNet"):
        for metric in PUBLISHED_METRICS:
            line = next(
                ln for ln in text.splitlines() if ln.startswith(series) and f" {metric} " in ln
            )
            assert len(line.split()) == 9  # series metric n slope intercept RMSE R² τ p
    out = io.StringIO()
    assert run(["compare", str(PUBLISHED), "--accuracy", "top1", "-f", "csv"], out, err) == 0
    assert out.getvalue().startswith("series,metric,n,slope,intercept,rmse,r2,tau,tau_p")
    out, err = io.StringIO(), io.StringIO()
    assert run(["compare", str(PUBLISHED), "--accuracy", "top9"], out, err) == 2
    assert "top9" in err.getvalue()


def test_cli_compare_report_html(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "cmp.html"
    out, err = io.StringIO(), io.StringIO()
    assert (
        run(
            [
                "compare",
                str(PUBLISHED),
                "--metrics",
                "alpha,alpha_weighted",
                "--report",
                str(target),
            ],
            out,
            err,
        )
        == 0
    )
    page = target.read_text()
    assert page.count("<img ") == 2
    assert "http://" not in page and "https://" not in page


def test_comparison_html_opens_with_fits_and_overlay() -> None:
    pytest.importorskip("matplotlib")
    reports = [ws.analyze(_arrays(s)) for s in (0, 1, 2)]
    cmp: Comparison = compare(reports, [1.0, 2.0, 3.5], names=["x", "y", "z"])
    page = cmp.to_html()
    assert page.count("<img ") == len(cmp.metrics) + 1
    # First screen: verdict, then the pictures (the best fit, the overlay, the other fits),
    # then the tables.
    verdict_at = page.index('id="verdict"')
    hero_at = page.index('id="hero"')
    overlay_at = page.index('alt="α of every layer of each model against its relative depth"')
    assert verdict_at < hero_at < overlay_at < page.index('id="fits"') < page.index('id="models"')
    best = max((f for f in cmp.fits if f.series == "all"), key=lambda f: f.r2)
    first_alt = page[hero_at:].split('alt="', 1)[1].split('"', 1)[0]
    expected = f"accuracy of each model against its {best.metric}, with least-squares lines"
    assert first_alt == expected
    assert f"{best.metric} tracks accuracy best over all 3 models (R² {best.r2:.2f}" in page


def test_comparison_verdict_and_repr() -> None:
    from weightspectra.compare.render import (
        best_fits,
        comparison_repr,
        comparison_summary_html,
        comparison_verdict,
    )

    cmp = compare(PUBLISHED)
    fits = best_fits(cmp)
    assert [f.series for f in fits] == ["all", "DenseNet", "ResNet", "VGG"]
    for f in fits:
        same = [g.r2 for g in cmp.fits if g.series == f.series]
        assert f.r2 == max(same)
    tone, line = comparison_verdict(cmp)
    assert tone == "good" and line.startswith(
        f"{fits[0].metric} tracks top1 best over all 17 models (R² {fits[0].r2:.2f}"
    )
    assert "Within each series: DenseNet: " in line
    text = comparison_repr(cmp)
    assert text.splitlines() == [
        "<weightspectra Comparison of 17 models (vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, "
        "vgg16_bn, …)>",
        line,
    ]
    no_acc = compare(PUBLISHED, metrics=["alpha"], accuracy=[1.0] * 17)
    assert comparison_verdict(no_acc)[0] in ("good", "mixed", "poor", "none")
    html = comparison_summary_html(cmp, plot=False)
    assert "tracks top1 best" in html and "<img" not in html


def test_comparison_shows_itself_in_a_terminal_and_a_notebook() -> None:
    cmp = compare(PUBLISHED)
    text = repr(cmp)
    assert text.startswith("<weightspectra Comparison of 17 models (vgg11, ")
    assert "tracks top1 best over all 17 models" in text.splitlines()[1]
    html = cmp._repr_html_()
    assert "tracks top1 best" in html and "<img" in html  # the best fit's picture
