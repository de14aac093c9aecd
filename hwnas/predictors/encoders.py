"""Encodings: how an architecture or an ONNX model becomes a fixed-length feature vector.

A predictor is trained on one encoding and its file records the encoding's
name and length, so it is never applied to vectors of another kind. Three
encodings ship:

``onehot``
    ``space.encode(arch)``: the concatenated one-hot of every decision. Exact,
    instant, and the input of the differentiable form used by Latency-DARTS
    (relaxed weights have the same layout). Works only inside its space.
``flops``
    one number, the model's ONNX-graph FLOPs in millions
    (:mod:`hwnas.profilers.flops` conventions), for the ``flops-linear`` baseline.
``torch-flops``
    one number, the torch forward pass' convolution and matmul FLOPs in
    millions (``torch.utils.flop_counter``); no export needed.
``graph``
    a fixed-length summary of the ONNX graph (see :func:`graph_features`):
    per op category counts, FLOPs, bytes moved and parameter bytes; conv
    kernel/stride and output-size histograms; totals. It works for any ONNX
    model, including ones no space of ours built.

Why two FLOPs encodings: ONNX-graph FLOPs (``flops``) describe what a
runtime executes and can be computed for any ONNX file, but an architecture
without recorded FLOPs must first be exported, which takes seconds (hours for
a 15,625-cell table). ``torch-flops`` counts the torch forward pass instead
(convolutions and matmuls, no export), fast enough for a whole space. A
tempting shortcut, a per-option FLOPs table, is not exact: the exporter
merges identical ops (the shared ReLU in front of two convolutions reading
the same NAS-Bench-201 node), so costs of decisions interact.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import PredictorError
from hwnas.registry import Registry

if TYPE_CHECKING:
    from hwnas.profilers.graph import Graph
    from hwnas.spaces.base import SearchSpace


class Encoding(ABC):
    """Turns architectures of a space (and, if it can, ONNX models) into feature rows."""

    name: str = ""

    @abstractmethod
    def length(self, space: SearchSpace | None) -> int:
        """Number of features (may depend on the space)."""

    @abstractmethod
    def encode_archs(
        self,
        space: SearchSpace,
        archs: Sequence[Arch],
        flops: np.ndarray | None = None,
    ) -> np.ndarray:
        """Feature matrix, one float32 row per architecture.

        Args:
            flops: FLOPs already known (e.g. recorded in the store), one per arch;
                ``nan`` entries are computed.
        """

    def encode_onnx(
        self, models: Sequence[Any], input_shapes: dict[str, tuple[int, ...]] | None = None
    ) -> np.ndarray:
        """Feature matrix of ONNX models (paths or loaded :class:`Graph`\\ s)."""
        raise PredictorError(
            f"the '{self.name}' encoding describes architectures of one search space, not ONNX "
            "files; give architecture strings, or use a predictor trained with --encoding graph"
        )


ENCODINGS: Registry[Encoding] = Registry("encoding")


def get_encoding(name: str) -> Encoding:
    """The encoding registered as ``name`` (``onehot``, ``flops``, ``graph``)."""
    return ENCODINGS.create(name)


def list_encodings() -> list[str]:
    return ENCODINGS.names()


# ---- exporting architectures ---------------------------------------------------------


def export_arch(space: SearchSpace, arch: Arch, cache_dir: str | Path | None = None) -> Path:
    """Export ``arch`` to ONNX (cached) and return the file.

    Weights are seeded so that the same architecture always gives the same
    module fingerprint, hence a cache hit instead of a second export.
    """
    from hwnas.campaigns.step import export_source
    from hwnas.source import ModelSource

    art = export_source(
        ModelSource.of_space(space, arch),
        space=space,
        label=arch.id,
        cache_dir=cache_dir,
        check=False,
    )
    return Path(art.path)


def _flops_of_file(path: str | Path, input_shapes: dict | None = None) -> int:
    from hwnas.profilers.flops import count

    return int(count(path, input_shapes).flops)


def space_flops(
    space: SearchSpace,
    archs: Sequence[Arch],
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """ONNX-graph FLOPs of each architecture (float64), one cached export per distinct arch.

    Slow (an export takes seconds); campaigns record FLOPs in the store, so
    this runs only for architectures whose FLOPs nobody recorded. Spaces that
    :mod:`hwnas.profilers.space_cost` decomposes (nb201, mnasnet) are counted
    there instead, per distinct cell or layer, with the same result.
    """
    from hwnas.profilers import space_cost

    if space_cost.supports(space):  # hook: per-cell/per-layer counts, equal to the export's
        return space_cost.count_flops(space, archs)
    known: dict[str, float] = {}
    out = np.empty(len(archs), dtype=np.float64)
    for i, a in enumerate(archs):
        if a.id not in known:
            if progress:
                progress(f"exporting {space.name} {a.id} to count its FLOPs")
            known[a.id] = float(_flops_of_file(export_arch(space, a)))
        out[i] = known[a.id]
    return out


def torch_flops(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """FLOPs of each architecture's torch forward pass, by ``torch.utils.flop_counter``.

    torch counts convolutions and matrix products only, 2 FLOPs per MAC; no
    export is needed, so a whole space (15,625 NAS-Bench-201 cells) is counted
    in minutes. These are *not* the ONNX-graph FLOPs of
    :mod:`hwnas.profilers.flops` (which also count bias adds, activations,
    pooling and see the exporter's fusions), so the two never mix: they are
    separate encodings.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hwnas.threads import torch_threads

    known: dict[str, float] = {}
    out = np.empty(len(archs), dtype=np.float64)
    x = torch.zeros(space.input_shape)
    # One thread: a batch-1 forward of a small network gains nothing from more,
    # and on a busy machine two threads were 10x slower here (measured).
    with torch_threads(1), torch.no_grad():
        for i, a in enumerate(archs):
            if a.id not in known:
                module = space.build(a).eval()
                with FlopCounterMode(display=False) as counter:
                    module(x)
                known[a.id] = float(counter.get_total_flops())
            out[i] = known[a.id]
    return out


# ---- graph-level features ----------------------------------------------------------

_CATEGORIES: tuple[str, ...] = (
    "conv",
    "dwconv",
    "gconv",
    "convtranspose",
    "matmul",
    "maxpool",
    "avgpool",
    "globalpool",
    "relu",
    "sigmoid",
    "swish",
    "add",
    "mul",
    "norm",
    "softmax",
    "reduce",
    "concat",
    "resize",
    "movement",
    "other",
)
_OP_CATEGORY: dict[str, str] = {
    "Conv": "conv",
    "ConvTranspose": "convtranspose",
    "Gemm": "matmul",
    "MatMul": "matmul",
    "MaxPool": "maxpool",
    "AveragePool": "avgpool",
    "LpPool": "avgpool",
    "GlobalAveragePool": "globalpool",
    "GlobalMaxPool": "globalpool",
    "Relu": "relu",
    "LeakyRelu": "relu",
    "PRelu": "relu",
    "Clip": "relu",
    "Elu": "relu",
    "Selu": "relu",
    "Celu": "relu",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "sigmoid",
    "Tanh": "sigmoid",
    "HardSwish": "swish",
    "Gelu": "swish",
    "Mish": "swish",
    "Softplus": "swish",
    "Erf": "swish",
    "Add": "add",
    "Sub": "add",
    "Sum": "add",
    "Mul": "mul",
    "Div": "mul",
    "BatchNormalization": "norm",
    "LayerNormalization": "norm",
    "InstanceNormalization": "norm",
    "GroupNormalization": "norm",
    "Softmax": "softmax",
    "LogSoftmax": "softmax",
    "ReduceMean": "reduce",
    "ReduceSum": "reduce",
    "ReduceMax": "reduce",
    "ReduceMin": "reduce",
    "ReduceL2": "reduce",
    "Concat": "concat",
    "Split": "concat",
    "Resize": "resize",
    "Upsample": "resize",
    "Reshape": "movement",
    "Transpose": "movement",
    "Flatten": "movement",
    "Squeeze": "movement",
    "Unsqueeze": "movement",
    "Slice": "movement",
    "Gather": "movement",
    "Pad": "movement",
    "Expand": "movement",
    "Tile": "movement",
    "Cast": "movement",
    "Identity": "movement",
}
# Nodes that do no work at run time: graph plumbing the runtime resolves once.
_FREE_OPS = frozenset({"Constant", "Shape", "ConstantOfShape", "Size"})
_PER_CATEGORY = ("count", "log_flops", "log_bytes", "log_param_bytes")
_KERNELS = (1, 3, 5, 7)  # 7 stands for 7 and more
_STRIDES = (1, 2)  # 2 stands for 2 and more
_SPATIAL = (112, 56, 28, 14, 7)  # output-size buckets: >=112, >=56, >=28, >=14, <14
_TOTALS = (
    "log_flops",
    "log_macs",
    "log_params",
    "log_activation_bytes",
    "log_peak_tensor_bytes",
    "log_input_bytes",
    "nodes",
)


def graph_feature_names() -> list[str]:
    """Name of each entry of :func:`graph_features`' vector, in order."""
    names = [f"{c}.{f}" for c in _CATEGORIES for f in _PER_CATEGORY]
    names += [
        f"conv_k{k}_s{s}.{f}" for k in _KERNELS for s in _STRIDES for f in ("count", "log_flops")
    ]
    names += [f"conv_out{h}.log_flops" for h in _SPATIAL]
    names += [f"total.{t}" for t in _TOTALS]
    return names


GRAPH_FEATURES = len(graph_feature_names())


def _conv_category(graph: Graph, node) -> str:
    group = int(node.attrs.get("group", 1))
    if group <= 1:
        return "conv"
    w = graph.tensors.get(node.inputs[1]) if len(node.inputs) > 1 else None
    # Depthwise: one input channel per group (weight is C_out x 1 x kH x kW).
    if w is not None and len(w.shape) >= 2 and w.shape[1] == 1:
        return "dwconv"
    return "gconv"


def graph_features(
    model: Any, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> np.ndarray:
    """Fixed-length float32 summary of an ONNX graph (names: :func:`graph_feature_names`).

    Sizes span orders of magnitude across models, so FLOPs and bytes enter as
    ``log1p``; counts stay linear. Args: a path, ModelProto or loaded Graph.
    """
    from hwnas.profilers.flops import count
    from hwnas.profilers.graph import Graph, load_graph

    graph = model if isinstance(model, Graph) else load_graph(model, input_shapes)
    report = count(graph)
    ncat = len(_CATEGORIES)
    cat = np.zeros((ncat, 4), dtype=np.float64)  # count, flops, bytes, param bytes
    grid = np.zeros((len(_KERNELS), len(_STRIDES), 2), dtype=np.float64)
    spatial = np.zeros(len(_SPATIAL), dtype=np.float64)
    act_bytes = 0
    peak = 0
    for node, nc in zip(graph.nodes, report.nodes, strict=True):
        if node.op_type in _FREE_OPS:
            continue
        if node.op_type == "Conv":
            c = _conv_category(graph, node)
        else:
            c = _OP_CATEGORY.get(node.op_type, "other")
        ci = _CATEGORIES.index(c)
        moved = 0
        params = 0
        for name in [*node.inputs, *node.outputs]:
            info = graph.tensors.get(name) if name else None
            if info is None:
                continue
            if info.kind in ("initializer", "constant"):
                params += info.nbytes
            else:
                moved += info.nbytes
        for name in node.outputs:
            info = graph.tensors.get(name) if name else None
            if info is not None:
                act_bytes += info.nbytes
                peak = max(peak, info.nbytes)
        cat[ci] += (1, nc.flops, moved, params)
        if node.op_type == "Conv":
            ks = node.attrs.get("kernel_shape")
            if ks is None and len(node.inputs) > 1 and node.inputs[1] in graph.tensors:
                ks = graph.tensors[node.inputs[1]].shape[2:]
            k = max(ks) if ks else 1
            s = max(node.attrs.get("strides", [1]) or [1])
            ki = min(range(len(_KERNELS)), key=lambda j: abs(_KERNELS[j] - k)) if k < 7 else 3
            si = 0 if s <= 1 else 1
            grid[ki, si] += (1, nc.flops)
            if nc.output_shape is not None and len(nc.output_shape) == 4:
                h = nc.output_shape[2]
                bi = next((j for j, b in enumerate(_SPATIAL[:-1]) if h >= b), len(_SPATIAL) - 1)
                spatial[bi] += nc.flops
    in_bytes = sum(graph.tensors[n].nbytes for n in graph.inputs if n in graph.tensors)
    n_nodes = sum(1 for n in graph.nodes if n.op_type not in _FREE_OPS)
    per_cat = np.column_stack([cat[:, 0], np.log1p(cat[:, 1:])])
    grid_f = np.stack([grid[..., 0], np.log1p(grid[..., 1])], axis=-1)
    totals = np.array(
        [
            math.log1p(report.flops),
            math.log1p(report.macs),
            math.log1p(report.params),
            math.log1p(act_bytes),
            math.log1p(peak),
            math.log1p(in_bytes),
            n_nodes,
        ]
    )
    vec = np.concatenate([per_cat.ravel(), grid_f.ravel(), np.log1p(spatial), totals])
    return vec.astype(np.float32)


# ---- the registered encodings --------------------------------------------------------


@ENCODINGS.register("onehot")
class OneHotEncoding(Encoding):
    """``space.encode``: concatenated one-hot of every decision (instant, space-specific)."""

    name = "onehot"

    def length(self, space: SearchSpace | None) -> int:
        if space is None:
            raise PredictorError("the onehot encoding needs a search space; give --space")
        return int(space.encoding_length)

    def encode_archs(
        self, space: SearchSpace, archs: Sequence[Arch], flops: np.ndarray | None = None
    ) -> np.ndarray:
        return space.encode_many(list(archs)).astype(np.float32, copy=False)


@ENCODINGS.register("flops")
class FlopsEncoding(Encoding):
    """One feature: the model's MFLOPs (for the ``flops-linear`` baseline)."""

    name = "flops"

    def length(self, space: SearchSpace | None) -> int:
        return 1

    def encode_archs(
        self, space: SearchSpace, archs: Sequence[Arch], flops: np.ndarray | None = None
    ) -> np.ndarray:
        archs = list(archs)
        f = (
            np.full(len(archs), np.nan)
            if flops is None
            else np.asarray(flops, dtype=np.float64).copy()
        )
        if f.shape != (len(archs),):
            raise PredictorError(f"{f.size} FLOPs given for {len(archs)} architectures")
        missing = np.flatnonzero(~np.isfinite(f))
        if missing.size:
            f[missing] = space_flops(space, [archs[i] for i in missing])
        return (f / 1e6).astype(np.float32).reshape(-1, 1)

    def encode_onnx(
        self, models: Sequence[Any], input_shapes: dict[str, tuple[int, ...]] | None = None
    ) -> np.ndarray:
        from hwnas.profilers.flops import count

        f = [count(m, input_shapes).flops for m in models]
        return (np.asarray(f, dtype=np.float64) / 1e6).astype(np.float32).reshape(-1, 1)


@ENCODINGS.register("torch-flops")
class TorchFlopsEncoding(Encoding):
    """One feature: MFLOPs of the torch forward pass (conv and matmul; no export needed)."""

    name = "torch-flops"

    def length(self, space: SearchSpace | None) -> int:
        return 1

    def encode_archs(
        self, space: SearchSpace, archs: Sequence[Arch], flops: np.ndarray | None = None
    ) -> np.ndarray:
        return (torch_flops(space, list(archs)) / 1e6).astype(np.float32).reshape(-1, 1)


@ENCODINGS.register("graph")
class GraphEncoding(Encoding):
    """Summary of the exported ONNX graph (:func:`graph_features`); works for any ONNX model."""

    name = "graph"

    def length(self, space: SearchSpace | None) -> int:
        return GRAPH_FEATURES

    def encode_archs(
        self, space: SearchSpace, archs: Sequence[Arch], flops: np.ndarray | None = None
    ) -> np.ndarray:
        cache: dict[str, np.ndarray] = {}
        rows = []
        for a in archs:
            if a.id not in cache:
                cache[a.id] = graph_features(export_arch(space, a))
            rows.append(cache[a.id])
        return np.stack(rows) if rows else np.zeros((0, GRAPH_FEATURES), dtype=np.float32)

    def encode_onnx(
        self, models: Sequence[Any], input_shapes: dict[str, tuple[int, ...]] | None = None
    ) -> np.ndarray:
        rows = [graph_features(m, input_shapes) for m in models]
        return np.stack(rows) if rows else np.zeros((0, GRAPH_FEATURES), dtype=np.float32)


@ENCODINGS.register("kernels")
class ModelEncoding(Encoding):
    """The models themselves, as ONNX files: for predictors that read graphs (``kernel``).

    Its "features" are a list of paths (architectures are exported, cached),
    not a matrix; its length is 0 (variable).
    """

    name = "kernels"

    def length(self, space: SearchSpace | None) -> int:
        return 0

    def encode_archs(
        self, space: SearchSpace, archs: Sequence[Arch], flops: np.ndarray | None = None
    ) -> list[Path]:  # type: ignore[override]
        return [export_arch(space, a) for a in archs]

    def encode_onnx(
        self, models: Sequence[Any], input_shapes: dict[str, tuple[int, ...]] | None = None
    ) -> list[Any]:  # type: ignore[override]
        return list(models)


__all__ = [
    "ENCODINGS",
    "GRAPH_FEATURES",
    "Encoding",
    "FlopsEncoding",
    "GraphEncoding",
    "ModelEncoding",
    "OneHotEncoding",
    "TorchFlopsEncoding",
    "export_arch",
    "get_encoding",
    "graph_feature_names",
    "graph_features",
    "list_encodings",
    "space_flops",
    "torch_flops",
]
