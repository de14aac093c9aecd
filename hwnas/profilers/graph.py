"""A plain view of an ONNX graph after shape inference.

FLOPs counting, the memory estimator and the graph-level predictor encoder all
walk the same structure; this module builds it once: every tensor with its
static shape, dtype and size in bytes, every node with its inputs, outputs and
attributes, in the file's (topological) node order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from hwnas.errors import ProfilingError


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph.

    Attributes:
        shape: static shape; ``None`` entries never appear (shapes must be resolved).
        dtype: numpy dtype.
        kind: ``"input"``, ``"initializer"``, ``"constant"`` (a Constant node's output),
            ``"activation"`` (an intermediate) or ``"output"``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class Node:
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""


@dataclass
class Graph:
    """Nodes in execution (file) order and every tensor they touch."""

    nodes: list[Node]
    tensors: dict[str, TensorInfo]
    inputs: list[str]
    outputs: list[str]
    initializers: dict[str, np.ndarray]
    model: onnx.ModelProto

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def producers(self) -> dict[str, int]:
        """Tensor name -> index of the node producing it."""
        return {o: i for i, n in enumerate(self.nodes) for o in n.outputs if o}

    def consumers(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the nodes reading it."""
        out: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                if t:
                    out.setdefault(t, []).append(i)
        return out

    @property
    def param_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.initializers.values()))


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.exists():
        raise ProfilingError(f"no such file: {path}; give the path of an existing .onnx file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, google.protobuf errors, ...
        raise ProfilingError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}); "
            "re-export it, or check that the file is complete and not another format"
        ) from exc


def _dims(type_proto: onnx.TypeProto) -> list[int | str | None] | None:
    """Dimensions of a tensor type; ``None`` when even the rank is unknown."""
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def dynamic_inputs(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Graph inputs (not initializers) that have a non-numeric dimension."""
    inits = {i.name for i in model.graph.initializer}
    return {
        vi.name: _dims(vi.type) or []
        for vi in model.graph.input
        if vi.name not in inits
        and (_dims(vi.type) is None or any(not isinstance(d, int) for d in _dims(vi.type)))
    }


def fix_input_shapes(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose inputs have the given static shapes.

    Raises:
        ProfilingError: a dynamic input is left without a shape.
    """
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    input_shapes = dict(input_shapes or {})
    inits = {i.name for i in model_copy.graph.initializer}
    graph_inputs = [vi for vi in model_copy.graph.input if vi.name not in inits]
    if len(input_shapes) == 1 and len(graph_inputs) == 1 and "" in input_shapes:
        input_shapes = {graph_inputs[0].name: input_shapes[""]}
    for vi in graph_inputs:
        if vi.name in input_shapes:
            shape = input_shapes[vi.name]
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and len(dims) != len(shape):
                raise ProfilingError(
                    f"input '{vi.name}' has rank {len(dims)} but --input-shape gives {len(shape)} "
                    f"dimensions {tuple(shape)}; give {len(dims)} dimensions"
                )
            vi.type.tensor_type.ClearField("shape")
            for s in shape:
                vi.type.tensor_type.shape.dim.add().dim_value = int(s)
    dyn = dynamic_inputs(model_copy)
    if dyn:
        name, dims = next(iter(dyn.items()))
        if not dims:
            raise ProfilingError(
                f"input '{name}' has no declared shape; give one with --input-shape, e.g. 1,3,224,224"
            )
        shown = "x".join(str(d if isinstance(d, int) else "?") for d in dims)
        raise ProfilingError(
            f"input '{name}' has dynamic dimensions ({shown}); give static ones with "
            f"--input-shape, e.g. --input-shape {','.join(str(d if isinstance(d, int) else 1) for d in dims)}"
        )
    return model_copy


def load_graph(
    model: str | Path | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Load an ONNX model, fix its input shapes and run shape inference.

    Args:
        model: a path or an in-memory ModelProto.
        input_shapes: static shapes for dynamic inputs (``{"": shape}`` for the only input).

    Raises:
        ProfilingError: unreadable file, dynamic input without a shape, or a tensor
            whose shape inference could not resolve.
    """
    proto = fix_input_shapes(_load(model), input_shapes)
    try:
        inferred = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ProfilingError(f"ONNX shape inference failed: {exc}") from exc
    g = inferred.graph
    tensors: dict[str, TensorInfo] = {}
    initializers = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for name, arr in initializers.items():
        tensors[name] = TensorInfo(name, tuple(arr.shape), arr.dtype, "initializer")
    outputs = [o.name for o in g.output]

    def add(vi: onnx.ValueInfoProto, kind: str) -> None:
        if vi.name in tensors:
            return
        dims = _dims(vi.type)
        if dims is None or any(not isinstance(d, int) for d in dims):
            return  # resolved below or reported when needed
        elem = vi.type.tensor_type.elem_type
        if elem == 0:
            return
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        tensors[vi.name] = TensorInfo(vi.name, tuple(int(d) for d in dims), dtype, kind)

    for vi in g.input:
        add(vi, "input")
    for vi in g.output:
        add(vi, "output")
    for vi in g.value_info:
        add(vi, "activation")

    nodes: list[Node] = []
    for i, n in enumerate(g.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant" and "value" in attrs:
            arr = numpy_helper.to_array(attrs["value"])
            tensors[n.output[0]] = TensorInfo(n.output[0], tuple(arr.shape), arr.dtype, "constant")
        nodes.append(
            Node(
                name=n.name or f"{n.op_type}_{i}",
                op_type=n.op_type,
                inputs=list(n.input),
                outputs=list(n.output),
                attrs=attrs,
                domain=n.domain,
            )
        )
    inputs = [vi.name for vi in g.input if vi.name not in initializers]
    return Graph(nodes, tensors, inputs, outputs, initializers, inferred)
