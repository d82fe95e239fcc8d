"""Curvature reports: per-data-set records → report → text table, pandas frame, plot.

A record always says which data (clean, or how the adversarial batches were made), which module
mode, and the data-set loss beside the sharpness: sharpness compared across models that are not
trained to the same loss is misleading (curvature.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weightspectra.curvature.operator import Engine, HessianOperator, LossFn, Mode
from weightspectra.curvature.solvers import DensityResult, density, top_eigenvalues, trace
from weightspectra.errors import InputError, MissingDependencyError
from weightspectra.report.tables import pipe_table, records_frame


@dataclass(frozen=True)
class CurvatureRecord:
    """Curvature of one model on one data set.

    Attributes
    ----------
    model : str
        Label of the model (e.g. ``"standard"``, ``"adversarially trained"``).
    data : str
        Label of the data set (e.g. ``"clean"``, ``"pgd"``).
    description : str
        How the data were made (``"clean"`` or the attack and its parameters).
    mode : str
        ``"eval"`` or ``"train"``.
    n_samples : int
    loss : float
        Data-set loss at which the curvature was measured.
    top_eigenvalues : tuple of float
        Largest Hessian eigenvalues, largest first (``[0]`` is the sharpness).
    trace, trace_stderr : float or None
        Hutchinson/Hutch++ estimate of Tr(H) and its standard error.
    trace_probes : int
    hvp_count : int
        Hessian-vector products used for this record.
    seed : int
    engine, dtype : str
    layer_traces : dict of str to (float, float)
        Per-layer ``(trace, stderr)``.
    density : DensityResult or None
    """

    model: str
    data: str
    description: str
    mode: str
    n_samples: int
    loss: float
    top_eigenvalues: tuple[float, ...]
    trace: float | None
    trace_stderr: float | None
    trace_probes: int
    hvp_count: int
    seed: int
    engine: str
    dtype: str
    layer_traces: dict[str, tuple[float, float]] = field(default_factory=dict)
    density: DensityResult | None = None

    @property
    def sharpness(self) -> float:
        """The top Hessian eigenvalue."""
        return self.top_eigenvalues[0]

    def as_row(self) -> dict[str, Any]:
        """Flat dictionary of the scalar fields (one table row)."""
        return {
            "model": self.model,
            "data": self.data,
            "description": self.description,
            "mode": self.mode,
            "n": self.n_samples,
            "loss": self.loss,
            "lambda_max": self.sharpness,
            "top_eigenvalues": self.top_eigenvalues,
            "trace": self.trace,
            "trace_se": self.trace_stderr,
            "probes": self.trace_probes,
            "hvps": self.hvp_count,
            "seed": self.seed,
            "engine": self.engine,
            "dtype": self.dtype,
        }


_COLUMNS = (
    "model",
    "data",
    "mode",
    "n",
    "loss",
    "lambda_max",
    "trace",
    "trace_se",
    "probes",
    "hvps",
)


@dataclass(frozen=True)
class CurvatureReport:
    """A collection of :class:`CurvatureRecord` with renderers.

    Reports add: ``report_a + report_b`` concatenates the records.
    """

    records: tuple[CurvatureRecord, ...]

    def __add__(self, other: CurvatureReport) -> CurvatureReport:
        if not isinstance(other, CurvatureReport):
            return NotImplemented
        return CurvatureReport(self.records + other.records)

    def table(self) -> str:
        """Plain-text (Markdown pipe) table, one row per record, with a footnote on the data."""
        table = pipe_table([r.as_row() for r in self.records], _COLUMNS)
        notes = sorted({f"{r.data}: {r.description}" for r in self.records})
        return table + "\n\ndata: " + "; ".join(notes)

    def __str__(self) -> str:
        return self.table()

    def to_pandas(self) -> Any:
        """A :class:`pandas.DataFrame` with one row per record.

        Raises
        ------
        MissingDependencyError
            If pandas is not installed.
        """
        return records_frame([r.as_row() for r in self.records], "CurvatureReport.to_pandas")

    def plot(self, ax: Any = None) -> Any:
        """Plot the SLQ densities (log scale) if measured, else a bar chart of λ_max.

        Parameters
        ----------
        ax : matplotlib Axes, optional

        Returns
        -------
        matplotlib Axes

        Raises
        ------
        MissingDependencyError
            If matplotlib is not installed.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MissingDependencyError("matplotlib", "plot", "CurvatureReport.plot") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        if any(r.density is not None for r in self.records):
            for r in self.records:
                if r.density is not None:
                    ax.semilogy(
                        r.density.grid, r.density.curve + 1e-12, label=f"{r.model} / {r.data}"
                    )
            ax.set_xlabel("Hessian eigenvalue")
            ax.set_ylabel("density (SLQ, smoothed)")
            ax.legend()
        else:
            labels = [f"{r.model}\n{r.data}" for r in self.records]
            ax.bar(range(len(labels)), [r.sharpness for r in self.records])
            ax.set_xticks(range(len(labels)), labels)
            ax.set_ylabel("top Hessian eigenvalue")
        return ax


def curvature_report(
    model: nn.Module,
    loss_fn: LossFn,
    data: Mapping[str, Iterable[Any]],
    label: str = "model",
    k: int = 1,
    with_trace: bool = True,
    with_density: bool = False,
    mode: Mode | str = Mode.EVAL,
    dtype: torch.dtype | None = None,
    engine: Engine | str = Engine.DOUBLE_BACKWARD,
    seed: int = 0,
    trace_options: Mapping[str, Any] | None = None,
    density_options: Mapping[str, Any] | None = None,
) -> CurvatureReport:
    """Measure the curvature of ``model`` on each named data set.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable (outputs, targets) -> scalar Tensor
    data : mapping of str to batches
        E.g. ``{"clean": batches, "pgd": adversarial_batches(...)}``.
    label : str, default "model"
        Name of the model in the report.
    k : int, default 1
        Top eigenvalues per data set (Lanczos).
    with_trace, with_density : bool
        Also estimate the trace (:func:`trace`) / the density (:func:`density`).
    mode, dtype, engine
        As for :class:`HessianOperator`.
    seed : int, default 0
        Seed of every stochastic step.
    trace_options, density_options : mapping, optional
        Extra keyword arguments for :func:`trace` / :func:`density`.

    Returns
    -------
    CurvatureReport

    Raises
    ------
    InputError
        If ``data`` is empty or not a mapping.
    """
    if not isinstance(data, Mapping) or not data:
        raise InputError(
            f"data must be a non-empty mapping name -> batches, got {type(data).__name__}; "
            "e.g. {'clean': batches}"
        )
    records = []
    for name, batches in data.items():
        H = HessianOperator(model, loss_fn, batches, mode=mode, dtype=dtype, engine=engine)
        eig = top_eigenvalues(H, k=k, seed=seed)
        tr = trace(H, seed=seed, **dict(trace_options or {})) if with_trace else None
        dens = density(H, seed=seed, **dict(density_options or {})) if with_density else None
        records.append(
            CurvatureRecord(
                model=label,
                data=str(name),
                description=H.data_description,
                mode=H.mode.value,
                n_samples=H.n_samples,
                loss=H.loss(),
                top_eigenvalues=tuple(float(v) for v in eig.values),
                trace=None if tr is None else tr.mean,
                trace_stderr=None if tr is None else tr.stderr,
                trace_probes=0 if tr is None else tr.n_probes,
                hvp_count=H.hvp_count,
                seed=seed,
                engine=H.engine.value,
                dtype=str(H.dtype).replace("torch.", ""),
                layer_traces={} if tr is None else dict(tr.layers),
                density=dens,
            )
        )
    return CurvatureReport(tuple(records))
