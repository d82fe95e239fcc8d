"""The result of :func:`weightspectra.allocation.damage.spectral_damage`: one row per paired
layer (:class:`LayerDamage`), the layers that could not be paired or compared
(:class:`UnpairedLayer`), and :class:`SpectralDamage`, which holds both and renders them as a
table, a DataFrame and JSON (read back by :meth:`SpectralDamage.from_json`). No computation here:
the numbers come from ``damage.py``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightspectra.errors import InputError
from weightspectra.report.results import encode_value
from weightspectra.report.tables import pipe_table, records_frame

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "JSON_KIND",
    "JSON_VERSION",
    "TABLE_COLUMNS",
    "LayerDamage",
    "SpectralDamage",
    "UnpairedLayer",
]

#: Columns of :meth:`SpectralDamage.table`.
TABLE_COLUMNS = (
    "rank",
    "name",
    "quantization",
    "alpha",
    "alpha_q",
    "delta_alpha",
    "esd_w1",
    "rel_norm_change",
    "delta_log_spectral_norm",
    "delta_stable_rank",
    "traps_appearing",
    "damage",
)
#: ``kind`` tag of the JSON form, and its layout version.
JSON_KIND = "weightspectra.spectral_damage"
JSON_VERSION = 1

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class LayerDamage:
    """What quantisation did to one layer's spectrum (``q``: the quantised model).

    Attributes
    ----------
    name : str
        The layer's name in the full-precision report.
    layer_type : str
    N, M : int
        Larger and smaller side of the matrix.
    quantization : str
        How the quantised source stored the layer (``"Q8_0"``, ``"gptq-4bit-g128"``), ''
        when it was given as floats.
    alpha, alpha_q, delta_alpha : float
        α of the two ESDs and ``alpha_q − alpha`` (NaN where a fit failed).
    delta_log_norm, delta_log_spectral_norm, delta_stable_rank : float
        Differences ``q − full`` of those columns.
    rel_norm_change : float
        ``‖W_q‖_F² / ‖W‖_F² − 1``; for rounding noise uncorrelated with ``W`` it estimates the
        relative squared error ``‖W_q − W‖_F² / ‖W‖_F²``.
    esd_w1 : float
        Wasserstein-1 distance of the two ESDs in ``log10 λ`` (decades).
    traps, traps_q, traps_appearing : int or None
        ``num_traps`` of each report and ``traps_q − traps`` (None unless both were analysed
        with ``randomize=True``).
    damage : float
        The spectral damage score (module docstring); ``inf`` when the quantised matrix could
        not be analysed, NaN when no term is finite.
    damage_terms : int
        How many of the three terms entered ``damage``.
    rank : int
        1 for the most damaged layer; layers with NaN damage come last, in model order.
    note : str
        Why a term is missing or the layer's damage is ``inf`` ('' otherwise).
    """

    name: str
    layer_type: str
    N: int
    M: int
    quantization: str
    alpha: float
    alpha_q: float
    delta_alpha: float
    delta_log_norm: float
    rel_norm_change: float
    delta_log_spectral_norm: float
    delta_stable_rank: float
    esd_w1: float
    traps: int | None
    traps_q: int | None
    traps_appearing: int | None
    damage: float
    damage_terms: int
    rank: int
    note: str = ""

    def row(self) -> dict[str, Any]:
        """The flat record of this layer (field order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class UnpairedLayer:
    """A layer of one report without an analysed partner in the other.

    Attributes
    ----------
    name : str
        Its name (the full report's when it has one there, else the quantised one's).
    in_full, in_quantized : bool
        Whether each report has a row of that name.
    reason : str
        Why it was not compared.
    """

    name: str
    in_full: bool
    in_quantized: bool
    reason: str


@dataclass(frozen=True)
class SpectralDamage:
    """Per-layer spectral damage of a quantised model against its full-precision version.

    Made by :func:`spectral_damage`.

    Attributes
    ----------
    full, quantized : str
        What the two reports analysed.
    rows : tuple of LayerDamage
        One per paired layer, in the full report's model order.
    unpaired : tuple of UnpairedLayer
        Layers of either report that were not compared, each with its reason.
    """

    full: str
    quantized: str
    rows: tuple[LayerDamage, ...]
    unpaired: tuple[UnpairedLayer, ...] = ()

    def __getitem__(self, name: str) -> LayerDamage:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(
            f"no paired layer named {name!r}; paired layers: {[r.name for r in self.rows][:8]}"
        )

    def ranked(self) -> tuple[LayerDamage, ...]:
        """The rows by ``rank`` (most damaged first; NaN damage last, in model order)."""
        return tuple(sorted(self.rows, key=lambda r: r.rank))

    def table(self, columns: Sequence[str] = TABLE_COLUMNS, digits: int = 4) -> str:
        """Markdown pipe table of the ranked rows, then one line per unpaired layer.

        Raises
        ------
        InputError
            If a column is not a field of :class:`LayerDamage`.
        """
        known = [f.name for f in fields(LayerDamage)]
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise InputError(f"unknown columns {unknown}; choose from {known}")
        text = pipe_table([r.row() for r in self.ranked()], list(columns), digits)
        if self.unpaired:
            text += "\n\nNot compared:\n" + "\n".join(
                f"- {u.name}: {u.reason}" for u in self.unpaired
            )
        return text

    def to_pandas(self) -> pd.DataFrame:
        """The rows as a DataFrame (model order, every field of :class:`LayerDamage`).

        Raises
        ------
        MissingDependencyError
            If pandas is not installed.
        """
        frame: pd.DataFrame = records_frame(
            [r.row() for r in self.rows], "SpectralDamage.to_pandas"
        )
        return frame

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (non-finite numbers as ``"NaN"``/``"Infinity"``, like a report's
        JSON); :meth:`from_dict` reads it back."""
        return {
            "kind": JSON_KIND,
            "version": JSON_VERSION,
            "full": self.full,
            "quantized": self.quantized,
            "rows": [{k: encode_value(v) for k, v in r.row().items()} for r in self.rows],
            "unpaired": [{f.name: getattr(u, f.name) for f in fields(u)} for u in self.unpaired],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON (written to ``path`` when given); reload with :meth:`from_json`."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpectralDamage:
        """Rebuild a result from :meth:`to_dict`.

        Raises
        ------
        InputError
            If ``data`` is not a spectral-damage result of a layout this version reads.
        """
        if not isinstance(data, Mapping) or data.get("kind") != JSON_KIND:
            raise InputError(
                f"not a spectral-damage result (expected kind {JSON_KIND!r}); write one with "
                "SpectralDamage.to_json()"
            )
        if int(data.get("version", 0)) > JSON_VERSION:
            raise InputError(
                f"spectral-damage layout {data['version']} is newer than this weightspectra "
                f"reads ({JSON_VERSION}); upgrade weightspectra"
            )
        try:
            return cls(
                full=str(data["full"]),
                quantized=str(data["quantized"]),
                rows=tuple(_decode_row(r) for r in data["rows"]),
                unpaired=tuple(UnpairedLayer(**u) for u in data.get("unpaired", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"a malformed spectral-damage result ({exc!r})") from exc

    @classmethod
    def from_json(cls, source: str | Path) -> SpectralDamage:
        """Load a result saved by :meth:`to_json` (a path, or the JSON text itself).

        Raises
        ------
        InputError
            If the file is missing or is not a spectral-damage result.
        """
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: no such spectral-damage file")
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"not a spectral-damage JSON ({exc})") from exc
        return cls.from_dict(data)


_INT_OR_NONE = {"traps", "traps_q", "traps_appearing"}


def _decode_row(data: Mapping[str, Any]) -> LayerDamage:
    values: dict[str, Any] = {}
    for f in fields(LayerDamage):
        value = data[f.name]
        if f.name in _INT_OR_NONE:
            values[f.name] = None if value is None else int(value)
        elif f.type == "float":
            values[f.name] = _NON_FINITE[value] if isinstance(value, str) else float(value)
        elif f.type == "int":
            values[f.name] = int(value)
        else:
            values[f.name] = str(value)
    return LayerDamage(**values)
