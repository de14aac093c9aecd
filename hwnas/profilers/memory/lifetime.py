"""Tensor lifetimes, the live-bytes timeline and the peak activation memory.

The model (MemNAS, Liu et al. CVPR 2020, section 3.2): a network runs its
nodes one after another; a tensor is allocated when its node runs (step
``birth``) and freed after its last reader (step ``death``); graph inputs are
alive from step 0, graph outputs until the last step. While node ``k`` runs,
its inputs and outputs exist together, so the bytes live at step ``k`` are
those of every buffer with ``birth <= k <= death``. The peak of that timeline
is the peak activation memory; parameters (initializers and constants) are
reported apart because they sit in read-only storage for the whole run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from hwnas.errors import ConfigError
from hwnas.profilers.graph import Graph, load_graph
from hwnas.profilers.memory.graphmem import MemGraph, build_memgraph

ModelLike = str | Path | onnx.ModelProto | Graph


@dataclass(frozen=True)
class TensorLife:
    """One activation tensor under one execution order.

    Attributes:
        birth: step (position in the order) of the node producing it; 0 for a graph input.
        death: last step at which it is read; the last step for a graph output.
        buffer: the tensor whose storage it shares (itself unless a view or in-place op).
    """

    name: str
    nbytes: int
    birth: int
    death: int
    kind: str
    buffer: str


@dataclass(frozen=True)
class BufferLife:
    """A piece of storage: one tensor, or tensors sharing bytes (views, in-place ops)."""

    name: str
    nbytes: int
    birth: int
    death: int
    tensors: tuple[str, ...]


@dataclass
class MemoryReport:
    """What :func:`estimate` found.

    Attributes:
        order: node indices (file order numbering) in execution order.
        steps: ``(node name, op type)`` for each step of ``order``.
        timeline: live activation bytes at each step.
        peak_activation_bytes: max of ``timeline``: the lower bound of any arena.
        peak_step: first step reaching the peak.
        alive_at_peak: buffers (by owning tensor) alive at the peak step; their sizes
            add up to the peak.
        param_bytes: initializers and Constant-node values.
        options: the accounting switches used (alias_views, inplace, include_inputs).
    """

    model: str
    order: list[int]
    steps: list[tuple[str, str]]
    tensors: list[TensorLife]
    buffers: list[BufferLife]
    timeline: list[int]
    peak_activation_bytes: int
    peak_step: int
    alive_at_peak: list[str]
    param_bytes: int
    options: dict[str, Any] = field(default_factory=dict)
    order_info: dict[str, Any] = field(default_factory=dict)

    @property
    def lower_bound(self) -> int:
        """No arena holding these buffers at fixed offsets can be smaller than the peak."""
        return self.peak_activation_bytes

    @property
    def total_bytes(self) -> int:
        """The MemNAS memory figure: parameters plus peak activations."""
        return self.param_bytes + self.peak_activation_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lower_bound"] = self.lower_bound
        d["total_bytes"] = self.total_bytes
        return d


def _as_graph(model: ModelLike, input_shapes: dict[str, tuple[int, ...]] | None) -> Graph:
    if isinstance(model, Graph):
        return model
    return load_graph(model, input_shapes)


def _label(model: ModelLike) -> str:
    if isinstance(model, str | Path):
        return str(model)
    if isinstance(model, Graph):
        return model.model.graph.name
    return model.graph.name


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x


def buffer_lives(
    mg: MemGraph, order: list[int], *, inplace: bool = False
) -> tuple[list[BufferLife], dict[str, int]]:
    """Birth and death of every buffer under ``order``.

    Args:
        inplace: let a unary element-wise op (``INPLACE_OPS``) write its output over its
            input, or a fused convolution over its residual "Sum" input (``INPLACE_OTHER``),
            when that input is read for the last time there and is not a graph input, as
            ONNX Runtime's allocation planner does. The choice depends
            on the order, which is why it is made here and not in the buffer graph.

    Returns:
        The buffers (merged where in-place), and tensor name -> index into that list.
    """
    n = mg.n
    pos = [0] * n
    for k, v in enumerate(order):
        pos[v] = k
    nb = len(mg.buf_names)
    last = [max((pos[c] for c in mg.consumers[b]), default=-1) for b in range(nb)]
    pinned = list(mg.pinned)
    size = list(mg.buf_size)
    uf = _UnionFind(nb)
    if inplace:
        for v in order:
            if len(mg.node_out[v]) != 1:
                continue
            o = mg.node_out[v][0]
            for src in mg.node_inplace_src[v]:
                r = uf.find(src)
                if (
                    mg.producer[r] >= 0
                    and not pinned[r]
                    and 0 < size[o] <= size[r]
                    and last[r] == pos[v]
                ):
                    uf.parent[o] = r
                    last[r] = max(last[r], last[o])
                    pinned[r] = pinned[r] or pinned[o]
                    break
    members: dict[int, list[str]] = {}
    for t, b in mg.tensor_buf.items():
        members.setdefault(uf.find(b), []).append(t)
    lives: list[BufferLife] = []
    index: dict[str, int] = {}
    for b in range(nb):
        if uf.find(b) != b:
            continue
        birth = pos[mg.producer[b]] if mg.producer[b] >= 0 else 0
        death = n - 1 if pinned[b] else max(last[b], birth)
        for t in members.get(b, []):
            index[t] = len(lives)
        lives.append(BufferLife(mg.buf_names[b], size[b], birth, death, tuple(members.get(b, []))))
    return lives, index


def timeline_of(buffers: list[BufferLife], n_steps: int) -> list[int]:
    """Live bytes at each step: a difference array over the buffers' lifetimes."""
    diff = [0] * (n_steps + 1)
    for b in buffers:
        if b.nbytes and b.birth <= b.death:
            diff[b.birth] += b.nbytes
            diff[b.death + 1] -= b.nbytes
    out, acc = [], 0
    for k in range(n_steps):
        acc += diff[k]
        out.append(acc)
    return out


def resolve_order(
    mg: MemGraph,
    order: str | list[int],
    *,
    time_limit_s: float = 10.0,
) -> tuple[list[int], dict[str, Any]]:
    """Turn ``"onnx"``, ``"optimal"`` or an explicit list into a checked node order."""
    if isinstance(order, str):
        if order == "onnx":
            return list(range(mg.n)), {"kind": "onnx"}
        if order == "optimal":
            from hwnas.profilers.memory.order import optimal_order

            res = optimal_order(mg, time_limit_s=time_limit_s)
            return res.order, {"kind": "optimal", **res.summary()}
        raise ConfigError(
            f"unknown order '{order}'; use 'onnx', 'optimal' or a list of node indices"
        )
    order = [int(v) for v in order]
    mg.check_order(order)
    return order, {"kind": "given"}


def estimate(
    model: ModelLike,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    order: str | list[int] = "onnx",
    *,
    alias_views: bool = False,
    inplace: bool = False,
    include_inputs: bool = True,
    pin_inputs: bool = False,
    time_limit_s: float = 10.0,
) -> MemoryReport:
    """Lifetime-based peak activation memory of an ONNX model.

    Args:
        model: a .onnx path, a ModelProto, or a :class:`~hwnas.profilers.graph.Graph`.
        input_shapes: static shapes for dynamic inputs (``{"": shape}`` for the only one).
        order: ``"onnx"`` (the file's node order, what most runtimes run), ``"optimal"``
            (the order of :func:`~hwnas.profilers.memory.order.optimal_order`) or a list
            of node indices.
        alias_views: views (Reshape, Flatten, Squeeze, Unsqueeze, Identity) share their
            input's buffer. Off by default, as MemNAS counts every tensor; on to compare
            with ONNX Runtime or TFLite, which both share.
        inplace: unary element-wise ops may overwrite an input read for the last time
            (ONNX Runtime does); off by default for the same reason.
        include_inputs: count graph inputs (MemNAS does). Runtimes read them from the
            caller's buffer, outside their arena.
        pin_inputs: inputs stay alive to the last step (LiteRT keeps them readable).
        time_limit_s: budget of the optimiser when ``order="optimal"``.

    Raises:
        ProfilingError: unreadable model, or a tensor whose size cannot be inferred.
        ConfigError: an explicit order that is not a topological order of the nodes.
    """
    graph = _as_graph(model, input_shapes)
    mg = build_memgraph(
        graph, alias_views=alias_views, include_inputs=include_inputs, pin_inputs=pin_inputs
    )
    return estimate_memgraph(
        mg,
        order,
        inplace=inplace,
        label=_label(model),
        options={
            "alias_views": alias_views,
            "inplace": inplace,
            "include_inputs": include_inputs,
            "pin_inputs": pin_inputs,
        },
        time_limit_s=time_limit_s,
    )


def estimate_memgraph(
    mg: MemGraph,
    order: str | list[int] = "onnx",
    *,
    inplace: bool = False,
    label: str = "",
    options: dict[str, Any] | None = None,
    time_limit_s: float = 10.0,
) -> MemoryReport:
    """:func:`estimate` on an already built :class:`MemGraph`."""
    seq, info = resolve_order(mg, order, time_limit_s=time_limit_s)
    buffers, index = buffer_lives(mg, seq, inplace=inplace)
    n = mg.n
    timeline = timeline_of(buffers, n)
    peak = max(timeline, default=0)
    peak_step = timeline.index(peak) if timeline else 0
    alive = [b.name for b in buffers if b.nbytes and b.birth <= peak_step <= b.death and timeline]
    pos = [0] * n
    for k, v in enumerate(seq):
        pos[v] = k
    tensors: list[TensorLife] = []
    for t, b in mg.tensor_buf.items():
        prod = mg.tensor_producer.get(t, -1)
        birth = pos[prod] if prod >= 0 else 0
        reads = [pos[c] for c in mg.tensor_consumers.get(t, [])]
        kind = mg.tensor_kind.get(t, "activation")
        death = n - 1 if kind == "output" else max(reads, default=birth)
        size = mg.tensor_size[t] if mg.buf_size[b] or mg.producer[b] >= 0 else 0
        tensors.append(TensorLife(t, size, birth, death, kind, buffers[index[t]].name))
    tensors.sort(key=lambda x: (x.birth, x.death, x.name))
    return MemoryReport(
        model=label,
        order=seq,
        steps=[(mg.node_names[v], mg.op_types[v]) for v in seq],
        tensors=tensors,
        buffers=buffers,
        timeline=timeline,
        peak_activation_bytes=int(peak),
        peak_step=int(peak_step),
        alive_at_peak=alive,
        param_bytes=mg.param_bytes,
        options=dict(options or {"inplace": inplace}),
        order_info=info,
    )


def estimate_module(
    module: Any,
    input_shape: tuple[int, ...],
    *,
    order: str | list[int] = "onnx",
    **kwargs: Any,
) -> MemoryReport:
    """Export a torch module to ONNX and :func:`estimate` it.

    Uses :func:`hwnas.export.to_onnx` when the exporter module is present (cached
    artifacts), else ``torch.onnx.export(dynamo=True)`` into a temporary file.
    """
    from hwnas.profilers.memory.torch_export import export_module

    proto = export_module(module, input_shape)
    return estimate(proto, None, order, **kwargs)
