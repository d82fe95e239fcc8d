"""Reading Keras' HDF5 layouts with h5py alone: from a file to layers and their variables.

Three layouts, each turned into :class:`KerasLayer` records (a layer's display name, its class
when known, its variables with shapes, dtypes and lazy readers); :mod:`weightspectra.sources.keras`
turns those into typed tensors in torch layout.

* Keras 3 weights (``model.weights.h5`` inside a ``.keras`` zip, or a ``.weights.h5`` file):
  a model's ``layers`` list is saved as ``layers/<snake class>[_<n>]`` (counted per class in list
  order), other sublayers under their attribute name (``cell``, ``query_dense``, ``block1``),
  each layer's variables as ``vars/0, vars/1, ...`` with the layer's name in the ``vars``
  group's ``name`` attribute (older files lack it: the group name is used).
* Legacy TF/Keras ``.h5`` (``model.save('x.h5')`` or ``save_weights``): ``[model_weights/]``
  holds a ``layer_names`` attribute and one group per layer whose ``weight_names`` attribute
  names its datasets (``lstm/lstm_cell/kernel:0``); the ``model_config`` attribute, when there,
  gives the classes.
* ``config.json`` of a ``.keras`` archive: parsed as JSON only, to map each ``layers/...`` group
  to its class, name and config (units, filters, EinsumDense equation).

Every dataset's dtype is checked, and a contiguous dataset's bytes must lie inside the file
(a truncated file, or a dataset claiming a larger shape than it stores, is an error naming it).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weightspectra.errors import CorruptFileError, UnsupportedInputError, WeightSpectraError
from weightspectra.sources.base import natural_key

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
#: The member of a ``.keras`` archive that holds the weights.
WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
RESAVE = "re-save it from Keras (model.save('model.keras') or model.save_weights('x.weights.h5'))"

#: Keras class name -> (kind, spatial dims); kinds are handled in :func:`_layer_entries`.
CLASSES: dict[str, tuple[str, int]] = {
    "Dense": ("dense", 0),
    "Embedding": ("embedding", 0),
    "EinsumDense": ("einsum", 0),
    "Conv1D": ("conv", 1),
    "Conv2D": ("conv", 2),
    "Conv3D": ("conv", 3),
    "Conv1DTranspose": ("conv_transpose", 1),
    "Conv2DTranspose": ("conv_transpose", 2),
    "Conv3DTranspose": ("conv_transpose", 3),
    "DepthwiseConv1D": ("depthwise", 1),
    "DepthwiseConv2D": ("depthwise", 2),
    "SeparableConv1D": ("separable", 1),
    "SeparableConv2D": ("separable", 2),
    "LSTM": ("lstm", 0),
    "GRU": ("gru", 0),
    "SimpleRNN": ("rnn", 0),
    "MultiHeadAttention": ("container", 0),
    "Bidirectional": ("container", 0),
    "BatchNormalization": ("batch_norm", 0),
    "LayerNormalization": ("layer_norm", 0),
}
#: Variable names of the classes whose Keras 3 ``vars/<i>`` order is fixed.
VAR_NAMES: dict[str, tuple[str, ...]] = {
    "dense": ("kernel", "bias"),
    "einsum": ("kernel", "bias"),
    "conv": ("kernel", "bias"),
    "conv_transpose": ("kernel", "bias"),
    "depthwise": ("kernel", "bias"),
    "separable": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "embedding": ("embeddings",),
    "lstm": ("kernel", "recurrent_kernel", "bias"),
    "gru": ("kernel", "recurrent_kernel", "bias"),
    "rnn": ("kernel", "recurrent_kernel", "bias"),
    # only when every variable is there (scale and center on): else their order is ambiguous
    "batch_norm": ("gamma", "beta", "moving_mean", "moving_variance"),
    "layer_norm": ("gamma", "beta"),
}
_MODEL_CLASSES = {"Sequential", "Functional", "Model"}
RECURRENT_CLASSES = {"LSTM", "GRU", "SimpleRNN"}
#: MultiHeadAttention's sublayers: the name Keras gives each, and its kernel's input axes.
MHA_ROLES: dict[str, tuple[str, int]] = {
    "query": ("query", 1),
    "key": ("key", 1),
    "value": ("value", 1),
    "attention_output": ("attention_output", 2),
    "output": ("attention_output", 2),
}
#: Query, key, value, output: the order MultiHeadAttention's sublayers are shown in.
_MHA_ORDER = {"query_dense": 0, "key_dense": 1, "value_dense": 2, "output_dense": 3}
_COUNTER = re.compile(r"_\d+$")


def snake_case(class_name: str) -> str:
    """The group name Keras 3 gives a layer of class ``class_name`` (before its counter).

    >>> snake_case("Conv2D"), snake_case("MultiHeadAttention"), snake_case("LSTM")
    ('conv2d', 'multi_head_attention', 'lstm')
    """
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


_SNAKE_CLASSES = {snake_case(c): c for c in CLASSES}


def _class_from_name(name: str) -> str | None:
    """A Keras class from a group or auto-generated layer name (``conv2d_3`` -> ``Conv2D``)."""
    base = _COUNTER.sub("", name)
    # Bidirectional's halves are named forward_<rnn> and backward_<rnn>
    for side in ("forward_", "backward_"):
        base = base.removeprefix(side)
    return _SNAKE_CLASSES.get(base)


@dataclass(frozen=True)
class Variable:
    """One stored variable of a layer: its name, shape, dtype and a reader."""

    name: str
    where: str  # the dataset's path (or variable path), for messages
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fetch: Callable[[], np.ndarray]


@dataclass(frozen=True)
class KerasLayer:
    """A layer's variables, with what is known of its class."""

    name: str
    where: str
    cls: str | None
    variables: tuple[Variable, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    role: str = ""  # a MultiHeadAttention sublayer: query, key, value, attention_output


# ---------------------------------------------------------------------------------------------
# Reading stores: a path, or a member of a .keras archive.


def _h5py() -> Any:
    import h5py  # type: ignore[import-untyped]  # the keras extra; h5py ships no type hints

    return h5py


@dataclass(frozen=True)
class H5Store:
    """Where an HDF5 weights file lives: a path, or the weights member of a ``.keras`` zip."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path}" if self.member is None else f"{self.path} (member {self.member})"

    @contextmanager
    def open(self) -> Iterator[Any]:
        h5py = _h5py()
        try:
            if self.member is None:
                with h5py.File(self.path, "r") as f:
                    yield f
            else:
                with (
                    zipfile.ZipFile(self.path) as zf,
                    zf.open(self.member) as raw,
                    h5py.File(raw, "r") as f,
                ):
                    yield f
        except WeightSpectraError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
            # h5py reports a damaged object (a lying dataspace, a broken B-tree) as any of these
            raise CorruptFileError(
                f"{self.label}: cannot be read as HDF5 ({exc}); the file is truncated or "
                f"corrupt: {RESAVE}"
            ) from exc

    def size(self) -> int:
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.member).file_size

    def reader(self, dataset: str) -> Callable[[], np.ndarray]:
        def fetch() -> np.ndarray:
            with self.open() as f:
                try:
                    data = np.asarray(f[dataset][()])
                except OSError as exc:
                    raise CorruptFileError(
                        f"{self.label}: dataset {dataset!r} cannot be read ({exc}); the file is "
                        f"truncated or corrupt: {RESAVE}"
                    ) from exc
            return data

        return fetch


def _check_dataset(store: H5Store, ds: Any, file_size: int) -> np.dtype[Any]:
    """A dataset's dtype, after checking its stored bytes fit the file (truncation, lies)."""
    dtype: np.dtype[Any] = ds.dtype
    if dtype.kind not in "fiub":
        raise CorruptFileError(
            f"{store.label}: dataset {ds.name!r} stores {dtype} values, not numbers; a Keras "
            f"weight is a float array: {RESAVE}"
        )
    expected = int(np.prod(ds.shape, dtype=np.int64)) * dtype.itemsize
    offset = ds.id.get_offset()
    if offset is not None:  # contiguous storage: its bytes must be inside the file
        stored = ds.id.get_storage_size()
        if stored < expected or offset + expected > file_size:
            raise CorruptFileError(
                f"{store.label}: dataset {ds.name!r} claims shape {tuple(ds.shape)} {dtype} "
                f"({expected} bytes at offset {offset}) but the file holds {stored} bytes of it "
                f"in {file_size}; the file is truncated or corrupt: {RESAVE}"
            )
    return dtype


def _variable(store: H5Store, ds: Any, name: str, file_size: int) -> Variable:
    dtype = _check_dataset(store, ds, file_size)
    return Variable(
        name=name,
        where=str(ds.name),
        shape=tuple(int(s) for s in ds.shape),
        dtype=dtype,
        fetch=store.reader(str(ds.name)),
    )


# ---------------------------------------------------------------------------------------------
# Keras 3 weights files (model.weights.h5): layers/<group>/vars/<i>, attribute groups.


@dataclass(frozen=True)
class ConfigLayer:
    cls: str
    name: str
    config: Mapping[str, Any]


def config_map(config: Any, label: str) -> tuple[dict[str, ConfigLayer], list[str]]:
    """The classes of a Keras 3 ``config.json``, by the h5 group path Keras saves them under.

    Keras 3 saves a model's ``layers`` list as ``layers/<snake class>[_<n>]``, counted per class
    in list order. Returns the map and the names of the ``Lambda`` layers (never decoded).
    """
    found: dict[str, ConfigLayer] = {}
    lambdas: list[str] = []

    def walk(model: Mapping[str, Any], prefix: str) -> None:
        inner = model.get("config")
        items = inner.get("layers") if isinstance(inner, Mapping) else None
        if not isinstance(items, list):
            return
        used: dict[str, int] = {}
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("class_name"), str):
                raise CorruptFileError(
                    f"{label}: a layer of config.json has no class_name; the archive is corrupt: "
                    f"{RESAVE}"
                )
            cls = str(item["class_name"])
            layer_config = item.get("config")
            layer_config = layer_config if isinstance(layer_config, Mapping) else {}
            name = str(layer_config.get("name", ""))
            snake = snake_case(cls)
            count = used.get(snake)
            used[snake] = 0 if count is None else count + 1
            group = snake if count is None else f"{snake}_{count + 1}"
            path = f"{prefix}layers/{group}"
            found[path] = ConfigLayer(cls, name, layer_config)
            if cls == "Lambda":
                lambdas.append(name or group)
            walk(item, path + "/")

    if isinstance(config, Mapping):
        walk(config, "")
    return found, lambdas


def _vars_of(store: H5Store, group: Any, file_size: int) -> list[Variable]:
    """A Keras 3 layer's variables, named by index (their names come with the class)."""
    vars_group = group.get("vars")
    if vars_group is None or not hasattr(vars_group, "keys"):
        return []
    out = []
    for key in sorted(vars_group.keys(), key=natural_key):
        ds = vars_group[key]
        if not hasattr(ds, "dtype"):
            continue
        out.append(_variable(store, ds, key, file_size))
    return out


def _keras3_layers(
    store: H5Store, root: Any, config: dict[str, ConfigLayer], file_size: int
) -> list[KerasLayer]:
    h5py = _h5py()
    layers: list[KerasLayer] = []

    def visit(node: Any, path: str, prefix: str, display: str, node_cls: str | None) -> None:
        order = _MHA_ORDER if node_cls == "MultiHeadAttention" else {}
        for key in sorted(node.keys(), key=lambda k: (order.get(k, len(order)), natural_key(k))):
            child = node[key]
            if key == "vars" or not isinstance(child, h5py.Group):
                continue
            if path == "" and key == "optimizer":
                continue  # optimizer state, not weights
            child_path = f"{path}/{key}" if path else key
            if key == "layers":
                visit(child, child_path, prefix, display, node_cls)
                continue
            vars_group = child.get("vars")
            attr_name = vars_group.attrs.get("name") if vars_group is not None else None
            from_config = config.get(child_path)
            own = str(attr_name) if attr_name is not None else None
            if own is None and from_config is not None and from_config.name:
                own = from_config.name
            own = own or key
            cls = from_config.cls if from_config is not None else None
            role = ""
            if key == "cell":  # an RNN's cell: its variables are the RNN's (else: by shapes)
                cls = node_cls if node_cls in RECURRENT_CLASSES else None
                name = display
            elif node_cls == "MultiHeadAttention":
                role = MHA_ROLES.get(own, MHA_ROLES.get(key.removesuffix("_dense"), ("", 0)))[0]
                cls, name = "EinsumDense", prefix + own
            else:
                cls = cls or _class_from_name(key) or _class_from_name(own)
                name = prefix + own
            is_model = "layers" in child
            variables = _vars_of(store, child, file_size)
            if variables:
                layer_config = from_config.config if from_config is not None else {}
                layers.append(
                    KerasLayer(name, child_path, cls, tuple(variables), layer_config, role)
                )
            visit(child, child_path, "" if is_model else name + ".", name, cls)

    visit(root, "", "", "", None)
    return layers


def _kind(cls: str | None) -> str:
    return CLASSES.get(cls, ("", 0))[0] if cls is not None else ""


# ---------------------------------------------------------------------------------------------
# Legacy TF/Keras .h5 files: [model_weights/]<layer> groups with weight_names attributes.


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _legacy_classes(root: Any, label: str) -> dict[str, ConfigLayer]:
    raw = root.attrs.get("model_config")
    if raw is None:
        return {}
    try:
        config = json.loads(_text(raw))
    except ValueError as exc:
        raise CorruptFileError(
            f"{label}: the model_config attribute is not JSON ({exc}); the file is corrupt: "
            f"{RESAVE}"
        ) from exc
    found: dict[str, ConfigLayer] = {}

    def walk(model: Any) -> None:
        inner = model.get("config") if isinstance(model, Mapping) else None
        items = inner.get("layers") if isinstance(inner, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping):
                continue
            layer_config = item.get("config")
            layer_config = layer_config if isinstance(layer_config, Mapping) else {}
            name = str(layer_config.get("name", ""))
            found[name] = ConfigLayer(str(item.get("class_name", "")), name, layer_config)
            walk(item)

    walk(config)
    return found


def _legacy_layers(store: H5Store, f: Any, file_size: int) -> list[KerasLayer]:
    weights = f.get("model_weights", f)
    classes = _legacy_classes(f, store.label)
    layers: list[KerasLayer] = []
    for layer_name in (_text(n) for n in weights.attrs["layer_names"]):
        if layer_name not in weights:
            raise CorruptFileError(
                f"{store.label}: layer_names lists {layer_name!r} but the file has no such "
                f"group; the file is corrupt: {RESAVE}"
            )
        group = weights[layer_name]
        by_owner: dict[str, list[Variable]] = {}
        for weight_name in (_text(n) for n in group.attrs.get("weight_names", [])):
            if weight_name not in group:
                raise CorruptFileError(
                    f"{store.label}: layer {layer_name!r} lists weight {weight_name!r} but the "
                    f"file lacks it; the file is corrupt: {RESAVE}"
                )
            owner, _, var = weight_name.rpartition("/")
            variable = _variable(store, group[weight_name], var.split(":")[0], file_size)
            by_owner.setdefault(owner or layer_name, []).append(variable)
        for owner, variables in by_owner.items():
            parts = [p for p in owner.split("/") if p]
            # Keras 3 prefixes a Sequential's name; a nested model's layers keep their own names
            if layer_name in parts:
                parts = parts[parts.index(layer_name) :]
            nested = layer_name in classes and classes[layer_name].cls in _MODEL_CLASSES
            if len(parts) > 1 and nested:
                parts = parts[1:]
            top = classes.get(parts[0]) if parts else None
            cls = top.cls if top is not None else _class_from_name(parts[0] if parts else owner)
            role = ""
            if len(parts) > 1 and parts[-1].endswith("_cell"):  # an RNN's cell: the RNN's
                parts = parts[:-1]
                own = classes.get(parts[-1]) if len(parts) > 1 else None
                if len(parts) > 1:
                    cls = own.cls if own is not None else _class_from_name(parts[-1])
            elif len(parts) > 1 and cls == "MultiHeadAttention":
                role, cls = MHA_ROLES.get(parts[-1], ("", 0))[0], "EinsumDense"
            elif len(parts) > 1:
                own = classes.get(parts[-1])
                cls = own.cls if own is not None else _class_from_name(parts[-1])
            config = classes[parts[-1]].config if parts and parts[-1] in classes else {}
            name = ".".join(parts) or layer_name
            layers.append(
                KerasLayer(name, f"{layer_name}/{owner}", cls, tuple(variables), config, role)
            )
    return layers


def magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(8)


def read_h5(store: H5Store, config: dict[str, ConfigLayer]) -> list[KerasLayer]:
    file_size = store.size()
    with store.open() as f:
        weights = f.get("model_weights", f)
        groups = [f[k] for k in f if hasattr(f[k], "keys")]
        if "layer_names" in weights.attrs:
            layers = _legacy_layers(store, f, file_size)
        elif "layers" in f or "vars" in f or any("vars" in g for g in groups):
            layers = _keras3_layers(store, f, config, file_size)
        else:
            raise UnsupportedInputError(
                f"{store.label} is an HDF5 file but not a Keras weights file (no 'layers' or "
                "'vars' groups of Keras 3, no 'layer_names' attribute of legacy Keras); pass a "
                ".keras archive, a .weights.h5 file or an .h5 file saved by Keras"
            )
    if config:  # the archive's order (Keras' own), not the alphabetical order of h5 groups
        order = {path: i for i, path in enumerate(config)}
        layers.sort(key=lambda layer: (order.get(_top(layer.where), len(order)), layer.where))
    return layers


def _top(where: str) -> str:
    match = re.match(r"^(layers/[^/]+)", where)
    return match.group(1) if match else where
