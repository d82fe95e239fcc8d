"""The HTML report: self-contained, one table row per analysed layer, and (in headless Chromium)
every plot loaded and visible, no console errors, the table sortable. Screenshots go to
``test-artifacts/``.

The browser tests need the Debian packages ``chromium`` and ``chromium-driver`` and the pip
package ``selenium``; they skip, saying which is missing, without them. Nothing is downloaded:
the driver is ``/usr/bin/chromedriver`` (or ``chromedriver`` on PATH) and the browser
``/usr/bin/chromium``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.cli import run
from weightspectra.report.html import report_html
from weightspectra.report.layout import esc
from weightspectra.report.verdict import verdict

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
#: With WS_DOCS_SCREENSHOTS=1 the first-screen screenshots are also written here (the ones
#: docs/reports.md shows).
DOCS_IMAGES = ROOT / "docs" / "images"
#: The first-screen sizes checked: a laptop and a phone (CSS pixels).
SCREENS = ((1400, 900, False), (390, 844, True))


def small_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "blocks.0.attn<q>.weight": rng.standard_t(3.0, (96, 64)),  # a name that needs escaping
        "blocks.0.mlp.weight": rng.standard_t(2.2, (160, 64)),
        "blocks.1.mlp.weight": rng.standard_normal((128, 96)),
        "blocks.1.mlp.bias": rng.standard_normal(128),
        "embed.weight": rng.standard_t(4.0, (400, 32)),
        "head.weight": rng.standard_normal((5, 32)),
    }


class _Page(HTMLParser):
    """Counts what the tests check: layer-table body rows, images and their sources, links."""

    def __init__(self) -> None:
        super().__init__()
        self.in_layers = self.in_body = False
        self.rows = 0
        self.img_src: list[str] = []
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.in_layers = a.get("id") == "layers"
        if tag == "tbody" and self.in_layers:
            self.in_body = True
        if tag == "tr" and self.in_body:
            self.rows += 1
        if tag == "img":
            self.img_src.append(a.get("src") or "")
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(str(a[key]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_layers = self.in_body = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def report() -> ws.Report:
    return ws.analyze(small_model())


def test_self_contained_and_one_row_per_layer(report: ws.Report) -> None:
    pytest.importorskip("matplotlib")
    text = report_html(report, dpi=40)
    page = parse(text)
    assert page.rows == len(report.analysed) == 4
    assert len(page.img_src) == 3 + len(report.analysed)
    assert all(src.startswith("data:image/png;base64,") for src in page.img_src)
    assert all(ref.startswith(("data:", "#")) for ref in page.refs), page.refs
    assert '<link rel="stylesheet"' not in text and "<script src" not in text
    assert "blocks.0.attn&lt;q&gt;" in text and "attn<q>" not in text
    joined = "".join(page.text)
    assert "2–4 is typical of well-trained layers" in joined
    assert "Mean α = " in joined


def test_first_screen_order_options_and_source(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    weights = tmp_path / "deep" / "folder" / "m.npz"
    weights.parent.mkdir(parents=True)
    np.savez(weights, **small_model())
    report = ws.analyze(weights)
    text = report_html(report, dpi=30, max_layer_plots=1)
    # Header, the collapsed options, the verdict, the pictures, then the detail.
    marks = [
        "<h1>",
        '<details class="options">',
        'id="verdict"',
        'id="hero"',
        'id="warnings"',
        'id="layers"',
        'id="layer-0"',
    ]
    at = [text.index(m) for m in marks]
    assert at == sorted(at), dict(zip(marks, at, strict=True))
    hero = text[text.index('id="hero"') : text.index("</section>", text.index('id="hero"'))]
    assert hero.count("<img ") == 2 and 'alt="correlation flow' in hero
    # The source: its file name, the whole path on hover.
    assert (
        f'<h1>weightspectra report: <span class="src" title="{weights}">m.npz</span></h1>' in text
    )
    assert "<title>weightspectra report: m.npz</title>" in text
    # Options: a short list of name and value, collapsed (no "open").
    options = text[text.index('<details class="options">') :]
    options = options[: options.index("</details>")]
    assert options.startswith(f'<details class="options"><summary>Options ({len(report.options)})')
    assert "<dt>min_evals</dt><dd>8</dd>" in options and "<dt>pool</dt><dd>on</dd>" in options
    assert "{" not in options  # not a Python dict
    v = verdict(report)
    assert f'class="verdict {v.tone.value}"' in text and esc(v.headline) in text


def test_repr_and_notebook_summary(report: ws.Report, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    lines = repr(report).splitlines()
    assert lines[0].startswith("<weightspectra Report of ")
    assert lines[0].endswith(
        f"4 analysed, 2 skipped, 0 failed, mean α {report.summary['alpha']:.2f}>"
    )
    assert lines[1] == verdict(report).line()
    html = report._repr_html_()
    assert 'class="verdict ' in html and html.count("<img ") == 1  # the correlation flow
    assert "<html" not in html and "<script" not in html  # a fragment, no page
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    bare = report._repr_html_()
    assert 'class="verdict ' in bare and "<img" not in bare


def test_without_plots_needs_no_matplotlib(
    report: ws.Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = report_html(report, plots=False)
    page = parse(text)
    assert page.rows == 4 and page.img_src == []


def test_to_html_and_cli_report(report: ws.Report, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "sub" / "r.html"
    text = report.to_html(path, dpi=30, max_layer_plots=1)
    assert path.read_text(encoding="utf-8") == text
    assert len(parse(text).img_src) == 3 + 1
    weights = tmp_path / "m.npz"
    np.savez(weights, **small_model())
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "cli.html"
    assert run(["analyze", str(weights), "--report", str(target)], out, err) == 0
    assert "wrote the HTML report" in err.getvalue()
    assert parse(target.read_text(encoding="utf-8")).rows == 4


# -- headless Chromium --------------------------------------------------------------------------


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _find("/usr/bin/chromium", "chromium", "chromium-browser")
    driver_path = _find("/usr/bin/chromedriver", "chromedriver")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium chromium-driver)")
    if driver_path is None:
        pytest.skip("chromedriver is not installed (apt-get install -y chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    profile = tempfile.mkdtemp(prefix="ws-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


_IMAGES = """
document.querySelectorAll('details').forEach(function(d){ d.open = true; });
return Array.prototype.map.call(document.images, function(im){
  var r = im.getBoundingClientRect(), s = getComputedStyle(im);
  return {complete: im.complete, w: im.naturalWidth, h: im.naturalHeight,
          bw: r.width, bh: r.height, shown: s.visibility !== 'hidden' && s.display !== 'none'};
});
"""


_FIRST_SCREEN = """
var vh = window.innerHeight, vw = document.documentElement.clientWidth;
function box(el){ var r = el.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, w: r.width, h: r.height}; }
var verdict = document.getElementById('verdict');
var hero = Array.prototype.map.call(document.querySelectorAll('#hero img'), function(im){
  var b = box(im); b.alt = im.alt; b.complete = im.complete && im.naturalWidth > 0; return b; });
return {
  vh: vh, vw: vw,
  scrollWidth: document.documentElement.scrollWidth,
  bodyScrollWidth: document.body.scrollWidth,
  verdict: verdict ? box(verdict) : null,
  verdictText: verdict ? verdict.textContent : '',
  hero: hero,
  alts: Array.prototype.map.call(document.images, function(im){ return im.alt; }),
  h1: document.querySelector('h1').textContent
};
"""


def _inside(b: dict[str, float], vw: float, vh: float) -> bool:
    return b["top"] >= 0 and b["left"] >= 0 and b["bottom"] <= vh and b["right"] <= vw + 0.5


def check_first_screen(
    driver: Any, path: Path, shot: str, *, docs: bool = False
) -> dict[tuple[int, int], Any]:
    """Open ``path`` at each of :data:`SCREENS`; assert that at 1400×900 the verdict and at
    least one large plot are visible without scrolling, and at every size that every image has
    alt text, the page does not scroll sideways and the console has no error; save the
    screenshots (also to ``docs/images`` when ``docs`` and WS_DOCS_SCREENSHOTS=1). Returns
    what was measured, by size."""
    seen = {}
    for width, height, mobile in SCREENS:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        driver.get(path.resolve().as_uri())
        m = driver.execute_script(_FIRST_SCREEN)
        assert m["vh"] == height, m["vh"]
        assert all(alt.strip() for alt in m["alts"]), m["alts"]
        assert m["scrollWidth"] <= m["vw"] and m["bodyScrollWidth"] <= m["vw"], (width, m)
        assert m["verdict"] is not None and m["verdictText"].strip()
        assert all(im["complete"] for im in m["hero"]), m["hero"]
        if (width, height) == (1400, 900):
            assert _inside(m["verdict"], m["vw"], m["vh"]), m["verdict"]
            shown = [im for im in m["hero"] if _inside(im, m["vw"], m["vh"]) and im["w"] >= 380]
            assert shown, f"no plot wholly visible on the first screen: {m['hero']}"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        name = f"{shot}-{width}x{height}.png"
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / name))
        if docs and os.environ.get("WS_DOCS_SCREENSHOTS") == "1":
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(DOCS_IMAGES / name))
        seen[(width, height)] = m
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return seen


def check_in_browser(driver: Any, path: Path, expected_rows: int, shot: str) -> list[Any]:
    """Open ``path``; assert rows, images and console; sort by α; save screenshots."""
    driver.get(path.resolve().as_uri())
    rows = driver.execute_script("return document.querySelectorAll('#layers tbody tr').length")
    assert rows == expected_rows
    images = driver.execute_script(_IMAGES)
    assert images, "no plot in the page"
    for k, im in enumerate(images):
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, (k, im)
        assert im["shown"] and im["bw"] > 0 and im["bh"] > 0, (k, im)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / f"{shot}-top.png"))
    # Sort by α: click its header once (ascending), and read the column back.
    col = driver.execute_script(
        "var h = Array.prototype.map.call(document.querySelectorAll('#layers thead th'),"
        " function(t){return t.textContent;}); return h.indexOf('alpha');"
    )
    assert col >= 0
    driver.execute_script(f"document.querySelectorAll('#layers thead th')[{col}].click()")
    values = driver.execute_script(
        f"return Array.prototype.map.call(document.querySelectorAll('#layers tbody tr'),"
        f" function(r){{return parseFloat(r.cells[{col}].getAttribute('data-v'));}});"
    )
    finite = [v for v in values if v == v]
    assert finite == sorted(finite)
    for anchor, name in (("#layers", "table"), ("#model-plots", "model-plots")):
        driver.execute_script(f"document.querySelector('{anchor}').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / f"{shot}-{name}.png"))
    driver.execute_script("document.querySelector('details.layer').scrollIntoView()")
    driver.save_screenshot(str(ARTIFACTS / f"{shot}-layers.png"))
    assert not [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return list(images)


def test_small_report_in_chromium(browser: Any, report: ws.Report, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "small.html"
    report.to_html(path)
    seen = check_first_screen(browser, path, "small-report")
    first = seen[(1400, 900)]
    assert first["h1"].startswith("weightspectra report: ")
    assert len(first["hero"]) == 2  # correlation flow and α histogram
    images = check_in_browser(browser, path, len(report.analysed), "small-report")
    assert len(images) == 3 + len(report.analysed)


def test_comparison_pages_in_chromium(browser: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    published = ROOT / "tests" / "data" / "published_cv_models.csv"
    target = tmp_path / "cmp.html"
    out, err = io.StringIO(), io.StringIO()
    assert run(["compare", str(published), "--report", str(target)], out, err) == 0, err.getvalue()
    seen = check_first_screen(browser, target, "compare-published", docs=True)
    first = seen[(1400, 900)]
    assert first["hero"][0]["alt"].startswith("top1 of each model against its ")
    assert "tracks top1 best over all 17 models" in first["verdictText"]
    # Models with layers: the overlay of their α by depth is on the first screen too.
    rng = np.random.default_rng(3)
    reports = [
        ws.analyze({f"l{k}.weight": rng.standard_t(2.5 + s, (120, 60)) for k in range(4)})
        for s in range(3)
    ]
    cmp = ws.compare(reports, [70.0, 72.0, 75.0], names=["a", "b", "c"])
    path = tmp_path / "cmp-reports.html"
    cmp.to_html(path)
    first = check_first_screen(browser, path, "compare-reports")[(1400, 900)]
    overlay = [im for im in first["hero"] if im["alt"].startswith("α of every layer")]
    assert overlay and _inside(overlay[0], first["vw"], first["vh"]), first["hero"]


@pytest.mark.slow
def test_minilm_report_in_chromium(browser: Any, minilm_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "r.html"
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(minilm_path), "--report", str(target)], out, err) == 0
    size = target.stat().st_size
    assert size < 5_000_000, f"report is {size} bytes"
    assert not re.search(r"(src|href)=\"(?!data:|#)", target.read_text(encoding="utf-8"))
    seen = check_first_screen(browser, target, "minilm-report", docs=True)
    first = seen[(1400, 900)]
    assert first["h1"] == "weightspectra report: model/model.safetensors"
    assert first["hero"][0]["alt"].startswith("correlation flow")
    assert _inside(first["hero"][0], first["vw"], first["vh"])  # the correlation flow itself
    assert first["verdictText"].startswith("Mostly well trained: 34 of 39 layers")
    images = check_in_browser(browser, target, 39, "minilm-report")
    assert len(images) == 3 + 39
