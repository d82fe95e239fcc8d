"""The :class:`Options` object: every option of an analysis as one frozen, validated dataclass.

Each field declares, in its metadata (:func:`~weightspectra.options.specs.meta`), its one-line
help and how the command line spells it; the CLI builds its flags from these declarations
(:func:`option_specs`), so an option is added in one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

from weightspectra.enums import (
    BootstrapMethod,
    Device,
    EigenMethod,
    Estimator,
    LayerType,
    Parallel,
    Precision,
    parse_enum,
)
from weightspectra.errors import OptionError
from weightspectra.fitting.fingers import FINGERS_ALPHA_DROP, MAX_FINGERS
from weightspectra.fitting.mp import TW_MULTIPLIER
from weightspectra.fitting.tpl import P_THRESHOLD
from weightspectra.fitting.uncertainty import CI_LEVEL
from weightspectra.options.checks import check, check_farms, check_sizes, check_thresholds, is_int
from weightspectra.options.selectors import as_selector
from weightspectra.options.specs import DIAG, OptionSpec, meta, spec_of

__all__ = ["Options", "option_specs"]


@dataclass(frozen=True)
class Options:
    """Validated, immutable options of one analysis.

    Parameters
    ----------
    layers : sequence of int, str or LayerType, optional
        Keep only these layers: ints are layer ids, strings that name a :class:`LayerType` select
        a type, any other string is a regular expression searched in layer names. ``None`` keeps
        all.
    exclude : sequence of int, str or LayerType, optional
        Drop these layers (same forms as ``layers``).
    min_evals : int, default 8
        Layers with fewer eigenvalues are skipped (reported, not analysed).
    max_evals : int, optional
        Layers with more eigenvalues (``M``) are skipped; ``None`` (default) keeps all.
    pool : bool, default True
        Pool the kernel-position slices of a convolution into one spectrum (the peer's default).
        ``False`` gives one row per slice.
    normalize : bool, default False
        Divide the Gram matrix by N (the theory convention). α is unchanged, every norm changes.
    conv_scaling : bool, default True
        Scale convolution slices as the peer does: by √(1/2) when pooled, by √(rf/2) when not.
    split_fused_qkv : bool, default False
        Split fused attention projections (GPT-2 ``c_attn``, ``query_key_value``) into Q, K, V.
    eig_method : EigenMethod or str, default "gram"
        ``"gram"`` (eigenvalues of the smaller Gram matrix, fast) or ``"svd"`` (exact, slow).
    precision : Precision or str, default "float64"
        Precision of the Gram matrix and its eigenvalues. ``"float32"`` is faster; see the docs
        for its stated accuracy.
    device : Device or str, default "cpu"
        ``"cpu"`` computes with numpy/LAPACK; with torch installed, Gram matrices of order
        ≥ 1536 are diagonalised by torch's MKL instead (about 2× faster; torch is imported only
        then). ``"cuda"`` computes the Gram matrices and their eigenvalues with torch on the GPU
        (an :class:`OptionError` at analysis time if no CUDA device is usable); ``"auto"`` uses
        CUDA when torch sees one and the CPU otherwise.
    estimator : Estimator or str, default "plain"
        ``"farms"`` also fits α to the pooled ESD of submatrices of one fixed aspect ratio taken
        across each matrix (FARMS; the ``*_farms`` columns, metrics.md, "FARMS α"), which removes
        the bias plain α has from the matrix's own aspect ratio. It costs one eigenvalue
        computation per window (``num_farms_windows`` per layer).
    farms_ratio : float, default 1.0
        Aspect ratio (long side / short side) of every FARMS window.
    farms_window : int, optional
        Short side of every FARMS window; default: the largest that fits the matrix (a
        matrix already of ratio ``farms_ratio`` is then its own single window).
    farms_stride : float, default 0.5
        Step between neighbouring windows as a fraction of the window's side; the last window
        of each axis is aligned with the matrix's edge, so every entry is covered.
    workers : int, default 1
        Tensors analysed in parallel. BLAS threads are budgeted so that
        ``workers × BLAS threads ≤ cores``; results are identical and in model order. Memory
        grows with it: up to ``workers`` tensors and their Gram matrices are held at once.
    parallel : Parallel or str, default "auto"
        How ``workers > 1`` run: ``"processes"`` (forked workers; they scale on small matrices
        too; Linux only), ``"threads"`` (scale on large matrices only, where LAPACK calls are
        long), or ``"auto"``: processes where fork is available and spectra are computed on the
        CPU, threads otherwise (a GPU is shared by threads, never forked).
    cache : str or path-like, optional
        Folder where each layer's result is stored, keyed by the tensor's content, the options
        that affect it and the report's columns; a rerun with the same folder recomputes nothing
        already stored.
    mp_fit : bool, default True
        Fit the Marchenko–Pastur law (cost O(n) after the eigenvalues; needed for phases and
        fingers).
    tw_multiplier : float, default 3.0
        Spikes are eigenvalues above λ₊ + tw_multiplier × Tracy–Widom scale.
    mp_max_ks : float, default 0.05
        The MP bulk "fits" when its KS distance is ≤ mp_max_ks + 2/n.
    spike_rel_gap : float, default 0.1
        An eigenvalue above λ₊·(1 + spike_rel_gap) is "well beyond" the edge (a spike, not
        bleeding-out).
    bulk_decay_share : float, default 0.05
        Share of eigenvalues beyond the edge from which the phase is bulk-decay.
    heavy_share : float, default 0.1
        Share beyond the edge from which the MP law no longer describes the ESD (heavy-tailed
        if the power law also fits). Must be ≥ ``bulk_decay_share``.
    rank_collapse_share : float, default 0.1
        Share of numerically zero eigenvalues from which the phase is rank-collapse.
    heavy_alpha_max : float, default 6.0
        Largest α of a heavy-tailed phase.
    over_trained_alpha, under_trained_alpha, spurious_alpha : float, default 2, 6, 8
        α thresholds of the warnings (``1 < over < under ≤ spurious``); they also colour the
        HTML table and shade the plots.
    min_tail : int or None, default None
        Fits with a tail shorter than this are ``spurious-fit`` (None: 10).
    randomize : bool, default False
        Shuffle each matrix (seeded) for correlation traps and ``rand_distance``: one more
        eigenvalue computation per layer, on the same backend and precision. The shuffled ESD is
        kept in each row (``LayerResult.rand_evals``) for plots and the peer facade.
    seed : int, default 0
        Seed of the shuffle and of the bootstrap (≥ 0).
    bootstrap : int, default 0
        Bootstrap replicates for the α interval; 0 turns it off, else ≥ 10.
    bootstrap_method : {"full", "tail"}, default "full"
        Resampling scheme (see :mod:`weightspectra.fitting.uncertainty`).
    ci_level : float, default 0.9
        Nominal coverage of the interval.
    fingers : bool, default False
        Apply the fingers fix (only MP outliers may be removed).
    max_fingers : int, default 10
        Largest number of top eigenvalues the fingers fix tries.
    fingers_alpha_drop : float, default 0.5
        α decrease that makes a removal worthwhile.
    compare_fits : bool, default False
        Fit the truncated power law and run the likelihood-ratio comparisons.
    p_threshold : float, default 0.05
        Significance level of the comparisons.
    detx : bool, default True
        Compute the detX / ERG columns (O(n)).
    collapse_z : float, default 3.5
        Robust z-score below which a layer's log spectral norm is "collapsed" (model level).
    collapse_decades : float, default 0.5
        ... and how many decades below its group's median it must also lie.
    collapse_min_group : int, default 3
        Smallest group (same type and shape) in which scale collapse is judged (≥ 2).

    Raises
    ------
    OptionError
        On any value of the wrong type or out of range; the message says which and the fix.

    Examples
    --------
    >>> Options(randomize=True, seed=3).replace(over_trained_alpha=1.5).over_trained_alpha
    1.5
    """

    layers: tuple[int | str | LayerType, ...] | None = field(
        default=None,
        metadata=meta(
            "keep only these layers: ids, types (dense, conv2d, embedding, ...) or name "
            "regexes, comma-separated; repeatable",
            kind="selector",
            describe=True,
        ),
    )
    exclude: tuple[int | str | LayerType, ...] = field(
        default=(),
        metadata=meta("drop these layers (same forms as --layers)", kind="selector", describe=True),
    )
    min_evals: int = field(
        default=8, metadata=meta("skip smaller ESDs (default: 8)", kind="int", describe=True)
    )
    max_evals: int | None = field(
        default=None, metadata=meta("skip layers with larger M", kind="int", describe=True)
    )
    pool: bool = field(
        default=True,
        metadata=meta(
            "one row per convolution kernel position instead of a pooled ESD",
            kind="bool",
            describe=True,
        ),
    )
    normalize: bool = field(
        default=False,
        metadata=meta(
            "eigenvalues of WᵀW/N (theory convention); changes every norm",
            kind="bool",
            describe=True,
        ),
    )
    conv_scaling: bool = field(
        default=True,
        metadata=meta(
            "do not scale convolution slices by √(1/2) (pooled) or √(rf/2) as the peer does",
            kind="bool",
            describe=True,
        ),
    )
    split_fused_qkv: bool = field(
        default=False,
        metadata=meta(
            "split fused attention projections (GPT-2 c_attn) into Q, K, V",
            kind="bool",
            flag="--split-qkv",
            describe=True,
        ),
    )
    eig_method: EigenMethod = field(
        default=EigenMethod.GRAM,
        metadata=meta("gram (fast, default) or svd (exact, slow)", kind="enum", enum=EigenMethod),
    )
    precision: Precision = field(
        default=Precision.FLOAT64,
        metadata=meta(
            "precision of the eigenvalue computation (default: float64)",
            kind="enum",
            enum=Precision,
        ),
    )
    estimator: Estimator = field(
        default=Estimator.PLAIN,
        metadata=meta(
            "plain α only, or also FARMS α (alpha_farms: fixed-aspect-ratio submatrices)",
            kind="enum",
            enum=Estimator,
        ),
    )
    farms_ratio: float = field(
        default=1.0,
        metadata=meta("aspect ratio long/short of each FARMS window (≥ 1)", kind="float"),
    )
    farms_window: int | None = field(
        default=None,
        metadata=meta(
            "short side of each FARMS window (default: the largest that fits)", kind="int"
        ),
    )
    farms_stride: float = field(
        default=0.5,
        metadata=meta(
            "FARMS window step as a fraction of the window (0.5: half overlap)", kind="float"
        ),
    )
    device: Device = field(
        default=Device.CPU,
        metadata=meta(
            "cpu (numpy), cuda (torch on a GPU) or auto (GPU if present)", kind="enum", enum=Device
        ),
    )
    workers: int = field(
        default=1,
        metadata=meta(
            "tensors analysed in parallel; BLAS threads are split so that workers × threads ≤ "
            "cores (default: 1)",
            kind="int",
        ),
    )
    parallel: Parallel = field(
        default=Parallel.AUTO,
        metadata=meta(
            "how --workers run: forked processes (scale on small layers too; Linux), "
            "threads, or auto (processes where possible; threads with a GPU)",
            kind="enum",
            enum=Parallel,
        ),
    )
    cache: str | None = field(
        default=None,
        metadata=meta(
            "store each layer's result in DIR; a rerun (e.g. after an interruption) "
            "recomputes only what is missing",
            kind="str",
        ),
    )
    mp_fit: bool = field(
        default=True,
        metadata=meta("skip the Marchenko–Pastur fit and the phases", kind="bool", group=DIAG),
    )
    tw_multiplier: float = field(
        default=TW_MULTIPLIER,
        metadata=meta(
            "spikes lie above λ₊ + this × the Tracy–Widom scale", kind="float", group=DIAG
        ),
    )
    mp_max_ks: float = field(
        default=0.05,
        metadata=meta("largest KS distance of an MP bulk that fits", kind="float", group=DIAG),
    )
    spike_rel_gap: float = field(
        default=0.1,
        metadata=meta(
            "eigenvalues above λ₊·(1 + this) are spikes, not bleeding-out",
            kind="float",
            group=DIAG,
        ),
    )
    bulk_decay_share: float = field(
        default=0.05,
        metadata=meta(
            "share beyond the MP edge from which the phase is bulk-decay", kind="float", group=DIAG
        ),
    )
    heavy_share: float = field(
        default=0.10,
        metadata=meta(
            "share beyond the MP edge from which the phase may be heavy-tailed",
            kind="float",
            group=DIAG,
        ),
    )
    rank_collapse_share: float = field(
        default=0.10,
        metadata=meta(
            "share of zero eigenvalues from which the phase is rank-collapse",
            kind="float",
            group=DIAG,
        ),
    )
    heavy_alpha_max: float = field(
        default=6.0, metadata=meta("largest α of a heavy-tailed phase", kind="float", group=DIAG)
    )
    over_trained_alpha: float = field(
        default=2.0,
        metadata=meta(
            "α below this is flagged over-trained (and coloured so)", kind="float", group=DIAG
        ),
    )
    under_trained_alpha: float = field(
        default=6.0,
        metadata=meta(
            "α above this is flagged under-trained (and coloured so)", kind="float", group=DIAG
        ),
    )
    spurious_alpha: float = field(
        default=8.0, metadata=meta("α above this is a spurious fit", kind="float", group=DIAG)
    )
    min_tail: int | None = field(
        default=None,
        metadata=meta("fits with a shorter tail are spurious (default 10)", kind="int", group=DIAG),
    )
    randomize: bool = field(
        default=False,
        metadata=meta(
            "shuffle each matrix (seeded) to find correlation traps; one more eigenvalue "
            "computation per layer",
            kind="bool",
            group=DIAG,
        ),
    )
    seed: int = field(
        default=0, metadata=meta("seed of every random step (default 0)", kind="int", group=DIAG)
    )
    bootstrap: int = field(
        default=0,
        metadata=meta(
            "B bootstrap refits for an α interval (default 0: off; costs B fits per layer)",
            kind="int",
            group=DIAG,
        ),
    )
    bootstrap_method: BootstrapMethod = field(
        default=BootstrapMethod.FULL,
        metadata=meta(
            "resampling scheme of the bootstrap", kind="enum", group=DIAG, enum=BootstrapMethod
        ),
    )
    ci_level: float = field(
        default=CI_LEVEL,
        metadata=meta("coverage of the bootstrap interval", kind="float", group=DIAG),
    )
    fingers: bool = field(
        default=False,
        metadata=meta("try removing outlying top eigenvalues (fingers)", kind="bool", group=DIAG),
    )
    max_fingers: int = field(
        default=MAX_FINGERS,
        metadata=meta("most top eigenvalues the fingers fix tries", kind="int", group=DIAG),
    )
    fingers_alpha_drop: float = field(
        default=FINGERS_ALPHA_DROP,
        metadata=meta(
            "α decrease that makes a fingers removal worthwhile", kind="float", group=DIAG
        ),
    )
    compare_fits: bool = field(
        default=False,
        metadata=meta(
            "likelihood-ratio tests of the power law against exponential, log-normal and "
            "truncated power law",
            kind="bool",
            group=DIAG,
        ),
    )
    p_threshold: float = field(
        default=P_THRESHOLD,
        metadata=meta("significance level of the comparisons", kind="float", group=DIAG),
    )
    detx: bool = field(
        default=True, metadata=meta("skip the detX / ERG columns", kind="bool", group=DIAG)
    )
    collapse_z: float = field(
        default=3.5,
        metadata=meta(
            "robust z-score below which a layer's spectral norm is collapsed",
            kind="float",
            group=DIAG,
        ),
    )
    collapse_decades: float = field(
        default=0.5,
        metadata=meta(
            "decades below its group's median a collapsed layer must lie", kind="float", group=DIAG
        ),
    )
    collapse_min_group: int = field(
        default=3,
        metadata=meta(
            "smallest group of same-shaped layers judged for scale collapse",
            kind="int",
            group=DIAG,
        ),
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.layers is not None:
            set_(self, "layers", as_selector(self.layers, "layers"))
        set_(self, "exclude", as_selector(self.exclude, "exclude"))
        for f in fields(self):
            enum = f.metadata.get("enum")
            if enum is not None:
                set_(self, f.name, parse_enum(enum, getattr(self, f.name), f.name))
        if not is_int(self.workers) or self.workers < 1:
            raise OptionError(
                f"workers must be a positive integer (tensors analysed in parallel), got "
                f"{self.workers!r}; use workers=1 for a serial run"
            )
        if self.cache is not None:
            if not isinstance(self.cache, (str, os.PathLike)) or not str(self.cache).strip():
                raise OptionError(
                    f"cache must be a folder path (str or path-like) or None, got {self.cache!r}"
                )
            set_(self, "cache", os.fspath(self.cache))
        for f in fields(self):
            if f.metadata.get("kind") == "bool":
                value = getattr(self, f.name)
                check(isinstance(value, bool), f.name, "True or False", value)
        check_sizes(self)
        check_thresholds(self)
        check_farms(self)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Options:
        """Build options from keyword arguments; an unknown keyword fails with the valid ones."""
        return cls().replace(**kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Options:
        """Options from :meth:`to_dict`'s form (a report's ``options``); keys this version
        does not know are ignored (a report written by another version)."""
        own = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, (list, tuple)) else v)
            for k, v in data.items()
            if k in own
        }
        return cls(**values)

    def replace(self, **changes: Any) -> Options:
        """Return a copy with ``changes`` applied (validated again).

        Raises
        ------
        OptionError
            On an unknown option (the message lists the valid ones) or an invalid value.
        """
        own = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - own)
        if unknown:
            raise OptionError(
                f"unknown option(s) {', '.join(unknown)}; valid options are "
                f"{', '.join(sorted(own))}"
            )
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready form of the options (used in reports and cache keys)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, Enum) else v for v in value]
            out[f.name] = value
        return out


def option_specs() -> tuple[OptionSpec, ...]:
    """How every option is offered on the command line, in declaration order."""
    return tuple(spec_of(f) for f in fields(Options))
