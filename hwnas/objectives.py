"""Reward terms combining accuracy, latency and memory.

An :class:`Objective` evaluates architectures into :class:`Terms`: accuracy
(from an evaluator: table, NASWOT score, proxy training), latency (measured on
a device and cached in the store, predicted by a trained predictor, or read
from a benchmark column), memory (lifetime estimate of peak activations and
parameter bytes), whether the candidate meets the hard constraints, and the
scalar reward a searcher maximises. Every term is kept, so a history can be
re-scored, plotted or turned into a Pareto front afterwards.

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

Units: latency targets accept ``us``, ``ms`` and ``s`` (``20ms``, ``0.02s``);
memory targets ``B``, ``KB``/``MB``/``GB`` (powers of 1000) and
``KiB``/``MiB``/``GiB`` (powers of 1024). A bare number is refused: a
latency of "20" is too easy to mean in the wrong unit.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.errors import ConfigError, PredictorError

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.evaluators.base import AccuracyEvaluator
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.spaces.base import SearchSpace
    from hwnas.store import Store

# ---- units ---------------------------------------------------------------------------

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
_BYTE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_latency_ms(text: str | float) -> float:
    """``"20ms"`` -> 20.0; ``"0.02s"`` -> 20.0; ``"500us"`` -> 0.5.

    Raises:
        ConfigError: no unit, an unknown unit, or a value that is not positive.
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(_NUM + r"\s*([a-zA-Zµ]*)", text.strip())
        if not m:
            raise ConfigError(
                f"cannot read latency {text!r}; write it with a unit, e.g. 20ms or 0.02s"
            )
        unit = m.group(2).lower()
        if not unit:
            raise ConfigError(f"latency {text!r} has no unit; write {text}ms or {text}s")
        if unit not in _TIME_UNITS:
            raise ConfigError(
                f"unknown time unit {m.group(2)!r} in {text!r}; use one of: us, ms, s (e.g. 20ms)"
            )
        value = float(m.group(1)) * _TIME_UNITS[unit]
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"a latency target must be a positive time, got {text!r}")
    return value


def parse_bytes(text: str | int) -> int:
    """``"2MB"`` -> 2_000_000; ``"2MiB"`` -> 2_097_152; ``"512KB"`` -> 512_000.

    Raises:
        ConfigError: no unit, an unknown unit, or a value that is not positive.
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(_NUM + r"\s*([a-zA-Z]*)", text.strip())
        if not m:
            raise ConfigError(f"cannot read memory size {text!r}; write it with a unit, e.g. 2MB")
        unit = m.group(2).lower()
        if not unit:
            raise ConfigError(
                f"memory size {text!r} has no unit; write {text}B, {text}KB or {text}MB"
            )
        if unit not in _BYTE_UNITS:
            raise ConfigError(
                f"unknown size unit {m.group(2)!r} in {text!r}; use B, KB, MB, GB (x1000) "
                "or KiB, MiB, GiB (x1024)"
            )
        value = float(m.group(1)) * _BYTE_UNITS[unit]
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"a memory target must be a positive size, got {text!r}")
    return int(round(value))


# ---- terms ---------------------------------------------------------------------------


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
            if isinstance(v, str) and k in ("accuracy", "latency_ms", "reward", "memnas", "eval_s"):
                v = float(v)
            kw[k] = v
        return cls(**kw)


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
    return _apply_factor(accuracy, f)


def _apply_factor(accuracy: float, factor: float) -> float:
    if not math.isfinite(accuracy):
        return accuracy
    if accuracy >= 0:
        return accuracy * factor
    return accuracy / factor if factor > 0 else -math.inf


#: The paper's two settings of (alpha, beta).
REWARD_PRESETS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
REWARDS = ("soft", "hard", "constraint", "memnas", "accuracy")
MEMORY_METRICS = ("total", "activations", "params")


# ---- latency sources -----------------------------------------------------------------


class LatencySource(ABC):
    """Where latency comes from. Batched, so a caller may hand out slices to workers."""

    @abstractmethod
    def latency_ms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[tuple[float, str]]:
        """(milliseconds, short provenance) per architecture."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """What determines the values (JSON-able): part of a run's identity."""

    def close(self) -> None:
        """Release devices and files."""


class TableLatency(LatencySource):
    """A latency column of a benchmark CSV (``table:COLUMN`` / ``table:FILE:COLUMN``)."""

    def __init__(self, path: str | Path, column: str, key: str = "arch"):
        from hwnas.evaluators.table import load_table

        self.table = load_table(path, key)
        self.column = column
        self.table.column(column)  # fail now on a bad column

    def latency_ms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[tuple[float, str]]:
        return [(self.table.value(space, a, self.column), f"table:{self.column}") for a in archs]

    def config(self) -> dict[str, Any]:
        return {"latency": "table", "path": str(self.table.path), "column": self.column}


class PredictorLatency(LatencySource):
    """A trained latency predictor file (``predictor:FILE``), applied to the space's encoding.

    The predictor records the encoding it was trained on; the file is checked
    against the space before the first prediction.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pred: Any = None
        self._encoding: Any = None

    def _load(self, space: SearchSpace) -> None:
        if self._pred is not None:
            return
        try:
            from hwnas.predictors import load_predictor
            from hwnas.predictors.encoders import get_encoding
        except ImportError as exc:
            raise PredictorError(
                f"hwnas.predictors cannot be imported ({exc}); predicted latency is unavailable "
                "in this installation; use --latency device:NAME or table:COLUMN"
            ) from exc
        pred = load_predictor(self.path, space=space.name)
        enc = get_encoding(str(pred.meta.get("encoding", "onehot")))
        pred.check_compatible(space=space.name, encoding_length=enc.length(space))
        self._pred, self._encoding = pred, enc

    def latency_ms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[tuple[float, str]]:
        self._load(space)
        X = self._encoding.encode_archs(space, list(archs))
        ms = self._pred.predict(X)
        return [(float(v), f"predictor:{self.path.name}") for v in ms]

    def config(self) -> dict[str, Any]:
        from hwnas.export.artifact import sha256_file

        digest = sha256_file(self.path) if self.path.exists() else None
        return {"latency": "predictor", "path": str(self.path), "sha256": digest}


class DeviceLatency(LatencySource):
    """Latency measured on a device, each architecture at most once per store.

    A measurement is keyed in the store by (architecture id, device name,
    input shape); an architecture found there, measured or failed, is served
    from it. A failed measurement (crash, timeout) counts as infinitely slow,
    so the candidate can never meet a latency target, and is not retried.

    Args:
        device: registry name (``cpu-ort``...).
        store: where measurements are cached; ``None`` keeps them in memory only.
        settings: timing settings (runs, warm-up, budget).
        threads: the device's runtime threads.
        isolate: measure in a worker process (a crashing model cannot kill the search).
    """

    def __init__(
        self,
        device: str,
        store: Store | None = None,
        settings: MeasureSettings | None = None,
        threads: int | None = None,
        isolate: bool = False,
    ):
        from hwnas.devices import DEVICES

        DEVICES.factory(device)  # unknown device: fail before any export
        self.device_name = device
        self.store = store
        self.settings = settings
        self.threads = threads
        self.isolate = isolate
        self._device: Any = None
        self._cache: dict[tuple[str, str], float] = {}
        self._loaded_spaces: set[str] = set()
        self.measured = 0

    def _dev(self) -> Any:
        if self._device is None:
            from hwnas.devices import create_device
            from hwnas.devices.isolated import IsolatedDevice

            kw = {"threads": self.threads}
            self._device = (
                IsolatedDevice(self.device_name, **kw)
                if self.isolate
                else create_device(self.device_name, **kw)
            )
        return self._device

    def _load_cache(self, space: SearchSpace) -> None:
        if self.store is None or space.name in self._loaded_spaces:
            return
        self._loaded_spaces.add(space.name)
        for row in self.store.measurements(device=self.device_name, space=space.name, status=None):
            key = (row["arch_id"], row["input_shape"])
            ms = float(row["median_ms"]) if row["status"] == "ok" else math.inf
            # A success recorded after an earlier failure wins.
            if key not in self._cache or math.isinf(self._cache[key]):
                self._cache[key] = ms

    def _measure(self, space: SearchSpace, arch: Arch) -> float:
        from hwnas.campaigns.step import export_source
        from hwnas.devices.isolated import MeasurementFailed
        from hwnas.source import ModelSource

        # seed 0: same weights -> same fingerprint -> cached export; the source
        # carries classes and input size, so cpu-torch rebuilds this very network
        art = export_source(ModelSource.of_space(space, arch), space=space, label=arch.id)
        if self.store is not None:
            self.store.add_arch(arch, label=space.format(arch))
            self.store.add_artifact(art, arch.id)
        self.measured += 1
        try:
            m = self._dev().measure(art, self.settings)
        except MeasurementFailed as exc:
            if self.store is not None:
                self.store.add_measurement(
                    arch.id, exc.failure, space.input_shape, device=self.device_name
                )
            return math.inf
        if self.store is not None:
            self.store.add_measurement(arch.id, m, space.input_shape, device=self.device_name)
        return float(m.median)

    def latency_ms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[tuple[float, str]]:
        from hwnas.store.sqlite import shape_key

        self._load_cache(space)
        shape = shape_key(space.input_shape)
        out = []
        for a in archs:
            key = (a.id, shape)
            if key in self._cache:
                out.append((self._cache[key], f"device:{self.device_name} (cached)"))
                continue
            ms = self._measure(space, a)
            self._cache[key] = ms
            out.append((ms, f"device:{self.device_name}"))
        return out

    def config(self) -> dict[str, Any]:
        return {
            "latency": "device",
            "device": self.device_name,
            "threads": self.threads,
            "settings": self.settings.to_dict() if self.settings is not None else None,
        }

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None


def create_latency_source(
    spec: str,
    *,
    table_path: str | Path | None = None,
    store: Store | None = None,
    settings: MeasureSettings | None = None,
    threads: int | None = None,
    isolate: bool = False,
) -> LatencySource:
    """``device:NAME``, ``predictor:FILE``, ``table:COLUMN`` or ``table:FILE:COLUMN``.

    Args:
        table_path: the CSV a bare ``table:COLUMN`` refers to (the accuracy table).
        store / settings / threads / isolate: for ``device:``.
    """
    kind, _, rest = spec.partition(":")
    if kind == "device" and rest:
        return DeviceLatency(rest, store=store, settings=settings, threads=threads, isolate=isolate)
    if kind == "predictor" and rest:
        if not Path(rest).exists():
            raise ConfigError(
                f"no predictor file {rest}; train one with `hwnas train-predictor` or use device:NAME"
            )
        return PredictorLatency(rest)
    if kind == "table" and rest:
        if ":" in rest and not Path(rest).exists():
            file, column = rest.rsplit(":", 1)
            return TableLatency(file, column)
        if table_path is None:
            raise ConfigError(
                f"--latency {spec} names a column but no table; use table:FILE:COLUMN, or give "
                "--accuracy table:FILE so the column is read from that file"
            )
        return TableLatency(table_path, rest)
    raise ConfigError(
        f"cannot read latency source {spec!r}; use device:NAME (e.g. device:cpu-ort), "
        "predictor:FILE.npz, table:COLUMN or table:FILE:COLUMN"
    )


# ---- memory --------------------------------------------------------------------------


class MemoryEstimator:
    """Peak activation and parameter bytes of each architecture (lifetime estimate).

    The network is exported to ONNX (cached) and :func:`hwnas.profilers.memory.estimate`
    walks tensor lifetimes in the file's node order. Results are kept in the
    store's metrics table when a store is given, so no architecture is
    estimated twice across runs.
    """

    def __init__(self, store: Store | None = None):
        self.store = store
        self._cache: dict[tuple[str, str], tuple[int, int]] = {}

    def _from_store(self, arch_id: str, shape: str) -> tuple[int, int] | None:
        if self.store is None:
            return None
        row = self.store.conn.execute(
            "SELECT peak_activation_bytes, param_bytes FROM metrics WHERE arch_id=? AND input_shape=?",
            (arch_id, shape),
        ).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        return int(row[0]), int(row[1])

    def estimate(self, space: SearchSpace, arch: Arch) -> tuple[int, int, str]:
        """(peak activation bytes, parameter bytes, provenance)."""
        import torch

        from hwnas.export import to_onnx
        from hwnas.profilers.memory import estimate
        from hwnas.source import ModelSource
        from hwnas.store.sqlite import shape_key

        shape = shape_key(space.input_shape)
        key = (arch.id, shape)
        if key in self._cache:
            return (*self._cache[key], "estimate (cached)")
        hit = self._from_store(arch.id, shape)
        if hit is not None:
            self._cache[key] = hit
            return (*hit, "estimate (store)")
        torch.manual_seed(0)
        art = to_onnx(
            space.build(arch),
            space.input_shape,
            label=arch.id,
            check=False,
            source=ModelSource.of_space(space, arch).to_dict(),
        )
        rep = estimate(art.path)
        value = (int(rep.peak_activation_bytes), int(rep.param_bytes))
        self._cache[key] = value
        if self.store is not None:
            self.store.add_arch(arch, label=space.format(arch))
            self.store.set_metrics(
                arch.id,
                space.input_shape,
                param_bytes=value[1],
                peak_activation_bytes=value[0],
            )
        return (*value, "estimate")

    def config(self) -> dict[str, Any]:
        return {"memory": "lifetime-estimate", "order": "onnx"}


# ---- the objective -------------------------------------------------------------------


class Objective:
    """Accuracy, latency and memory terms, hard constraints, and one reward.

    Args:
        accuracy: an accuracy evaluator (``hwnas.evaluators``).
        latency: where latency comes from; ``None`` when no latency term is wanted.
        memory: a memory estimator; made automatically when a memory target or
            the ``memnas`` reward needs one.
        latency_target_ms: T of the MnasNet reward and the latency constraint.
        memory_target_bytes: M of the memory factor and constraint.
        reward: ``soft``, ``hard``, ``constraint``, ``memnas`` or ``accuracy``.
        alpha, beta: override the preset exponents of ``soft``/``hard``.
        memory_metric: what is compared with M: ``total`` (parameters + peak
            activations, MemNAS' count), ``activations`` or ``params``.
        memnas_lambda: MemNAS' accuracy/memory weight.
        memnas_base: (accuracy, peak activation bytes, parameter bytes) of the
            base network for the MemNAS term; set later with :meth:`set_memnas_base`.

    Raises:
        ConfigError: a reward that needs a target or a term that is missing.
    """

    def __init__(
        self,
        accuracy: AccuracyEvaluator,
        latency: LatencySource | None = None,
        memory: MemoryEstimator | None = None,
        *,
        latency_target_ms: float | None = None,
        memory_target_bytes: int | None = None,
        reward: str = "soft",
        alpha: float | None = None,
        beta: float | None = None,
        memory_metric: str = "total",
        memnas_lambda: float = 0.5,
        memnas_base: tuple[float, float, float] | None = None,
        store: Store | None = None,
    ):
        if reward not in REWARDS:
            raise ConfigError(f"unknown reward {reward!r}; choose one of: {', '.join(REWARDS)}")
        if memory_metric not in MEMORY_METRICS:
            raise ConfigError(
                f"unknown memory metric {memory_metric!r}; choose one of: {', '.join(MEMORY_METRICS)}"
            )
        if latency_target_ms is not None and latency is None:
            raise ConfigError(
                "a latency target needs a latency source: --latency device:NAME, predictor:FILE "
                "or table:COLUMN"
            )
        if reward in REWARD_PRESETS and latency_target_ms is None and memory_target_bytes is None:
            raise ConfigError(
                f"the MnasNet '{reward}' reward needs a target: give --latency-target (e.g. 20ms) "
                "and/or --memory-target (e.g. 2MB)"
            )
        if reward == "constraint" and latency_target_ms is None and memory_target_bytes is None:
            raise ConfigError(
                "the 'constraint' reward needs --latency-target and/or --memory-target"
            )
        if not 0.0 <= memnas_lambda <= 1.0:
            raise ConfigError(f"memnas_lambda must be in [0, 1], got {memnas_lambda}")
        self.accuracy = accuracy
        self.latency = latency
        needs_memory = memory_target_bytes is not None or reward == "memnas"
        self.memory = (
            memory if memory is not None else (MemoryEstimator(store) if needs_memory else None)
        )
        self.latency_target_ms = latency_target_ms
        self.memory_target_bytes = memory_target_bytes
        self.reward_kind = reward
        a0, b0 = REWARD_PRESETS.get(reward, (0.0, -1.0))
        self.alpha = a0 if alpha is None else float(alpha)
        self.beta = b0 if beta is None else float(beta)
        self.memory_metric = memory_metric
        self.memnas_lambda = memnas_lambda
        self.memnas_base = memnas_base
        # (activation, parameter) weights of the MemNAS term: the paper's 1/1 unless
        # the memnas searcher's memory_weights=code asks for the released code's 0.7/0.3
        self.memnas_weights: tuple[float, float] = (1.0, 1.0)
        self._cache: dict[tuple[str, str], Terms] = {}

    # ---- configuration ------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything that determines the terms and the reward (JSON-able)."""
        return {
            "accuracy": self.accuracy.config(),
            "latency": self.latency.config() if self.latency else None,
            "memory": self.memory.config() if self.memory else None,
            "latency_target_ms": self.latency_target_ms,
            "memory_target_bytes": self.memory_target_bytes,
            "memory_metric": self.memory_metric,
            "reward": self.reward_kind,
            "alpha": self.alpha,
            "beta": self.beta,
            "memnas_lambda": self.memnas_lambda if self.reward_kind == "memnas" else None,
            "memnas_base": list(self.memnas_base) if self.memnas_base else None,
        }

    def with_accuracy(self, accuracy: AccuracyEvaluator) -> Objective:
        """The same objective with another accuracy term (shares latency and memory caches)."""
        other = object.__new__(Objective)
        other.__dict__.update(self.__dict__)
        other.accuracy = accuracy
        other._cache = {}
        return other

    def set_memnas_base(self, accuracy: float, activation_bytes: float, param_bytes: float) -> None:
        """Set the MemNAS base network (MemNAS moves it every grow/trim round)."""
        self.memnas_base = (float(accuracy), float(activation_bytes), float(param_bytes))

    def close(self) -> None:
        if self.latency is not None:
            self.latency.close()

    # ---- scoring ------------------------------------------------------------------

    def score(self, terms: Terms) -> Terms:
        """Fill ``memory_bytes``, ``feasible``, ``violations``, ``memnas`` and ``reward`` from the raw terms."""
        if terms.peak_activation_bytes is not None and terms.param_bytes is not None:
            terms.memory_bytes = {
                "total": terms.peak_activation_bytes + terms.param_bytes,
                "activations": terms.peak_activation_bytes,
                "params": terms.param_bytes,
            }[self.memory_metric]
        viol: dict[str, float] = {}
        if self.latency_target_ms is not None and terms.latency_ms is not None:
            viol["latency"] = max(0.0, terms.latency_ms / self.latency_target_ms - 1.0)
        if self.memory_target_bytes is not None and terms.memory_bytes is not None:
            viol["memory"] = max(0.0, terms.memory_bytes / self.memory_target_bytes - 1.0)
        terms.violations = viol
        terms.feasible = all(v == 0.0 for v in viol.values())
        if self.memnas_base is not None and terms.memory_bytes is not None:
            from hwnas.profilers.memory import MemoryTerms, memory_efficiency

            terms.memnas = memory_efficiency(
                MemoryTerms(
                    float(terms.accuracy or 0.0),
                    float(terms.peak_activation_bytes or 0),
                    float(terms.param_bytes or 0),
                ),
                MemoryTerms(*self.memnas_base),
                self.memnas_lambda,
                self.memnas_weights,
            )
        terms.reward = self._reward(terms)
        return terms

    def _reward(self, t: Terms) -> float:
        acc = float(t.accuracy) if t.accuracy is not None else math.nan
        if self.reward_kind in REWARD_PRESETS:
            factor = 1.0
            if self.latency_target_ms is not None and t.latency_ms is not None:
                factor *= mnasnet_factor(
                    t.latency_ms, self.latency_target_ms, self.alpha, self.beta
                )
            if self.memory_target_bytes is not None and t.memory_bytes is not None:
                factor *= mnasnet_factor(
                    float(t.memory_bytes), float(self.memory_target_bytes), self.alpha, self.beta
                )
            return _apply_factor(acc, factor)
        if self.reward_kind == "constraint":
            if t.feasible:
                return acc
            return -sum(min(v, 1e6) for v in t.violations.values())
        if self.reward_kind == "accuracy":
            return acc
        # memnas
        if t.memnas is None:
            raise ConfigError(
                "the memnas reward needs a base network: call set_memnas_base(...) or give "
                "--memnas-base ARCH"
            )
        return t.memnas

    def remember(self, space: SearchSpace, arch: Arch, terms: Terms) -> None:
        """Seed the cache with terms recorded earlier (a resumed search's replay)."""
        self._cache[(space.name, arch.id)] = terms

    def evaluate(self, space: SearchSpace, archs: Sequence[Arch]) -> list[Terms]:
        """Terms of each architecture; repeats and earlier ones come from the cache."""
        out: list[Terms | None] = [None] * len(archs)
        todo: dict[str, list[int]] = {}
        for i, a in enumerate(archs):
            hit = self._cache.get((space.name, a.id))
            if hit is not None:
                t = dataclasses.replace(hit, eval_s=0.0, sources=dict(hit.sources))
                out[i] = self.score(t)
            else:
                todo.setdefault(a.id, []).append(i)
        if todo:
            first = [archs[idx[0]] for idx in todo.values()]
            for a, t in zip(first, self._evaluate_new(space, first), strict=True):
                self._cache[(space.name, a.id)] = t
                for i in todo[a.id]:
                    out[i] = t
        return [t for t in out if t is not None]

    def _evaluate_new(self, space: SearchSpace, archs: list[Arch]) -> list[Terms]:
        terms = [Terms() for _ in archs]
        t0 = time.perf_counter()
        # Latency and memory first: a search that is bounded by them should not
        # pay for (proxy-trained) accuracy before knowing them, and they are
        # what a device or store caches.
        if self.latency is not None:
            for t, (ms, src) in zip(terms, self.latency.latency_ms(space, archs), strict=True):
                t.latency_ms = float(ms)
                t.sources["latency"] = src
        if self.memory is not None:
            for t, a in zip(terms, archs, strict=True):
                peak, params, src = self.memory.estimate(space, a)
                t.peak_activation_bytes, t.param_bytes = peak, params
                t.sources["memory"] = src
        accs = self.accuracy.evaluate(space, archs)
        for t, v in zip(terms, accs, strict=True):
            t.accuracy = float(v)
            t.sources["accuracy"] = self.accuracy.name
        per = (time.perf_counter() - t0) / max(1, len(archs))
        for t in terms:
            t.eval_s = per
            self.score(t)
        return terms
