"""Alarms of a training run: typed events, each with the step at which it first fired.

:func:`check_alarms` is a pure function of one analysed step (its rows and model-level
diagnostics) and the thresholds; the monitor and the checkpoint series keep, per layer and
kind, only the first firing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Alarm", "AlarmKind", "AlarmRules", "check_alarms"]


class AlarmKind(str, Enum):
    """What an alarm says about a layer."""

    #: α below ``over_trained_alpha`` (2) together with correlation traps (needs
    #: ``randomize=True``): the signature reported before over-fitting and anti-grokking.
    OVER_TRAINED_TRAPS = "alpha-low-traps"
    #: α above ``under_trained_alpha`` (6) late in training (at or after ``late_step``).
    LATE_HIGH_ALPHA = "alpha-high-late"
    #: the layer's spectral norm collapsed against layers of its type and shape (model level).
    SCALE_COLLAPSE = "scale-collapse"
    #: the phase is rank-collapse (share of zero eigenvalues above ``rank_collapse_share``).
    RANK_COLLAPSE = "rank-collapse"


@dataclass(frozen=True)
class AlarmRules:
    """The thresholds of the alarms (the α ones default to the analysis options' own).

    Attributes
    ----------
    over_trained_alpha : float, default 2.0
    under_trained_alpha : float, default 6.0
    late_step : int or None, default None
        The step from which "late in training" holds; ``None`` turns the late-α alarm off.
    """

    over_trained_alpha: float = 2.0
    under_trained_alpha: float = 6.0
    late_step: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], late_step: int | None) -> AlarmRules:
        """The rules with the α thresholds of a report's stored options."""
        return cls(
            over_trained_alpha=float(options.get("over_trained_alpha", 2.0)),
            under_trained_alpha=float(options.get("under_trained_alpha", 6.0)),
            late_step=late_step,
        )


@dataclass(frozen=True)
class Alarm:
    """One alarm of a run: a layer, a kind, and when it first fired.

    Attributes
    ----------
    kind : AlarmKind
    layer : str
        The layer's name (as in the run's layer records).
    step : int
        The first analysed step at which it fired.
    epoch : float or None
    value : float or None
        The number that fired it (α, the zero share, the log spectral norm).
    detail : str
        The rule with its numbers, in words.
    """

    kind: AlarmKind
    layer: str
    step: int
    epoch: float | None
    value: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready record."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "kind": self.kind.value,
            "layer": self.layer,
            "value": self.value,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alarm:
        """Inverse of :meth:`to_dict`."""
        value = data.get("value")
        epoch = data.get("epoch")
        return cls(
            kind=AlarmKind(data["kind"]),
            layer=str(data["layer"]),
            step=int(data["step"]),
            epoch=None if epoch is None else float(epoch),
            value=None if value is None else float(value),
            detail=str(data.get("detail", "")),
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def check_alarms(
    rows: Sequence[Mapping[str, Any]],
    diagnostics: Mapping[str, Any],
    rules: AlarmRules,
    *,
    step: int,
    epoch: float | None = None,
) -> list[Alarm]:
    """Every alarm that holds at one analysed step (first firings are kept by the caller).

    Parameters
    ----------
    rows : sequence of mapping
        The step's analysed rows (:meth:`~weightspectra.report.results.LayerResult.row`).
    diagnostics : mapping
        The report's model-level diagnostics (``scale_collapse`` is read).
    rules : AlarmRules
    step : int
    epoch : float, optional

    Returns
    -------
    list of Alarm

    Examples
    --------
    >>> rows = [{"name": "fc1", "alpha": 1.7, "num_traps": 2}, {"name": "fc2", "alpha": 3.0}]
    >>> [a.kind.value for a in check_alarms(rows, {}, AlarmRules(), step=10)]
    ['alpha-low-traps']
    """
    out: list[Alarm] = []

    def fire(kind: AlarmKind, layer: str, value: float | None, detail: str) -> None:
        out.append(Alarm(kind, layer, step, epoch, value, detail))

    for row in rows:
        name = str(row.get("name", ""))
        alpha = _number(row.get("alpha"))
        traps = row.get("num_traps")
        low = alpha is not None and alpha < rules.over_trained_alpha
        if low and isinstance(traps, int) and traps > 0:
            fire(
                AlarmKind.OVER_TRAINED_TRAPS,
                name,
                alpha,
                f"α = {alpha:.2f} < {rules.over_trained_alpha:g} with {traps} correlation trap(s)",
            )
        late = rules.late_step is not None and step >= rules.late_step
        if late and alpha is not None and alpha > rules.under_trained_alpha:
            fire(
                AlarmKind.LATE_HIGH_ALPHA,
                name,
                alpha,
                f"α = {alpha:.2f} > {rules.under_trained_alpha:g} at step {step} "
                f"(late: from step {rules.late_step})",
            )
        if row.get("phase") == "rank-collapse":
            zero = _number(row.get("zero_share"))
            share = "" if zero is None else f": {100 * zero:.1f} % zero eigenvalues"
            fire(AlarmKind.RANK_COLLAPSE, name, zero, f"phase rank-collapse{share}")
    collapsed: Iterable[Mapping[str, Any]] = diagnostics.get("scale_collapse") or ()
    for entry in collapsed:
        value = _number(entry.get("log_spectral_norm"))
        fire(
            AlarmKind.SCALE_COLLAPSE,
            str(entry.get("name", "")),
            value,
            "spectral norm collapsed against layers of the same type and shape"
            + ("" if value is None else f" (log10 λ_max = {value:.2f})"),
        )
    return out
