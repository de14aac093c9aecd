"""Verification: measure on the device the candidates that decide a search's answer.

A predictor is cheap and wrong in a systematic way: a search finds exactly the
architectures it underestimates (a 5 ms prediction measuring 9 ms). With
``--verify SOURCE`` the search measures, on the device (or on a published table
acting as the device), only the candidates that decide the answer:

* during the search, each new incumbent (the best feasible candidate so far);
* at the end, in order of what they could still be worth, the evaluated
  candidates whose interval reaches under the target and whose accuracy beats
  the best verified answer (a branch-and-bound: the search stops when no
  unverified candidate can beat the answer, or the budget is spent);
* with a reward that has no hard target (``soft``, ``accuracy``, ``memnas``),
  the members of the accuracy-latency Pareto front, best first, with what is
  left of the budget: there the front is the answer.

Each measurement is stored in the ``--db`` (a device's in its measurements, a
table's as an imported latency, every verification of a run in
``search_verifications``), replaces the prediction for that architecture
(``latency_ms``; the prediction stays in ``latency_predicted_ms``), and teaches
the predictor's :class:`~hwnas.objectives.latency.Trust` correction, after which
every unverified candidate's latency is predicted again, so the search stops
trusting where the predictor was wrong. ``budget`` caps verifications (each one
a device measurement unless the store already held it).

A device that fails while verifying (it disconnects, it times out) is recorded
as failed for that architecture, which can then not be the answer; the search
goes on with the next candidate.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.errors import ConfigError, HwnasError
from hwnas.objectives.latency import DeviceLatency, LatencySource, PredictorLatency, TableLatency

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.objectives.objective import Objective
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.searchers.base import History, Record
    from hwnas.spaces.base import SearchSpace
    from hwnas.store import Store
    from hwnas.store.search_log import SearchLog


class Verifier:
    """Measures deciding candidates on ``source`` (a device or a table column).

    Args:
        source: where the truth comes from (:class:`DeviceLatency` or :class:`TableLatency`).
        name: the device name the measurements are stored under.
        budget: verifications allowed in one search (default 50).
        store: the ``--db`` store (table verifications are written there).
    """

    def __init__(
        self, source: LatencySource, name: str, budget: int = 50, store: Store | None = None
    ):
        if int(budget) < 1:
            raise ConfigError(
                f"--verify-budget must be >= 1 device measurement, got {budget}; "
                "leave --verify out to search without verifying"
            )
        self.source = source
        self.name = name
        self.budget = int(budget)
        self.store = store
        self.results: dict[str, float | None] = {}  # arch id -> measured ms (None: failed)
        self.rows: list[dict[str, Any]] = []  # this run's verifications, in order
        self._logged: dict[int, dict[str, Any]] = {}
        self._cache: dict[str, float] | None = None

    # ---- set-up ------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"verify": self.name, "budget": self.budget, "source": self.source.config()}

    def check(self, objective: Objective, space: SearchSpace) -> None:
        """Refuse what cannot work before the search starts (bad input: one line, exit 2)."""
        if objective.latency is None or objective.latency_target_ms is None:
            raise ConfigError(
                "--verify checks the latency target on the device; give --latency predictor:FILE "
                "(or table:COLUMN) and --latency-target"
            )
        if isinstance(objective.latency, DeviceLatency):
            raise ConfigError(
                "--verify is for searches on predicted latency; --latency device:... already "
                "measures every candidate; drop --verify"
            )
        lat = objective.latency
        if isinstance(lat, PredictorLatency):
            meta = lat.meta
            if meta.get("space") not in (None, space.name):
                raise ConfigError(
                    f"the predictor {lat.path.name} was trained for space '{meta['space']}', not "
                    f"'{space.name}'; train one on measurements of {space.name}"
                )
            want = self.device_names()
            have = meta.get("device")
            if have not in (None, "", *want):
                raise ConfigError(
                    f"the predictor {lat.path.name} was trained on device '{have}', but --verify "
                    f"measures on '{self.name}'; verify on the device it predicts (--verify "
                    f"device:{have} or table:FILE:latency_ms_{have}) or train a predictor for {self.name}"
                )

    def device_names(self) -> tuple[str, ...]:
        """Names a predictor trained for this device may carry."""
        if isinstance(self.source, TableLatency):
            # `train-predictor --table` names the device freely; a column's own name and the
            # shared tables' `latency_ms_<device>` convention both identify it
            col = self.source.column
            return (self.name, col, col.removeprefix("latency_ms_"))
        return (self.name, self.name.removeprefix("device:"))

    def resume(self, rows: list[dict[str, Any]]) -> None:
        """The verifications a log already holds for this run: replayed, never repeated."""
        self._logged = {int(r["seq"]): r for r in rows}

    # ---- accounting ------------------------------------------------------------------

    @property
    def used(self) -> int:
        return len(self.rows)

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.used)

    @property
    def new_measurements(self) -> int:
        """Device measurements this search made (replayed ones counted once, when first made)."""
        return sum(int(r["new_measurement"]) for r in self.rows)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "budget": self.budget,
            "verified": self.used,
            "device_measurements": self.new_measurements,
            "failed": sum(r["status"] == "failed" for r in self.rows),
            "infeasible": sum(
                r["status"] == "ok" and r["measured_ms"] is not None and r.get("violates", False)
                for r in self.rows
            ),
        }

    # ---- measuring -------------------------------------------------------------------

    def _table_cache(self, space: SearchSpace) -> dict[str, float]:
        if self._cache is None:
            self._cache = {}
            if self.store is not None:
                for row in self.store.measurements(device=self.name, space=space.name):
                    self._cache[row["arch_id"]] = float(row["median_ms"])
        return self._cache

    def measure(self, space: SearchSpace, arch: Arch) -> tuple[float | None, bool, str | None]:
        """(measured ms or None if the device failed, a new measurement?, failure reason)."""
        if isinstance(self.source, DeviceLatency):
            before = self.source.measured
            try:
                ms, _ = self.source.latency_ms(space, [arch])[0]
            except HwnasError as exc:  # the device went away: this arch fails, the search goes on
                self._store_failure(space, arch, str(exc))
                return None, True, str(exc).splitlines()[0]
            new = self.source.measured > before
            if not math.isfinite(ms):
                return None, new, "the measurement failed (crash or timeout; kept in the store)"
            return float(ms), new, None
        cache = self._table_cache(space)
        if arch.id in cache:
            return cache[arch.id], False, None
        ms = float(self.source.latency_ms(space, [arch])[0][0])  # not in the table: ConfigError
        cache[arch.id] = ms
        if self.store is not None:
            self.store.add_imported_latency(arch, self.name, ms, space.input_shape)
        return ms, True, None

    def _store_failure(self, space: SearchSpace, arch: Arch, reason: str) -> None:
        if self.store is None:
            return
        from hwnas.profilers.latency import MeasurementFailure

        self.store.add_arch(arch, label=space.format(arch))
        self.store.add_measurement(
            arch.id,
            MeasurementFailure(self.name, arch.id, "device", reason),
            space.input_shape,
            device=self.name,
        )

    def verify(
        self,
        space: SearchSpace,
        objective: Objective,
        rec: Record,
        history: History,
        log: SearchLog | None = None,
    ) -> None:
        """Measure ``rec``'s architecture; the measurement replaces its prediction and
        teaches the predictor; every unverified record is then predicted again."""
        seq = self.used
        logged = self._logged.get(seq)
        t = rec.terms
        ms, new, reason = self.measure(space, rec.arch)
        if logged is not None:
            new = bool(logged["new_measurement"])  # replayed: it was counted when it was made
        self.results[rec.arch.id] = ms
        if ms is not None:
            objective.latency.learn(space, [rec.arch], [ms])  # type: ignore[union-attr]
        row = {
            "arch_id": rec.arch.id,
            "arch": rec.arch_str,
            "device": self.name,
            "after_step": len(history) - 1 if logged is None else int(logged["after_step"]),
            "predicted_ms": t.latency_predicted_ms,
            "lower_ms": t.latency_lower_ms,
            "upper_ms": t.latency_upper_ms,
            "measured_ms": ms,
            "status": "ok" if ms is not None else "failed",
            "new_measurement": int(new),
            "reason": reason,
            "violates": ms is not None
            and objective.latency_target_ms is not None
            and ms > objective.latency_target_ms,
        }
        self.rows.append(row)
        if log is not None:
            log.add_verification(str(history.meta.get("run_id")), seq, row)
        self.refresh(space, objective, history)

    # ---- applying what is known --------------------------------------------------------

    def refresh(self, space: SearchSpace, objective: Objective, history: History) -> None:
        """Re-predict every unverified evaluated record; put measurements in verified ones.

        Records are changed in place, so a searcher holding them (evolution's
        population) sees the corrected fitness at once.
        """
        unverified: list[Record] = []
        for r in history.records:
            if r.terms.screened or r.terms.accuracy is None:
                continue
            if r.arch.id in self.results:
                self._apply_measurement(objective, r, self.results[r.arch.id])
            else:
                unverified.append(r)
        if unverified and objective.latency_is_cheap and objective.latency is not None:
            from hwnas.objectives.latency import latency_interval

            q = objective.latency_quantile
            uniq = {r.arch.id: r.arch for r in unverified}
            fresh = dict(
                zip(
                    uniq,
                    latency_interval(objective.latency, space, list(uniq.values()), q),
                    strict=True,
                )
            )
            for r in unverified:
                p, lo, hi, src = fresh[r.arch.id]
                t = r.terms
                t.latency_ms = t.latency_predicted_ms = float(p)
                t.latency_lower_ms, t.latency_upper_ms = float(lo), float(hi)
                t.sources["latency"] = src
                objective.score(t)

    @staticmethod
    def _apply_measurement(objective: Objective, rec: Record, ms: float | None) -> None:
        t = rec.terms
        if ms is None:
            t.verified = "failed"
            t.latency_measured_ms = None
            return
        t.verified = "ok"
        t.latency_measured_ms = t.latency_ms = float(ms)
        t.latency_lower_ms = t.latency_upper_ms = float(ms)
        objective.score(t)

    # ---- which candidates decide the answer ---------------------------------------------

    def answer(self, history: History) -> Record | None:
        """The best record whose measured latency meets every target (None if there is none)."""
        pool = [
            r
            for r in history.records
            if r.terms.verified == "ok" and r.feasible and _finite(r.reward)
        ]
        return max(pool, key=lambda r: float(r.reward), default=None)

    def incumbent(self, history: History) -> Record | None:
        """The best feasible evaluated record, if it still needs verifying."""
        pool = [r for r in history.records if r.feasible and not r.repeat and _finite(r.reward)]
        best = max(pool, key=lambda r: float(r.reward), default=None)
        if best is None or best.arch.id in self.results:
            return None
        return best

    def next_deciding(self, objective: Objective, history: History) -> Record | None:
        """The unverified candidate that could most beat the current answer (optimistically:
        at the lower end of its interval), or None when none can."""
        ans = self.answer(history)
        floor = float(ans.reward) if ans is not None else -math.inf
        best: tuple[float, Record] | None = None
        seen: set[str] = set()
        for r in history.records:
            t = r.terms
            if t.screened or t.accuracy is None or r.arch.id in self.results:
                continue
            if r.arch.id in seen:
                continue
            seen.add(r.arch.id)
            lo = t.latency_lower_ms if t.latency_lower_ms is not None else t.latency_ms
            opt = objective.score(dataclasses.replace(t, latency_ms=lo, violations={}))
            if not opt.feasible or not _finite(opt.reward) or opt.reward <= floor:
                continue
            if best is None or opt.reward > best[0]:
                best = (float(opt.reward), r)
        return best[1] if best else None

    def front_member(self, history: History) -> Record | None:
        """The best-accuracy unverified member of the evaluated accuracy-latency front."""
        from hwnas.searchers.base import pareto_front

        evaluated = [r for r in history.records if not r.terms.screened and r.terms.accuracy]
        front = pareto_front(evaluated, (("accuracy", 1), ("latency_ms", -1)))
        todo = [r for r in front if r.arch.id not in self.results]
        return max(todo, key=lambda r: float(r.terms.accuracy or 0.0), default=None)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def create_verifier(
    spec: str,
    *,
    budget: int = 50,
    store: Store | None = None,
    settings: MeasureSettings | None = None,
    threads: int | None = None,
    isolate: bool = False,
) -> Verifier:
    """``device:NAME`` (``cpu-ort``, ``adb:SERIAL``, ``ssh:HOST``...) or ``table:FILE:COLUMN``.

    Raises:
        ConfigError: an unknown device, a missing table or column, a budget below 1.
    """
    kind, _, rest = spec.partition(":")
    if int(budget) < 1:
        raise ConfigError(
            f"--verify-budget must be >= 1 device measurement, got {budget}; "
            "leave --verify out to search without verifying"
        )
    if kind == "device" and rest:
        src: LatencySource = DeviceLatency(
            rest, store=store, settings=settings, threads=threads, isolate=isolate
        )
        return Verifier(src, rest, budget, store)
    if kind == "table" and ":" in rest:
        file, column = rest.rsplit(":", 1)
        if not Path(file).exists():
            raise ConfigError(f"--verify {spec}: no table {file}; give table:FILE:COLUMN")
        return Verifier(TableLatency(file, column), f"table:{column}", budget, store)
    raise ConfigError(
        f"cannot read --verify {spec!r}; use device:NAME (e.g. device:cpu-ort, device:adb:SERIAL, "
        "device:ssh:HOST) or table:FILE:COLUMN (a published table acting as the device)"
    )
