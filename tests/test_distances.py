"""Model-to-model distances: each measure against an independent computation here (the HSIC
form of centred CKA with an explicit centring matrix, sorted-sample Wasserstein, scipy's
principal angles), its invariances, the pairing by name, and ``weightspectra diff``."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.cli import run
from weightspectra.distances import (
    Distances,
    distance_series,
    linear_cka,
    log_esd_w1,
    matrix_distances,
    subspace_overlap,
)
from weightspectra.errors import InputError


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("shape", [(60, 20), (20, 60)], ids=["tall", "wide"])
def test_cka_equals_the_hsic_form_and_is_invariant(
    shape: tuple[int, int], rng: np.random.Generator
) -> None:
    x = rng.standard_normal(shape)
    y = x + 0.7 * rng.standard_t(3, shape)
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-12)
    q = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))[0]
    assert linear_cka(x, 5.0 * y @ q) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert linear_cka(x, x + 3.0) == pytest.approx(1.0, rel=1e-12)  # centred: shifts vanish
    # the uncentred form (the peer's) is not shift invariant: ours differs from it
    uncentred = float(np.sum((x.T @ (x + 3.0)) ** 2)) / math.sqrt(
        float(np.sum((x.T @ x) ** 2)) * float(np.sum(((x + 3.0).T @ (x + 3.0)) ** 2))
    )
    assert abs(uncentred - 1.0) > 1e-3


def test_log_esd_w1_equals_sorted_sample_distance(rng: np.random.Generator) -> None:
    a, b = rng.lognormal(0, 1, 200), rng.lognormal(0.3, 1.5, 200)
    expected = float(np.mean(np.abs(np.sort(np.log10(a)) - np.sort(np.log10(b)))))
    assert log_esd_w1(a, b) == pytest.approx(expected, rel=1e-12)
    assert log_esd_w1(a, 9.0 * a) == pytest.approx(math.log10(9.0), rel=1e-12)
    assert log_esd_w1(np.r_[a, 0.0, 1e-30], a) == pytest.approx(0.0, abs=1e-15)  # zeros left out


def test_subspace_overlap_equals_principal_angles(rng: np.random.Generator) -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    u = np.linalg.qr(rng.standard_normal((50, 6)))[0]
    v = np.linalg.qr(u + 0.5 * rng.standard_normal((50, 6)))[0]
    angles = scipy_linalg.subspace_angles(u, v)
    assert subspace_overlap(u, v) == pytest.approx(float(np.mean(np.cos(angles) ** 2)), rel=1e-10)


def test_matrix_distances_against_numpy(rng: np.random.Generator) -> None:
    w = rng.standard_normal((80, 40))
    tuned = w + 0.1 * rng.standard_normal((80, 40))
    d = matrix_distances(w, tuned, top_k=5)
    assert d["frobenius"] == pytest.approx(float(np.linalg.norm(tuned - w)), rel=1e-12)
    assert d["frobenius_rel"] == pytest.approx(
        float(np.linalg.norm(tuned - w) / np.linalg.norm(w)), rel=1e-12
    )
    u_a, _, vt_a = np.linalg.svd(w)
    u_b, _, vt_b = np.linalg.svd(tuned)
    assert d["overlap_out"] == pytest.approx(
        float(np.sum((u_a[:, :5].T @ u_b[:, :5]) ** 2)) / 5, rel=1e-10
    )
    assert d["overlap_in"] == pytest.approx(
        float(np.sum((vt_a[:5] @ vt_b[:5].T) ** 2)) / 5, rel=1e-10
    )
    same = matrix_distances(w, w)
    assert same["frobenius"] == 0.0 and same["cka"] == pytest.approx(1.0)
    assert same["overlap_out"] == pytest.approx(1.0) and same["top_k"] == 10
    with pytest.raises(InputError, match=r"different shapes: \(80, 40\) vs \(40, 80\)"):
        matrix_distances(w, w.T)


def _pair(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    a = {
        "l0.weight": rng.standard_normal((100, 50)),
        "l1.weight": rng.standard_normal((60, 60)),
        "l1.bias": rng.standard_normal(60),
        "head.weight": rng.standard_normal((10, 60)),
    }
    b = {
        "model.l1.weight": 2.0 * a["l1.weight"],  # another order and a leading prefix
        "model.l0.weight": a["l0.weight"] + 0.2 * rng.standard_t(3, (100, 50)),
        "model.head.weight": rng.standard_normal((12, 60)),
    }
    return a, b


def test_distances_pair_by_name_and_report_per_layer(rng: np.random.Generator) -> None:
    a, b = _pair(rng)
    d = ws.distances(a, b)
    assert isinstance(d, Distances)
    rows = {r["name"]: r for r in d.rows}
    assert set(rows) == {"l0", "l1", "head"}
    assert rows["head"]["reason"] == "shape (10, 60) vs (12, 60)"
    assert math.isnan(rows["head"]["cka"])
    l1 = rows["l1"]
    assert l1["frobenius_rel"] == pytest.approx(1.0, rel=1e-12)
    assert l1["cka"] == pytest.approx(1.0, rel=1e-12)
    assert l1["esd_w1"] == pytest.approx(math.log10(4.0), rel=1e-9)
    assert l1["delta_alpha"] == pytest.approx(0.0, abs=1e-9)  # α is scale invariant
    assert l1["delta_log_spectral_norm"] == pytest.approx(math.log10(4.0), rel=1e-9)
    l0 = rows["l0"]
    report_a, report_b = ws.analyze(a), ws.analyze({"l0.weight": b["model.l0.weight"]})
    assert l0["alpha_a"] == pytest.approx(report_a.analysed[0].metrics["alpha"])
    assert l0["alpha_b"] == pytest.approx(report_b.analysed[0].metrics["alpha"])
    assert d.summary["num_paired"] == 2 and d.summary["num_unpaired"] == 1
    assert d.summary["cka"] == pytest.approx((l0["cka"] + l1["cka"]) / 2)
    frame = d.to_pandas()
    assert list(frame["name"]) == ["l0", "l1", "head"]
    with pytest.raises(InputError, match="share no weight of the same name and shape"):
        ws.distances({"x.weight": a["l0.weight"]}, {"y.weight": a["l1.weight"]})


def test_series_from_first_and_previous(rng: np.random.Generator) -> None:
    w0 = {"fc.weight": rng.standard_normal((64, 32))}
    w1 = {"fc.weight": w0["fc.weight"] + 0.1 * rng.standard_normal((64, 32))}
    w2 = {"fc.weight": w1["fc.weight"] + 0.1 * rng.standard_normal((64, 32))}
    steps = distance_series([w0, w1, w2])
    assert [s.index for s in steps] == [1, 2]
    first, prev = steps[1].from_first.rows[0], steps[1].from_previous.rows[0]
    assert first["frobenius"] == pytest.approx(
        float(np.linalg.norm(w2["fc.weight"] - w0["fc.weight"]))
    )
    assert prev["frobenius"] == pytest.approx(
        float(np.linalg.norm(w2["fc.weight"] - w1["fc.weight"]))
    )


def test_cli_diff(rng: np.random.Generator, tmp_path: Path) -> None:
    a, b = _pair(rng)
    fa, fb = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(fa, **a)
    np.savez(fb, **b)
    out, err = io.StringIO(), io.StringIO()
    assert run(["diff", str(fa), str(fb)], out, err) == 0, err.getvalue()
    text = out.getvalue()
    assert "frobenius_rel" in text and "2 paired layers, 1 unpaired" in text
    out = io.StringIO()
    assert run(["diff", str(fa), str(fb), "-f", "json", "--top-k", "3"], out, err) == 0
    data = json.loads(out.getvalue())
    assert [r["top_k"] for r in data["rows"]] == [3, 3, 0]
    plot = tmp_path / "diff.png"
    out = io.StringIO()
    assert run(["diff", str(fa), str(fb), "--plot", str(plot)], out, err) == 0
    assert plot.stat().st_size > 1000
    err = io.StringIO()
    assert run(["diff", str(fa), str(tmp_path / "nope.npz")], io.StringIO(), err) == 2
    assert err.getvalue().count("\n") == 1


def test_diff_page_opens_with_the_verdict_and_pictures(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    """The diff page has the analysis and comparison pages' shape: header, verdict (naming the
    layer that moved most, by ‖ΔW‖/‖W‖ computed here), two pictures, then the table."""
    pytest.importorskip("matplotlib")
    a, b = _pair(rng)
    page = ws.distances(a, b).to_html()
    order = [page.index(m) for m in ("<header>", 'id="verdict"', 'id="hero"', 'id="layers"')]
    assert order == sorted(order)
    verdict = page[page.index('id="verdict"') :].split("</p>", 1)[0]
    l0 = float(
        np.linalg.norm(b["model.l0.weight"] - a["l0.weight"]) / np.linalg.norm(a["l0.weight"])
    )
    # l1 doubled: ‖ΔW‖/‖W‖ = 1.0, the most changed; then l0; the head is unpaired
    assert "2 layers paired, 1 unpaired" in verdict and 'class="verdict mixed"' in verdict
    assert verdict.index("l1 (100.0%)") < verdict.index(f"l0 ({l0:.1%})")
    hero = page[page.index('id="hero"') :].split("</section>", 1)[0]
    assert hero.count("<img ") == 2 and hero.count('alt="') == 2
    fa, fb, html_path = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "diff.html"
    np.savez(fa, **a)
    np.savez(fb, **b)
    err = io.StringIO()
    assert run(["diff", str(fa), str(fb), "--report", str(html_path)], io.StringIO(), err) == 0
    assert html_path.read_text().count("<img ") == 2 and "wrote the HTML page" in err.getvalue()
