"""The verdict: tone and layers to look at, from what a report stores (hand-built reports)."""

from __future__ import annotations

from typing import Any

import pytest

from weightspectra.enums import Status
from weightspectra.report.results import LayerResult, Report
from weightspectra.report.verdict import Tone, alpha_class, concerns, verdict


def _report(
    alphas: list[float | None],
    warnings: dict[int, str] | None = None,
    collapsed: tuple[int, ...] = (),
    options: dict[str, Any] | None = None,
) -> Report:
    warnings = warnings or {}
    layers = []
    for i, a in enumerate(alphas):
        metrics: dict[str, Any] = {"alpha": float("nan") if a is None else a}
        if i in warnings:
            metrics["warning"] = warnings[i]
        layers.append(LayerResult(i, f"l{i}", f"l{i}.weight", "dense", Status.OK, metrics=metrics))
    diagnostics = {"scale_collapse": [{"name": f"l{i}"} for i in collapsed]}
    return Report("m", options or {}, tuple(layers), "0", {}, diagnostics)


def test_tones_follow_the_share_in_the_band() -> None:
    assert verdict(_report([3.0] * 10)).tone is Tone.GOOD
    good = verdict(_report([3.0] * 8 + [7.0, 1.5]))
    assert good.tone is Tone.GOOD and (good.in_band, good.above, good.below) == (8, 1, 1)
    assert good.headline == "Looks well trained: 8 of 10 layers have α in 2–6 (mean α 3.25)."
    mixed = verdict(_report([3.0] * 5 + [7.0] * 5))
    assert mixed.tone is Tone.MIXED and "5 above 6, 0 below 2" in mixed.headline
    poor = verdict(_report([3.0] + [7.0] * 4))
    assert poor.tone is Tone.POOR and "under-trained or random-like" in poor.headline
    heavy = verdict(_report([1.2] * 4 + [3.0]))
    assert heavy.tone is Tone.POOR and "very heavy-tailed (α below 2)" in heavy.headline


def test_no_fit_and_nothing_analysed() -> None:
    none = verdict(_report([None, None]))
    assert none.tone is Tone.NONE and none.fitted == 0
    assert none.headline == "No power-law fit succeeded on the 2 analysed layers."
    empty = verdict(Report("m", {}, (), "0"))
    assert empty.tone is Tone.NONE and empty.headline.startswith("Nothing was analysed")


def test_band_comes_from_the_options() -> None:
    report = _report([2.5] * 6 + [4.5] * 4, options={"under_trained_alpha": 4.0})
    v = verdict(report)
    assert v.band == (2.0, 4.0) and v.in_band == 6 and v.tone is Tone.MIXED
    assert "α in 2–4" in v.headline


def test_concerns_most_severe_first_and_named_in_the_line() -> None:
    report = _report(
        [3.0, 7.5, 1.5, 3.0, 9.0, 3.0],
        warnings={1: "under-trained", 2: "over-trained", 4: "spurious-fit,under-trained"},
        collapsed=(5,),
    )
    found = concerns(report)
    assert [c.name for c in found] == ["l5", "l2", "l1", "l4"]
    assert found[0].labels == ("scale-collapse",)
    assert found[3].labels == ("under-trained", "spurious-fit")  # sorted by severity
    v = verdict(report)
    assert v.tone is Tone.MIXED
    many = _report([3.0] * 9 + [7.5], warnings={9: "under-trained"})
    assert verdict(many).headline.startswith("Mostly well trained")  # a flag: "mostly"
    assert v.look_at() == (
        "Look at l5 (scale collapse, α 3.00), l2 (very heavy-tailed, α 1.50), "
        "l1 (under-trained, α 7.50) and 1 more."
    )
    assert v.look_at(4).endswith("and l4 (under-trained, spurious fit, α 9.00).")
    assert v.line().startswith(v.headline + " Look at l5")
    assert verdict(_report([3.0])).look_at() == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.99, "heavy"), (2.0, "good"), (6.0, "good"), (6.01, "under"), (float("nan"), "nofit")],
)
def test_alpha_class_edges(value: float, expected: str) -> None:
    assert alpha_class(value, (2.0, 6.0)) == expected
    assert alpha_class(True, (2.0, 6.0)) == "nofit"


def test_docstring_examples_of_the_page_modules() -> None:
    import doctest

    from weightspectra.report import layout
    from weightspectra.report import verdict as verdict_module
    from weightspectra.report.plots import _figure, layer

    for module in (verdict_module, layout, _figure, layer):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
