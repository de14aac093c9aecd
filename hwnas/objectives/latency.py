"""Where latency comes from: a table column, a trained predictor, or a device.

Each source says what it costs (:attr:`LatencySource.cost`): ``cheap`` sources
(a table lookup, a predictor) are asked before any expensive term is paid for,
so a candidate that already breaks a hard latency target costs no accuracy
evaluation; ``expensive`` ones (a device measurement) are taken with the
accuracy term. Each source also gives an interval (:meth:`LatencySource.interval`):
exact sources give their value as both bounds, a predictor gives the quantiles
it was calibrated for (conformal or ensemble spread, see
:class:`hwnas.predictors.base.Predictor`), corrected by what verification on
the device has taught it (:class:`Trust`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import ConfigError, PredictorError

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.spaces.base import SearchSpace
    from hwnas.store import Store

#: What a term costs: cheap terms are checked before expensive ones are paid for.
COSTS = ("cheap", "expensive")


class LatencySource(ABC):
    """Where latency comes from. Batched, so a caller may hand out slices to workers.

    Attributes:
        cost: ``cheap`` (checked before the accuracy term) or ``expensive``.
    """

    cost: str = "cheap"

    @abstractmethod
    def latency_ms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[tuple[float, str]]:
        """(milliseconds, short provenance) per architecture."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """What determines the values (JSON-able): part of a run's identity."""

    def close(self) -> None:
        """Release devices and files."""

    def prepare(self, space: SearchSpace) -> None:
        """Load now what the first query would load (files, the store's cache), e.g.
        before the source is shipped to workers that cannot read them."""

    @property
    def uncertainty(self) -> str:
        """How the interval is made: ``none`` (an exact value), ``conformal`` or ``ensemble``."""
        return "none"

    def interval(
        self, space: SearchSpace, archs: Sequence[Arch], quantile: float = 0.9
    ) -> list[tuple[float, float, float, str]]:
        """(point, lower, upper, provenance) per architecture; the bounds are the
        ``1 - quantile`` and ``quantile`` quantiles (below 0.5, both are the
        ``quantile`` quantile: the optimistic end a screen compares with T).
        Exact sources: all three equal."""
        return [(ms, ms, ms, src) for ms, src in self.latency_ms(space, archs)]

    def learn(
        self, space: SearchSpace, archs: Sequence[Arch], measured_ms: Sequence[float]
    ) -> None:
        """Take the device's measurements of ``archs`` into account (verification)."""


def latency_interval(
    source: Any, space: SearchSpace, archs: Sequence[Arch], quantile: float
) -> list[tuple[float, float, float, str]]:
    """:meth:`LatencySource.interval`, also for duck-typed sources that only have ``latency_ms``."""
    if hasattr(source, "interval"):
        return source.interval(space, archs, quantile)
    return [(ms, ms, ms, src) for ms, src in source.latency_ms(space, archs)]


class Trust:
    """What verification taught a predictor: a residual correction in log space.

    Every verified architecture leaves its residual ``r = log(measured / predicted)``.
    The correction of a new architecture ``x`` is a global shift ``g`` (the mean
    residual, shrunk towards 0 by ``prior`` pseudo-observations, so one lucky
    measurement does not move everything) plus a local term: the residuals of
    verified architectures within ``radius`` decisions of ``x`` (L1 distance of
    the encodings / 2: decisions that differ, for one-hot encodings), weighted
    ``1 / (1 + distance)`` and shrunk the same way. Searches go where a
    predictor underestimates; the local term is what stops them trusting
    exactly there, the global one catches a predictor biased everywhere (a
    device that got slower). Both point and bounds move by the same factor.

    Args:
        radius: neighbourhood, in decisions that differ.
        prior: shrinkage, in pseudo-observations of residual 0.
    """

    def __init__(self, radius: float = 2.0, prior: float = 2.0):
        self.radius = radius
        self.prior = prior
        self.X: list[np.ndarray] = []
        self.r: list[float] = []

    @property
    def n(self) -> int:
        return len(self.r)

    def add(self, x: np.ndarray, residual: float) -> None:
        self.X.append(np.asarray(x, dtype=np.float64))
        self.r.append(float(residual))

    def shift(self, X: np.ndarray) -> np.ndarray:
        """Log-space correction of each row of ``X`` (0 before any verification)."""
        X = np.asarray(X, dtype=np.float64)
        if not self.r:
            return np.zeros(len(X))
        r = np.asarray(self.r)
        g = r.sum() / (len(r) + self.prior)
        V = np.stack(self.X)
        d = np.abs(X[:, None, :] - V[None, :, :]).sum(-1) / 2.0  # (rows, verified)
        w = np.where(d <= self.radius, 1.0 / (1.0 + d), 0.0)
        local = (w * (r - g)[None, :]).sum(1) / (w.sum(1) + self.prior / 2.0)
        return g + local


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
        self.trust = Trust()
        self._memo: dict[tuple[str, float], dict[str, tuple]] = {}
        self.predictions = 0  # architectures predicted (a cheap query each)

    def prepare(self, space: SearchSpace) -> None:
        self._load(space)

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

    @property
    def meta(self) -> dict[str, Any]:
        """What the predictor file says it was trained for (loaded lazily)."""
        if self._pred is None:
            from hwnas.predictors.base import read_predictor_file

            return dict(read_predictor_file(self.path)[0].get("meta", {}))
        return dict(self._pred.meta)

    @property
    def uncertainty(self) -> str:
        return str(getattr(self._pred, "uncertainty", "none")) if self._pred is not None else "none"

    def _raw(self, space: SearchSpace, archs: Sequence[Arch], quantile: float) -> tuple:
        """(encodings, point, lower, upper) before the trust correction.

        A prediction is a pure function of the architecture, so each is
        computed once per quantile (a search re-asks about repeats and, after
        every verification, about all its unverified candidates).
        """
        self._load(space)
        memo = self._memo.setdefault((space.name, float(quantile)), {})
        todo = list({a.id: a for a in archs if a.id not in memo}.values())
        if todo:
            X = np.asarray(self._encoding.encode_archs(space, todo), dtype=np.float64)
            point = np.asarray(self._pred.predict(X), dtype=np.float64)
            lo = hi = point
            # An uncalibrated predictor (uncertainty "none") has no interval: bounds = point.
            if getattr(self._pred, "uncertainty", "none") != "none" and quantile >= 0.5:
                q_lo, q_hi = self._pred.predict_quantiles(X, [1.0 - quantile, quantile])
                lo = np.minimum(np.asarray(q_lo, dtype=np.float64), point)
                hi = np.maximum(np.asarray(q_hi, dtype=np.float64), point)
            elif getattr(self._pred, "uncertainty", "none") != "none":
                # Below 0.5 the bound that must meet T is the optimistic end: a
                # candidate is rejected unpaid only when even its ``quantile``
                # quantile breaks T (verification then catches the optimists).
                (q_opt,) = self._pred.predict_quantiles(X, [quantile])
                lo = hi = np.minimum(np.asarray(q_opt, dtype=np.float64), point)
            for i, a in enumerate(todo):
                memo[a.id] = (X[i], float(point[i]), float(lo[i]), float(hi[i]))
        rows = [memo[a.id] for a in archs]
        self.predictions += len(archs)
        return (
            np.stack([r[0] for r in rows]),
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]),
            np.array([r[3] for r in rows]),
        )

    def interval(
        self, space: SearchSpace, archs: Sequence[Arch], quantile: float = 0.9
    ) -> list[tuple[float, float, float, str]]:
        if not archs:
            return []
        X, point, lo, hi = self._raw(space, archs, quantile)
        f = np.exp(self.trust.shift(X))
        p = point * f
        # The calibrated interval already allows for the predictor's error: the
        # correction moves the point, and moves a bound only where the corrected
        # point leaves the interval. Verified architectures are the incumbents,
        # the most optimistic predictions (a winner's curse), so their residuals
        # never relax the screen (the upper bound only rises).
        lo2 = np.minimum(lo * f, p)
        hi2 = np.maximum(hi, p) if quantile >= 0.5 else lo2
        src = f"predictor:{self.path.name}" + (" (corrected)" if self.trust.n else "")
        return [(float(a), float(b), float(c), src) for a, b, c in zip(p, lo2, hi2, strict=True)]

    def latency_ms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[tuple[float, str]]:
        return [(p, s) for p, _, _, s in self.interval(space, archs)]

    def learn(
        self, space: SearchSpace, archs: Sequence[Arch], measured_ms: Sequence[float]
    ) -> None:
        """Learn the log-ratio residual of each measured architecture (see :class:`Trust`)."""
        keep = [
            (a, m) for a, m in zip(archs, measured_ms, strict=True) if math.isfinite(m) and m > 0
        ]
        if not keep:
            return
        X, point, _, _ = self._raw(space, [a for a, _ in keep], 0.5)
        self.predictions -= len(keep)  # bookkeeping, not a search query
        for x, p, (_, m) in zip(X, point, keep, strict=True):
            self.trust.add(x, math.log(m / max(float(p), 1e-9)))

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

    cost = "expensive"

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

    def prepare(self, space: SearchSpace) -> None:
        self._load_cache(space)

    def __getstate__(self) -> dict[str, Any]:
        """A pickled copy (a Ray worker's) opens its own device: a live one does not travel."""
        state = dict(self.__dict__)
        state["_device"] = None
        return state

    def _load_cache(self, space: SearchSpace) -> None:
        if self.store is None or space.name in self._loaded_spaces:
            return
        self._loaded_spaces.add(space.name)
        for row in self.store.measurements(device=self.device_name, space=space.name, status=None):
            classes = row.get("num_classes")
            if classes is not None and int(classes) != int(space.num_classes):
                continue  # another head: not this network
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
        source = ModelSource.of_space(space, arch)
        art = export_source(source, space=space, label=arch.id)
        key = {"num_classes": space.num_classes, "exporter": source.exporter}
        if self.store is not None:
            self.store.add_arch(arch, label=space.format(arch))
            self.store.add_artifact(art, arch.id)
        self.measured += 1
        try:
            m = self._dev().measure(art, self.settings)
        except MeasurementFailed as exc:
            if self.store is not None:
                self.store.add_measurement(
                    arch.id, exc.failure, space.input_shape, device=self.device_name, **key
                )
            return math.inf
        if self.store is not None:
            self.store.add_measurement(
                arch.id, m, space.input_shape, device=self.device_name, **key
            )
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
