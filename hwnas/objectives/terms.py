"""The terms of one evaluated candidate and the reward maths that turns them into one number.

Rewards (``reward=``):

``soft`` / ``hard``
    MnasNet (Tan et al., CVPR 2019, eq. 2):
    ``ACC(m) * (LAT(m) / T) ** w`` with ``w = alpha`` if ``LAT(m) <= T`` else
    ``beta``. The paper's soft constraint is ``alpha = beta = -0.07`` (doubling
    the latency is worth about 5 % relative accuracy); its hard constraint is
    ``alpha = 0, beta = -1`` (no reward for being faster than T, a steep
    penalty above it). A memory target ``M`` adds the same factor
    ``(MEM(m) / M) ** w`` for memory. ``alpha``/``beta`` may be overridden.
``constraint``
    the textbook constrained problem ``max ACC s.t. LAT <= T, MEM <= M``:
    the accuracy when every constraint holds, otherwise minus the summed
    relative excess (below any feasible reward while accuracy is non-negative,
    and still pointing the search towards feasibility).
``memnas``
    MemNAS' memory-efficiency reward against a base network (Liu et al.,
    CVPR 2020; :func:`hwnas.profilers.memory.memory_efficiency`).
``accuracy``
    the accuracy alone; targets, if any, only decide feasibility (what
    NASWOT's search and plain accuracy searches use).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Terms:
    """Everything known about one evaluated candidate.

    Attributes:
        accuracy: the evaluator's value (percent, or a score), higher is better.
        latency_ms: measured, predicted or tabulated latency (``inf`` if the
            measurement failed: such a candidate never satisfies a target).
        peak_activation_bytes / param_bytes: the memory estimate.
        memory_bytes: the figure compared with the memory target.
        reward: the scalar a searcher maximises.
        feasible: every hard constraint (latency, memory target) holds.
        violations: relative excess over each target (0 when met).
        memnas: MemNAS memory-efficiency term, when a base network is set.
        sources: where each term came from (``table:...``, ``device:cpu-ort (cached)``...).
        eval_s: seconds spent producing these terms (0 for a cache hit).
        latency_predicted_ms: the latency source's (corrected) point value, kept
            when a measurement replaces ``latency_ms``.
        latency_lower_ms / latency_upper_ms: the source's interval at the
            objective's quantile (equal to the point for exact sources).
        latency_measured_ms: the verifying device's measurement (``inf``: it failed).
        verified: ``None`` (not verified), ``"ok"`` or ``"failed"``.
        screened: rejected on cheap terms alone (no accuracy was evaluated).
    """

    accuracy: float | None = None
    latency_ms: float | None = None
    peak_activation_bytes: int | None = None
    param_bytes: int | None = None
    memory_bytes: int | None = None
    reward: float = float("nan")
    feasible: bool = True
    violations: dict[str, float] = field(default_factory=dict)
    memnas: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    eval_s: float = 0.0
    latency_predicted_ms: float | None = None
    latency_lower_ms: float | None = None
    latency_upper_ms: float | None = None
    latency_measured_ms: float | None = None
    verified: str | None = None
    screened: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():  # JSON has no inf/nan
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = repr(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Terms:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in d.items():
            if k not in names:
                continue
            if isinstance(v, str) and k in _FLOAT_FIELDS:
                v = float(v)
            kw[k] = v
        return cls(**kw)


_FLOAT_FIELDS = (
    "accuracy",
    "latency_ms",
    "reward",
    "memnas",
    "eval_s",
    "latency_predicted_ms",
    "latency_lower_ms",
    "latency_upper_ms",
    "latency_measured_ms",
)


def mnasnet_factor(value: float, target: float, alpha: float, beta: float) -> float:
    """``(value / target) ** w``, ``w = alpha`` if ``value <= target`` else ``beta``."""
    if not math.isfinite(value):
        return 0.0 if beta < 0 else math.inf
    w = alpha if value <= target else beta
    return (max(value, 1e-12) / target) ** w


def mnasnet_reward(
    accuracy: float, latency_ms: float, target_ms: float, alpha: float = -0.07, beta: float = -0.07
) -> float:
    """MnasNet's ``ACC * (LAT/T)^w`` (see the module docstring).

    For a negative accuracy (some training-free scores) the factor divides
    instead of multiplying, so a slower network is still ranked lower.
    """
    f = mnasnet_factor(latency_ms, target_ms, alpha, beta)
    return apply_factor(accuracy, f)


def apply_factor(accuracy: float, factor: float) -> float:
    if not math.isfinite(accuracy):
        return accuracy
    if accuracy >= 0:
        return accuracy * factor
    return accuracy / factor if factor > 0 else -math.inf


#: The paper's two settings of (alpha, beta).
REWARD_PRESETS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
REWARDS = ("soft", "hard", "constraint", "memnas", "accuracy")
MEMORY_METRICS = ("total", "activations", "params")
