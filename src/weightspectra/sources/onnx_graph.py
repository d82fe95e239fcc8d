"""What each constant of an ONNX graph is, from the nodes that read it.

The rules are listed in :mod:`weightspectra.sources.onnx`, which reads the file.

Pure Python on the parsed graph: :meth:`Graph.build` indexes constants, producers and
consumers (and refuses a node that reads a tensor nothing provides); :func:`find_role` follows a
constant to the node that uses it as a weight, through pass-through nodes, and says how to
orient it, or why it is not a weight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightspectra.enums import LayerType, Reason
from weightspectra.errors import CorruptFileError

#: Nodes a weight passes through unchanged on its way to the node that uses it.
_PASS_THROUGH = {"Identity", "QuantizeLinear", "DequantizeLinear", "Transpose"}
_CONV_TYPES = {
    ("Conv", 3): LayerType.CONV1D,
    ("Conv", 4): LayerType.CONV2D,
    ("Conv", 5): LayerType.CONV3D,
    ("ConvTranspose", 3): LayerType.CONV_TRANSPOSE1D,
    ("ConvTranspose", 4): LayerType.CONV_TRANSPOSE2D,
    ("ConvTranspose", 5): LayerType.CONV_TRANSPOSE3D,
}
#: What input ``i`` of a node is, for the skipped rows of constants that are not weights.
_INPUT_ROLES: dict[str, tuple[str, ...]] = {
    "Reshape": ("data", "the shape"),
    "Conv": ("input", "weight", "the bias"),
    "ConvTranspose": ("input", "weight", "the bias"),
    "Gemm": ("input", "weight", "the bias"),
    "BatchNormalization": ("input", "the scale", "the bias", "the running mean", "the variance"),
    "LayerNormalization": ("input", "the scale", "the bias"),
    "InstanceNormalization": ("input", "the scale", "the bias"),
    "GroupNormalization": ("input", "the scale", "the bias"),
    "QuantizeLinear": ("input", "the scale", "the zero point"),
    "DequantizeLinear": ("input", "the scale", "the zero point"),
    "Split": ("input", "the split sizes"),
    "Slice": ("data", "the starts", "the ends", "the axes", "the steps"),
    "Resize": ("input", "the region of interest", "the scales", "the sizes"),
    "Clip": ("input", "the minimum", "the maximum"),
    "Add": ("an addend", "an addend"),
    "Mul": ("a factor", "a factor"),
    "Gather": ("data", "the indices"),
}
_FLOATS = frozenset({"float32", "float64", "float16", "bfloat16"})
_OPAQUE = re.compile(r"^onnx::|^[A-Za-z_]{0,12}\d+$|_output_\d+$")


@dataclass(frozen=True)
class Dequantize:
    """How a quantised constant becomes float: ``(q - zero_point) * scale`` along ``axis``."""

    scale: str
    zero_point: str
    axis: int
    block_size: int = 0


@dataclass(frozen=True)
class Role:
    """What one constant is: a weight and how to orient it, or why it is not one.

    Attributes
    ----------
    layer_type : LayerType
        ``UNKNOWN`` for a constant that is not a weight (``reason`` and ``code`` say why).
    key : str
        The entry's key (the naming rule of :mod:`weightspectra.sources.onnx`); empty: the
        constant's own name.
    transpose : bool
        The stored 2-D tensor is (in, out): hand it out transposed.
    qkv : bool
        Fused q/k/v: split its rows into three entries.
    dequantize : Dequantize, optional
        The stored tensor is quantised; dequantise it on load.
    """

    layer_type: LayerType
    key: str = ""
    transpose: bool = False
    qkv: bool = False
    dequantize: Dequantize | None = None
    reason: str = ""
    code: Reason = Reason.NONE


@dataclass
class Graph:
    """An index of an ONNX graph: its constants, and who reads each value.

    Attributes
    ----------
    tensors : dict
        Constant tensors by name: initializers, then ``Constant`` nodes' ``value`` tensors.
    constant_node : dict
        For constants from ``Constant`` nodes, the producing node's label.
    consumers : dict
        Value name → ``(node, input index)`` pairs, in node order.
    labels : dict
        ``id(node)`` → ``"Op 'name'"`` (``"Op #i"`` for unnamed nodes), for messages.
    nodes : list
        Every node, the main graph's first, each subgraph's after the node that holds it.
    inputs : dict
        ``id(node)`` → its inputs as keys of :attr:`tensors` where they are constants (a
        subgraph's tensor that shadows an outer name is stored as ``name@node.attribute``).
    """

    tensors: dict[str, Any]
    constant_node: dict[str, str] = field(default_factory=dict)
    consumers: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    nodes: list[Any] = field(default_factory=list)
    inputs: dict[int, list[str]] = field(default_factory=dict)
    path: Path = Path()
    model: Any = None
    _ranks: dict[str, int] | None = None

    @classmethod
    def build(cls, graph: Any, path: Path, model: Any = None) -> Graph:
        """Index ``graph`` (an ``onnx.GraphProto``, of ``model``) read from ``path``, with the
        subgraphs of its control-flow nodes (``If`` branches, ``Loop``/``Scan`` bodies), whose
        nodes may read the outer graph's values and hold initializers of their own.

        Raises
        ------
        CorruptFileError
            If a node reads a value that no initializer, graph input or node provides (in its
            own graph or an enclosing one).
        """
        index = cls(tensors={}, path=path, model=model)
        index._add_graph(graph, frozenset(), {}, "", 0)
        return index

    def _add_graph(
        self, graph: Any, outer: frozenset[str], alias: dict[str, str], owner: str, depth: int
    ) -> None:
        """Index one graph; ``outer``: the values its enclosing graphs provide; ``alias``:
        their constants stored under another key (a name shadowed by a subgraph)."""
        path = self.path
        if depth > MAX_SUBGRAPH_DEPTH:
            raise CorruptFileError(
                f"{path}: subgraphs nested more than {MAX_SUBGRAPH_DEPTH} deep (at {owner}); "
                "no exporter writes that: the file is corrupt or hostile"
            )
        _check_text(path, [t.name for t in graph.initializer])
        alias = dict(alias)
        for tensor in graph.initializer:
            key = tensor.name
            if key in self.tensors:  # a subgraph's own tensor shadows an outer one
                key = f"{tensor.name}@{owner}"
            alias[tensor.name] = key
            self.tensors[key] = tensor
        known = set(outer) | {t.name for t in graph.initializer} | {i.name for i in graph.input}
        known |= {t.values.name for t in graph.sparse_initializer}
        where = f" in {owner}" if owner else ""
        nodes = list(graph.node)
        for i, node in enumerate(nodes):
            _check_text(path, [node.name, node.op_type, *node.input, *node.output])
            self.labels[id(node)] = (
                f"{node.op_type} {node.name!r}" if node.name else f"{node.op_type} #{i}{where}"
            )
            known.update(node.output)
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None and node.output and node.output[0] not in self.tensors:
                    self.tensors[node.output[0]] = value
                    alias[node.output[0]] = node.output[0]
                    self.constant_node[node.output[0]] = self.labels[id(node)]
        for node in nodes:
            self.nodes.append(node)
            resolved = []
            for k, name in enumerate(node.input):
                resolved.append(alias.get(name, name))
                if not name:
                    continue  # an omitted optional input
                if name not in known:
                    raise CorruptFileError(
                        f"{path}: node {self.labels[id(node)]} reads {name!r}, which no "
                        "initializer, graph input or node provides; the file is incomplete or "
                        "corrupt (re-export the model)"
                    )
                self.consumers.setdefault(alias.get(name, name), []).append((node, k))
            self.inputs[id(node)] = resolved
            for sub_name, subgraph in _subgraphs(node):
                label = node.name or f"{node.op_type}{i}"
                inner = f"{label}.{sub_name}"
                self._add_graph(subgraph, frozenset(known), alias, inner, depth + 1)

    def order(self) -> list[str]:
        """Constant names in the order nodes first read them; unread ones last."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            for name in self.inputs.get(id(node), node.input):
                if name in self.tensors:
                    seen.setdefault(name)
        for name in self.tensors:
            seen.setdefault(name)
        return list(seen)

    def label(self, node: Any) -> str:
        return self.labels[id(node)]

    def rank(self, value: str) -> int | None:
        """The rank of a value by ONNX shape inference (run once, on first use), or ``None``.

        Inference needs no tensor data; a graph it cannot infer gives ``None`` (a fused q/k/v
        split along a positive axis is then not recognised, and the weight is analysed whole).
        """
        if self._ranks is None:
            self._ranks = {}
            if self.model is not None:
                from onnx import shape_inference

                try:
                    inferred = shape_inference.infer_shapes(self.model).graph
                except (shape_inference.InferenceError, ValueError, RuntimeError):
                    inferred = None
                if inferred is not None:
                    infos = [*inferred.value_info, *inferred.input, *inferred.output]
                    for info in infos:
                        if info.type.tensor_type.HasField("shape"):
                            self._ranks[info.name] = len(info.type.tensor_type.shape.dim)
        return self._ranks.get(value)


#: Deepest nesting of control-flow subgraphs read (real models nest a few levels).
MAX_SUBGRAPH_DEPTH = 32

#: ``AttributeProto`` types holding one graph and a list of graphs.
_GRAPH, _GRAPHS = 5, 10


def _subgraphs(node: Any) -> Iterator[tuple[str, Any]]:
    """The graphs a node holds (``If``'s ``then_branch``/``else_branch``, a ``Loop`` or
    ``Scan`` ``body``, any custom op's graph attributes), by attribute name."""
    for attr in node.attribute:
        if attr.type == _GRAPH:
            yield attr.name, attr.g
        elif attr.type == _GRAPHS:
            for i, graph in enumerate(attr.graphs):
                yield f"{attr.name}{i}", graph


def _check_text(path: Path, names: list[Any]) -> None:
    """Names must be text (protobuf hands out invalid UTF-8 in a string field as bytes)."""
    for name in names:
        if not isinstance(name, str):
            raise CorruptFileError(
                f"{path}: the graph holds a name that is not valid UTF-8 ({name!r}); the file "
                "is corrupt (re-download or re-export it)"
            )


def attribute(node: Any, name: str, default: Any) -> Any:
    """A node attribute's value (int, float, ints or string), or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            if attr.ints:
                return list(attr.ints)
            for kind in ("i", "f", "s"):
                if attr.HasField(kind):
                    return getattr(attr, kind)
    return default


def int_attribute(graph: Graph, node: Any, name: str, default: int) -> int:
    """An integer attribute of ``node``, or ``default`` when it is absent.

    Raises
    ------
    CorruptFileError
        If the attribute is there but not an integer.
    """
    value = attribute(node, name, default)
    if not isinstance(value, int):
        raise CorruptFileError(
            f"{graph.path}: attribute {name!r} of {graph.label(node)} is {value!r}, not an "
            "integer; the file is corrupt (re-export the model)"
        )
    return value


@dataclass(frozen=True)
class _Use:
    node: Any
    index: int
    transposed: bool
    dequantize: Dequantize | None


def _uses(graph: Graph, name: str, depth: int = 0) -> Iterator[_Use]:
    """Every node reading ``name``, directly or through pass-through nodes."""
    for node, k in graph.consumers.get(name, []):
        op = node.op_type
        if op not in _PASS_THROUGH or k != 0 or depth > 8 or not node.output:
            yield _Use(node, k, False, None)
            continue
        flip = op == "Transpose" and attribute(node, "perm", [1, 0]) == [1, 0]
        if op == "Transpose" and not flip:
            yield _Use(node, k, False, None)
            continue
        dq = None
        if op == "DequantizeLinear" and _is_int(graph, name):
            inputs = [*node.input, "", ""]
            axis = int_attribute(graph, node, "axis", 1)
            block = int_attribute(graph, node, "block_size", 0)
            dq = Dequantize(inputs[1], inputs[2], axis, block)
        for use in _uses(graph, node.output[0], depth + 1):
            yield _Use(use.node, use.index, use.transposed != flip, dq or use.dequantize)


def _is_int(graph: Graph, name: str) -> bool:
    tensor = graph.tensors.get(name)
    return tensor is not None and int(tensor.data_type) in (2, 3, 6)


def readable_name(node_name: str, op: str) -> str:
    """A node path as a layer name: its ``/`` parts joined by dots, without a last part that
    names the op.

    Examples
    --------
    >>> readable_name("/encoder/layer.0/attention/self/query/MatMul", "MatMul")
    'encoder.layer.0.attention.self.query'
    >>> readable_name("fc_1", "Gemm")
    'fc_1'
    """
    parts = [p for p in node_name.split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == op:
        parts.pop()
    return ".".join(parts)


def _split_qkv(graph: Graph, node: Any) -> bool:
    """Whether the output of ``node`` is split into three equal parts along its last axis."""
    value = node.output[0] if node.output else ""
    for _ in range(2):  # the product itself, or the product plus a bias
        readers = graph.consumers.get(value, [])
        if len(readers) != 1:
            return False
        reader, _k = readers[0]
        if reader.op_type == "Split":
            sizes = attribute(reader, "split", None)
            if len(reader.input) > 1 and reader.input[1] in graph.tensors:
                from onnx import numpy_helper

                sizes = [int(s) for s in numpy_helper.to_array(graph.tensors[reader.input[1]])]
            equal = sizes is None or (
                isinstance(sizes, list) and len(sizes) == 3 and len(set(sizes)) == 1
            )
            axis = int_attribute(graph, reader, "axis", 0)
            last = axis == -1 or (axis > 0 and graph.rank(value) == axis + 1)
            return last and len(reader.output) == 3 and equal
        if reader.op_type != "Add" or not reader.output:
            return False
        value = reader.output[0]
    return False


def _weight(graph: Graph, use: _Use, dims: tuple[int, ...], is_float: bool) -> Role | None:
    """The role of a constant read as input ``use.index`` of ``use.node``, if it is a weight."""
    node, k, rank = use.node, use.index, len(dims)
    if not is_float and use.dequantize is None:
        return None
    op = node.op_type
    layer_type: LayerType | None = None
    transpose = use.transposed
    if op == "MatMul" and rank == 2 and k in (0, 1):
        layer_type, transpose = LayerType.DENSE, transpose != (k == 1)
    elif op == "Gemm" and rank == 2 and k in (0, 1):
        trans_b, trans_a = (int_attribute(graph, node, n, 0) for n in ("transB", "transA"))
        stored_in_out = not trans_b if k == 1 else trans_a
        layer_type, transpose = LayerType.DENSE, transpose != bool(stored_in_out)
    elif op in ("Conv", "ConvTranspose") and k == 1 and not use.transposed:
        layer_type = _CONV_TYPES.get((op, rank))
    elif op == "Gather" and k == 0 and rank == 2 and int_attribute(graph, node, "axis", 0) == 0:
        layer_type = LayerType.EMBEDDING
    if layer_type is None:
        return None
    qkv = layer_type is LayerType.DENSE and _split_qkv(graph, node)
    if qkv and (dims[1] if transpose else dims[0]) % 3:  # out rows must split in three
        qkv = False
    readable = readable_name(node.name, op) if node.name else ""
    key = f"{readable}.weight" if readable else ""
    return Role(layer_type, key, transpose, qkv, use.dequantize)


def find_role(graph: Graph, name: str, dims: tuple[int, ...], dtype: str) -> Role:
    """The role of the constant ``name`` (shape ``dims``, dtype name ``dtype``) in ``graph``.

    The first node that reads it as a weight decides (a tied embedding read by ``Gather`` and
    by a ``MatMul`` is analysed once, as the first); without one, the first node that reads it
    says why it is skipped.
    """
    what = "constant" if name in graph.constant_node else "initializer"
    is_float = dtype in _FLOATS
    uses = list(_uses(graph, name))
    for use in uses:
        role = _weight(graph, use, dims, is_float)
        if role is None:
            continue
        if not _dequantizable(graph, role):
            return _skip(
                f"quantised weight of {graph.label(use.node)} with a block or non-constant scale "
                "(not dequantised here; analyse the float model)",
                Reason.UNKNOWN_TYPE,
            )
        key = role.key if role.key and _OPAQUE.search(name) else ""
        return Role(role.layer_type, key, role.transpose, role.qkv, role.dequantize)
    if not uses:
        return _skip(f"{what} not read by any node", Reason.BUFFER)
    node, k = uses[0].node, uses[0].index
    roles = _INPUT_ROLES.get(node.op_type, ())
    part = roles[k] if k < len(roles) else f"input {k}"
    if part in ("input", "data", "weight"):
        part = f"input {k}"
    text = f"{what} used as {part} of {graph.label(node)}"
    if not is_float:
        return _skip(f"{text} ({dtype}, not weights)", Reason.BUFFER)
    if part == "the bias":
        return _skip(text, Reason.BIAS)
    vector = dims and sum(d > 1 for d in dims) <= 1  # (C,) or (1, C, 1, 1), broadcast
    if vector and node.op_type in ("Add", "Sub"):
        return _skip(f"{text} (a bias)", Reason.BIAS)
    if len(dims) < 2:
        return _skip(f"{text} ({len(dims)}-D, not a matrix)", Reason.NOT_MATRIX)
    if vector:
        return _skip(f"{text} (a broadcast vector, not a matrix)", Reason.NOT_MATRIX)
    return _skip(
        f"{text}, not as the weight of a MatMul, Gemm, Conv, ConvTranspose or Gather",
        Reason.UNKNOWN_TYPE,
    )


def _dequantizable(graph: Graph, role: Role) -> bool:
    dq = role.dequantize
    if dq is None:
        return True
    scale = graph.tensors.get(dq.scale)
    zero_ok = not dq.zero_point or dq.zero_point in graph.tensors
    return scale is not None and len(scale.dims) <= 1 and zero_ok and not dq.block_size


def _skip(reason: str, code: Reason) -> Role:
    return Role(LayerType.UNKNOWN, reason=reason, code=code)
