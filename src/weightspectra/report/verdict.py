"""The verdict of a report: one line saying how the model looks and which layers to look at.

A pure function of what the report stores (its rows' α and warning labels, the model
diagnostics' scale collapse, the α band of its options); nothing is recomputed. The HTML page,
the notebook summary and ``repr`` all show the same :class:`Verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from weightspectra.report.results import LayerResult, Report

#: Share of fitted layers with α in the band from which a model "looks well trained".
GOOD_SHARE = 0.8
#: ... and below which it is "unusual" rather than "mixed".
MIXED_SHARE = 0.5
#: Layers named in the verdict line (the rest are counted; the page lists them all).
NAMED_CONCERNS = 3
#: Warning labels in order of how much they call for a look (scale collapse first: a layer
#: whose norm collapsed is often dead or mis-loaded).
SEVERITY = (
    "scale-collapse",
    "fit-failed",
    "over-trained",
    "under-trained",
    "spurious-fit",
    "low-confidence",
)
#: Plain words for the labels, as the verdict says them.
LABEL_WORDS = {
    "scale-collapse": "scale collapse",
    "fit-failed": "no power-law fit",
    "over-trained": "very heavy-tailed",
    "under-trained": "under-trained",
    "spurious-fit": "spurious fit",
    "low-confidence": "few eigenvalues fitted",
}


class Tone(str, Enum):
    """How the model looks overall (the colour of the verdict)."""

    GOOD = "good"
    MIXED = "mixed"
    POOR = "poor"
    NONE = "none"


@dataclass(frozen=True)
class Concern:
    """A layer worth a look: its name, type, warning labels (most severe first) and α."""

    name: str
    layer_type: str
    labels: tuple[str, ...]
    alpha: float | None

    @property
    def label(self) -> str:
        """The most severe label."""
        return self.labels[0]

    def describe(self) -> str:
        """``name (under-trained, α 7.84)``."""
        words = ", ".join(LABEL_WORDS.get(lab, lab) for lab in self.labels)
        alpha = f", α {self.alpha:.2f}" if self.alpha is not None else ""
        return f"{self.name} ({words}{alpha})"


@dataclass(frozen=True)
class Verdict:
    """How a model looks at a glance.

    Attributes
    ----------
    tone : Tone
    headline : str
        One sentence: how the model looks and on what evidence.
    concerns : tuple of Concern
        The layers to look at, most severe first.
    fitted, in_band, below, above : int
        Layers with a fitted α, and how many of them lie in, below and above the α band.
    band : (float, float)
        The analysis' α band (``over_trained_alpha``, ``under_trained_alpha``).
    """

    tone: Tone
    headline: str
    concerns: tuple[Concern, ...]
    fitted: int
    in_band: int
    below: int
    above: int
    band: tuple[float, float]

    def look_at(self, limit: int = NAMED_CONCERNS) -> str:
        """``Look at a (…), b (…) and 3 more.`` ('' without concerns)."""
        if not self.concerns:
            return ""
        named = [c.describe() for c in self.concerns[:limit]]
        rest = len(self.concerns) - len(named)
        if rest:
            return f"Look at {', '.join(named)} and {rest} more."
        if len(named) == 1:
            return f"Look at {named[0]}."
        return f"Look at {', '.join(named[:-1])} and {named[-1]}."

    def line(self, limit: int = NAMED_CONCERNS) -> str:
        """The headline and the layers to look at, as one line of text."""
        return " ".join(part for part in (self.headline, self.look_at(limit)) if part)


def row_alpha(row: LayerResult) -> float | None:
    """The row's fitted α, ``None`` when it has none (a failed fit, or no fit at all)."""
    value = row.metrics.get("alpha")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _labels(row: LayerResult) -> list[str]:
    warning = row.metrics.get("warning")
    if not isinstance(warning, str):
        return []
    return [w.strip() for w in warning.split(",") if w.strip()]


def _rank(label: str) -> int:
    return SEVERITY.index(label) if label in SEVERITY else len(SEVERITY)


def concerns(report: Report) -> tuple[Concern, ...]:
    """The analysed layers with a warning label or a scale collapse, most severe first (model
    order among equals)."""
    collapsed = {str(item.get("name")) for item in report.diagnostics.get("scale_collapse", ())}
    found = []
    for row in report.analysed:
        labels = _labels(row)
        if row.name in collapsed:
            labels.insert(0, "scale-collapse")
        if labels:
            labels.sort(key=_rank)
            found.append(Concern(row.name, row.layer_type, tuple(labels), row_alpha(row)))
    # sorted() is stable: layers of equal severity keep the model's order.
    return tuple(sorted(found, key=lambda c: _rank(c.label)))


def alpha_band(report: Report) -> tuple[float, float]:
    """The α band of the analysis: (``over_trained_alpha``, ``under_trained_alpha``) as the
    user set them (2–6 by default)."""
    return (
        float(report.option("over_trained_alpha", 2.0)),
        float(report.option("under_trained_alpha", 6.0)),
    )


def alpha_class(value: object, band: tuple[float, float]) -> str:
    """Where an α lies against the band: ``good`` (inside), ``heavy`` (below), ``under``
    (above), or ``nofit`` (no finite α). The HTML table and the terminal colour by it.

    Examples
    --------
    >>> [alpha_class(a, (2.0, 6.0)) for a in (1.5, 3.0, 7.0, None)]
    ['heavy', 'good', 'under', 'nofit']
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "nofit"
    if value < band[0]:
        return "heavy"
    if value > band[1]:
        return "under"
    return "good"


def verdict(report: Report) -> Verdict:
    """How ``report``'s model looks, from what the report stores.

    The share of fitted layers whose α lies in the analysis' band decides the tone: at least
    :data:`GOOD_SHARE` looks well trained, at least :data:`MIXED_SHARE` mixed, less unusual.
    The layers to look at are those with a warning label or a scale collapse.

    Examples
    --------
    >>> import numpy as np, weightspectra as ws
    >>> rng = np.random.default_rng(0)
    >>> report = ws.analyze({"fc.weight": rng.standard_t(3.0, (200, 100))})
    >>> verdict(report).tone.value in ("good", "mixed", "poor")
    True
    """
    low, high = alpha_band(report)
    rows = report.analysed
    alphas = [a for a in (row_alpha(r) for r in rows) if a is not None]
    below = sum(a < low for a in alphas)
    above = sum(a > high for a in alphas)
    fitted = len(alphas)
    in_band = fitted - below - above
    found = concerns(report)
    band = f"{low:g}–{high:g}"
    if not rows:
        tone, head = Tone.NONE, "Nothing was analysed: every tensor was skipped, with its reason."
    elif not fitted:
        tone, head = Tone.NONE, f"No power-law fit succeeded on the {len(rows)} analysed layers."
    else:
        mean = sum(alphas) / fitted
        evidence = f"{in_band} of {fitted} layers have α in {band} (mean α {mean:.2f})"
        share = in_band / fitted
        if share >= GOOD_SHARE:
            tone = Tone.GOOD
            head = f"{'Mostly well' if found else 'Looks well'} trained: {evidence}."
        elif share >= MIXED_SHARE:
            tone = Tone.MIXED
            head = f"Mixed: {evidence}; {above} above {high:g}, {below} below {low:g}."
        else:
            tone = Tone.POOR
            why = (
                f"most layers have α above {high:g} (under-trained or random-like)"
                if above >= below
                else f"most layers are very heavy-tailed (α below {low:g})"
            )
            head = f"Unusual: {why}; {evidence}."
    return Verdict(tone, head, found, fitted, in_band, below, above, (low, high))
