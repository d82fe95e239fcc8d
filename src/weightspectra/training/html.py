"""A self-contained HTML page of a run, in the shared page shape of
:mod:`weightspectra.report.layout` (header, verdict, the first screen's pictures, then the
sections): α per layer and step and the correlation flow first, then α lines, phases, ranks,
the logged numbers, the alarms and the last step's layers."""

from __future__ import annotations

import os
from pathlib import Path

from weightspectra.report.layout import (
    Picture,
    Section,
    esc,
    header_html,
    hero_html,
    img,
    page_html,
    table,
    verdict_html,
)
from weightspectra.training import plots
from weightspectra.training.run import Run

__all__ = ["run_html", "write_run_html"]

#: Columns of the last step's table.
LAST_COLUMNS = ("alpha", "phase", "mp_softrank", "stable_rank", "num_spikes", "num_traps")


def run_verdict(run: Run) -> tuple[str, str]:
    """The page's tone (``good``: no alarm; ``poor``: some) and its one line, as HTML."""
    steps = run.step_numbers
    if not steps:
        return "mixed", "No step recorded yet."
    span = f"{len(steps)} steps recorded ({steps[0]} … {steps[-1]})"
    if not run.events:
        return "good", esc(f"{span}; no alarm fired.")
    first = sorted(run.events, key=lambda a: a.step)[:3]
    named = "; ".join(f"{a.kind.value} on {a.layer} at step {a.step}" for a in first)
    more = f" and {len(run.events) - 3} more" if len(run.events) > 3 else ""
    count = f"{len(run.events)} alarm{'s' if len(run.events) > 1 else ''}"
    return "poor", esc(f"{span}; {count}: {named}{more}.")


def run_html(run: Run, *, title: str | None = None, dpi: float = 90) -> str:
    """The page as a string.

    Raises
    ------
    MissingDependencyError
        If matplotlib is not installed.
    """
    steps = run.step_numbers
    config = run.meta.get("config", {})
    head = title or f"weightspectra run: {run.path.name}"
    meta = [
        f'<span title="{esc(run.path)}">{esc(run.path.name)}</span>',
        esc(config.get("producer", "?")),
        esc(f"{len(steps)} steps recorded" + (f" ({steps[0]} … {steps[-1]})" if steps else "")),
        esc(f"{len(run.layer_names)} layers"),
        esc(f"precision {run.options.get('precision')}"),
    ]
    tone, line = run_verdict(run)

    def picture(caption: str, fig: object) -> Picture:
        return Picture(img(plots.figure_png(fig, dpi), caption), caption)  # type: ignore[arg-type]

    hero: list[Picture] = []
    sections: list[Section] = []
    if steps:
        hero = [
            picture("α per layer and step", plots.alpha_heatmap(run)),
            picture("Correlation flow over training", plots.correlation_flow(run)),
        ]
        more = [
            ("alpha-lines", "α against step", plots.alpha_lines(run)),
            ("phases", "Phase per layer and step", plots.phase_map(run)),
            ("ranks", "MP soft rank and stable rank", plots.rank_lines(run)),
        ]
        scalars = plots.scalar_lines(run)
        if scalars is not None:
            more.append(("logged", "Logged training numbers", scalars))
        sections += [Section(i, t, picture(t, fig).html()) for i, t, fig in more]
    alarm_rows = [
        {"first step": a.step, "kind": a.kind.value, "layer": a.layer, "detail": a.detail}
        for a in run.events
    ]
    alarms = (
        table(["first step", "kind", "layer", "detail"], alarm_rows, table_id="alarms-table")
        if alarm_rows
        else "<p>None.</p>"
    )
    sections.append(Section("alarms", f"Alarms ({len(run.events)})", alarms))
    if steps:
        last = [r for r in run.layers if int(r["step"]) == steps[-1]]
        rows = [{"layer": str(r["name"]), **{c: r.get(c) for c in LAST_COLUMNS}} for r in last]
        body = table(["layer", *LAST_COLUMNS], rows, table_id="last-step")
        sections.append(Section("last-step", f"Layers at step {steps[-1]}", body))
    return page_html(
        title=head,
        header=header_html(esc(head), meta),
        verdict=verdict_html(tone, line),
        hero=hero_html(hero),
        sections=sections,
    )


def write_run_html(
    run: Run, path: str | os.PathLike[str], *, title: str | None = None, dpi: float = 90
) -> Path:
    """Write :func:`run_html` to ``path`` (folders created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(run_html(run, title=title, dpi=dpi), encoding="utf-8")
    return target
