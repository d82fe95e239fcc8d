"""The settings and tensor shapes of GPTQ and AWQ layers, checked before anything is read.

:func:`read_config` reads what a checkpoint declares (bits, group size, ``desc_act``, ``sym``,
checkpoint format); :func:`layout` checks one layer's ``qweight``/``qzeros``/``scales``/``g_idx``
shapes against each other and against the config, inferring what the config does not say, and
raises one message naming the layer, its shapes and the fix when they do not fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from weightspectra.errors import CorruptFileError, InputError
from weightspectra.sources.quantized_unpack import SUPPORTED_BITS

#: The tensors of one quantised layer, by suffix of ``<layer>``.
PARTS = ("qweight", "qzeros", "scales", "g_idx")
#: Files that may hold the quantisation settings, in the order they are asked.
CONFIG_FILES = ("quantize_config.json", "config.json", "quant_config.json")


class QuantMethod(str, Enum):
    """The packing convention of a quantised checkpoint."""

    GPTQ = "gptq"
    AWQ = "awq"


@dataclass(frozen=True)
class QuantConfig:
    """Quantisation settings a checkpoint declares (``None``: not declared, use the shapes).

    Attributes
    ----------
    method : QuantMethod or None
    bits : int or None
    group_size : int or None
        ``-1`` means one group over the whole input.
    desc_act : bool or None
        GPTQ act-order: the groups follow ``g_idx`` instead of the input order.
    sym : bool or None
        Symmetric quantisation (informative only: the zeros are stored either way).
    checkpoint_format : str
        ``"gptq"`` (zeros stored minus one) or ``"gptq_v2"`` (as they are); ``"gemm"`` for AWQ.
    origin : str
        The file the settings came from, for messages (``""`` when none).
    """

    method: QuantMethod | None = None
    bits: int | None = None
    group_size: int | None = None
    desc_act: bool | None = None
    sym: bool | None = None
    checkpoint_format: str = ""
    origin: str = ""


@dataclass(frozen=True)
class QuantLayout:
    """How one quantised layer is stored, from its tensors' shapes and the checkpoint config.

    Attributes
    ----------
    layer : str
        The layer's module path (the prefix of ``.qweight``).
    method : QuantMethod
    bits : int
    group_size : int
        Input features per group; ``-1`` for one group over the whole input.
    in_features, out_features : int
        The dequantised weight is (out_features, in_features).
    groups : int
        Rows of ``scales`` and ``qzeros``.
    zero_offset : int
        Added to each stored zero point (1 for the GPTQ ``"gptq"`` format, else 0).
    parameters : tuple of str
        The keys folded into the dequantised weight (``qweight``, ``qzeros``, ``scales``,
        ``g_idx`` when present).
    desc_act : bool, default False
        The config declares GPTQ act-order (the groups follow ``g_idx``). AutoGPTQ writes a
        ``g_idx`` without act-order too, so its presence alone does not say so.
    """

    layer: str
    method: QuantMethod
    bits: int
    group_size: int
    in_features: int
    out_features: int
    groups: int
    zero_offset: int
    parameters: tuple[str, ...]
    desc_act: bool = False

    @property
    def label(self) -> str:
        """Short description for the ``quantization`` column, e.g. ``"gptq-4bit-g128"``.

        >>> QuantLayout("fc", QuantMethod.AWQ, 4, 128, 256, 64, 2, 0, ()).label
        'awq-4bit-g128'
        """
        group = "gall" if self.group_size == -1 else f"g{self.group_size}"
        act = "-act" if self.desc_act else ""
        return f"{self.method.value}-{self.bits}bit-{group}{act}"

    @property
    def has_g_idx(self) -> bool:
        """Whether the layer stores ``g_idx`` (GPTQ, e.g. with ``desc_act``)."""
        return f"{self.layer}.g_idx" in self.parameters


def read_config(path: Path) -> QuantConfig:
    """The quantisation settings beside ``path`` (a checkpoint file or folder).

    Asks ``quantize_config.json`` (AutoGPTQ, GPTQModel), then ``config.json``'s
    ``quantization_config`` (transformers), then ``quant_config.json`` (older AutoAWQ, with
    ``w_bit`` and ``q_group_size``). No such file gives an empty :class:`QuantConfig`.

    Raises
    ------
    InputError
        If a settings file is unreadable, or declares bits or a group size of the wrong kind.
    """
    folder = path if path.is_dir() else path.parent
    for name in CONFIG_FILES:
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{file}: not valid JSON ({exc}); fix or remove the file") from exc
        if name == "config.json":
            data = data.get("quantization_config") if isinstance(data, dict) else None
            if not isinstance(data, dict):
                continue
        if isinstance(data, dict):
            return _parse_config(data, str(file))
    return QuantConfig()


def _parse_config(data: Mapping[str, Any], origin: str) -> QuantConfig:
    method_name = str(data.get("quant_method", "")).lower()
    method = {"gptq": QuantMethod.GPTQ, "awq": QuantMethod.AWQ}.get(method_name)
    if method is None and "w_bit" in data:
        method = QuantMethod.AWQ
    bits = _int_setting(data, ("bits", "w_bit"), origin)
    group_size = _int_setting(data, ("group_size", "q_group_size"), origin)
    # AutoGPTQ writes checkpoint_format, GPTQModel format, AutoAWQ version.
    fmt = data.get("checkpoint_format") or data.get("format") or data.get("version") or ""
    return QuantConfig(
        method=method,
        bits=bits,
        group_size=group_size,
        desc_act=bool(data["desc_act"]) if "desc_act" in data else None,
        sym=bool(data["sym"]) if "sym" in data else None,
        checkpoint_format=str(fmt or "").lower(),
        origin=origin,
    )


def _int_setting(data: Mapping[str, Any], names: Sequence[str], origin: str) -> int | None:
    for name in names:
        if name in data and data[name] is not None:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{origin}: {name}={value!r} must be an integer")
            return value
    return None


def layout(
    layer: str, shapes: Mapping[str, tuple[int, ...]], config: QuantConfig | None = None
) -> QuantLayout:
    """Check the shapes of one quantised layer against each other and the config.

    Parameters
    ----------
    layer : str
        The layer's module path.
    shapes : mapping
        Shape of each tensor of the layer, by part name (``"qweight"``, ``"qzeros"``,
        ``"scales"``, ``"g_idx"``).
    config : QuantConfig, optional
        Declared settings; ``None`` infers everything from the shapes.

    Returns
    -------
    QuantLayout

    Raises
    ------
    CorruptFileError
        If a part is missing or the shapes do not fit together.
    InputError
        If the bits, group size or checkpoint format are unsupported or disagree with the shapes.

    Examples
    --------
    >>> shapes = {"qweight": (32, 64), "qzeros": (2, 8), "scales": (2, 64)}
    >>> layout("fc", shapes).label
    'gptq-4bit-g128'
    """
    config = config or QuantConfig()
    given = ", ".join(f"{p} {tuple(s)}" for p, s in shapes.items())
    where = f"quantised layer {layer!r} ({given})"
    for part in ("qzeros", "scales"):
        if part not in shapes:
            raise CorruptFileError(
                f"{where} has no {layer}.{part}: a GPTQ/AWQ layer needs qweight, qzeros and "
                "scales; the checkpoint is incomplete (re-download or re-save it)"
            )
    qw, qz, sc = shapes["qweight"], shapes["qzeros"], shapes["scales"]
    if len(qw) != 2 or len(qz) != 2 or len(sc) != 2:
        raise CorruptFileError(f"{where}: qweight, qzeros and scales must all be 2-D")
    groups, out = sc
    if qz[0] != groups:
        raise CorruptFileError(
            f"{where}: qzeros has {qz[0]} groups but scales {groups}; they must match "
            "(the checkpoint is corrupt: re-save it)"
        )
    method = config.method or _guess_method(where, qw, qz, out)
    if method is QuantMethod.GPTQ:
        bits = _bits(where, config, 32 * qz[1], out, "qzeros columns · 32 / scales columns")
        if qw[1] != out:
            raise CorruptFileError(
                f"{where}: GPTQ qweight must be (in·bits/32, out) with out = {out} scales "
                f"columns, got {qw[1]} columns; the tensors are not a GPTQ layer (AWQ packs "
                "qweight along out: set quant_method 'awq' in its config)"
            )
        n_in = _whole(where, 32 * qw[0], bits, "qweight rows · 32 / bits")
    else:
        bits = _bits(where, config, 32 * qw[1], out, "qweight columns · 32 / scales columns")
        if bits != 4:
            raise InputError(
                f"{where}: AWQ {bits}-bit packing is not supported (AutoAWQ's interleaved GEMM "
                "layout is 4-bit); re-quantise to 4 bits or convert to GPTQ"
            )
        if qz[1] != qw[1]:
            raise CorruptFileError(
                f"{where}: AWQ qzeros must have as many columns as qweight ({qw[1]}), got "
                f"{qz[1]}; the checkpoint is corrupt (re-save it)"
            )
        if config.checkpoint_format not in ("", "gemm"):
            raise InputError(
                f"{where}: AWQ version {config.checkpoint_format!r} ({config.origin}) is not "
                "supported, only 'gemm'; re-export the model with AutoAWQ's GEMM version"
            )
        n_in = qw[0]
    if out * bits % 32 or 32 * qz[1] != out * bits:
        raise CorruptFileError(
            f"{where}: qzeros must have out·bits/32 = {out * bits / 32:g} columns, got {qz[1]}"
        )
    group_size = _group_size(where, config, n_in, groups)
    g_idx = shapes.get("g_idx")
    if g_idx is not None and (method is QuantMethod.AWQ or tuple(g_idx) != (n_in,)):
        raise CorruptFileError(
            f"{where}: g_idx must be ({n_in},), one group per input feature of a GPTQ layer"
        )
    if g_idx is None and config.desc_act:
        raise CorruptFileError(
            f"{where}: {config.origin} sets desc_act but the layer has no {layer}.g_idx; the "
            "checkpoint is incomplete (re-save it with g_idx)"
        )
    return QuantLayout(
        layer=layer,
        method=method,
        bits=bits,
        group_size=group_size,
        in_features=n_in,
        out_features=out,
        groups=groups,
        zero_offset=_zero_offset(where, method, config),
        desc_act=bool(config.desc_act) and method is QuantMethod.GPTQ,
        parameters=tuple(f"{layer}.{p}" for p in PARTS if p in shapes),
    )


def _guess_method(where: str, qw: tuple[int, ...], qz: tuple[int, ...], out: int) -> QuantMethod:
    if qw[1] == out:
        return QuantMethod.GPTQ
    if qw[1] == qz[1] and qw[1] < out:
        return QuantMethod.AWQ
    raise CorruptFileError(
        f"{where}: qweight fits neither GPTQ (in·bits/32, out={out}) nor AWQ (in, "
        f"out·bits/32 = qzeros columns {qz[1]}); the checkpoint is corrupt or not GPTQ/AWQ "
        "(re-download or re-save it)"
    )


def _bits(where: str, config: QuantConfig, num: int, den: int, how: str) -> int:
    inferred = num // den if den and num % den == 0 else None
    if config.bits is not None:
        if config.bits not in SUPPORTED_BITS:
            raise InputError(
                f"{where}: bits={config.bits} ({config.origin}) is not supported; weightspectra "
                f"unpacks {SUPPORTED_BITS}-bit GPTQ/AWQ codes"
            )
        if inferred != config.bits:
            raise CorruptFileError(
                f"{where}: {config.origin} says bits={config.bits} but the shapes give "
                f"{how} = {num / den:g}; fix the config or the checkpoint"
            )
        return config.bits
    if inferred not in SUPPORTED_BITS:
        raise InputError(
            f"{where}: the shapes give {how} = {num / den:g} bits, not one of {SUPPORTED_BITS}; "
            "put the quantisation settings (bits, group_size) in quantize_config.json"
        )
    return int(inferred)


def _whole(where: str, num: int, den: int, how: str) -> int:
    if num % den:
        raise CorruptFileError(f"{where}: {how} = {num / den:g} is not a whole number")
    return num // den


def _group_size(where: str, config: QuantConfig, n_in: int, groups: int) -> int:
    size = config.group_size
    if size is None:  # from the shapes
        if n_in % groups:
            raise CorruptFileError(
                f"{where}: {groups} groups do not divide the {n_in} input features; put "
                "group_size in quantize_config.json"
            )
        return -1 if groups == 1 else n_in // groups
    if size == -1 or size == n_in:
        expected = 1
    elif size <= 0 or n_in % size:
        raise InputError(
            f"{where}: group_size={size} ({config.origin}) does not divide the {n_in} input "
            "features; use the group size the model was quantised with (a divisor of in, or -1)"
        )
    else:
        expected = n_in // size
    if groups != expected:
        raise CorruptFileError(
            f"{where}: group_size={size} ({config.origin}) needs {expected} groups of scales "
            f"and qzeros, got {groups}; fix group_size in the config"
        )
    return size


def _zero_offset(where: str, method: QuantMethod, config: QuantConfig) -> int:
    if method is QuantMethod.AWQ:
        return 0
    fmt = config.checkpoint_format
    if fmt in ("", "gptq"):
        return 1
    if fmt == "gptq_v2":
        return 0
    raise InputError(
        f"{where}: GPTQ checkpoint_format {fmt!r} ({config.origin}) is not supported, only "
        "'gptq' (AutoGPTQ, zeros stored minus one) and 'gptq_v2' (GPTQModel); re-save the "
        "model in the 'gptq' format"
    )
