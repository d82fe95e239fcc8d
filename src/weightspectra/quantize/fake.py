"""Symmetric uniform per-channel fake quantization Q_b of Linear and Conv weights (curvature.md).

For output channel c of a weight W (channel axis 0 for ``Linear`` and ``Conv{1,2,3}d``):

    q_max = 2^(b-1) - 1,  s_c = max|W_c| / q_max,  Q_b(W)_c = s_c · clamp(round(W_c / s_c), ±q_max)

so no value is clipped, |Q_b(W) − W| ≤ s_c / 2 elementwise, and the integer codes of Q_b(W) are
those of W (idempotence). ``b = 2`` is ternary ({-s, 0, s}). Biases are not quantized. A
channel that is entirely zero keeps scale 0 and stays zero.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from weightspectra.errors import InputError, OptionError

#: Layer types whose weights are quantized (output channels on axis 0).
QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Widths outside this range are refused (1 bit has no symmetric grid; > 16 is not quantization).
MIN_BITS, MAX_BITS = 2, 16


def check_bits(bits: object, what: str = "bits") -> int:
    """Return ``bits`` as an int in ``[MIN_BITS, MAX_BITS]``.

    Raises
    ------
    OptionError
        If ``bits`` is not an integer in range.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise OptionError(
            f"{what}={bits!r} is not a valid width; use an integer from {MIN_BITS} to {MAX_BITS} "
            "(symmetric quantization needs at least 2 bits)"
        )
    return bits


def quantize_codes(w: torch.Tensor, bits: int, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and per-channel scales of the symmetric ``bits``-bit quantization of ``w``.

    Parameters
    ----------
    w : Tensor of any shape with ``w.ndim ≥ 1``
        Floating-point weights.
    bits : int
        Width, 2 to 16.
    axis : int, default 0
        Channel axis; each slice along it gets its own scale.

    Returns
    -------
    codes : Tensor, same shape as ``w``, int64, in ``[-q_max, q_max]``
    scale : Tensor, shape of ``w`` with every axis but ``axis`` of size 1, dtype of ``w``

    Raises
    ------
    InputError
        If ``w`` is not a floating tensor with at least one dimension.
    OptionError
        If ``bits`` is out of range.
    """
    bits = check_bits(bits)
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.ndim == 0:
        raise InputError(
            f"expected a floating weight tensor with ≥ 1 dimension, got "
            f"{type(w).__name__} {getattr(w, 'dtype', '')} {tuple(getattr(w, 'shape', ()))}"
        )
    w = w.detach()
    qmax = 2 ** (bits - 1) - 1
    dims = [d for d in range(w.ndim) if d != axis % w.ndim]
    amax = w.abs().amax(dim=dims, keepdim=True) if dims else w.abs()
    scale = amax / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.clamp(torch.round(w / safe), -qmax, qmax).to(torch.int64)
    return codes, scale


def fake_quantize(w: torch.Tensor, bits: int, axis: int = 0) -> torch.Tensor:
    """``Q_b(w)``: quantize to ``bits`` per channel and map back to floats (same dtype and shape).

    Examples
    --------
    >>> fake_quantize(torch.tensor([[1.0, 0.4, -0.2]]), bits=2)
    tensor([[1., 0., 0.]])
    """
    codes, scale = quantize_codes(w, bits, axis)
    return codes.to(w.dtype) * scale


def quantization_error(w: torch.Tensor, bits: int, axis: int = 0) -> float:
    """``‖Q_b(w) − w‖²`` (squared Frobenius norm), as a float."""
    return float(((fake_quantize(w, bits, axis) - w.detach()) ** 2).sum())


def layer_weight(module: nn.Module) -> torch.Tensor:
    """The ``weight`` tensor of a Linear/Conv module (typed, for the rest of the package)."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise InputError(f"{type(module).__name__} has no weight tensor to quantize")
    return w


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear/Conv submodules of ``model`` by name, in module order.

    Raises
    ------
    InputError
        If ``model`` has none.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)}
    if not layers:
        raise InputError(f"{type(model).__name__} has no Linear or Conv1d/2d/3d layer to quantize")
    return layers


def resolve_bits(model: nn.Module, bits: int | Mapping[str, int]) -> dict[str, int]:
    """Per-layer widths from a uniform width or a mapping (layers not named stay unquantized).

    Raises
    ------
    InputError
        If a name in the mapping is not a quantizable layer.
    OptionError
        If a width is out of range.
    """
    layers = quantizable_layers(model)
    if isinstance(bits, Mapping):
        unknown = sorted(set(bits) - set(layers))
        if unknown:
            raise InputError(
                f"bits names {unknown} which are not Linear/Conv layers of "
                f"{type(model).__name__}; quantizable layers: {list(layers)}"
            )
        return {n: check_bits(b, f"bits[{n!r}]") for n, b in bits.items()}
    b = check_bits(bits)
    return dict.fromkeys(layers, b)


@contextlib.contextmanager
def fake_quantized(model: nn.Module, bits: int | Mapping[str, int]) -> Iterator[nn.Module]:
    """Temporarily replace layer weights by their fake-quantized values; restored on exit.

    Parameters
    ----------
    model : torch.nn.Module
    bits : int or mapping of str to int
        A uniform width for every Linear/Conv layer, or widths by layer name.

    Yields
    ------
    torch.nn.Module
        ``model`` itself, with quantized weights inside the ``with`` block.

    Examples
    --------
    >>> net = torch.nn.Linear(3, 2)
    >>> with fake_quantized(net, 4) as q:
    ...     n_levels = q.weight.unique().numel()
    """
    widths = resolve_bits(model, bits)
    layers = quantizable_layers(model)
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, b in widths.items():
                w = layer_weight(layers[name])
                saved[name] = w.detach().clone()
                w.copy_(fake_quantize(w, b))
        yield model
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                layer_weight(layers[name]).copy_(original)


def quantized_copy(model: nn.Module, bits: int | Mapping[str, int]) -> nn.Module:
    """A deep copy of ``model`` with fake-quantized weights (the original is untouched)."""
    clone = copy.deepcopy(model)
    widths = resolve_bits(clone, bits)
    layers = quantizable_layers(clone)
    with torch.no_grad():
        for name, b in widths.items():
            w = layer_weight(layers[name])
            w.copy_(fake_quantize(w, b))
    return clone
