"""Pictures of a run: α per layer against step (heatmap and lines), the correlation flow over
time, the phase of each layer over time, MP soft rank and stable rank against step, and the
logged training numbers. Each function takes a :class:`~weightspectra.training.run.Run` and
returns a matplotlib ``Figure`` (matplotlib is imported inside them only)."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from weightspectra.report.plots import new_figure
from weightspectra.training.run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PHASES",
    "alpha_heatmap",
    "alpha_lines",
    "correlation_flow",
    "figure_png",
    "phase_map",
    "rank_lines",
    "scalar_lines",
]

#: The phases in the order of the theory (colour index of the phase map).
PHASES = (
    "random-like",
    "bleeding-out",
    "bulk+spikes",
    "bulk-decay",
    "heavy-tailed",
    "rank-collapse",
)


def _grid(run: Run, column: str) -> tuple[list[str], list[int], np.ndarray]:
    names = list(run.layer_names)
    steps = list(run.step_numbers)
    index = {n: i for i, n in enumerate(names)}
    where = {s: j for j, s in enumerate(steps)}
    grid = np.full((len(names), len(steps)), np.nan)
    for r in run.layers:
        v = r.get(column)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            grid[index[str(r["name"])], where[int(r["step"])]] = float(v)
    return names, steps, grid


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _step_ticks(ax: Any, steps: list[int]) -> None:
    every = max(1, len(steps) // 10)
    ticks = list(range(0, len(steps), every))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(steps[t]) for t in ticks], rotation=45, ha="right")
    ax.set_xlabel("step")


def alpha_heatmap(run: Run, *, vmin: float = 1.5, vmax: float = 8.0) -> Figure:
    """α of each layer (rows, model order) at each recorded step (columns)."""
    names, steps, grid = _grid(run, "alpha")
    fig, (ax,) = new_figure(figsize=(8.0, 1.2 + 0.28 * max(len(names), 3)), managed=False)
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax,
                      interpolation="nearest")  # fmt: skip
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([_short(n) for n in names])
    _step_ticks(ax, steps)
    fig.colorbar(image, ax=ax, label="α")
    ax.set_title("α per layer and step")
    fig.tight_layout()
    return fig


def alpha_lines(run: Run, *, band: tuple[float, float] = (2.0, 6.0)) -> Figure:
    """α against step, one line per layer, the 2–6 band shaded."""
    fig, (ax,) = new_figure(figsize=(8.0, 4.0), managed=False)
    ax.axhspan(*band, color="#2ca02c", alpha=0.08)
    for name, points in run.series("alpha").items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=".", lw=1, label=_short(name))
    ax.set_xlabel("step")
    ax.set_ylabel("α")
    ax.set_title("α against step")
    if len(run.layer_names) <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def correlation_flow(run: Run, *, curves: int = 6) -> Figure:
    """α against layer depth (model order) at up to ``curves`` recorded steps, early to late."""
    names, steps, grid = _grid(run, "alpha")
    fig, (ax,) = new_figure(figsize=(8.0, 4.0), managed=False)
    if steps:
        import matplotlib

        picks = sorted({round(i) for i in np.linspace(0, len(steps) - 1, min(curves, len(steps)))})
        cmap = matplotlib.colormaps["plasma"]
        for k, j in enumerate(picks):
            colour = cmap(0.1 + 0.8 * k / max(len(picks) - 1, 1))
            ax.plot(range(len(names)), grid[:, j], marker="o", ms=3, color=colour,
                    label=f"step {steps[j]}")  # fmt: skip
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_short(n, 16) for n in names], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("α")
    ax.set_title("correlation flow: α against depth over training")
    fig.tight_layout()
    return fig


def phase_map(run: Run) -> Figure:
    """The phase of each layer at each step (one colour per phase; blank: no MP fit)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(run.layer_names)
    steps = list(run.step_numbers)
    grid = np.full((len(names), len(steps)), np.nan)
    index = {n: i for i, n in enumerate(names)}
    where = {s: j for j, s in enumerate(steps)}
    for r in run.layers:
        phase = r.get("phase")
        if phase in PHASES:
            grid[index[str(r["name"])], where[int(r["step"])]] = PHASES.index(str(phase))
    colours = ["#c6dbef", "#9ecae1", "#fdae6b", "#e6550d", "#a50f15", "#636363"]
    fig, (ax,) = new_figure(figsize=(8.0, 1.4 + 0.28 * max(len(names), 3)), managed=False)
    ax.imshow(grid, aspect="auto", cmap=ListedColormap(colours), vmin=-0.5, vmax=5.5,
              interpolation="nearest")  # fmt: skip
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([_short(n) for n in names])
    _step_ticks(ax, steps)
    handles = [Patch(color=c, label=p) for c, p in zip(colours, PHASES, strict=True)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("phase per layer and step")
    fig.tight_layout()
    return fig


def rank_lines(run: Run) -> Figure:
    """MP soft rank and stable rank against step, one line per layer."""
    fig, axes = new_figure(ncols=2, figsize=(10.0, 3.8), managed=False)
    for ax, column, label in zip(
        axes, ("mp_softrank", "stable_rank"), ("MP soft rank", "stable rank"), strict=True
    ):
        for name, points in run.series(column).items():
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker=".", lw=1, label=_short(name))
        ax.set_xlabel("step")
        ax.set_title(f"{label} against step")
    if len(run.layer_names) <= 12:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def scalar_lines(run: Run) -> Figure | None:
    """The logged training numbers (loss, accuracy...) against step; ``None`` if none."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    for s in run.scalars:
        value = s.get("value")
        if isinstance(value, (int, float)) and math.isfinite(value):
            by_name.setdefault(str(s["name"]), []).append((int(s["step"]), float(value)))
    if not by_name:
        return None
    shown = sorted(by_name)[:6]
    fig, axes = new_figure(ncols=len(shown), figsize=(3.4 * len(shown), 3.0), managed=False)
    for ax, name in zip(axes, shown, strict=True):
        xs, ys = zip(*by_name[name], strict=True)
        ax.plot(xs, ys, lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: float = 90) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    fig.clear()
    return buffer.getvalue()
