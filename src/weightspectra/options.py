"""Analysis options: enums built from user strings, and one frozen, validated options object."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from weightspectra.enums import (
    Device,
    EigenMethod,
    LayerType,
    Parallel,
    Precision,
    parse_enum,
)
from weightspectra.errors import OptionError

if TYPE_CHECKING:
    from weightspectra.metrics.diagnostics import DiagnosticsConfig

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
        Folder where each layer's result is stored, keyed by the tensor's content and the options
        that affect it; a rerun with the same folder recomputes nothing already stored.
    diagnostics : DiagnosticsConfig, optional
        Random-matrix diagnostics (MP fit, phases, traps, error bars, ...; see
        ``docs/diagnostics.md``). Its fields may also be given directly as options:
        ``Options.from_kwargs(randomize=True, seed=3)``. Default: MP fit and phases on,
        everything costly off.
    """

    layers: tuple[int | str | LayerType, ...] | None = None
    exclude: tuple[int | str | LayerType, ...] = ()
    min_evals: int = 8
    max_evals: int | None = None
    pool: bool = True
    normalize: bool = False
    conv_scaling: bool = True
    split_fused_qkv: bool = False
    eig_method: EigenMethod = EigenMethod.GRAM
    precision: Precision = Precision.FLOAT64
    device: Device = Device.CPU
    workers: int = 1
    parallel: Parallel = Parallel.AUTO
    cache: str | None = None
    diagnostics: DiagnosticsConfig | None = None

    def __post_init__(self) -> None:
        from weightspectra.metrics.diagnostics import DiagnosticsConfig

        set_ = object.__setattr__
        if self.diagnostics is None:
            set_(self, "diagnostics", DiagnosticsConfig())
        elif not isinstance(self.diagnostics, DiagnosticsConfig):
            raise OptionError(
                f"diagnostics must be a DiagnosticsConfig, got {type(self.diagnostics).__name__}; "
                "or pass its fields (randomize=True, seed=1, ...) as options"
            )
        if self.layers is not None:
            set_(self, "layers", _as_selector(self.layers, "layers"))
        set_(self, "exclude", _as_selector(self.exclude, "exclude"))
        set_(self, "eig_method", parse_enum(EigenMethod, self.eig_method, "eig_method"))
        set_(self, "precision", parse_enum(Precision, self.precision, "precision"))
        set_(self, "device", parse_enum(Device, self.device, "device"))
        set_(self, "parallel", parse_enum(Parallel, self.parallel, "parallel"))
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
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
        for name in ("min_evals", "max_evals"):
            value = getattr(self, name)
            if value is None and name == "max_evals":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        if self.max_evals is not None and self.max_evals < self.min_evals:
            raise OptionError(
                f"max_evals={self.max_evals} is below min_evals={self.min_evals}; "
                "raise max_evals or lower min_evals"
            )
        for name in ("pool", "normalize", "conv_scaling", "split_fused_qkv"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Options:
        """Build options from keyword arguments; an unknown keyword fails with the valid ones.

        Fields of :class:`~weightspectra.metrics.diagnostics.DiagnosticsConfig` (``mp_fit``,
        ``randomize``, ``seed``, ``bootstrap``, ...) are accepted here too.
        """
        return cls().replace(**kwargs)

    def replace(self, **changes: Any) -> Options:
        """Return a copy with ``changes`` applied (validated again); diagnostics fields are
        routed into :attr:`diagnostics`."""
        own = {f.name for f in fields(self)}
        diag_fields = {f.name for f in fields(self.diagnostics)} if self.diagnostics else set()
        unknown = sorted(set(changes) - own - diag_fields)
        if unknown:
            raise OptionError(
                f"unknown option(s) {', '.join(unknown)}; valid options are "
                f"{', '.join(sorted(own | diag_fields))}"
            )
        diag = {k: v for k, v in changes.items() if k in diag_fields and k not in own}
        mine = {k: v for k, v in changes.items() if k in own}
        if diag and self.diagnostics is not None:
            mine.setdefault("diagnostics", replace(self.diagnostics, **diag))
        return replace(self, **mine)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready form of the options (used in reports and cache keys)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "diagnostics" and value is not None:
                value = {
                    d.name: (v.value if isinstance(v := getattr(value, d.name), Enum) else v)
                    for d in fields(value)
                }
            elif isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, Enum) else v for v in value]
            out[f.name] = value
        return out


def _as_selector(
    values: Iterable[int | str | LayerType] | int | str | LayerType, option: str
) -> tuple[int | str | LayerType, ...]:
    single = isinstance(values, (int, str, LayerType))
    items: Sequence[Any] = [values] if single else list(values)  # type: ignore[arg-type]
    out: list[int | str | LayerType] = []
    type_names = {t.value for t in LayerType}
    for item in items:
        if isinstance(item, LayerType):
            out.append(item)
        elif isinstance(item, bool):
            raise OptionError(f"{option}: {item!r} is not a layer id, type or name pattern")
        elif isinstance(item, int):
            if item < 0:
                raise OptionError(
                    f"{option}: layer id {item} is negative; use exclude=[{-item}] to drop a layer"
                )
            out.append(item)
        elif isinstance(item, str):
            if item.lower() in type_names:
                out.append(LayerType(item.lower()))
            else:
                try:
                    re.compile(item)
                except re.error as exc:
                    raise OptionError(
                        f"{option}: {item!r} is neither a layer type "
                        f"({', '.join(sorted(type_names))}) nor a valid regular expression: {exc}"
                    ) from exc
                out.append(item)
        else:
            raise OptionError(
                f"{option}: {item!r} ({type(item).__name__}) is not a layer id (int), "
                "layer type or name pattern (str)"
            )
    return tuple(out)


def selects(
    selector: tuple[int | str | LayerType, ...], layer_id: int, name: str, layer_type: LayerType
) -> bool:
    """True if a layer matches any item of ``selector`` (id, type, or regex searched in name)."""
    for item in selector:
        if isinstance(item, LayerType):
            if item is layer_type:
                return True
        elif isinstance(item, int):
            if item == layer_id:
                return True
        elif re.search(item, name):
            return True
    return False
