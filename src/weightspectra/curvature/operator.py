"""Exact Hessian-vector products of a loss over a declared data set (curvature.md, "The operator").

The operator is the Hessian of the data-set loss

    L(θ) = Σ_b (n_b / N) · loss_fn(model(x_b; θ), y_b)

with respect to a chosen set of parameters (or, for :class:`InputHessianOperator`, of the inputs),
where ``loss_fn`` returns the *mean* loss of a batch, so that mini-batches of unequal size
(a partial last batch included) average to the full-batch loss. The model is evaluated through
:func:`torch.func.functional_call` on detached copies of its parameters and buffers: the model's
parameters, their ``requires_grad`` flags and ``.grad`` fields, and its buffers are never changed;
the train/eval mode of every submodule is set for the call and restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn

from weightspectra.enums import parse_enum
from weightspectra.errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


class Engine(str, Enum):
    """How a Hessian-vector product is computed."""

    #: Reverse-over-reverse with ``torch.autograd.grad(create_graph=True)`` (faster on CPU).
    DOUBLE_BACKWARD = "double_backward"
    #: Forward-over-reverse with ``torch.func.jvp(torch.func.grad(...))``.
    FUNC = "func"


class Mode(str, Enum):
    """Module mode during the evaluation (BatchNorm and dropout make the two differ)."""

    EVAL = "eval"
    TRAIN = "train"


def check_batches(batches: Iterable[Any], what: str = "batches") -> list[Batch]:
    """Materialise ``batches`` as a list of ``(inputs, targets)`` tensor pairs.

    Parameters
    ----------
    batches : iterable of (Tensor, Tensor)
        Each item is ``(inputs, targets)`` with the same leading (batch) dimension; a
        ``torch.utils.data.DataLoader`` works.
    what : str
        Name used in messages.

    Returns
    -------
    list of (Tensor, Tensor)

    Raises
    ------
    InputError
        If there are no batches, an item is not a pair of tensors, or the leading dimensions differ.
    """
    if isinstance(batches, torch.Tensor):
        raise InputError(
            f"{what} must be an iterable of (inputs, targets) pairs, got a single tensor of shape "
            f"{tuple(batches.shape)}; pass [(inputs, targets)]"
        )
    out: list[Batch] = []
    for i, item in enumerate(batches):
        if (
            not isinstance(item, (tuple, list))
            or len(item) != 2
            or not all(isinstance(t, torch.Tensor) for t in item)
        ):
            raise InputError(
                f"{what}[{i}] must be a pair (inputs, targets) of tensors, got "
                f"{type(item).__name__}; yield (x, y) tuples from the loader"
            )
        x, y = item
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise InputError(
                f"{what}[{i}]: inputs of shape {tuple(x.shape)} and targets of shape "
                f"{tuple(y.shape)} need the same, non-zero leading batch dimension"
            )
        out.append((x, y))
    if not out:
        raise InputError(f"{what} is empty; give at least one (inputs, targets) batch")
    return out


@contextlib.contextmanager
def module_mode(model: nn.Module, mode: Mode) -> Iterator[None]:
    """Put every submodule of ``model`` in ``mode`` and restore each one's own mode afterwards."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode is Mode.TRAIN)
    try:
        yield
    finally:
        for m, was_training in saved:
            m.training = was_training


def _floating_dtype(dtype: torch.dtype | None, model: nn.Module) -> torch.dtype:
    if dtype is None:
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(
            f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}"
        )
    return dtype


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.detach().to(dtype) if t.is_floating_point() else t.detach()


def _scalar_loss(loss_fn: LossFn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = loss_fn(out, y)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise InputError(
            f"loss_fn must return a scalar tensor (the mean loss of the batch), got {shape}; "
            "use reduction='mean'"
        )
    return loss.reshape(())


class _Evaluator:
    """Shared machinery: functional evaluation of the model on cast copies of its state."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        mode: Mode | str,
        dtype: torch.dtype | None,
        engine: Engine | str,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise InputError(
                f"loss_fn must be callable (outputs, targets) -> scalar, got {loss_fn!r}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.mode = parse_enum(Mode, mode, "mode")
        self.engine = parse_enum(Engine, engine, "engine")
        self.dtype = _floating_dtype(dtype, model)
        self.batches = check_batches(batches)
        self.batch_sizes = [int(x.shape[0]) for x, _ in self.batches]
        self.n_samples = int(sum(self.batch_sizes))
        self.hvp_count = 0
        self._description = getattr(batches, "description", "clean")

    @property
    def data_description(self) -> str:
        """Which data the operator is built on (``"clean"`` or how adversarial data were made)."""
        return str(self._description)

    def _state(self) -> dict[str, torch.Tensor]:
        state = {n: _cast(p, self.dtype) for n, p in self.model.named_parameters()}
        # Buffers are cloned so that train-mode BatchNorm cannot update the model's running stats.
        state.update({n: _cast(b, self.dtype).clone() for n, b in self.model.named_buffers()})
        return state

    def _weights(self) -> list[float]:
        return [n / self.n_samples for n in self.batch_sizes]

    def _batch_loss(
        self, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        out = torch.func.functional_call(self.model, dict(state), (_cast(x, self.dtype),))
        return _scalar_loss(self.loss_fn, out, _cast(y, self.dtype))


class HessianOperator(_Evaluator):
    """Hessian of a data-set loss with respect to model parameters, as a matrix-free operator.

    Parameters
    ----------
    model : torch.nn.Module
        The network; it is never modified (see the module docstring).
    loss_fn : callable (outputs, targets) -> scalar Tensor
        Mean loss of one batch, e.g. ``torch.nn.functional.cross_entropy``.
    batches : iterable of (Tensor, Tensor)
        The declared data set; materialised once. Batches are weighted by their size.
    params : str or sequence of str, optional
        Parameters to differentiate: each name selects the parameter of that name or every
        parameter under the module of that name. ``None`` (default) selects every parameter with
        ``requires_grad=True``.
    mode : {"eval", "train"}, default "eval"
        Module mode during evaluation.
    dtype : torch.dtype, optional
        Precision of the computation (parameters, buffers and floating inputs are cast); default:
        the dtype of the model's parameters.
    engine : {"double_backward", "func"}, default "double_backward"
        How each HVP is computed.

    Attributes
    ----------
    dim : int
        Number of selected scalar parameters ``n``; the Hessian is ``n × n``.
    param_names : list of str
        Selected parameters, in the order they are flattened.
    blocks : dict of str to slice
        Slice of the flat vector for each layer (module name) of the selection.
    param_slices : dict of str to slice
        Slice of the flat vector for each selected parameter.
    hvp_count : int
        Number of full-data-set Hessian-vector products computed so far.

    Raises
    ------
    InputError
        On an empty data set, a malformed batch, a name that matches no parameter, or an empty
        selection.
    OptionError
        On an unknown ``mode`` or ``engine``.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> data = [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]
    >>> H = HessianOperator(net, torch.nn.functional.cross_entropy, data, dtype=torch.float64)
    >>> H.dim
    26
    >>> H.matvec(np.ones(H.dim)).shape
    (26,)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        params: str | Sequence[str] | None = None,
        mode: Mode | str = Mode.EVAL,
        dtype: torch.dtype | None = None,
        engine: Engine | str = Engine.DOUBLE_BACKWARD,
    ) -> None:
        super().__init__(model, loss_fn, batches, mode, dtype, engine)
        self.param_names = select_parameters(model, params)
        shapes = dict(model.named_parameters())
        self.param_slices: dict[str, slice] = {}
        self.blocks: dict[str, slice] = {}
        start = 0
        for name in self.param_names:
            size = shapes[name].numel()
            self.param_slices[name] = slice(start, start + size)
            layer = name.rsplit(".", 1)[0] if "." in name else name
            lo = self.blocks[layer].start if layer in self.blocks else start
            self.blocks[layer] = slice(lo, start + size)
            start += size
        self.dim = start
        self._shapes = [tuple(shapes[n].shape) for n in self.param_names]

    def restrict(self, params: str | Sequence[str]) -> HessianOperator:
        """A new operator on the same data, mode, dtype and engine over a subset of parameters.

        Parameters
        ----------
        params : str or sequence of str
            Parameter or module names (e.g. ``"fc1"`` for one layer's weight and bias).

        Returns
        -------
        HessianOperator
        """
        return HessianOperator(
            self.model,
            self.loss_fn,
            _Described(self.batches, self._description),
            params,
            self.mode,
            self.dtype,
            self.engine,
        )

    def parameters_vector(self) -> np.ndarray:
        """Current values of the selected parameters, flattened, shape ``(dim,)``, float64."""
        named = dict(self.model.named_parameters())
        return np.concatenate(
            [named[n].detach().to(torch.float64).reshape(-1).numpy() for n in self.param_names]
        )

    def _split(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(
            v[s].reshape(shape)
            for s, shape in zip(self.param_slices.values(), self._shapes, strict=True)
        )

    def _check_vector(self, v: np.ndarray) -> torch.Tensor:
        a = np.asarray(v, dtype=np.float64)
        if a.shape not in ((self.dim,), (self.dim, 1)):
            raise InputError(
                f"vector of shape {a.shape} does not match the operator: expected ({self.dim},)"
            )
        return torch.from_numpy(a.reshape(-1).copy()).to(self.dtype)

    def loss(self) -> float:
        """Data-set loss at the current parameters (mean over all samples)."""
        with module_mode(self.model, self.mode), torch.no_grad():
            state = self._state()
            total = sum(
                w * float(self._batch_loss(state, x, y))
                for w, (x, y) in zip(self._weights(), self.batches, strict=True)
            )
        return float(total)

    def gradient(self) -> np.ndarray:
        """Gradient of the data-set loss, shape ``(dim,)``, float64."""
        with module_mode(self.model, self.mode):
            state = self._state()
            theta = [state[n].requires_grad_(True) for n in self.param_names]
            g_total = [torch.zeros_like(t) for t in theta]
            for w, (x, y) in zip(self._weights(), self.batches, strict=True):
                loss = self._batch_loss(state, x, y)
                gs = torch.autograd.grad(loss, theta, allow_unused=True)
                for acc, g in zip(g_total, gs, strict=True):
                    if g is not None:
                        acc.add_(g, alpha=w)
        return torch.cat([g.reshape(-1) for g in g_total]).to(torch.float64).numpy()

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """Hessian-vector product on a flat tensor of shape ``(dim,)`` in :attr:`dtype`."""
        tangents = self._split(v.to(self.dtype))
        with module_mode(self.model, self.mode):
            base = self._state()
            out = torch.zeros(self.dim, dtype=self.dtype)
            for w, (x, y) in zip(self._weights(), self.batches, strict=True):
                if self.engine is Engine.DOUBLE_BACKWARD:
                    hv = self._hvp_double_backward(base, x, y, tangents)
                else:
                    hv = self._hvp_func(base, x, y, tangents)
                out.add_(hv, alpha=w)
        self.hvp_count += 1
        return out

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``H @ v`` for a float64 array of shape ``(dim,)``; returns float64 ``(dim,)``.

        Raises
        ------
        InputError
            If ``v`` has the wrong shape.
        """
        return self.hvp(self._check_vector(v)).to(torch.float64).numpy()

    def as_linear_operator(self) -> LinearOperator:
        """A symmetric :class:`scipy.sparse.linalg.LinearOperator` view (float64)."""
        return LinearOperator(
            (self.dim, self.dim), matvec=self.matvec, rmatvec=self.matvec, dtype=np.float64
        )

    def _hvp_double_backward(
        self,
        base: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        tangents: tuple[torch.Tensor, ...],
    ) -> torch.Tensor:
        state = dict(base)
        theta = [state[n].clone().requires_grad_(True) for n in self.param_names]
        state.update(zip(self.param_names, theta, strict=True))
        loss = self._batch_loss(state, x, y)
        grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
        terms = [
            (g * v).sum()
            for g, v in zip(grads, tangents, strict=True)
            if g is not None and g.requires_grad
        ]
        if not terms:
            # The loss is at most linear in the selection: its Hessian is zero.
            return torch.zeros(self.dim, dtype=self.dtype)
        dot = torch.stack(terms).sum()
        hv = torch.autograd.grad(dot, theta, allow_unused=True)
        return torch.cat(
            [
                (h if h is not None else torch.zeros_like(t)).reshape(-1)
                for h, t in zip(hv, theta, strict=True)
            ]
        )

    def _hvp_func(
        self,
        base: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        tangents: tuple[torch.Tensor, ...],
    ) -> torch.Tensor:
        names = self.param_names

        buffers = {n for n, _ in self.model.named_buffers()}

        def loss_of(*theta: torch.Tensor) -> torch.Tensor:
            # Buffers are cloned inside the transform: train-mode BatchNorm updates them in place,
            # which torch.func refuses on tensors captured from outside.
            state = {n: t.clone() if n in buffers else t for n, t in base.items()}
            state.update(zip(names, theta, strict=True))
            return self._batch_loss(state, x, y)

        primals = tuple(base[n] for n in names)
        grad_fn = torch.func.grad(loss_of, argnums=tuple(range(len(names))))
        hv = torch.func.jvp(grad_fn, primals, tangents)[1]
        return torch.cat([h.reshape(-1) for h in hv])


class InputHessianOperator(_Evaluator):
    """Hessian of the data-set loss with respect to the *inputs* (all batches stacked).

    Same data convention as :class:`HessianOperator`; the flat vector concatenates every input
    tensor of every batch, so :attr:`dim` is the total number of input entries. For a network
    that is piecewise linear in its input (ReLU) and a convex loss (cross-entropy) this Hessian is
    positive semi-definite: a free exactness check.

    Parameters
    ----------
    model, loss_fn, batches, mode, dtype, engine
        As for :class:`HessianOperator`.

    Raises
    ------
    InputError
        On malformed data or integer-valued inputs (they cannot be differentiated).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        mode: Mode | str = Mode.EVAL,
        dtype: torch.dtype | None = None,
        engine: Engine | str = Engine.DOUBLE_BACKWARD,
    ) -> None:
        super().__init__(model, loss_fn, batches, mode, dtype, engine)
        for i, (x, _) in enumerate(self.batches):
            if not x.is_floating_point():
                raise InputError(
                    f"batches[{i}] inputs have dtype {x.dtype}; an input Hessian needs floating "
                    "inputs (integer token ids cannot be differentiated)"
                )
        self.blocks: dict[str, slice] = {}
        start = 0
        for i, (x, _) in enumerate(self.batches):
            self.blocks[f"batch{i}"] = slice(start, start + x.numel())
            start += x.numel()
        self.dim = start

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``H @ v`` for a float64 array of shape ``(dim,)``; returns float64 ``(dim,)``."""
        a = np.asarray(v, dtype=np.float64).reshape(-1)
        if a.size != self.dim:
            raise InputError(
                f"vector of size {a.size} does not match the operator: expected ({self.dim},)"
            )
        vt = torch.from_numpy(a.copy()).to(self.dtype)
        out = torch.zeros(self.dim, dtype=self.dtype)
        with module_mode(self.model, self.mode):
            state = self._state()
            for w, (x, y), s in zip(
                self._weights(), self.batches, self.blocks.values(), strict=True
            ):
                xc = _cast(x, self.dtype)
                tangent = vt[s].reshape(xc.shape)

                def loss_of(xi: torch.Tensor, y: torch.Tensor = y) -> torch.Tensor:
                    out_ = torch.func.functional_call(self.model, dict(state), (xi,))
                    return _scalar_loss(self.loss_fn, out_, _cast(y, self.dtype))

                if self.engine is Engine.DOUBLE_BACKWARD:
                    xi = xc.clone().requires_grad_(True)
                    (g,) = torch.autograd.grad(loss_of(xi), xi, create_graph=True)
                    if g.requires_grad:
                        (hv,) = torch.autograd.grad((g * tangent).sum(), xi, allow_unused=True)
                    else:
                        hv = None
                    hv = torch.zeros_like(xc) if hv is None else hv
                else:
                    hv = torch.func.jvp(torch.func.grad(loss_of), (xc,), (tangent,))[1]
                out[s] = w * hv.reshape(-1)
        self.hvp_count += 1
        return out.to(torch.float64).numpy()

    def as_linear_operator(self) -> LinearOperator:
        """A symmetric :class:`scipy.sparse.linalg.LinearOperator` view (float64)."""
        return LinearOperator(
            (self.dim, self.dim), matvec=self.matvec, rmatvec=self.matvec, dtype=np.float64
        )


def select_parameters(model: nn.Module, params: str | Sequence[str] | None) -> list[str]:
    """Names of the parameters selected by ``params`` (see :class:`HessianOperator`), in order.

    Raises
    ------
    InputError
        If a name matches no parameter, or the selection is empty.
    """
    named = [(n, p) for n, p in model.named_parameters()]
    if params is None:
        chosen = [n for n, p in named if p.requires_grad]
        if not chosen:
            raise InputError(
                f"{type(model).__name__} has no parameter with requires_grad=True; "
                "pass params=[...] to choose parameters explicitly"
            )
        return chosen
    wanted = [params] if isinstance(params, str) else list(params)
    chosen = []
    for want in wanted:
        if not isinstance(want, str):
            raise InputError(f"params must be parameter or module names (str), got {want!r}")
        hits = [n for n, _ in named if n == want or n.startswith(want + ".")]
        if not hits:
            available = ", ".join(n for n, _ in named[:12]) + (" ..." if len(named) > 12 else "")
            raise InputError(
                f"params: {want!r} matches no parameter or module of {type(model).__name__}; "
                f"available parameters: {available}"
            )
        chosen.extend(h for h in hits if h not in chosen)
    order = {n: i for i, (n, _) in enumerate(named)}
    return sorted(chosen, key=order.__getitem__)


class _Described:
    """Batches that remember how they were made (kept when an operator is restricted)."""

    def __init__(self, batches: list[Batch], description: str) -> None:
        self._batches = batches
        self.description = description

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches)
