"""Choice of bit widths: an integer linear programme over candidate widths (curvature.md).

With binary x_ik = 1 when layer i gets width b_k:

    minimise   Σ_ik Ω_ik x_ik
    subject to Σ_k x_ik = 1                       (one width per layer)
               Σ_ik n_i b_k x_ik ≤ size budget     (model size in bits)
               Σ_ik m_i b_k a x_ik ≤ BOPs budget   (optional; m_i MACs, a activation bits)
               x_ik = x_jk                         (tied layers)
               x_ik = 0 for widths a layer may not take (pinned layers keep one width)

solved by :func:`scipy.optimize.milp` (HiGHS); :func:`solve_exhaustive` enumerates every
assignment and is the test oracle for tiny models.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from weightspectra.enums import parse_enum
from weightspectra.errors import InputError, OptionError
from weightspectra.quantize.fake import check_bits
from weightspectra.quantize.sensitivity import Sensitivity, SensitivityTable

#: Exhaustive search refuses problems with more assignments than this.
EXHAUSTIVE_LIMIT = 2_000_000


class Solver(str, Enum):
    """How the integer programme is solved."""

    MILP = "milp"
    EXHAUSTIVE = "exhaustive"


class PlanError(InputError):
    """The budget cannot be met (the message gives the smallest feasible budget)."""


@dataclass(frozen=True)
class BitProblem:
    """The integer programme in array form (validated by :func:`make_problem`).

    Attributes
    ----------
    omega : ndarray (L, K)
        Damage of layer i at width k.
    cost : ndarray (L, K)
        Size in bits, ``n_i · b_k``.
    budget : float
        Size budget in bits.
    allowed : ndarray (L, K) of bool
        Widths each layer may take.
    groups : list of list of int
        Tied layers (each group takes one width).
    extra : list of (ndarray (L, K), float)
        Further ``Σ cost x ≤ limit`` constraints (BOPs).
    """

    omega: np.ndarray
    cost: np.ndarray
    budget: float
    allowed: np.ndarray
    groups: list[list[int]]
    extra: list[tuple[np.ndarray, float]]


def make_problem(
    omega: np.ndarray,
    sizes: np.ndarray,
    widths: Sequence[int],
    budget: float,
    allowed: np.ndarray | None = None,
    groups: Sequence[Sequence[int]] = (),
    extra: Sequence[tuple[np.ndarray, float]] = (),
) -> BitProblem:
    """Validate arrays and build a :class:`BitProblem` (``cost = sizes ⊗ widths``).

    Raises
    ------
    InputError
        On mismatched shapes, non-finite Ω, or an index out of range in ``groups``.
    """
    om = np.asarray(omega, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64).reshape(-1)
    b = np.asarray(widths, dtype=np.float64).reshape(-1)
    if om.shape != (n.size, b.size):
        raise InputError(
            f"omega has shape {om.shape}, expected (layers, widths) = ({n.size}, {b.size})"
        )
    if not np.all(np.isfinite(om)):
        raise InputError("omega contains NaN or infinite values; check the sensitivity table")
    ok = np.ones(om.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    grouped: list[list[int]] = []
    for g in groups:
        idx = [int(i) for i in g]
        if any(not 0 <= i < n.size for i in idx):
            raise InputError(f"tied group {list(g)} has an index outside 0..{n.size - 1}")
        grouped.append(idx)
    return BitProblem(
        om,
        np.outer(n, b),
        float(budget),
        ok,
        grouped,
        [(np.asarray(c, float), float(v)) for c, v in extra],
    )


def solve_milp(problem: BitProblem) -> np.ndarray:
    """Optimal width index per layer by :func:`scipy.optimize.milp`.

    Returns
    -------
    ndarray of shape (L,), int

    Raises
    ------
    PlanError
        If the problem is infeasible.
    """
    L, K = problem.omega.shape
    c = problem.omega.reshape(-1)
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    for i in range(L):
        r = np.zeros(L * K)
        r[i * K : (i + 1) * K] = 1.0
        rows.append(r)
        lo.append(1.0)
        hi.append(1.0)
    for cost, limit in [(problem.cost, problem.budget), *problem.extra]:
        rows.append(cost.reshape(-1))
        lo.append(-np.inf)
        hi.append(limit)
    for g in problem.groups:
        for j in g[1:]:
            for k in range(K):
                r = np.zeros(L * K)
                r[g[0] * K + k] = 1.0
                r[j * K + k] = -1.0
                rows.append(r)
                lo.append(0.0)
                hi.append(0.0)
    upper = problem.allowed.reshape(-1).astype(np.float64)
    res = milp(
        c,
        constraints=LinearConstraint(np.vstack(rows), lo, hi),
        integrality=np.ones(L * K),
        bounds=Bounds(np.zeros(L * K), upper),
    )
    if res.x is None or not res.success:
        raise PlanError(_infeasible_message(problem, str(res.message)))
    x = np.round(res.x).reshape(L, K)
    pick: np.ndarray = np.argmax(x, axis=1)
    return pick


def solve_exhaustive(problem: BitProblem) -> np.ndarray:
    """Optimal width index per layer by enumerating every assignment (ties: first found).

    Raises
    ------
    PlanError
        If no assignment is feasible.
    OptionError
        If there are more than :data:`EXHAUSTIVE_LIMIT` assignments.
    """
    L, K = problem.omega.shape
    leader = list(range(L))
    for g in problem.groups:
        for j in g:
            leader[j] = g[0]
    free = sorted(set(leader))
    if K ** len(free) > EXHAUSTIVE_LIMIT:
        raise OptionError(
            f"exhaustive search over {K}^{len(free)} assignments is too large "
            f"(limit {EXHAUSTIVE_LIMIT}); use solver='milp'"
        )
    best: np.ndarray | None = None
    best_value = np.inf
    rows = np.arange(L)
    for combo in itertools.product(range(K), repeat=len(free)):
        choice = dict(zip(free, combo, strict=True))
        pick = np.array([choice[leader[i]] for i in range(L)])
        if not problem.allowed[rows, pick].all():
            continue
        if problem.cost[rows, pick].sum() > problem.budget * (1 + 1e-12):
            continue
        if any(c[rows, pick].sum() > lim * (1 + 1e-12) for c, lim in problem.extra):
            continue
        value = problem.omega[rows, pick].sum()
        if value < best_value:
            best, best_value = pick, value
    if best is None:
        raise PlanError(_infeasible_message(problem, "no assignment meets the constraints"))
    return best


def _infeasible_message(problem: BitProblem, detail: str) -> str:
    masked = np.where(problem.allowed, problem.cost, np.inf)
    smallest = float(masked.min(axis=1).sum())
    return (
        f"no bit assignment meets the budget of {problem.budget:.6g} bits ({detail}); the "
        f"smallest allowed assignment needs {smallest:.6g} bits: raise the budget or unpin layers"
    )


@dataclass(frozen=True)
class BitPlan:
    """A width per layer, with its predicted damage and size.

    Attributes
    ----------
    bits : dict of str to int
    predicted_damage : float
        Σ Ω of the chosen widths (under the table's rule ``sensitivity``).
    size_bits : int
        Σ n_i b_i.
    avg_bits : float
        ``size_bits / Σ n_i``.
    budget_avg_bits : float
    sensitivity : str
        ``"hessian"``, ``"alpha"`` or ``"uniform"``.
    solver : str
    bops : float or None
        Σ MACs · b_w · b_a, when MACs were given.
    """

    bits: dict[str, int]
    predicted_damage: float
    size_bits: int
    avg_bits: float
    budget_avg_bits: float
    sensitivity: str
    solver: str
    bops: float | None = None


def plan_bits(
    table: SensitivityTable,
    avg_bits: float | None = None,
    size_budget_bits: float | None = None,
    sensitivity: Sensitivity | str = Sensitivity.HESSIAN,
    candidates: Sequence[int] | None = None,
    tied: Sequence[Sequence[str]] = (),
    pinned: Mapping[str, int] | None = None,
    macs: Mapping[str, float] | None = None,
    bops_budget: float | None = None,
    activation_bits: int = 8,
    solver: Solver | str = Solver.MILP,
    omega: np.ndarray | None = None,
) -> BitPlan:
    """Choose a width per layer minimising Σ Ω under a model-size (and optional BOPs) budget.

    Parameters
    ----------
    table : SensitivityTable
        From :func:`~weightspectra.quantize.sensitivity_table`.
    avg_bits : float, optional
        Budget as average bits per weight over the table's layers.
    size_budget_bits : float, optional
        Budget as total bits (give exactly one of the two).
    sensitivity : {"hessian", "alpha"}, default "hessian"
    candidates : sequence of int, optional
        Widths to choose from (a subset of ``table.bits``; default all).
    tied : sequence of sequence of str
        Groups of layers that must share one width.
    pinned : mapping of str to int, optional
        Layers with a fixed width, e.g. ``{"0": 8, "4": 8}`` for first and last layers; a pinned
        width need not be a candidate but must be in ``table.bits``.
    macs : mapping of str to float, optional
        Multiply-accumulates per sample of each layer (:func:`~weightspectra.quantize.count_macs`).
    bops_budget : float, optional
        Upper bound on Σ MACs · b_w · ``activation_bits``; needs ``macs``.
    activation_bits : int, default 8
    solver : {"milp", "exhaustive"}, default "milp"
    omega : ndarray (layers, widths), optional
        Ω to minimise instead of the table's rule, e.g. the measured loss increase of quantising
        each layer alone (:func:`~weightspectra.quantize.measured_damage`). It fixes the 3-bit
        failure of the Hessian rule, whose second-order Ω underestimates 2-bit damage
        (docs/curvature.md, Pitfalls); the plan's ``sensitivity`` is then ``"given"``.

    Returns
    -------
    BitPlan

    Raises
    ------
    OptionError
        On a missing or doubled budget, bad widths, or ``bops_budget`` without ``macs``.
    InputError
        On unknown layer names.
    PlanError
        If the budget cannot be met.
    """
    kind = parse_enum(Sensitivity, sensitivity, "sensitivity")
    how = parse_enum(Solver, solver, "solver")
    names = table.names
    sizes = table.sizes
    if (avg_bits is None) == (size_budget_bits is None):
        raise OptionError("give exactly one of avg_bits or size_budget_bits as the size budget")
    budget = (
        float(avg_bits) * float(sizes.sum())
        if avg_bits is not None
        else float(size_budget_bits or 0)
    )
    if not np.isfinite(budget) or budget <= 0:
        raise OptionError(f"the size budget must be positive, got {avg_bits or size_budget_bits!r}")
    widths = list(table.bits)
    cand = (
        widths if candidates is None else sorted({check_bits(b, "candidates") for b in candidates})
    )
    missing = [b for b in cand if b not in widths]
    if missing:
        raise OptionError(f"candidates {missing} are not widths of the table {widths}; rebuild it")
    index = {n: i for i, n in enumerate(names)}

    def idx(name: str, what: str) -> int:
        if name not in index:
            raise InputError(f"{what}: {name!r} is not a layer of the table; layers: {names}")
        return index[name]

    allowed = np.tile(np.isin(widths, cand), (len(names), 1))
    for name, b in (pinned or {}).items():
        i = idx(name, "pinned")
        if check_bits(b, f"pinned[{name!r}]") not in widths:
            raise OptionError(f"pinned[{name!r}]={b} is not a width of the table {widths}")
        allowed[i] = np.array(widths) == b
    groups = [[idx(n, "tied") for n in g] for g in tied]
    extra = []
    if bops_budget is not None:
        if macs is None:
            raise OptionError("bops_budget needs macs (per-layer MACs); see count_macs")
        m = np.array([float(macs[n]) if n in macs else np.nan for n in names])
        if np.isnan(m).any():
            raise InputError(f"macs lacks layers {[n for n in names if n not in macs]}")
        extra.append((np.outer(m, np.array(widths, float)) * activation_bits, float(bops_budget)))
    if omega is None:
        omega = table.omega(kind)
        label = kind.value
    else:
        omega = np.asarray(omega, dtype=np.float64)
        if omega.shape != (len(names), len(widths)):
            raise InputError(
                f"omega has shape {omega.shape}; it needs one row per layer of the table and one "
                f"column per width: ({len(names)}, {len(widths)}), e.g. from measured_damage"
            )
        label = "given"
    problem = make_problem(omega, sizes, widths, budget, allowed, groups, extra)
    pick = solve_milp(problem) if how is Solver.MILP else solve_exhaustive(problem)
    return _plan_from_pick(
        table,
        pick,
        omega,
        avg_bits_budget=budget / sizes.sum(),
        sensitivity=label,
        solver=how.value,
        macs=macs,
        activation_bits=activation_bits,
    )


def uniform_plan(
    table: SensitivityTable,
    avg_bits: float,
    macs: Mapping[str, float] | None = None,
    activation_bits: int = 8,
) -> BitPlan:
    """The widest uniform width of the table that fits ``avg_bits`` (the baseline at a budget).

    Raises
    ------
    PlanError
        If even the smallest width exceeds the budget.
    """
    fits = [b for b in table.bits if b <= avg_bits + 1e-12]
    if not fits:
        raise PlanError(f"no uniform width of {table.bits} fits {avg_bits} average bits")
    k = table.bits.index(max(fits))
    pick = np.full(len(table.layers), k)
    omega = (
        table.omega(Sensitivity.HESSIAN) if table.has_hessian else table.omega(Sensitivity.ALPHA)
    )
    return _plan_from_pick(
        table,
        pick,
        omega,
        avg_bits_budget=float(avg_bits),
        sensitivity="uniform",
        solver="uniform",
        macs=macs,
        activation_bits=activation_bits,
    )


def _plan_from_pick(
    table: SensitivityTable,
    pick: np.ndarray,
    omega: np.ndarray,
    avg_bits_budget: float,
    sensitivity: str,
    solver: str,
    macs: Mapping[str, float] | None,
    activation_bits: int,
) -> BitPlan:
    widths = np.array(table.bits)[pick]
    sizes = table.sizes
    size = int((sizes * widths).sum())
    bops = None
    if macs is not None and all(n in macs for n in table.names):
        bops = float(
            sum(
                float(macs[n]) * int(b) * activation_bits
                for n, b in zip(table.names, widths, strict=True)
            )
        )
    return BitPlan(
        bits={n: int(b) for n, b in zip(table.names, widths, strict=True)},
        predicted_damage=float(omega[np.arange(len(pick)), pick].sum()),
        size_bits=size,
        avg_bits=size / float(sizes.sum()),
        budget_avg_bits=float(avg_bits_budget),
        sensitivity=sensitivity,
        solver=solver,
        bops=bops,
    )


def count_macs(model: Any, example_input: Any) -> dict[str, float]:
    """Multiply-accumulates per sample of each Linear/Conv layer, from one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
    example_input : Tensor
        A batch of inputs (its first dimension is the batch size).

    Returns
    -------
    dict of str to float
    """
    import torch

    from weightspectra.quantize.fake import quantizable_layers

    layers = quantizable_layers(model)
    out: dict[str, float] = {}
    handles = []
    for name, module in layers.items():

        def hook(mod: Any, inputs: Any, output: Any, name: str = name) -> None:
            per_sample = output.numel() / output.shape[0]
            out[name] = float(per_sample * mod.weight[0].numel())

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return out
