"""Keras models: ``.keras`` archives, ``.weights.h5`` files, legacy ``.h5`` files, ``keras.Model``.

Files are read with :mod:`h5py` alone: neither TensorFlow nor Keras is imported, and nothing
from a file is ever executed (a ``Lambda`` layer's code in ``config.json`` is not even decoded;
such a layer holds no weights and is left out). An in-memory ``keras.Model`` is read only when
the caller has imported keras (detected through ``sys.modules``).

Every kernel is handed out in weightspectra's (torch's) layout, so the planning of
:mod:`weightspectra.core.layers` and the peer's conventions apply unchanged:

* ``Dense`` kernels ``(in, out)`` become ``(out, in)``;
* ``Conv1D/2D/3D`` kernels ``(k..., in, out)`` become ``(out, in, k...)``, and
  ``Conv*DTranspose`` kernels ``(k..., out, in)`` become torch's ``(in, out, k...)``;
* ``DepthwiseConv1D/2D`` kernels ``(k..., in, multiplier)`` become torch's grouped layout
  ``(in·multiplier, 1, k...)`` (output channel ``i·multiplier + m``), and ``SeparableConv1D/2D``
  give that depthwise kernel and the pointwise ``(1..., in·multiplier, out)`` kernel as a 1×1
  convolution ``(out, in·multiplier, 1...)``: ``<layer>.depthwise_kernel`` and
  ``<layer>.pointwise_kernel``. A depthwise kernel's matrices are single columns: pooled over
  the kernel positions its ESD has one eigenvalue per position, as the same layer in torch;
* ``Embedding`` tables ``(vocab, dim)`` are kept;
* ``EinsumDense`` kernels become ``(out, in)``: the kernel axes whose letters appear in the
  equation's input are the input side, the others the output side (without the equation, the
  first axis is the input); ``MultiHeadAttention``'s query/key/value kernels ``(d, heads,
  head_dim)`` become ``(heads·head_dim, d)`` and its output kernel ``(heads, head_dim, d)``
  becomes ``(d, heads·head_dim)``;
* ``LSTM``/``GRU`` kernels ``(in, k·h)`` and recurrent kernels ``(h, k·h)`` are transposed and
  split per gate: LSTM rows ``[i] [f] [g] [o]`` (Keras' ``c`` is torch's ``g``), GRU rows
  ``[r] [z] [n]`` (Keras packs ``z, r, h``; the blocks are reordered into torch's order so the
  names are right).

Layer names are those Keras shows (``block1_conv1``); a sublayer of a non-model layer is
prefixed by its parent (``multi_head_attention.query``), and an RNN's cell takes its RNN's name.
Variables other than the layer's main kernel (biases, normalisation vectors) are their own
tensors, ``<layer>.<variable>``, which the pipeline skips as not-a-matrix rows.

Where the layer classes come from, in order: ``config.json`` (the ``.keras`` archive) or the
legacy ``model_config`` attribute; else the h5 group names, which Keras 3 derives from the class
(``conv2d_1``) and the layer names (``dense``); else the shapes: two matrices ``(a, k·h)`` and
``(h, k·h)`` are an LSTM (k = 4), a GRU (k = 3) or a simple RNN, a 2-D kernel is a ``Dense``
``(in, out)``, a 3-, 4-, 5-D kernel a convolution in Keras layout. A 2-D table is an
``Embedding`` only when a name says so.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.enums import LayerType
from weightspectra.errors import CorruptFileError, InputError, UnsupportedInputError
from weightspectra.sources.base import Source, TensorEntry, as_path
from weightspectra.sources.keras_h5 import (
    CLASSES,
    CONFIG_MEMBER,
    HDF5_MAGIC,
    MHA_ROLES,
    RECURRENT_CLASSES,
    RESAVE,
    VAR_NAMES,
    WEIGHTS_MEMBER,
    ZIP_MAGIC,
    ConfigLayer,
    H5Store,
    KerasLayer,
    Variable,
    config_map,
    magic,
    read_h5,
)

_CONV_TYPES = {
    1: LayerType.CONV1D,
    2: LayerType.CONV2D,
    3: LayerType.CONV3D,
}
_CONV_TRANSPOSE_TYPES = {
    1: LayerType.CONV_TRANSPOSE1D,
    2: LayerType.CONV_TRANSPOSE2D,
    3: LayerType.CONV_TRANSPOSE3D,
}
# ---------------------------------------------------------------------------------------------
# From layers to typed entries in torch layout.


def _infer_class(layer: KerasLayer) -> str | None:
    """A layer's class from its variables' shapes (see the module docstring)."""
    shapes = [v.shape for v in layer.variables]
    if len(shapes) >= 2 and len(shapes[0]) == 2 and len(shapes[1]) == 2:
        (_, width), (hidden, width2) = shapes[0], shapes[1]
        if width == width2 and hidden:
            return {4 * hidden: "LSTM", 3 * hidden: "GRU", hidden: "SimpleRNN"}.get(width)
    if not shapes:
        return None
    rank = len(shapes[0])
    return {2: "Dense", 3: "Conv1D", 4: "Conv2D", 5: "Conv3D"}.get(rank)


def _einsum_axes(layer: KerasLayer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes of an EinsumDense kernel that are contracted with the input (the 'in' side)."""
    if layer.role:
        return tuple(range(MHA_ROLES[layer.role][1]))
    equation = layer.config.get("equation")
    if isinstance(equation, str) and "->" in equation and "," in equation:
        inputs, _ = equation.replace(" ", "").split("->")
        data, kernel = inputs.split(",")[:2]
        if "." not in kernel and len(kernel) == len(shape):
            contracted = tuple(i for i, letter in enumerate(kernel) if letter in data)
            if 0 < len(contracted) < len(shape):
                return contracted
    return (0,)


def _to_matrix(inputs: tuple[int, ...], rank: int) -> Callable[[np.ndarray], np.ndarray]:
    outputs = tuple(i for i in range(rank) if i not in inputs)

    def transform(t: np.ndarray) -> np.ndarray:
        rows = int(np.prod([t.shape[i] for i in outputs], dtype=np.int64))
        moved: np.ndarray = np.transpose(t, outputs + inputs).reshape(rows, -1)
        return moved

    return transform


def _gru_to_torch(t: np.ndarray) -> np.ndarray:
    """Keras' GRU blocks ``z, r, h`` (columns) as torch's ``r, z, n`` rows."""
    z, r, h = np.split(t, 3, axis=1)
    return np.concatenate([r, z, h], axis=1).T


def _float(
    load: Callable[[], np.ndarray], transform: Callable[[np.ndarray], np.ndarray] | None
) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        data = load()
        if data.dtype == np.float16:
            data = data.astype(np.float32)
        return data if transform is None else transform(data)

    return read


def _dtype_name(dtype: np.dtype[Any]) -> str:
    return "bool" if dtype == np.bool_ else str(dtype)


def _entry(
    key: str,
    variable: Variable,
    shape: tuple[int, ...],
    layer_type: LayerType,
    transform: Callable[[np.ndarray], np.ndarray] | None,
    reason: str = "",
) -> TensorEntry:
    return TensorEntry(
        key=key,
        shape=shape,
        dtype=_dtype_name(variable.dtype),
        load=_float(variable.fetch, transform),
        layer_type=layer_type,
        type_reason=reason,
    )


def _permute(axes: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    def transform(t: np.ndarray) -> np.ndarray:
        moved: np.ndarray = np.transpose(t, axes)
        return moved

    return transform


def _transpose(t: np.ndarray) -> np.ndarray:
    return t.T


def _bad_shape(
    label: str, layer: KerasLayer, variable: Variable, expected: str
) -> CorruptFileError:
    return CorruptFileError(
        f"{label}: {variable.name} of {layer.cls} layer {layer.name!r} ({variable.where}) has "
        f"shape {variable.shape}, but {expected}; the file is corrupt or not saved by Keras: "
        f"{RESAVE}"
    )


def _check_units(label: str, layer: KerasLayer, kernel: Variable, out: int) -> None:
    """The kernel's output size against the config's ``units``/``filters``, and the bias."""
    for option in ("units", "filters"):
        declared = layer.config.get(option)
        if isinstance(declared, int) and declared != out:
            raise _bad_shape(label, layer, kernel, f"the config says {option}={declared}")
    for variable in layer.variables[1:]:
        if variable.name == "bias" and variable.shape != (out,):
            raise _bad_shape(label, layer, variable, f"its kernel has {out} outputs")


def _layer_entries(label: str, layer: KerasLayer) -> list[TensorEntry]:
    known = layer.cls in CLASSES and CLASSES[str(layer.cls)][0] != "container"
    cls = layer.cls if known else _infer_class(layer)
    kind, dims = CLASSES.get(cls, ("", 0)) if cls is not None else ("", 0)
    variables = list(layer.variables)
    names = VAR_NAMES.get(kind, ())
    exact = kind.endswith("_norm")
    fits = len(variables) == len(names) if exact else len(variables) <= len(names)
    if names and fits and all(v.name.isdigit() for v in variables):
        variables = [
            Variable(names[i] if i < len(names) else v.name, v.where, v.shape, v.dtype, v.fetch)
            for i, v in enumerate(variables)
        ]
        layer = KerasLayer(layer.name, layer.where, cls, tuple(variables), layer.config, layer.role)
    else:
        layer = KerasLayer(layer.name, layer.where, cls, tuple(variables), layer.config, layer.role)
    entries: list[TensorEntry] = []
    main = 0
    kernel = variables[0] if variables else None
    if kernel is not None and kind in ("depthwise", "separable"):
        main = 1 if kind == "depthwise" else 2
        entries.extend(_grouped_entries(label, layer, kind, dims))
    elif kernel is not None and kind in ("dense", "embedding", "conv", "conv_transpose", "einsum"):
        main = 1
        shape = kernel.shape
        if kind == "dense":
            if len(shape) != 2:
                raise _bad_shape(label, layer, kernel, "a Dense kernel is (in, out)")
            _check_units(label, layer, kernel, shape[1])
            entries.append(
                _entry(layer.name, kernel, (shape[1], shape[0]), LayerType.DENSE, _transpose)
            )
        elif kind == "embedding":
            if len(shape) != 2:
                raise _bad_shape(label, layer, kernel, "an Embedding table is (vocab, dim)")
            entries.append(_entry(layer.name, kernel, shape, LayerType.EMBEDDING, None))
        elif kind in ("conv", "conv_transpose"):
            if len(shape) != dims + 2:
                raise _bad_shape(label, layer, kernel, f"a {cls} kernel is {dims + 2}-D")
            if kind == "conv":
                _check_units(label, layer, kernel, shape[-1])
            axes = (dims + 1, dims, *range(dims))
            types = _CONV_TYPES if kind == "conv" else _CONV_TRANSPOSE_TYPES
            moved = tuple(shape[a] for a in axes)
            entries.append(_entry(layer.name, kernel, moved, types[dims], _permute(axes)))
        else:
            if len(shape) < 2:
                raise _bad_shape(label, layer, kernel, "an EinsumDense kernel is at least 2-D")
            inputs = _einsum_axes(layer, shape)
            rows = int(np.prod([s for i, s in enumerate(shape) if i not in inputs]))
            cols = int(np.prod([shape[i] for i in inputs]))
            transform = _to_matrix(inputs, len(shape))
            entries.append(_entry(layer.name, kernel, (rows, cols), LayerType.DENSE, transform))
    elif kind in ("lstm", "gru", "rnn") and len(variables) >= 2:
        main = 2
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
        layer_type = {"lstm": LayerType.LSTM, "gru": LayerType.GRU, "rnn": LayerType.DENSE}[kind]
        hidden_shape = variables[1].shape
        for variable in variables[:2]:
            if len(variable.shape) != 2 or len(hidden_shape) != 2:
                raise _bad_shape(label, layer, variable, f"{cls} kernels are 2-D")
            if variable.shape[1] != gates * hidden_shape[0]:
                raise _bad_shape(
                    label, layer, variable, f"{cls} packs {gates}×{hidden_shape[0]} gate columns"
                )
            transform = _gru_to_torch if kind == "gru" else _transpose
            moved = (variable.shape[1], variable.shape[0])
            key = f"{layer.name}.{variable.name}"
            entries.append(_entry(key, variable, moved, layer_type, transform))
    for variable in variables[main:]:
        key = f"{layer.name}.{variable.name}"
        why = (
            f"{variable.name} of the {cls or 'unknown-class'} layer {layer.name!r}: not its "
            "weight matrix"
            if len(variable.shape) >= 2
            else ""
        )
        layer_type = LayerType.UNKNOWN
        entries.append(_entry(key, variable, variable.shape, layer_type, None, why))
    return entries


def _depthwise_to_torch(t: np.ndarray) -> np.ndarray:
    """``(k..., in, multiplier)`` → ``(in·multiplier, 1, k...)``: torch's grouped layout."""
    kernel_axes = t.ndim - 2
    flat = t.reshape(*t.shape[:kernel_axes], -1)  # channel i·multiplier + m, as torch orders
    moved: np.ndarray = np.moveaxis(flat, -1, 0)[:, None]
    return moved


def _grouped_entries(label: str, layer: KerasLayer, kind: str, dims: int) -> list[TensorEntry]:
    """The depthwise (and, for a separable layer, pointwise) kernel of a grouped convolution."""
    variables = layer.variables
    needed = 1 if kind == "depthwise" else 2
    if len(variables) < needed:
        raise _bad_shape(label, layer, variables[0], f"a {layer.cls} layer has {needed} kernel(s)")
    depthwise = variables[0]
    if len(depthwise.shape) != dims + 2:
        raise _bad_shape(label, layer, depthwise, f"a {layer.cls} depthwise kernel is {dims + 2}-D")
    *kernel, channels, multiplier = depthwise.shape
    grouped = (channels * multiplier, 1, *kernel)
    conv_type = _CONV_TYPES[dims]
    if kind == "depthwise":
        bias_of = channels * multiplier
        found = [_entry(layer.name, depthwise, grouped, conv_type, _depthwise_to_torch)]
    else:
        pointwise = variables[1]
        shape = pointwise.shape
        if len(shape) != dims + 2 or any(k != 1 for k in shape[:dims]) or shape[dims] != grouped[0]:
            raise _bad_shape(
                label,
                layer,
                pointwise,
                f"the pointwise kernel is ({', '.join(['1'] * dims)}, {grouped[0]}, filters)",
            )
        _check_units(label, layer, pointwise, shape[-1])
        bias_of = shape[-1]
        axes = (dims + 1, dims, *range(dims))
        moved = tuple(shape[a] for a in axes)
        found = [
            _entry(
                f"{layer.name}.depthwise_kernel", depthwise, grouped, conv_type, _depthwise_to_torch
            ),
            _entry(f"{layer.name}.pointwise_kernel", pointwise, moved, conv_type, _permute(axes)),
        ]
    for variable in variables[needed:]:
        if variable.name == "bias" and variable.shape != (bias_of,):
            raise _bad_shape(label, layer, variable, f"its kernels have {bias_of} outputs")
    return found


def _entries(label: str, layers: Sequence[KerasLayer]) -> tuple[TensorEntry, ...]:
    entries: list[TensorEntry] = []
    seen: dict[str, str] = {}
    for layer in layers:
        if layer.name in seen:  # two layers of one name (nested models): keep both, by path
            layer = KerasLayer(
                layer.where.replace("/", "."),
                layer.where,
                layer.cls,
                layer.variables,
                layer.config,
                layer.role,
            )
        seen[layer.name] = layer.where
        entries.extend(_layer_entries(label, layer))
    return tuple(entries)


# ---------------------------------------------------------------------------------------------
# Opening files.


def open_weights_h5(path: Path) -> Source:
    """Open a Keras 3 ``.weights.h5`` or a legacy Keras ``.h5`` file (shapes only; no weight
    is read until an entry is loaded).

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    Source
        One entry per variable, kernels typed and in torch layout (see the module docstring).

    Raises
    ------
    CorruptFileError
        If the file is not HDF5, is truncated, or a dataset's shape or dtype cannot be a weight.
    UnsupportedInputError
        If it is HDF5 but not saved by Keras.
    InputError
        If it holds no weights.

    Examples
    --------
    >>> import tempfile, h5py, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "m.weights.h5"
    >>> with h5py.File(path, "w") as f:
    ...     f["layers/dense/vars/0"] = np.ones((4, 3))  # a Dense kernel (in, out)
    >>> [(e.key, e.shape, e.layer_type.value) for e in open_weights_h5(path).entries]
    [('dense', (3, 4), 'dense')]
    """
    if magic(path) != HDF5_MAGIC:
        raise CorruptFileError(
            f"{path}: not an HDF5 file (it starts with {magic(path)!r}, HDF5 files with "
            f"{HDF5_MAGIC!r}); pass a Keras .weights.h5 / .h5 file, or {RESAVE}"
        )
    store = H5Store(path)
    return _source(str(path), read_h5(store, {}), [])


def open_keras_archive(path: Path) -> Source:
    """Open a Keras 3 ``.keras`` archive (a zip of ``config.json`` and ``model.weights.h5``).

    ``config.json`` is parsed as JSON only: it gives the layer classes, names and order. Nothing
    from the archive is executed (``Lambda`` layers hold code, never weights: they are left out).
    The weights member is read in place, inside the zip.

    Parameters
    ----------
    path : Path
        The archive.

    Returns
    -------
    Source
        One entry per variable, in the model's order, typed by the archive's config.

    Raises
    ------
    CorruptFileError
        If the file is not a zip, lacks ``model.weights.h5``, or its parts are malformed.
    InputError
        If it holds no weights.
    """
    if magic(path)[:4] != ZIP_MAGIC:
        raise CorruptFileError(
            f"{path}: not a .keras archive (a zip file starts with {ZIP_MAGIC!r}, this one with "
            f"{magic(path)[:4]!r}); the file is truncated or not Keras: {RESAVE}"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            raw_config = zf.read(CONFIG_MEMBER) if CONFIG_MEMBER in members else None
    except zipfile.BadZipFile as exc:
        raise CorruptFileError(
            f"{path}: the .keras zip is unreadable ({exc}); the file is truncated: {RESAVE}"
        ) from exc
    if WEIGHTS_MEMBER not in members:
        raise CorruptFileError(
            f"{path}: the .keras archive has no {WEIGHTS_MEMBER} (members: {sorted(members)}); "
            f"it was saved without weights or is incomplete: {RESAVE}"
        )
    config: dict[str, ConfigLayer] = {}
    lambdas: list[str] = []
    if raw_config is not None:
        try:
            parsed = json.loads(raw_config.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptFileError(
                f"{path}: {CONFIG_MEMBER} is not valid JSON ({exc}); the archive is corrupt: "
                f"{RESAVE}"
            ) from exc
        config, lambdas = config_map(parsed, str(path))
    store = H5Store(path, WEIGHTS_MEMBER)
    return _source(str(path), read_h5(store, config), lambdas)


def _source(description: str, layers: Sequence[KerasLayer], lambdas: Sequence[str]) -> Source:
    entries = _entries(description, layers)
    if not entries:
        code = (
            f" (its Lambda layer(s) {list(lambdas)} hold code, which is never run, not weights)"
            if lambdas
            else ""
        )
        raise InputError(
            f"{description} holds no weights{code}: the model was saved before it was built, "
            "or has no trainable layers; build it (call it on an input) and save again"
        )
    return Source(description=description, entries=entries)


# ---------------------------------------------------------------------------------------------
# In-memory keras.Model.


def _model_layers(model: Any) -> list[KerasLayer]:
    layers: list[KerasLayer] = []

    def fetcher(variable: Any) -> Callable[[], np.ndarray]:
        def fetch() -> np.ndarray:
            return np.asarray(variable.numpy())

        return fetch

    def walk(container: Any) -> None:
        for layer in container.layers:
            if hasattr(layer, "layers") and type(layer).__name__ not in CLASSES:
                walk(layer)  # a nested model
                continue
            cls = type(layer).__name__
            by_owner: dict[str, list[Variable]] = {}
            for variable in layer.weights:
                # the path below the layer itself (Sequential models prefix their own name)
                # (a loaded wrapper's sublayers, e.g. Bidirectional's, lack the wrapper's name)
                parts = str(variable.path).split("/")
                if layer.name in parts[:-1]:
                    parts = parts[parts.index(layer.name) :]
                else:
                    parts = [layer.name, *parts]
                owner, _, name = "/".join(parts).rpartition("/")
                shape = tuple(int(s) for s in variable.shape)
                dtype = np.dtype(str(variable.dtype))
                by_owner.setdefault(owner or layer.name, []).append(
                    Variable(name, str(variable.path), shape, dtype, fetcher(variable))
                )
            config = layer.get_config() if hasattr(layer, "get_config") else {}
            for owner, variables in by_owner.items():
                parts = owner.split("/")
                role, own_cls = "", cls if cls in CLASSES else None
                if len(parts) > 1 and parts[-1].endswith("_cell"):
                    parts = parts[:-1]
                    if cls not in RECURRENT_CLASSES:  # a wrapper (Bidirectional): by shapes
                        own_cls = None
                elif cls == "MultiHeadAttention" and len(parts) > 1:
                    role, own_cls = MHA_ROLES.get(parts[-1], ("", 0))[0], "EinsumDense"
                name = ".".join(parts)
                layers.append(KerasLayer(name, owner, own_cls, tuple(variables), config, role))

    walk(model)
    return layers


def open_keras_model(model: Any) -> Source:
    """Open an in-memory ``keras.Model`` (its variables read one at a time, when analysed).

    Parameters
    ----------
    model : keras.Model
        A built model (any backend); nested models are walked, their layers keeping their names.

    Returns
    -------
    Source
        The same entries, names and layouts as the files Keras saves from this model.

    Raises
    ------
    InputError
        If the model has no weights (not built yet).
    """
    description = f"keras {type(model).__name__} {getattr(model, 'name', '')}".rstrip()
    return _source(description, _model_layers(model), [])


# ---------------------------------------------------------------------------------------------
# Adapters.


_FILE_SUFFIXES = (".h5", ".hdf5", ".keras")


@dataclass(frozen=True)
class KerasSource:
    """Adapter for Keras: ``.keras`` archives, ``.weights.h5`` and legacy ``.h5`` files (h5py
    only, nothing in them executed), and in-memory ``keras.Model`` objects.

    An in-memory model is recognised only when the caller has imported keras (``sys.modules``);
    it comes before the torch module adapter, since with the torch backend a Keras model is
    also an ``nn.Module``. ``h5py`` is a dependency of keras, so one requirement covers both.
    """

    name: str = "keras"
    extra: str | None = "keras"
    requires: str | None = "h5py"

    def can_open(self, model: object) -> bool:
        if isinstance(model, Path):
            return model.is_file() and model.suffix.lower() in _FILE_SUFFIXES
        keras = sys.modules.get("keras")
        model_class = getattr(keras, "Model", None) if keras is not None else None
        return isinstance(model_class, type) and isinstance(model, model_class)

    def open(self, model: object) -> Source:
        if isinstance(model, Path):
            if model.suffix.lower() == ".keras":
                return open_keras_archive(model)
            return open_weights_h5(as_path(model, self.name))
        if not self.can_open(model):
            raise UnsupportedInputError(
                f"the {self.name!r} source opens Keras files and keras.Model objects, got a "
                f"{type(model).__name__}; call weightspectra.open_model(model)"
            )
        return open_keras_model(model)
