"""Reward terms combining accuracy, latency and memory, one job per module.

- :mod:`~hwnas.objectives.units`: targets with their units (``20ms``, ``2MB``).
- :mod:`~hwnas.objectives.terms`: :class:`Terms` of one candidate and the reward maths
  (MnasNet's soft/hard factor, the constrained problem, MemNAS, accuracy alone).
- :mod:`~hwnas.objectives.latency`: latency sources (table, predictor with its
  interval and :class:`Trust` correction, device), each with a cost.
- :mod:`~hwnas.objectives.memory`: the lifetime memory estimate, cached in the store.
- :mod:`~hwnas.objectives.objective`: the :class:`Objective` (hard constraints,
  cheap terms first, one reward).
- :mod:`~hwnas.objectives.verify`: verification of the candidates that decide a
  search's answer on the device (``--verify``).

Every name importable from the old single module is importable from here.
"""

from hwnas.objectives.latency import (
    COSTS,
    DeviceLatency,
    LatencySource,
    PredictorLatency,
    TableLatency,
    Trust,
    create_latency_source,
)
from hwnas.objectives.memory import MemoryEstimator
from hwnas.objectives.objective import HARD_REWARDS, Objective
from hwnas.objectives.terms import (
    MEMORY_METRICS,
    REWARD_PRESETS,
    REWARDS,
    Terms,
    apply_factor,
    mnasnet_factor,
    mnasnet_reward,
)
from hwnas.objectives.units import parse_bytes, parse_latency_ms

__all__ = [
    "COSTS",
    "HARD_REWARDS",
    "MEMORY_METRICS",
    "REWARDS",
    "REWARD_PRESETS",
    "DeviceLatency",
    "LatencySource",
    "MemoryEstimator",
    "Objective",
    "PredictorLatency",
    "TableLatency",
    "Terms",
    "Trust",
    "apply_factor",
    "create_latency_source",
    "mnasnet_factor",
    "mnasnet_reward",
    "parse_bytes",
    "parse_latency_ms",
]
