"""What a plan becomes: pruning masks, applied masks, and a PEFT LoRA configuration.

Names: a plan names tensors as the analysed source did. A model given here may spell them
with or without a wrapper prefix (``bert.``, ``model.``, ``module.``): each planned key is
matched to the model's parameter of the same name, else to the one parameter whose name ends
with it (or which it ends with), never by position; an ambiguous or missing match is an error
naming the layer.

torch is imported only when a torch model or tensor is given, and peft only by
:func:`lora_config`.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from weightspectra.allocation.plan import AllocationPlan
from weightspectra.allocation.solve import AllocationError
from weightspectra.enums import AllocationKind
from weightspectra.errors import InputError, OptionError

#: Pruning criteria of :func:`masks`.
METHODS = ("magnitude", "wanda")


class Masks(dict[str, Any]):
    """Keep-masks by parameter name (``"encoder.0.weight"``); a layer's name without its
    ``.weight`` (``"encoder.0"``, as the report and ``plan.values`` spell it) finds it too."""

    def __missing__(self, key: str) -> Any:
        if isinstance(key, str) and dict.__contains__(self, key + ".weight"):
            return self[key + ".weight"]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (
            isinstance(key, str) and dict.__contains__(self, key + ".weight")
        )


def match_names(wanted: Iterable[str], available: Iterable[str]) -> dict[str, str]:
    """Each wanted key → the available name it is, or the unique one it is a dotted suffix of
    (or that is a dotted suffix of it).

    Raises
    ------
    InputError
        Naming the key that matches nothing, or several names.

    Examples
    --------
    >>> match_names(["layer.0.weight"], ["bert.layer.0.weight", "bert.layer.1.weight"])
    {'layer.0.weight': 'bert.layer.0.weight'}
    """
    names = list(available)
    exact = set(names)
    out: dict[str, str] = {}
    for key in wanted:
        if key in exact:
            out[key] = key
            continue
        # a model name inside the key must still name a module and its parameter
        hits = [n for n in names if n.endswith("." + key) or ("." in n and key.endswith("." + n))]
        if len(hits) != 1:
            what = "no parameter" if not hits else f"{len(hits)} parameters ({hits[:3]})"
            raise InputError(
                f"the planned layer {key!r} matches {what} of the model; give the model the "
                "report was made from, or a plan made from this model's own report"
            )
        out[key] = hits[0]
    return out


def _is_torch_module(model: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _parameters(model: Any) -> dict[str, Any]:
    """Name → weight array/tensor of a torch module, a state dict or a mapping of arrays."""
    if _is_torch_module(model):
        return dict(model.named_parameters())
    if isinstance(model, Mapping):
        return dict(model)
    raise InputError(
        f"masks need a torch module, a state dict or a mapping of numpy arrays, got "
        f"{type(model).__name__}"
    )


def _sparsity_plan(plan: AllocationPlan) -> None:
    if plan.kind is not AllocationKind.SPARSITY:
        raise InputError(f"masks come from a sparsity plan; this plan allocates {plan.kind.value}")


def _pruned(n: int, sparsity: float) -> int:
    """Entries pruned from n at this sparsity (rounded to the nearest count)."""
    return min(n, max(0, math.floor(sparsity * n + 0.5)))


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask pruning exactly ``round(sparsity · size)`` entries of smallest ``|w|``.

    Ties are broken by position (a stable sort), so the count is exact.

    Examples
    --------
    >>> magnitude_mask(np.array([[0.1, -3.0], [2.0, -0.5]]), 0.5).tolist()
    [[False, True], [True, False]]
    """
    w = np.abs(np.asarray(weight, dtype=np.float64)).reshape(-1)
    k = _pruned(w.size, sparsity)
    keep = np.ones(w.size, dtype=bool)
    keep[np.argsort(w, kind="stable")[:k]] = False
    return keep.reshape(np.shape(weight))


def wanda_mask(weight: np.ndarray, input_norms: np.ndarray, sparsity: float) -> np.ndarray:
    """Wanda's keep-mask: within each output row, prune the entries of smallest
    ``|W_ij| · ‖X_j‖₂`` (``input_norms[j]`` over the calibration inputs).

    ``weight`` is (out, in, ...): a convolution's scores use the norm of its input channel.

    Examples
    --------
    >>> w = np.array([[1.0, 1.0, 1.0, 1.0]])
    >>> wanda_mask(w, np.array([4.0, 1.0, 3.0, 2.0]), 0.5).tolist()
    [[True, False, True, False]]
    """
    w = np.asarray(weight, dtype=np.float64)
    norms = np.asarray(input_norms, dtype=np.float64).reshape(-1)
    if w.ndim < 2 or norms.size != w.shape[1]:
        raise InputError(
            f"Wanda needs one input norm per input feature: weight {w.shape}, {norms.size} norms"
        )
    scores = np.abs(w) * norms.reshape((1, -1) + (1,) * (w.ndim - 2))
    flat = scores.reshape(w.shape[0], -1)
    k = _pruned(flat.shape[1], sparsity)
    keep = np.ones(flat.shape, dtype=bool)
    order = np.argsort(flat, axis=1, kind="stable")[:, :k]
    np.put_along_axis(keep, order, False, axis=1)
    return keep.reshape(w.shape)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return np.asarray(value.detach().to("cpu").double().numpy())
    return np.asarray(value)


def _input_norms(model: Any, names: Mapping[str, str], batches: Iterable[Any]) -> dict[str, Any]:
    """‖X_j‖₂ over every calibration input reaching each planned Linear/Conv layer."""
    import torch

    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for key, param in names.items():
        module_name = param.rsplit(".", 1)[0] if "." in param else ""
        module = modules.get(module_name)
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            raise InputError(
                f"Wanda reads the inputs of Linear and Conv1d/2d layers; {key!r} belongs to a "
                f"{type(module).__name__}; prune it with method='magnitude'"
            )

        def hook(mod: Any, inputs: Any, output: Any, key: str = key) -> None:
            x = inputs[0].detach().double()
            # features on dim -1 (Linear) or dim 1 (Conv): square sums over everything else
            x = (
                x.reshape(-1, x.shape[-1])
                if isinstance(mod, torch.nn.Linear)
                else (x.transpose(0, 1).reshape(x.shape[1], -1).T)
            )
            sq = (x * x).sum(dim=0)
            sums[key] = sums[key] + sq if key in sums else sq

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            seen = 0
            for batch in batches:  # keyword inputs (a tokenizer's output), a tuple, or one tensor
                if isinstance(batch, Mapping):
                    model(**batch)
                elif isinstance(batch, (tuple, list)):
                    model(*batch)
                else:
                    model(batch)
                seen += 1
    finally:
        for h in hooks:
            h.remove()
    if seen == 0:
        raise InputError("Wanda needs at least one calibration batch; pass calibration=[x, ...]")
    missing = [k for k in names if k not in sums]
    if missing:
        raise InputError(
            f"the calibration batches never reached {missing[:3]}; give batches that run "
            "through those layers"
        )
    return {k: torch.sqrt(v).numpy() for k, v in sums.items()}


def masks(
    plan: AllocationPlan,
    model: Any,
    *,
    method: str = "magnitude",
    calibration: Iterable[Any] | None = None,
) -> dict[str, Any]:
    """Keep-masks (``True`` = kept) by the model's parameter name (a :class:`Masks`, which
    finds a layer's name without ``.weight`` too), one per planned tensor,
    each pruning ``round(sparsity · size)`` weights (magnitude) or that share of every
    output row (Wanda). Torch models and tensors give torch bool tensors; numpy gives arrays.

    Raises
    ------
    InputError
        On a plan that is not of sparsity, a layer the model lacks, Wanda without
        calibration batches or on a layer it cannot read.
    OptionError
        On an unknown method.
    """
    _sparsity_plan(plan)
    if method not in METHODS:
        raise OptionError(f"method must be one of {METHODS}, got {method!r}")
    params = _parameters(model)
    planned = {a.key: a.value for a in plan.layers if a.value is not None}
    shapes = {a.key: tuple(a.shape) for a in plan.layers}
    names = match_names(planned, params)
    norms: dict[str, Any] = {}
    if method == "wanda":
        if calibration is None or not _is_torch_module(model):
            raise InputError(
                "Wanda needs the torch model and calibration=[batch, ...] to measure its inputs; "
                "use method='magnitude' without them"
            )
        norms = _input_norms(model, names, calibration)
    out = Masks()
    for key, sparsity in planned.items():
        target = params[names[key]]
        weight = _to_numpy(target)
        if tuple(weight.shape) != shapes[key]:
            raise InputError(
                f"the planned layer {key!r} has shape {shapes[key]}, but the model's "
                f"{names[key]!r} has {tuple(weight.shape)}; give the model the report was made from"
            )
        if weight.ndim < 2:
            raise InputError(f"{key!r} is not a matrix (shape {weight.shape}); exclude it")
        keep = (
            wanda_mask(weight, norms[key], float(sparsity))
            if method == "wanda"
            else magnitude_mask(weight, float(sparsity))
        )
        if hasattr(target, "detach"):
            import torch

            out[names[key]] = torch.from_numpy(keep).to(target.device)
        else:
            out[names[key]] = keep
    return out


def apply_masks(model: Any, keep: Mapping[str, Any]) -> Any:
    """Zero the pruned weights in place (a torch module or a mutable mapping of arrays) and
    return ``model``.

    Raises
    ------
    InputError
        On a mask whose name or shape does not match the model.
    """
    params = _parameters(model)
    for name, mask in keep.items():
        if name not in params:
            raise InputError(f"mask {name!r} names no parameter of the model")
        target = params[name]
        if tuple(np.shape(mask)) != tuple(target.shape):
            raise InputError(
                f"mask {name!r} has shape {tuple(np.shape(mask))}, the weight {tuple(target.shape)}"
            )
        if hasattr(target, "detach"):
            import torch

            with torch.no_grad():
                target.mul_(torch.as_tensor(mask, device=target.device).to(target.dtype))
        else:
            params[name] = np.where(np.asarray(mask), target, 0).astype(target.dtype)
            if isinstance(model, dict):
                model[name] = params[name]
    return model


def lora_config(plan: AllocationPlan, **kwargs: Any) -> Any:
    """A ``peft.LoraConfig``: ``r`` the most common planned rank, ``rank_pattern`` every
    module whose rank differs, ``target_modules`` the planned modules."""
    if plan.kind is not AllocationKind.RANK:
        raise InputError(
            f"a LoRA config comes from a rank plan; this plan allocates {plan.kind.value}"
        )
    from peft import LoraConfig

    modules = plan.rank_pattern()
    if not modules:
        raise AllocationError("the plan allocates no rank; nothing to configure")
    r = Counter(modules.values()).most_common(1)[0][0]
    pattern = {m: k for m, k in modules.items() if k != r}
    return LoraConfig(r=r, rank_pattern=pattern, target_modules=list(modules), **kwargs)
