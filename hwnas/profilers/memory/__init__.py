"""Lifetime-based memory of a network: peak activations, arena plan, best order.

MemNAS (Liu et al., CVPR 2020) counts a network's memory as its parameters
plus the largest set of intermediate tensors alive at once. This package
computes that figure from an ONNX graph before any device is touched, plans
the arena a static runtime would allocate (TFLite's ArenaPlanner), finds the
execution order that minimises the peak (Serenity, MLSys 2020), measures what
ONNX Runtime really allocates, and offers the MemNAS reward as an objective term.

Typical use::

    from hwnas.profilers.memory import estimate, plan_arena, optimal_order

    rep = estimate("model.onnx")                     # file order
    plan = plan_arena(rep); plan.verify()
    best = optimal_order("model.onnx", time_limit_s=10)
    rep_opt = estimate("model.onnx", order=best.order)
"""

from hwnas.profilers.memory.arena import DEFAULT_ALIGNMENT, ArenaPlan, plan_arena, plan_buffers
from hwnas.profilers.memory.graphmem import INPLACE_OPS, VIEW_OPS, MemGraph, build_memgraph
from hwnas.profilers.memory.lifetime import (
    BufferLife,
    MemoryReport,
    TensorLife,
    estimate,
    estimate_memgraph,
    estimate_module,
)
from hwnas.profilers.memory.objective import MEMNAS_WEIGHTS, MemoryTerms, memory_efficiency
from hwnas.profilers.memory.order import (
    OrderResult,
    optimal_order,
    peak_of_order,
    reorder_model,
    write_reordered,
)

__all__ = [
    "DEFAULT_ALIGNMENT",
    "INPLACE_OPS",
    "VIEW_OPS",
    "ArenaPlan",
    "BufferLife",
    "MemGraph",
    "MemoryReport",
    "MEMNAS_WEIGHTS",
    "MemoryTerms",
    "OrderResult",
    "TensorLife",
    "build_memgraph",
    "estimate",
    "estimate_memgraph",
    "estimate_module",
    "memory_efficiency",
    "optimal_order",
    "peak_of_order",
    "plan_arena",
    "plan_buffers",
    "reorder_model",
    "write_reordered",
]
