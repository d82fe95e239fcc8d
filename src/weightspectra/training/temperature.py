"""Per-layer learning rates from α ("temperature balancing"): a layer with a larger α (less
trained, by the heavy-tailed theory) gets a larger rate, one with a smaller α a smaller one.

:func:`alpha_lr_factors` is the pure rule; :class:`AlphaLR` applies it to a PyTorch optimiser
once per epoch, on top of an exponential decay. The optimiser needs one parameter group per
layer, named after the layer: :func:`layer_param_groups` builds them. Nothing here imports a
framework (optimisers and modules are used through their attributes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from weightspectra.enums import Precision
from weightspectra.errors import OptionError
from weightspectra.options import Options
from weightspectra.training.monitor import analyse_source, snapshot

__all__ = ["AlphaLR", "alpha_lr_factors", "layer_param_groups", "measure_alphas"]


def alpha_lr_factors(
    alphas: Mapping[str, float | None], low: float = 0.5, high: float = 1.5
) -> dict[str, float]:
    """Learning-rate factors from α: the model's smallest α maps to ``low``, its largest to
    ``high``, linearly between.

    Layers without a usable α (``None``, NaN) get 1; when all α are equal every factor is 1.

    Raises
    ------
    OptionError
        Unless ``0 < low ≤ high``.

    Examples
    --------
    >>> alpha_lr_factors({"fc1": 2.0, "fc2": 4.0, "fc3": 3.0, "emb": None})
    {'fc1': 0.5, 'fc2': 1.5, 'fc3': 1.0, 'emb': 1.0}
    """
    if not (0.0 < low <= high) or not math.isfinite(high):
        raise OptionError(f"need 0 < low ≤ high, got low={low!r}, high={high!r}")
    usable = {k: float(a) for k, a in alphas.items() if a is not None and math.isfinite(a)}
    if not usable:
        return dict.fromkeys(alphas, 1.0)
    lo, hi = min(usable.values()), max(usable.values())
    out = {}
    for name in alphas:
        if name not in usable or hi == lo:
            out[name] = 1.0
        else:
            out[name] = low + (high - low) * (usable[name] - lo) / (hi - lo)
    return out


def measure_alphas(model: object, options: Options | None = None) -> dict[str, float | None]:
    """α of each analysed layer of ``model`` (by row name; ``None`` where the fit failed), with
    ``options`` (default: ``Options(precision="float32")``)."""
    opts = options if options is not None else Options(precision=Precision.FLOAT32)
    report = analyse_source(snapshot(model, opts), opts)
    out: dict[str, float | None] = {}
    for row in report.analysed:
        alpha = row.metrics.get("alpha")
        out[row.name] = float(alpha) if isinstance(alpha, (int, float)) else None
    return out


def layer_param_groups(model: Any) -> list[dict[str, Any]]:
    """Parameter groups of a ``torch.nn.Module``, one per module with a weight of ≥ 2
    dimensions (its weight and bias; ``"name"`` is the module path, as in the report), and one
    ``"name": ""`` group with the remaining parameters (norms, ...).

    Examples
    --------
    >>> opt = torch.optim.SGD(layer_param_groups(model), lr=0.01)   # doctest: +SKIP
    """
    groups: list[dict[str, Any]] = []
    taken: set[int] = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or getattr(weight, "ndim", 0) < 2 or id(weight) in taken:
            continue
        params = [p for p in module.parameters(recurse=False) if id(p) not in taken]
        taken.update(id(p) for p in params)
        groups.append({"params": params, "name": name})
    rest = [p for p in model.parameters() if id(p) not in taken]
    if rest:
        groups.append({"params": rest, "name": ""})
    return groups


class AlphaLR:
    """Set each layer's learning rate from its α, once per epoch (call :meth:`step` at the end
    of each epoch, like a scheduler).

    At epoch ``e`` (0 before the first call) a group named after a layer gets
    ``base_lr · gamma^e · factor`` with the factor from :func:`alpha_lr_factors` of the
    layer's α, measured on the model at the end of the previous epoch; groups without a layer
    (``name`` missing or ``""``, or a layer without α) get factor 1.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        With groups from :func:`layer_param_groups` (or any groups carrying ``"name"``).
    model : torch.nn.Module
    base_lr : float
    gamma : float, default 1.0
        Exponential decay per epoch.
    low, high : float, default 0.5, 1.5
        The range of the factors.
    options : Options, optional
        Analysis options (default: ``Options(precision="float32")``).

    Attributes
    ----------
    factors : dict
        The factor of each group name at the last :meth:`step`.
    seconds : float
        Time spent analysing, in all.
    """

    def __init__(
        self,
        optimizer: Any,
        model: Any,
        *,
        base_lr: float,
        gamma: float = 1.0,
        low: float = 0.5,
        high: float = 1.5,
        options: Options | None = None,
    ) -> None:
        if not (base_lr > 0 and math.isfinite(base_lr)):
            raise OptionError(f"base_lr must be a positive number, got {base_lr!r}")
        if not 0 < gamma <= 1:
            raise OptionError(f"gamma must be in (0, 1], got {gamma!r}")
        alpha_lr_factors({}, low, high)  # validates the range
        self.optimizer = optimizer
        self.model = model
        self.base_lr = float(base_lr)
        self.gamma = float(gamma)
        self.low, self.high = float(low), float(high)
        self.options = options if options is not None else Options(precision=Precision.FLOAT32)
        self.epoch = 0
        self.factors: dict[str, float] = {}
        self.seconds = 0.0
        self._apply({})

    def alphas(self) -> dict[str, float | None]:
        """α of each analysed layer of the model now."""
        start = time.perf_counter()
        out = measure_alphas(self.model, self.options)
        self.seconds += time.perf_counter() - start
        return out

    def step(self) -> dict[str, float]:
        """End of an epoch: measure α, set the next epoch's rates; returns the factors."""
        self.epoch += 1
        names = [g.get("name", "") for g in self.optimizer.param_groups]
        alphas = self.alphas()
        factors = alpha_lr_factors(
            {n: alphas.get(n) for n in names if n}, low=self.low, high=self.high
        )
        self._apply(factors)
        return factors

    def _apply(self, factors: Mapping[str, float]) -> None:
        lr = self.base_lr * self.gamma**self.epoch
        self.factors = dict(factors)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * factors.get(group.get("name", ""), 1.0)

    def learning_rates(self) -> dict[str, float]:
        """The current rate of each named group."""
        return {str(g.get("name", "")): float(g["lr"]) for g in self.optimizer.param_groups}
