"""Validation of bit plans: fake-quantized accuracy and loss, and predicted-vs-measured damage.

A plan is judged beside uniform quantization at the same budget, on held-out batches; the
sensitivity rule itself is judged by the rank correlation (Spearman, Kendall) between its
predicted Ω_i(b) and the measured loss increase when only layer i is quantized to b bits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from weightspectra.compare.stats import kendall_tau
from weightspectra.curvature.operator import LossFn, Mode, _scalar_loss, check_batches, module_mode
from weightspectra.enums import parse_enum
from weightspectra.errors import InputError
from weightspectra.quantize.fake import fake_quantized
from weightspectra.quantize.plan import BitPlan
from weightspectra.quantize.sensitivity import Sensitivity, SensitivityTable
from weightspectra.report.tables import pipe_table, records_frame


@dataclass(frozen=True)
class Evaluation:
    """Loss and (for classifiers) accuracy of a model on a data set.

    Attributes
    ----------
    loss : float
        Size-weighted mean loss.
    accuracy : float or None
        Fraction of correct arg-max predictions, when outputs are ``(N, C)`` logits and targets
        are class indices; else None.
    n_samples : int
    """

    loss: float
    accuracy: float | None
    n_samples: int


def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    bits: int | Mapping[str, int] | BitPlan | None = None,
    mode: Mode | str = Mode.EVAL,
) -> Evaluation:
    """Loss and accuracy of ``model``, fake-quantized to ``bits`` if given (restored after).

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable (outputs, targets) -> scalar Tensor (mean over the batch)
    batches : iterable of (Tensor, Tensor)
    bits : int, mapping, BitPlan or None
        Quantization to apply during the evaluation; None evaluates full precision.
    mode : {"eval", "train"}, default "eval"

    Returns
    -------
    Evaluation
    """
    data = check_batches(batches)
    md = parse_enum(Mode, mode, "mode")
    widths = bits.bits if isinstance(bits, BitPlan) else bits
    n_total = sum(int(x.shape[0]) for x, _ in data)
    loss = 0.0
    correct = 0
    classify = True
    with module_mode(model, md), torch.no_grad():
        ctx = fake_quantized(model, widths) if widths is not None else nullcontext(model)
        with ctx:
            for x, y in data:
                out = model(x)
                loss += float(_scalar_loss(loss_fn, out, y)) * x.shape[0] / n_total
                if out.ndim == 2 and y.ndim == 1 and not y.is_floating_point():
                    correct += int((out.argmax(dim=1) == y).sum())
                else:
                    classify = False
    return Evaluation(
        loss=loss, accuracy=correct / n_total if classify else None, n_samples=n_total
    )


@dataclass(frozen=True)
class PlanComparison:
    """Evaluations of several plans side by side (see :func:`compare_plans`).

    Attributes
    ----------
    rows : tuple of dict
        ``plan, avg_bits, loss, accuracy, predicted_damage`` per plan.
    """

    rows: tuple[dict[str, Any], ...]

    def table(self) -> str:
        """Markdown pipe table."""
        return pipe_table(self.rows)

    def to_pandas(self) -> Any:
        """The rows as a :class:`pandas.DataFrame`.

        Raises
        ------
        MissingDependencyError
            If pandas is not installed.
        """
        return records_frame(self.rows, "PlanComparison.to_pandas")


def compare_plans(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    plans: Mapping[str, BitPlan | int | None],
) -> PlanComparison:
    """Evaluate each plan (``None`` = full precision, ``int`` = uniform width) on ``batches``.

    Returns
    -------
    PlanComparison
    """
    if not plans:
        raise InputError("plans is empty; give e.g. {'hessian': plan, 'uniform': 2, 'fp': None}")
    data = check_batches(batches)
    rows = []
    for name, plan in plans.items():
        ev = evaluate(model, loss_fn, data, plan)
        rows.append(
            {
                "plan": name,
                "avg_bits": plan.avg_bits
                if isinstance(plan, BitPlan)
                else (float(plan) if plan else 32.0),
                "loss": ev.loss,
                "accuracy": ev.accuracy,
                "predicted_damage": plan.predicted_damage if isinstance(plan, BitPlan) else None,
            }
        )
    return PlanComparison(tuple(rows))


@dataclass(frozen=True)
class DamageCorrelation:
    """Rank agreement between predicted Ω and measured loss increase.

    Attributes
    ----------
    spearman, spearman_p, kendall, kendall_p : float
    predicted, measured : ndarray of shape (L · K,)
        Ω and the measured loss increase for each (layer, width) pair, row-major.
    pairs : list of (str, int)
    sensitivity : str
    """

    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float
    predicted: np.ndarray
    measured: np.ndarray
    pairs: list[tuple[str, int]]
    sensitivity: str


def measured_damage(
    model: nn.Module, loss_fn: LossFn, batches: Iterable[Any], table: SensitivityTable
) -> np.ndarray:
    """Loss increase when only layer i is quantized to width b, shape ``(L, K)``."""
    data = check_batches(batches)
    base = evaluate(model, loss_fn, data).loss
    out = np.zeros((len(table.layers), len(table.bits)))
    for i, name in enumerate(table.names):
        for k, b in enumerate(table.bits):
            out[i, k] = evaluate(model, loss_fn, data, {name: b}).loss - base
    return out


def damage_correlation(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    table: SensitivityTable,
    sensitivity: Sensitivity | str = Sensitivity.HESSIAN,
    measured: np.ndarray | None = None,
) -> DamageCorrelation:
    """Spearman and Kendall rank correlation of predicted Ω with measured single-layer damage.

    Parameters
    ----------
    model, loss_fn, batches
        Model and held-out data on which damage is measured.
    table : SensitivityTable
    sensitivity : {"hessian", "alpha"}, default "hessian"
    measured : ndarray (L, K), optional
        Reuse a :func:`measured_damage` result.

    Returns
    -------
    DamageCorrelation
        Kendall's τ-b and its p-value come from
        :func:`weightspectra.compare.stats.kendall_tau`, the package's one Kendall τ.

    Raises
    ------
    InputError
        If ``measured`` does not have the table's shape, or a predicted or measured value is not
        finite (the message names the first such layer and width).
    """
    kind = parse_enum(Sensitivity, sensitivity, "sensitivity")
    pred = table.omega(kind)
    meas = (
        measured_damage(model, loss_fn, batches, table)
        if measured is None
        else np.asarray(measured)
    )
    if meas.shape != pred.shape:
        raise InputError(f"measured has shape {meas.shape}, expected {pred.shape} (layers, widths)")
    bad = ~(np.isfinite(pred) & np.isfinite(meas))
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(
            f"layer {table.names[i]!r} at {table.bits[k]} bits has predicted Ω {pred[i, k]} and "
            f"measured damage {meas[i, k]}; both must be finite: check its loss on these batches"
        )
    p, m = pred.reshape(-1), meas.reshape(-1)
    rho = spearmanr(p, m)
    tau, tau_p = kendall_tau(p, m)
    return DamageCorrelation(
        spearman=float(rho.statistic),
        spearman_p=float(rho.pvalue),
        kendall=tau,
        kendall_p=tau_p,
        predicted=p,
        measured=m,
        pairs=[(n, b) for n in table.names for b in table.bits],
        sensitivity=kind.value,
    )
