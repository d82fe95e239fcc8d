"""Re-parametrised weights in state dicts and files: the weight the layer actually uses.

A weight-normed layer does not store its weight: it stores a magnitude ``g`` and a direction
``v``, and computes ``w = g · v / ‖v‖`` (the norm over every axis where ``g`` has size 1). By key:

* ``torch.nn.utils.parametrizations.weight_norm``: ``<module>.parametrizations.weight.original0``
  (g) and ``.original1`` (v), e.g. wav2vec2's positional convolution (``dim=2``);
* the older ``torch.nn.utils.weight_norm``: ``<module>.weight_g`` and ``<module>.weight_v``.

:func:`effective_weights` replaces such a pair by one entry, ``<module>.weight``, that computes
``w`` when loaded, and keeps ``g`` and ``v`` as skipped rows saying what they are. Other
parametrisations (spectral norm, orthogonal, user-defined) store an ``original`` whose effective
value needs the parametrisation's code, which a checkpoint does not hold: those are skipped with
the fix (pass the ``nn.Module``, whose adapter computes the weight), and so is a
parametrisation's own state (``parametrizations.weight.0._u``, ``...0.base``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from weightspectra.enums import LayerType, Reason
from weightspectra.sources.base import TensorEntry

_PARAMETRIZED = re.compile(
    r"^(?:(?P<owner>.*)\.)?parametrizations\.(?P<name>[^.]+)\.original(?P<index>\d*)$"
)
#: A parametrisation's own state (spectral norm's ``_u``/``_v``, orthogonal's ``base``).
_STATE = re.compile(r"^(?:(?P<owner>.*)\.)?parametrizations\.(?P<name>[^.]+)\.\d+\.(?P<what>.+)$")
#: Type of an effective weight by rank: weight norm is used on linear and convolution layers.
_BY_RANK = {3: LayerType.CONV1D, 4: LayerType.CONV2D, 5: LayerType.CONV3D}


def weight_norm_reason(effective: str, part: str, *, stored: bool = False) -> str:
    """Reason of the skipped row of a weight-norm magnitude (``part="g"``) or direction ("v").

    ``stored``: the checkpoint holds the computed ``effective`` weight too (analysed as stored).
    """
    role = "magnitude g" if part == "g" else "direction v"
    how = (
        f"{effective} is in the checkpoint too and is analysed as stored"
        if stored
        else f"analysed as the effective weight {effective} = g·v/‖v‖"
    )
    return f"parametrisation of {effective} (weight norm, {role}); {how}"


def _opaque_reason(effective: str) -> str:
    return (
        f"original of the parametrised {effective}: its effective weight needs the "
        "parametrisation's code (spectral norm, orthogonal, ...), which a checkpoint does not "
        f"hold; pass the nn.Module itself to analyse {effective}"
    )


def _owner_key(owner: str | None, name: str) -> str:
    return f"{owner}.{name}" if owner else name


def _fits(g_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> bool:
    """Whether ``g`` can be a weight-norm magnitude of ``v`` (size 1 or v's size on each axis)."""
    if int(np.prod(g_shape, dtype=np.int64)) == 1:
        return True
    if len(g_shape) != len(v_shape):
        return False
    return all(a in (1, b) for a, b in zip(g_shape, v_shape, strict=True))


def weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The weight ``g · v / ‖v‖``, the norm over every axis where ``g`` has size 1.

    Computed in float64 if either input is float64, else in float32.

    >>> v = np.array([[3.0, 4.0], [0.0, 2.0]])
    >>> weight_norm(np.array([[10.0], [1.0]]), v)
    array([[6., 8.],
           [0., 1.]])
    """
    work = np.dtype(np.float64 if np.float64 in (g.dtype, v.dtype) else np.float32)
    g_w: np.ndarray = np.asarray(g, dtype=work)
    v_w: np.ndarray = np.asarray(v, dtype=work)
    if g_w.size == 1:
        axes: tuple[int, ...] = tuple(range(v_w.ndim))
        g_w = g_w.reshape(())
    else:
        axes = tuple(i for i, n in enumerate(g_w.shape) if n == 1)
    norm = np.sqrt(np.sum(np.square(v_w), axis=axes, keepdims=True))
    out: np.ndarray = g_w * (v_w / norm)
    return out


def _effective_entry(key: str, g: TensorEntry, v: TensorEntry) -> TensorEntry:
    def load() -> np.ndarray:
        return weight_norm(g.load(), v.load())

    def prefetch() -> None:
        g.prefetch()
        v.prefetch()

    def release() -> None:
        g.release()
        v.release()

    return TensorEntry(
        key=key,
        shape=v.shape,
        dtype="float64" if "float64" in (g.dtype, v.dtype) else "float32",
        load=load,
        layer_type=_BY_RANK.get(len(v.shape)),
        prefetch_hook=prefetch,
        release_hook=release,
    )


def _skipped(entry: TensorEntry, reason: str) -> TensorEntry:
    return replace(
        entry, layer_type=LayerType.UNKNOWN, type_reason=reason, type_code=Reason.PARAMETRIZATION
    )


def _pairs(untyped: dict[str, TensorEntry]) -> list[tuple[str, TensorEntry, TensorEntry]]:
    """(effective key, g, v) of every weight-norm pair among the untyped entries, by naming."""
    pairs = []
    for key, entry in untyped.items():
        found = _PARAMETRIZED.match(key)
        if found is not None and found.group("index") == "0":
            prefix = key[: -len("0")]
            other = untyped.get(prefix + "1")
            if other is not None and prefix + "2" not in untyped:
                pairs.append((_owner_key(found.group("owner"), found.group("name")), entry, other))
        elif found is None and key.endswith("_g"):
            other = untyped.get(key[: -len("_g")] + "_v")
            if other is not None:
                pairs.append((key[: -len("_g")], entry, other))
    return [
        (eff, g, v) for eff, g, v in pairs if g.is_float and v.is_float and _fits(g.shape, v.shape)
    ]


def effective_weights(entries: Sequence[TensorEntry]) -> list[TensorEntry]:
    """Replace weight-norm pairs by their effective weight; mark parametrisation originals.

    Only untyped entries (``layer_type is None``) are looked at: a module adapter has already
    typed what it computed itself.

    Parameters
    ----------
    entries : sequence of TensorEntry
        A source's tensors, in model order.

    Returns
    -------
    list of TensorEntry
        The same entries, with each weight-norm pair's effective weight ``<module>.weight``
        placed before its first part, and the parts (and opaque parametrisation originals)
        typed :attr:`LayerType.UNKNOWN` with their reason.
    """
    untyped = {e.key: e for e in entries if e.layer_type is None}
    position = {e.key: i for i, e in enumerate(entries)}
    changed: dict[str, TensorEntry] = {}
    before: dict[str, TensorEntry] = {}
    for eff, g, v in _pairs(untyped):
        if eff in position:  # the checkpoint holds the computed weight too: that one is analysed
            changed[g.key] = _skipped(g, weight_norm_reason(eff, "g", stored=True))
            changed[v.key] = _skipped(v, weight_norm_reason(eff, "v", stored=True))
            continue
        changed[g.key] = _skipped(g, weight_norm_reason(eff, "g"))
        changed[v.key] = _skipped(v, weight_norm_reason(eff, "v"))
        first = g if position[g.key] < position[v.key] else v
        before[first.key] = _effective_entry(eff, g, v)
    for key, entry in untyped.items():
        state = _STATE.match(key)
        if state is not None:
            eff = _owner_key(state.group("owner"), state.group("name"))
            reason = f"state of the parametrisation of {eff} ({state.group('what')}), not a weight"
            changed[key] = _skipped(entry, reason)
            continue
        found = _PARAMETRIZED.match(key)
        if found is not None and key not in changed:
            eff = _owner_key(found.group("owner"), found.group("name"))
            changed[key] = _skipped(entry, _opaque_reason(eff))
        elif key.endswith("_orig") and key not in changed:  # the older spectral_norm
            base = key[: -len("_orig")]
            if base + "_u" in untyped and base + "_v" in untyped:
                changed[key] = _skipped(entry, _opaque_reason(base))
    out = []
    for entry in entries:
        if entry.key in before:
            out.append(before[entry.key])
        out.append(changed.get(entry.key, entry))
    return out
