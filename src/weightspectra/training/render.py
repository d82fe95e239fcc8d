"""The terminal summary of a run (``weightspectra runs show``): what was recorded, each layer's
α from first to last step, its last phase and ranks, the last logged numbers, the alarms."""

from __future__ import annotations

import math
from typing import Any

from weightspectra.training.run import Run

__all__ = ["run_summary"]


def _num(value: Any, fmt: str = ".2f") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, fmt)
    return "—"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def run_summary(run: Run) -> str:
    """The run as plain text.

    Examples
    --------
    >>> print(run_summary(read_run("runs/demo")))      # doctest: +SKIP
    """
    config = run.meta.get("config", {})
    options = run.options
    steps = run.step_numbers
    out = [f"run {run.path}"]
    producer = config.get("producer", "?")
    cadence = (
        f", every {config['every']} {config.get('unit', 'steps')}" if "every" in config else ""
    )
    out.append(
        f"  {producer}{cadence}; precision {options.get('precision')}, "
        f"randomize {options.get('randomize')}"
    )
    if not steps:
        out.append("  no step recorded yet")
        return "\n".join(out) + "\n"
    cost = [float(s.get("seconds", 0.0)) for s in run.steps]
    out.append(
        f"  {len(steps)} steps recorded, {steps[0]} … {steps[-1]}; {len(run.layer_names)} layers; "
        f"analysis {sum(cost) / len(cost):.3f} s per step"
    )
    out.append("")
    last_step = steps[-1]
    last = {str(r["name"]): r for r in run.layers if int(r["step"]) == last_step}
    alphas = run.series("alpha")
    rows = []
    for name in run.layer_names:
        points = alphas.get(name, [])
        values = [v for _, v in points]
        row = last.get(name, {})
        rows.append(
            [
                name,
                _num(values[0]) if values else "—",
                _num(values[-1]) if values else "—",
                f"{_num(min(values))}–{_num(max(values))}" if values else "—",
                str(row.get("phase") or "—"),
                _num(row.get("mp_softrank"), ".3f"),
                _num(row.get("stable_rank"), ".1f"),
            ]
        )
    out += _table(
        ["layer", "α first", "α last", "α range", f"phase @{last_step}", "MP soft rank",
         "stable rank"],
        rows,
    )  # fmt: skip
    latest: dict[str, tuple[int, float]] = {}
    for s in run.scalars:
        latest[str(s["name"])] = (int(s["step"]), float(s["value"]))
    if latest:
        out.append("")
        shown = ", ".join(
            f"{k} {_num(v, '.4g')} (step {st})" for k, (st, v) in sorted(latest.items())
        )
        out.append(f"last logged: {shown}")
    out.append("")
    if run.events:
        out.append(f"alarms ({len(run.events)}):")
        for a in run.events:
            out.append(f"  step {a.step:<8} {a.kind.value:<16} {a.layer}: {a.detail}")
    else:
        out.append("alarms: none")
    return "\n".join(out) + "\n"
