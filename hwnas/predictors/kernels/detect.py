"""Kernel detection: split any ONNX graph into the fused units a runtime executes.

nn-Meter (Zhang et al., MobiSys 2021) observed that an inference runtime does
not run a network op by op: it fuses neighbouring ops into *kernels* (a
convolution with its batch norm and activation, a squeeze-and-excite block...)
and the latency of a model is close to the sum of the latencies of its
kernels. Predicting per kernel, on the kernel's configuration, is what lets a
predictor trained on a few thousand single-kernel measurements predict any
model built from the same kinds of kernels.

The fusion rules here are the ones ONNX Runtime, TFLite and most mobile
runtimes apply on CPU:

============  ===============================================================
kernel type   ONNX pattern (in graph order, each link the only consumer)
============  ===============================================================
conv          Conv (groups < channels) [-> BatchNormalization] [-> activation]
dwconv        Conv (groups == input channels) [-> BatchNormalization] [-> act]
fc            Gemm | MatMul [-> Add bias] [-> activation]
se            GlobalAveragePool | ReduceMean -> conv/fc -> act -> conv/fc ->
              Sigmoid | HardSigmoid -> Mul (with the pooled input)
gap           GlobalAveragePool | GlobalMaxPool | ReduceMean/Max over H, W
              [-> Flatten | Reshape | Squeeze]
maxpool       MaxPool [-> activation]
avgpool       AveragePool [-> activation]
add           Add of two activations (a residual) [-> activation]
concat        Concat
bn            a BatchNormalization left alone [-> activation]
elementwise   any other op that computes (Relu, Sigmoid, Mul, Transpose...)
============  ===============================================================

Activations are Relu, Clip (``relu6`` when it clips to [0, 6]), HardSwish,
Sigmoid, HardSigmoid, LeakyRelu, Tanh, Gelu, and the two-node forms
``x * sigmoid(x)`` (swish) and ``x * hardsigmoid(x)`` (hard swish). The torch
dynamo exporter folds BatchNorm into Conv in eval mode, so most conv kernels
are a lone Conv followed by Relu/Clip. Shape-only ops (Reshape, Flatten,
Squeeze, Constant, Identity, Dropout, Shape...) cost nothing on a runtime
that aliases buffers and are not kernels.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from hwnas.profilers.graph import Graph, Node, load_graph

KERNEL_TYPES = (
    "reorder",
    "conv",
    "dwconv",
    "fc",
    "se",
    "gap",
    "maxpool",
    "avgpool",
    "add",
    "concat",
    "bn",
    "elementwise",
)

# Integer codes the regressors see; an activation's cost differs (relu vs
# hard swish) but an unseen one still gets a stable code.
ACTIVATIONS = (
    "none",
    "relu",
    "relu6",
    "clip",
    "hswish",
    "sigmoid",
    "hsigmoid",
    "swish",
    "leakyrelu",
    "tanh",
    "gelu",
)

_UNARY_ACTS = {
    "Relu": "relu",
    "HardSwish": "hswish",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hsigmoid",
    "LeakyRelu": "leakyrelu",
    "Tanh": "tanh",
    "Gelu": "gelu",
    "Elu": "elu",
    "Selu": "selu",
    "Softplus": "softplus",
    "Mish": "mish",
}

# Ops that only reinterpret a buffer's shape: a runtime aliases them, so they
# cost (almost) nothing and are never kernels of their own.
NOOP_OPS = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Dropout",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
    }
)

_SE_INNER = frozenset(
    {"Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "HardSwish", "Sigmoid", "HardSigmoid"}
    | {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Mul"}
)


def code_of(name: str, table: tuple[str, ...] = ACTIVATIONS) -> int:
    """Stable integer code of an activation or op name (for the regressors' features)."""
    if name in table:
        return table.index(name)
    return 100 + zlib.crc32(name.encode()) % 1000


@dataclass(frozen=True)
class KernelRecord:
    """One kernel: its type and configuration.

    Attributes:
        type: one of :data:`KERNEL_TYPES`.
        h, w: spatial size of the (first) input; ``h`` is the number of rows for fc.
        cin, cout: input and output channels (fc: in and out features; concat:
            channels of the first input and of the output).
        k, stride, groups: kernel size, stride and groups of a conv or pooling.
        out_h, out_w: spatial size of the output.
        act: the fused activation, one of :data:`ACTIVATIONS` (or another name).
        mid: the squeezed width of an SE kernel.
        n_inputs: number of activation inputs (add, concat, elementwise).
        op: the ONNX op of an elementwise kernel, or ``max`` for a global max pool.
        itemsize: bytes per element (4 for float32).
        nodes: names of the ONNX nodes fused into the kernel (not a feature).
        reader: what split the model into this kernel: ``""`` for the
            hand-written rules here, else the runtime (``onnxruntime 1.32.0 all``,
            ``litert .tflite``; see :mod:`.runtime`). Not a feature: it tells a
            predictor which kind of kernels it was trained on.
    """

    type: str
    h: int = 1
    w: int = 1
    cin: int = 1
    cout: int = 1
    k: int = 1
    stride: int = 1
    groups: int = 1
    out_h: int = 1
    out_w: int = 1
    act: str = "none"
    mid: int = 0
    n_inputs: int = 1
    op: str = ""
    itemsize: int = 4
    nodes: tuple[str, ...] = field(default=(), compare=False)
    reader: str = field(default="", compare=False)

    # ---- derived figures (one formula for detected and sampled kernels alike) ----

    @property
    def macs(self) -> int:
        """Multiply-adds of the kernel's convolutions / matmuls."""
        if self.type in ("conv", "dwconv"):
            return self.out_h * self.out_w * self.cout * self.k * self.k * self.cin // self.groups
        if self.type == "fc":
            return self.h * self.w * self.cin * self.cout
        if self.type == "se":
            return 2 * self.cin * self.mid
        return 0

    @property
    def in_numel(self) -> int:
        return self.h * self.w * self.cin

    @property
    def out_numel(self) -> int:
        return self.out_h * self.out_w * self.cout

    @property
    def in_bytes(self) -> int:
        """Bytes read from activations (every input of add/elementwise)."""
        n = self.n_inputs if self.type in ("add", "elementwise") else 1
        if self.type == "concat":
            return self.out_numel * self.itemsize
        return n * self.in_numel * self.itemsize

    @property
    def out_bytes(self) -> int:
        return self.out_numel * self.itemsize

    @property
    def params(self) -> int:
        """Weights and biases (BN folded into the conv bias)."""
        if self.type in ("conv", "dwconv"):
            return self.cout * (self.k * self.k * self.cin // self.groups + 1)
        if self.type == "fc":
            return self.cout * (self.cin + 1)
        if self.type == "se":
            return 2 * self.cin * self.mid + self.cin + self.mid
        if self.type == "bn":
            return 2 * self.cin
        return 0

    @property
    def flops(self) -> int:
        """2 * MACs plus one FLOP per element touched by the element-wise parts."""
        elem = self.out_numel if self.act != "none" else 0
        if self.type == "se":
            elem += 2 * self.in_numel  # the pooling read and the gating multiply
        elif self.type in ("gap", "maxpool", "avgpool"):
            elem += self.in_numel
        elif self.type in ("add", "elementwise", "bn"):
            elem += self.out_numel
        return 2 * self.macs + elem

    def features(self) -> list[float]:
        """The numeric configuration the per-type regressors see (:data:`FEATURE_NAMES`)."""
        return [
            self.h,
            self.w,
            self.cin,
            self.cout,
            self.k,
            self.stride,
            self.groups,
            self.out_h,
            self.out_w,
            self.mid,
            self.n_inputs,
            code_of(self.act),
            code_of(self.op, ()) if self.op else 0,
            self.macs,
            self.flops,
            self.in_bytes,
            self.out_bytes,
            self.params * self.itemsize,
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nodes"] = list(self.nodes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelRecord:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["nodes"] = tuple(kw.get("nodes", ()))
        return cls(**kw)

    def describe(self) -> str:
        """Short human-readable configuration, e.g. ``conv 3x3/2 32->64 @112 relu``."""
        t = self.type
        act = "" if self.act == "none" else f" {self.act}"
        if t in ("conv", "dwconv"):
            g = f" g{self.groups}" if t == "conv" and self.groups > 1 else ""
            return f"{t} {self.k}x{self.k}/{self.stride} {self.cin}->{self.cout}{g} @{self.h}{act}"
        if t == "fc":
            return f"fc {self.cin}->{self.cout}{act}"
        if t == "se":
            return f"se {self.cin}->{self.mid}->{self.cin} @{self.h}"
        if t in ("maxpool", "avgpool"):
            return f"{t} {self.k}x{self.k}/{self.stride} {self.cin} @{self.h}{act}"
        if t in ("add", "concat", "elementwise"):
            op = f" {self.op}" if self.op else ""
            return f"{t}{op} x{self.n_inputs} {self.cout} @{self.h}{act}"
        return f"{t} {self.cin} @{self.h}{act}"


@dataclass(frozen=True)
class NetworkRecord:
    """A whole network given as its kernels (a calibration sample, or a model to predict)."""

    kernels: tuple[KernelRecord, ...]
    label: str = ""


FEATURE_NAMES = (
    "h",
    "w",
    "cin",
    "cout",
    "k",
    "stride",
    "groups",
    "out_h",
    "out_w",
    "mid",
    "n_inputs",
    "act",
    "op",
    "macs",
    "flops",
    "in_bytes",
    "out_bytes",
    "param_bytes",
)


# ---- graph helpers --------------------------------------------------------------------


class _View:
    """The graph plus the lookups the matcher needs, built once."""

    def __init__(self, graph: Graph):
        self.g = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()
        self.outputs = set(graph.outputs)
        self.used: set[int] = set()

    def node(self, i: int) -> Node:
        return self.g.nodes[i]

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.g.tensors.get(name)
        return info.shape if info is not None else None

    def itemsize(self, name: str) -> int:
        info = self.g.tensors.get(name)
        return int(info.dtype.itemsize) if info is not None else 4

    def is_static(self, name: str) -> bool:
        """An initializer or a Constant's output (weights, bounds, axes)."""
        info = self.g.tensors.get(name)
        return info is not None and info.kind in ("initializer", "constant")

    def value(self, name: str) -> np.ndarray | None:
        """Value of a static tensor (initializer or Constant node), else ``None``."""
        if name in self.g.initializers:
            return self.g.initializers[name]
        j = self.producers.get(name)
        if j is not None:
            n = self.g.nodes[j]
            if n.op_type == "Constant" and "value" in n.attrs:
                return numpy_helper.to_array(n.attrs["value"])
        return None

    def sole_consumer(self, tensor: str) -> int | None:
        """Index of the only, still free, consumer of ``tensor`` (None if shared or an output)."""
        if tensor in self.outputs:
            return None
        cons = self.consumers.get(tensor, [])
        if len(cons) != 1 or cons[0] in self.used:
            return None
        return cons[0]

    def activation_inputs(self, node: Node) -> list[str]:
        return [t for t in node.inputs if t and not self.is_static(t)]


def _clip_act(view: _View, node: Node) -> str:
    lo = node.attrs.get("min")
    hi = node.attrs.get("max")
    if len(node.inputs) > 1 and node.inputs[1]:
        v = view.value(node.inputs[1])
        lo = float(v) if v is not None else None
    if len(node.inputs) > 2 and node.inputs[2]:
        v = view.value(node.inputs[2])
        hi = float(v) if v is not None else None
    if lo == 0.0 and hi == 6.0:
        return "relu6"
    if lo == 0.0 and hi is None:
        return "relu"
    return "clip"


def _absorb_activation(view: _View, tensor: str) -> tuple[str, list[int], str]:
    """Fuse the activation that alone consumes ``tensor``.

    Returns:
        (activation name, node indices absorbed, the kernel's new output tensor).
    """
    if tensor in view.outputs:
        return "none", [], tensor
    cons = [c for c in view.consumers.get(tensor, []) if c not in view.used]
    if len(cons) == 1 and len(view.consumers.get(tensor, [])) == 1:
        n = view.node(cons[0])
        if n.op_type in _UNARY_ACTS:
            return _UNARY_ACTS[n.op_type], cons, n.outputs[0]
        if n.op_type == "Clip":
            return _clip_act(view, n), cons, n.outputs[0]
    if len(cons) == 2 and len(view.consumers.get(tensor, [])) == 2:
        # x * sigmoid(x) (swish) and x * hardsigmoid(x) (hard swish), exported as two nodes
        a, b = (view.node(c) for c in cons)
        if a.op_type == "Mul":
            a, b = b, a
            cons = cons[::-1]
        if a.op_type in ("Sigmoid", "HardSigmoid") and b.op_type == "Mul":
            gate = a.outputs[0]
            if set(b.inputs) == {tensor, gate} and view.consumers.get(gate, []) == [cons[1]]:
                name = "swish" if a.op_type == "Sigmoid" else "hswish"
                return name, cons, b.outputs[0]
    return "none", [], tensor


def _absorb_reshapes(view: _View, tensor: str) -> tuple[list[int], str]:
    """Follow shape-only ops that alone consume ``tensor`` (e.g. Flatten after pooling)."""
    taken: list[int] = []
    while True:
        j = view.sole_consumer(tensor)
        if j is None or view.node(j).op_type not in NOOP_OPS:
            return taken, tensor
        taken.append(j)
        tensor = view.node(j).outputs[0]


def _spatial(shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """(channels, h, w) of an NCHW (or NC, or NCL) shape."""
    if not shape:
        return 1, 1, 1
    if len(shape) >= 4:
        return int(shape[1]), int(shape[2]), int(math.prod(shape[3:]))
    if len(shape) == 3:
        return int(shape[1]), int(shape[2]), 1
    if len(shape) == 2:
        return int(shape[1]), 1, 1
    return int(shape[0]) if shape else 1, 1, 1


def _pool_axes(view: _View, node: Node) -> tuple[int, ...] | None:
    """Reduced axes of a ReduceMean/ReduceMax (attribute, or input since opset 18)."""
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        v = view.value(node.inputs[1])
        axes = None if v is None else [int(a) for a in np.atleast_1d(v)]
    if axes is None:
        return None
    rank = len(view.shape(node.inputs[0]) or ())
    return tuple(sorted(a % rank for a in axes)) if rank else None


def _is_global_pool(view: _View, node: Node) -> bool:
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    if node.op_type in ("ReduceMean", "ReduceMax"):
        shape = view.shape(node.inputs[0])
        return shape is not None and len(shape) == 4 and _pool_axes(view, node) == (2, 3)
    return False


# ---- matchers: each returns (record, node indices) or None -----------------------------


def _match_se(view: _View, i: int) -> tuple[KernelRecord, list[int]] | None:
    pool = view.node(i)
    if not _is_global_pool(view, pool) or pool.op_type in ("GlobalMaxPool", "ReduceMax"):
        return None
    x = pool.inputs[0]
    taken = [i]
    tensor = pool.outputs[0]
    mixers: list[Node] = []
    for _ in range(16):
        j = view.sole_consumer(tensor)
        if j is None:
            return None
        n = view.node(j)
        if n.op_type == "Mul":
            if set(view.activation_inputs(n)) == {x, tensor} and len(mixers) >= 2:
                taken.append(j)
                c, h, w = _spatial(view.shape(x))
                wshape = view.shape(mixers[0].inputs[1]) or (0,)
                mid = int(wshape[0]) if mixers[0].op_type == "Conv" else 0
                if mixers[0].op_type != "Conv":
                    out = view.shape(mixers[0].outputs[0]) or (0,)
                    mid = int(out[-1])
                rec = KernelRecord(
                    "se",
                    h=h,
                    w=w,
                    cin=c,
                    cout=c,
                    out_h=h,
                    out_w=w,
                    mid=mid,
                    itemsize=view.itemsize(x),
                    nodes=tuple(view.node(k).name for k in taken),
                )
                return rec, taken
            return None
        if n.op_type not in _SE_INNER:
            return None
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            mixers.append(n)
        taken.append(j)
        tensor = n.outputs[0]
    return None


def _match_conv(view: _View, i: int) -> tuple[KernelRecord, list[int]] | None:
    n = view.node(i)
    if n.op_type != "Conv":
        return None
    xs, ws = view.shape(n.inputs[0]), view.shape(n.inputs[1])
    ys = view.shape(n.outputs[0])
    if xs is None or ws is None or ys is None:
        return None
    cin, h, w = _spatial(xs)
    cout, oh, ow = _spatial(ys)
    groups = int(n.attrs.get("group", 1))
    k = int(ws[2]) if len(ws) > 2 else 1
    strides = n.attrs.get("strides") or [1]
    taken = [i]
    tensor = n.outputs[0]
    j = view.sole_consumer(tensor)
    if j is not None and view.node(j).op_type == "BatchNormalization":
        taken.append(j)
        tensor = view.node(j).outputs[0]
    act, act_nodes, tensor = _absorb_activation(view, tensor)
    taken += act_nodes
    dw = groups > 1 and groups == cin
    rec = KernelRecord(
        "dwconv" if dw else "conv",
        h=h,
        w=w,
        cin=cin,
        cout=cout,
        k=k,
        stride=int(strides[0]),
        groups=groups,
        out_h=oh,
        out_w=ow,
        act=act,
        itemsize=view.itemsize(n.inputs[0]),
        nodes=tuple(view.node(t).name for t in taken),
    )
    return rec, taken


def _match_fc(view: _View, i: int) -> tuple[KernelRecord, list[int]] | None:
    n = view.node(i)
    if n.op_type not in ("Gemm", "MatMul"):
        return None
    a, b, y = view.shape(n.inputs[0]), view.shape(n.inputs[1]), view.shape(n.outputs[0])
    if a is None or b is None or y is None or not a or not y:
        return None
    if n.op_type == "Gemm":
        k_dim = a[0] if n.attrs.get("transA", 0) else a[1]
    else:
        k_dim = a[-1]
    rows = int(math.prod(y[:-1])) if len(y) > 1 else 1
    taken = [i]
    tensor = n.outputs[0]
    j = view.sole_consumer(tensor)
    if n.op_type == "MatMul" and j is not None:
        add = view.node(j)
        if add.op_type == "Add" and any(view.is_static(t) for t in add.inputs):
            taken.append(j)
            tensor = add.outputs[0]
    act, act_nodes, tensor = _absorb_activation(view, tensor)
    taken += act_nodes
    rec = KernelRecord(
        "fc",
        h=rows,
        w=1,
        cin=int(k_dim),
        cout=int(y[-1]),
        out_h=rows,
        out_w=1,
        act=act,
        itemsize=view.itemsize(n.inputs[0]),
        nodes=tuple(view.node(t).name for t in taken),
    )
    return rec, taken


def _match_pool(view: _View, i: int) -> tuple[KernelRecord, list[int]] | None:
    n = view.node(i)
    if _is_global_pool(view, n):
        c, h, w = _spatial(view.shape(n.inputs[0]))
        taken = [i]
        more, _ = _absorb_reshapes(view, n.outputs[0])
        taken += more
        op = "max" if n.op_type in ("GlobalMaxPool", "ReduceMax") else ""
        rec = KernelRecord(
            "gap",
            h=h,
            w=w,
            cin=c,
            cout=c,
            k=h,
            stride=h,
            op=op,
            itemsize=view.itemsize(n.inputs[0]),
            nodes=tuple(view.node(t).name for t in taken),
        )
        return rec, taken
    if n.op_type not in ("MaxPool", "AveragePool"):
        return None
    xs, ys = view.shape(n.inputs[0]), view.shape(n.outputs[0])
    c, h, w = _spatial(xs)
    _, oh, ow = _spatial(ys)
    kernel = n.attrs.get("kernel_shape") or [1]
    strides = n.attrs.get("strides") or [1]
    taken = [i]
    act, act_nodes, _ = _absorb_activation(view, n.outputs[0])
    taken += act_nodes
    rec = KernelRecord(
        "maxpool" if n.op_type == "MaxPool" else "avgpool",
        h=h,
        w=w,
        cin=c,
        cout=c,
        k=int(kernel[0]),
        stride=int(strides[0]),
        out_h=oh,
        out_w=ow,
        act=act,
        itemsize=view.itemsize(n.inputs[0]),
        nodes=tuple(view.node(t).name for t in taken),
    )
    return rec, taken


def _elementwise_like(
    view: _View, i: int, kind: str, fuse_act: bool
) -> tuple[KernelRecord, list[int]]:
    n = view.node(i)
    ins = view.activation_inputs(n) or [t for t in n.inputs if t]
    cin, h, w = _spatial(view.shape(ins[0]) if ins else None)
    taken = [i]
    act = "none"
    if fuse_act and n.outputs:
        act, act_nodes, _ = _absorb_activation(view, n.outputs[0])
        taken += act_nodes
    cout, oh, ow = _spatial(view.shape(n.outputs[0]) if n.outputs else None)
    rec = KernelRecord(
        kind,
        h=h,
        w=w,
        cin=cin,
        cout=cout,
        out_h=oh,
        out_w=ow,
        act=act,
        n_inputs=max(1, len(ins)),
        op=n.op_type if kind == "elementwise" else "",
        itemsize=view.itemsize(ins[0]) if ins else 4,
        nodes=tuple(view.node(t).name for t in taken),
    )
    return rec, taken


def _match_rest(view: _View, i: int) -> tuple[KernelRecord, list[int]] | None:
    n = view.node(i)
    op = n.op_type
    if op == "Add":
        ins = view.activation_inputs(n)
        shapes = {view.shape(t) for t in ins}
        if len(ins) == 2 and len(shapes) == 1:
            return _elementwise_like(view, i, "add", fuse_act=True)
    if op == "Concat":
        rec, taken = _elementwise_like(view, i, "concat", fuse_act=False)
        return rec, taken
    if op == "BatchNormalization":
        return _elementwise_like(view, i, "bn", fuse_act=True)
    if op in NOOP_OPS:
        return None
    return _elementwise_like(view, i, "elementwise", fuse_act=False)


_MATCHERS = (_match_se, _match_conv, _match_fc, _match_pool, _match_rest)


def detect_kernels(
    model: str | Path | onnx.ModelProto | Graph,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> list[KernelRecord]:
    """Split a model into kernels, in execution order.

    Args:
        model: an ONNX path, a ModelProto, or a loaded :class:`Graph`.
        input_shapes: static shapes for dynamic inputs (``{"": shape}`` for the only one).

    Returns:
        one :class:`KernelRecord` per kernel; shape-only ops are left out.

    Raises:
        ProfilingError: unreadable model or unresolved shapes.
    """
    graph = model if isinstance(model, Graph) else load_graph(model, input_shapes)
    view = _View(graph)
    kernels: list[KernelRecord] = []
    for i in range(len(graph.nodes)):
        if i in view.used:
            continue
        for matcher in _MATCHERS:
            got = matcher(view, i)
            if got is not None:
                rec, taken = got
                view.used.update(taken)
                kernels.append(rec)
                break
        view.used.add(i)
    return kernels


def kernel_types(kernels: list[KernelRecord]) -> list[str]:
    return [k.type for k in kernels]
