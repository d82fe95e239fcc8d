"""The result of :func:`weightspectra.allocate`: a frozen per-layer plan, as a table and JSON.

A plan names each tensor of the report it came from (its key, as the source spelled it) with
the value allocated to it, the metric it was allocated from and its weight in the budget's
mean; pinned and excluded tensors are listed too, each with why. The exporters read it:
:meth:`AllocationPlan.masks` (pruning masks), :meth:`AllocationPlan.bits` (widths for
:mod:`weightspectra.quantize`), :meth:`AllocationPlan.rank_pattern` (a PEFT LoRA
``rank_pattern``). A plan written with :meth:`AllocationPlan.to_json` reads back equal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from weightspectra.enums import AllocationKind, AllocationMapping
from weightspectra.errors import InputError

#: Format version of the plan JSON.
PLAN_FORMAT = 1


@dataclass(frozen=True)
class LayerAllocation:
    """One tensor of a plan.

    Attributes
    ----------
    key : str
        The tensor as the source names it (``encoder.layer.0.attention.self.query.weight``).
    name : str
        The layer's name in the report (the key without ``.weight``).
    shape : tuple of int
        The tensor's shape.
    metric : float or None
        The metric the value was allocated from (the parameter-weighted mean over the
        tensor's rows); None when the tensor has no finite value of it.
    weight : float
        Its weight in the budget's mean: parameters (sparsity, bits) or in + out features
        per unit of rank (rank).
    value : float or None
        The allocated sparsity, width or rank; None for an excluded tensor.
    role : str
        ``"allocated"``, ``"pinned"`` or ``"excluded"``.
    note : str
        Why it is pinned or excluded, or how a missing metric was filled ('' otherwise).
    """

    key: str
    name: str
    shape: tuple[int, ...]
    metric: float | None
    weight: float
    value: float | None
    role: str = "allocated"
    note: str = ""

    @property
    def size(self) -> int:
        """Number of weights in the tensor."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class AllocationPlan:
    """A per-layer plan whose weighted mean meets the budget.

    Attributes
    ----------
    kind : AllocationKind
        What was allocated.
    budget : float
        The weighted mean asked for, over the allocated and pinned tensors.
    achieved : float
        The weighted mean of the plan: equal to ``budget`` (to rounding) for sparsity; for the
        integer kinds at most ``budget``, as close as integer values allow.
    metric : str
        The report column the plan was allocated from (``alpha``, ``alpha_farms``, ...).
    mapping : AllocationMapping
        How the metric became offsets.
    spread : float
        Width of the offsets before clipping.
    bounds : (float, float)
        Lowest and highest value any tensor could get.
    layers : tuple of LayerAllocation
        Every tensor considered, in model order.
    source : str
        What the report analysed.
    """

    kind: AllocationKind
    budget: float
    achieved: float
    metric: str
    mapping: AllocationMapping
    spread: float
    bounds: tuple[float, float]
    layers: tuple[LayerAllocation, ...]
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def values(self) -> dict[str, float]:
        """Allocated value by layer name, for allocated and pinned tensors."""
        return {a.name: a.value for a in self.layers if a.value is not None}

    def _by_module(self) -> dict[str, int]:
        # module names: the tensor key without its ``.weight``
        return {
            a.key.removesuffix(".weight"): round(a.value)
            for a in self.layers
            if a.value is not None
        }

    def bits(self) -> dict[str, int]:
        """Widths by module name (the tensor key without ``.weight``), as
        :func:`weightspectra.quantize.quantized_copy` takes them for the model the report was
        made from."""
        if self.kind is not AllocationKind.BITS:
            raise InputError(f"a {self.kind.value} plan has no widths; allocate with kind='bits'")
        return self._by_module()

    def rank_pattern(self) -> dict[str, int]:
        """LoRA ranks by module name: ``peft.LoraConfig(rank_pattern=plan.rank_pattern())``."""
        if self.kind is not AllocationKind.RANK:
            raise InputError(f"a {self.kind.value} plan has no ranks; allocate with kind='rank'")
        return self._by_module()

    def lora_config(self, **kwargs: Any) -> Any:
        """A ``peft.LoraConfig`` with these ranks: ``r`` the most common rank,
        ``rank_pattern`` the others, ``target_modules`` the planned modules (``kwargs`` are
        passed on, e.g. ``lora_alpha``)."""
        from weightspectra.allocation.export import lora_config

        return lora_config(self, **kwargs)

    def masks(
        self,
        model: Any,
        method: str = "magnitude",
        calibration: Iterable[Any] | None = None,
    ) -> dict[str, Any]:
        """Keep-masks by parameter name (``True`` = kept), each layer pruned to its sparsity.

        ``method="magnitude"`` prunes the smallest ``|W|`` within each layer;
        ``method="wanda"`` the smallest ``|W_ij|·‖X_j‖₂`` within each output row, with the
        input norms measured on ``calibration`` batches through ``model`` (a torch module;
        each batch a tensor, a tuple of positional inputs, or a mapping of keyword inputs such
        as a tokenizer's output).
        ``model`` is a torch module, a state dict or a mapping of numpy arrays; the masks are
        of its kind. See :func:`weightspectra.allocation.export.masks`.
        """
        from weightspectra.allocation.export import masks

        return masks(self, model, method=method, calibration=calibration)

    def rows(self) -> list[dict[str, Any]]:
        """One flat record per tensor."""
        return [
            {
                "name": a.name,
                "shape": "x".join(map(str, a.shape)),
                "metric": a.metric,
                "value": a.value,
                "weight": a.weight,
                "role": a.role,
                "note": a.note,
            }
            for a in self.layers
        ]

    def table(self) -> str:
        """The plan as a markdown table, with the budget and the achieved mean above it."""
        head = (
            f"{self.kind.value} plan from {self.metric} ({self.mapping.value}, spread "
            f"{self.spread:g}, bounds {self.bounds[0]:g}–{self.bounds[1]:g}): budget "
            f"{self.budget:g}, achieved {self.achieved:.6g}"
        )
        cols = ["name", "shape", self.metric, self.kind.value, "role", "note"]
        body = []
        for a in self.layers:
            metric = "-" if a.metric is None else f"{a.metric:.4g}"
            value = "-" if a.value is None else _fmt_value(self.kind, a.value)
            body.append([a.name, "x".join(map(str, a.shape)), metric, value, a.role, a.note])
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join([head, "", *lines, *(f"\n{n}" for n in self.notes)]) + "\n"

    def to_pandas(self) -> Any:
        """The rows as a DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (:meth:`from_dict` reads it back)."""
        return {
            "format": PLAN_FORMAT,
            "kind": self.kind.value,
            "budget": self.budget,
            "achieved": self.achieved,
            "metric": self.metric,
            "mapping": self.mapping.value,
            "spread": self.spread,
            "bounds": list(self.bounds),
            "source": self.source,
            "notes": list(self.notes),
            "layers": [{**asdict(a), "shape": list(a.shape)} for a in self.layers],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The plan as JSON (written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllocationPlan:
        """A plan from :meth:`to_dict`'s form.

        Raises
        ------
        InputError
            If ``data`` is not a plan of this format.
        """
        if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
            raise InputError(
                "not a weightspectra allocation plan (expected a JSON object with "
                f"format={PLAN_FORMAT}); make one with `weightspectra allocate`"
            )
        try:
            layers = tuple(
                LayerAllocation(**{**a, "shape": tuple(a["shape"])}) for a in data["layers"]
            )
            lo, hi = data["bounds"]
            return cls(
                kind=AllocationKind(data["kind"]),
                budget=float(data["budget"]),
                achieved=float(data["achieved"]),
                metric=str(data["metric"]),
                mapping=AllocationMapping(data["mapping"]),
                spread=float(data["spread"]),
                bounds=(float(lo), float(hi)),
                layers=layers,
                source=str(data.get("source", "")),
                notes=tuple(data.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"the allocation plan is incomplete or malformed: {exc}") from exc

    @classmethod
    def from_json(cls, source: str | Path) -> AllocationPlan:
        """A plan from a JSON file written by :meth:`to_json` (or its text)."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"the allocation plan is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _fmt_value(kind: AllocationKind, value: float) -> str:
    return f"{value:.4f}" if kind is AllocationKind.SPARSITY else str(round(value))
