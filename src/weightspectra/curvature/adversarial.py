"""FGSM and PGD adversarial examples made from the user's batches (curvature.md, "Adversarial").

The result is an :class:`AdversarialBatches` object: iterable like the clean batches, so the same
:class:`~weightspectra.curvature.HessianOperator` can be built on either, and carrying a
description (method, ε, norm, steps) that curvature reports print beside every number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from weightspectra.curvature.operator import (
    Batch,
    LossFn,
    Mode,
    _scalar_loss,
    check_batches,
    module_mode,
)
from weightspectra.enums import parse_enum
from weightspectra.errors import InputError, OptionError


class AttackMethod(str, Enum):
    """How adversarial inputs are made."""

    FGSM = "fgsm"  #: one signed-gradient (L∞) or normalised-gradient (L2) step of size ε
    PGD = "pgd"  #: ``steps`` projected gradient steps from a random start in the ε-ball


class Norm(str, Enum):
    """The ball the perturbation lives in."""

    LINF = "linf"
    L2 = "l2"


@dataclass(frozen=True)
class AdversarialBatches:
    """Adversarial copies of a data set, with how they were made.

    Iterating yields ``(x_adv, y)`` pairs, one per clean batch, in order.

    Attributes
    ----------
    batches : list of (Tensor, Tensor)
    method, norm : str
    eps : float
    steps : int
    step_size : float
    seed : int
    clamp : tuple of float or None
    clean_loss, adversarial_loss : float
        Data-set loss (size-weighted mean) on the clean and on the adversarial inputs, in the
        mode used for the attack.
    """

    batches: list[Batch]
    method: str
    norm: str
    eps: float
    steps: int
    step_size: float
    seed: int
    clamp: tuple[float, float] | None
    clean_loss: float
    adversarial_loss: float

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def description(self) -> str:
        """One-line statement of how the data were made, e.g. ``"pgd linf eps=0.1 steps=10"``."""
        if self.method == AttackMethod.FGSM.value:
            return f"fgsm {self.norm} eps={self.eps:g}"
        return f"pgd {self.norm} eps={self.eps:g} steps={self.steps} step={self.step_size:g}"


def adversarial_batches(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    method: AttackMethod | str = AttackMethod.PGD,
    eps: float = 0.1,
    steps: int = 10,
    step_size: float | None = None,
    norm: Norm | str = Norm.LINF,
    clamp: tuple[float, float] | None = None,
    mode: Mode | str = Mode.EVAL,
    seed: int = 0,
) -> AdversarialBatches:
    """Adversarial versions of ``batches`` that increase ``loss_fn`` within an ε-ball.

    Parameters
    ----------
    model : torch.nn.Module
        Attacked network; its parameters, gradients and modes are left as they were.
    loss_fn : callable (outputs, targets) -> scalar Tensor
    batches : iterable of (Tensor, Tensor)
        Clean data; inputs must be floating point.
    method : {"fgsm", "pgd"}, default "pgd"
    eps : float, default 0.1
        Radius of the perturbation ball (in input units).
    steps : int, default 10
        PGD iterations (ignored by FGSM).
    step_size : float, optional
        PGD step; default ``2.5 · eps / steps``.
    norm : {"linf", "l2"}, default "linf"
        L2 balls are per sample.
    clamp : (float, float), optional
        Valid input range, e.g. ``(0.0, 1.0)`` for images.
    mode : {"eval", "train"}, default "eval"
    seed : int, default 0
        Seeds PGD's random start.

    Returns
    -------
    AdversarialBatches

    Raises
    ------
    OptionError
        On a non-positive ``eps``/``steps``/``step_size``, an unknown method or norm, or a bad
        ``clamp``.
    InputError
        On malformed batches or integer inputs.
    """
    m = parse_enum(AttackMethod, method, "method")
    nrm = parse_enum(Norm, norm, "norm")
    md = parse_enum(Mode, mode, "mode")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise OptionError(f"eps must be a positive radius, got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise OptionError(f"steps must be a positive integer, got {steps!r}")
    step = 2.5 * eps / steps if step_size is None else step_size
    if not step > 0:
        raise OptionError(f"step_size must be positive, got {step_size!r}")
    if clamp is not None and not (len(clamp) == 2 and clamp[0] < clamp[1]):
        raise OptionError(f"clamp must be (low, high) with low < high, got {clamp!r}")
    data = check_batches(batches)
    gen = torch.Generator().manual_seed(int(seed))
    out: list[Batch] = []
    clean_total = adv_total = 0.0
    n_total = sum(int(x.shape[0]) for x, _ in data)
    with module_mode(model, md):
        for i, (x, y) in enumerate(data):
            if not x.is_floating_point():
                raise InputError(
                    f"batches[{i}] inputs have dtype {x.dtype}; adversarial examples need "
                    "floating inputs (attack embeddings instead of token ids)"
                )
            x0 = x.detach()
            if m is AttackMethod.FGSM:
                x_adv = _step(model, loss_fn, x0, x0, y, eps, eps, nrm, clamp)
            else:
                x_adv = x0 + _random_in_ball(x0, eps, nrm, gen)
                x_adv = _project(x_adv, x0, eps, nrm, clamp)
                for _ in range(steps):
                    x_adv = _step(model, loss_fn, x_adv, x0, y, step, eps, nrm, clamp)
            with torch.no_grad():
                w = x.shape[0] / n_total
                clean_total += w * float(_scalar_loss(loss_fn, model(x0), y))
                adv_total += w * float(_scalar_loss(loss_fn, model(x_adv), y))
            out.append((x_adv.detach(), y))
    return AdversarialBatches(
        batches=out,
        method=m.value,
        norm=nrm.value,
        eps=float(eps),
        steps=1 if m is AttackMethod.FGSM else steps,
        step_size=float(eps if m is AttackMethod.FGSM else step),
        seed=int(seed),
        clamp=None if clamp is None else (float(clamp[0]), float(clamp[1])),
        clean_loss=clean_total,
        adversarial_loss=adv_total,
    )


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    norms: torch.Tensor = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return norms.view(-1, *([1] * (t.ndim - 1)))


def _step(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    x0: torch.Tensor,
    y: torch.Tensor,
    size: float,
    eps: float,
    norm: Norm,
    clamp: tuple[float, float] | None,
) -> torch.Tensor:
    xi = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_scalar_loss(loss_fn, model(xi), y), xi)
    direction = g.sign() if norm is Norm.LINF else g / _per_sample_norm(g)
    return _project(x.detach() + size * direction, x0, eps, norm, clamp)


def _project(
    x: torch.Tensor, x0: torch.Tensor, eps: float, norm: Norm, clamp: tuple[float, float] | None
) -> torch.Tensor:
    delta = x - x0
    if norm is Norm.LINF:
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)
    out = x0 + delta
    if clamp is not None:
        out = out.clamp(clamp[0], clamp[1])
    return out.detach()


def _random_in_ball(x0: torch.Tensor, eps: float, norm: Norm, gen: torch.Generator) -> torch.Tensor:
    if norm is Norm.LINF:
        u = torch.rand(x0.shape, generator=gen, dtype=x0.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    r = torch.rand((x0.shape[0],) + (1,) * (x0.ndim - 1), generator=gen, dtype=x0.dtype)
    return g / _per_sample_norm(g) * eps * r
