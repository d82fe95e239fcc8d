"""Rendering a run: the terminal summary (golden file), the HTML page, ``weightspectra runs``."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.cli import run as cli_run
from weightspectra.training import Monitor, read_run
from weightspectra.training.alarms import AlarmRules, check_alarms
from weightspectra.training.monitor import monitor_options, recorded_rows
from weightspectra.training.render import run_summary
from weightspectra.training.run import RunWriter

GOLDEN = Path(__file__).parent / "golden"


def make_run(path: Path) -> Path:
    """A run of three steps of seeded numpy weights, with fixed costs (a deterministic text)."""
    rng = np.random.default_rng(0)
    options = monitor_options()
    writer = RunWriter(
        path, options.to_dict(), {"every": 10, "unit": "steps", "producer": "monitor"}
    )
    w1 = rng.standard_normal((120, 60))
    heavy = rng.standard_t(1.2, size=(120, 60))
    for step in (10, 20, 30):
        mix = min(step / 30, 1.0)
        weights = {"fc1.weight": (1 - mix) * w1 + mix * heavy, "fc2.weight": w1[:60, :40] * step}
        report = ws.analyze(weights, options)
        rows = recorded_rows(report)
        alarms = check_alarms(rows, report.diagnostics, AlarmRules(late_step=30), step=step)
        writer.write_step(step, step / 10, rows, alarms, seconds=0.25)
        writer.log_scalars(step, step / 10, {"loss": 1.0 / step, "accuracy": 0.5 + step / 100})
    return path


def test_summary_golden(tmp_path: Path) -> None:
    text = run_summary(read_run(make_run(tmp_path / "run"))).replace(
        str(tmp_path / "run"), "RUNDIR"
    )
    golden = GOLDEN / "run_summary.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":  # UPDATE_GOLDEN=1 pytest ... rewrites it
        golden.write_text(text)
    assert text == golden.read_text()


def test_html_page(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from weightspectra.training.html import run_html

    page = run_html(read_run(make_run(tmp_path / "run")))
    assert page.count("<img ") == 6  # heatmap, lines, flow, phases, ranks, logged numbers
    assert "alpha-low-traps" in page and "Layers at step 30" in page
    empty = tmp_path / "empty"
    Monitor(empty).close()
    assert "<img " not in run_html(read_run(empty))


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_show_and_series(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    code, out, _ = cli("runs", "show", str(run_dir))
    assert code == 0 and out == run_summary(read_run(run_dir))
    code, out, _ = cli("runs", "show", str(run_dir), "-f", "json")
    assert code == 0 and [json.loads(x)["step"] for x in out.splitlines()] == [
        10,
        10,
        20,
        20,
        30,
        30,
    ]
    code, _, err = cli("runs", "show", str(tmp_path / "nope"))
    assert code == 2 and "not a run folder" in err
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    rng = np.random.default_rng(1)
    for step in (1, 2):
        np.savez(ckpts / f"step_{step}.npz", **{"fc.weight": rng.standard_normal((50, 30))})
    page = tmp_path / "page.html"
    if pytest.importorskip("matplotlib"):
        code, out, err = cli("runs", "series", str(ckpts), "--run", str(tmp_path / "s"),
                             "--html", str(page))  # fmt: skip
    assert code == 0 and "2 steps recorded, 1 … 2" in out and page.is_file()
    assert "analysing" in err
    assert ws.Options.from_dict(read_run(tmp_path / "s").options).precision is ws.Precision.FLOAT32


_IMAGES = """
return Array.prototype.map.call(document.images, function(im){
  return {complete: im.complete, w: im.naturalWidth, bw: im.getBoundingClientRect().width}; });
"""


def test_html_page_in_chromium(tmp_path: Path) -> None:
    """The page as a browser shows it: every picture decoded and within the window, nothing
    wider than the window, no console error (a screenshot goes to test-artifacts/)."""
    pytest.importorskip("matplotlib")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium / chromedriver are not installed (apt-get install chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    from weightspectra.training.html import write_run_html

    page = write_run_html(read_run(make_run(tmp_path / "run")), tmp_path / "run.html")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1200,900"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(_IMAGES)
        width = driver.execute_script("return document.documentElement.clientWidth")
        scroll = driver.execute_script("return document.documentElement.scrollWidth")
        artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        driver.save_screenshot(str(artifacts / "training-run-page.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    finally:
        driver.quit()
    assert len(images) == 6
    assert all(im["complete"] and im["w"] > 0 and 0 < im["bw"] <= width for im in images)
    assert scroll <= width and not errors


def test_html_page_has_the_shared_page_shape(tmp_path: Path) -> None:
    """Header, verdict naming the alarm, the two first-screen pictures, then the sections, as
    the analysis and comparison pages are laid out (report.layout)."""
    pytest.importorskip("matplotlib")
    from weightspectra.training.html import run_html

    page = run_html(read_run(make_run(tmp_path / "run")))
    order = [page.index(m) for m in ("<header>", 'id="verdict"', 'id="hero"', 'id="alarms"')]
    assert order == sorted(order)
    verdict = page[page.index('id="verdict"') :].split("</p>", 1)[0]
    assert 'class="verdict poor"' in verdict and "alpha-low-traps" in verdict
    hero = page[page.index('id="hero"') :].split("</section>", 1)[0]
    assert hero.count("<img ") == 2
