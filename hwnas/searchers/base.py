"""The searcher interface, the search history, its SQLite log and the Pareto front.

Every searcher is three separable steps, so one loop (:mod:`hwnas.searchers.loop`)
drives them, evaluating in this process or on Ray, without touching the algorithm:

``propose(n)``  (ask)
    up to ``n`` candidates that may be evaluated independently (random
    search: any number; regularised evolution: one tournament each; the RL
    controller: its PPO batch). ``batch_size()`` says how many are useful now.
``evaluate``
    ``objective.evaluate(space, archs)``: the expensive, parallelisable part,
    done by the loop's executor (in process, or a Ray pool).
``update(records)``  (tell)
    the evaluated candidates, in proposal order, with all their terms.

Budget: the number of distinct architectures evaluated (see :meth:`Searcher.run`).

Resuming: a run is identified by a hash of (algorithm, settings, space,
objective, seed). Its records are committed to the log one by one as they are
evaluated. Re-running the same search with the same log replays the recorded
records through ``update`` instead of evaluating them again (the searcher
re-proposes the same candidates, being seeded the same way) and carries on
from the first step not recorded, so a killed search continues where it
stopped and produces the sequence an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.evaluators.base import settings_from_pairs, settings_to_dict
from hwnas.objectives import Objective, Terms
from hwnas.store.search_log import SearchLog

if TYPE_CHECKING:
    from hwnas.searchers.loop import Executor
    from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class Candidate:
    """A proposed architecture.

    Attributes:
        origin: how it was made (``sample``, ``mutation``, ``controller``...).
        info: small JSON-able details (the parent's step for a mutation...).
    """

    arch: Arch
    origin: str = "sample"
    info: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Record:
    """One evaluated candidate of a search."""

    step: int
    arch: Arch
    arch_str: str
    terms: Terms
    origin: str = "sample"
    info: dict = field(default_factory=dict)
    repeat: bool = False  # the architecture was evaluated earlier in this run
    elapsed_s: float = 0.0  # since the run started (replayed records keep theirs)

    @property
    def reward(self) -> float:
        return self.terms.reward

    @property
    def feasible(self) -> bool:
        return self.terms.feasible

    def row(self) -> dict[str, Any]:
        t = self.terms
        return {
            "step": self.step,
            "arch_id": self.arch.id,
            "arch": self.arch_str,
            "origin": self.origin,
            "accuracy": t.accuracy,
            "latency_ms": t.latency_ms,
            "latency_predicted_ms": t.latency_predicted_ms,
            "latency_upper_ms": t.latency_upper_ms,
            "latency_measured_ms": t.latency_measured_ms,
            "verified": t.verified,
            "screened": t.screened,
            "peak_activation_bytes": t.peak_activation_bytes,
            "param_bytes": t.param_bytes,
            "memory_bytes": t.memory_bytes,
            "memnas": t.memnas,
            "reward": t.reward,
            "feasible": t.feasible,
            "repeat": self.repeat,
            "eval_s": t.eval_s,
            "elapsed_s": self.elapsed_s,
        }


# ---- Pareto front --------------------------------------------------------------------

#: (term, sense): accuracy is maximised, latency and memory minimised.
FRONT_TERMS: tuple[tuple[str, int], ...] = (
    ("accuracy", 1),
    ("latency_ms", -1),
    ("memory_bytes", -1),
)


def pareto_front(
    records: Sequence[Record], terms: Sequence[tuple[str, int]] | None = None
) -> list[Record]:
    """Non-dominated records (one per architecture), sorted by the second term.

    Only terms every record has are used, so a search without a memory term
    gets an accuracy-latency front. A record dominates another when it is at
    least as good in every term and better in one.
    """
    uniq: dict[str, Record] = {}
    for r in records:
        if not r.terms.screened:  # rejected on cheap terms: no accuracy, not a trade-off
            uniq.setdefault(r.arch.id, r)
    recs = list(uniq.values())
    if not recs:
        return []
    terms = list(terms or FRONT_TERMS)
    used = [
        (name, sense)
        for name, sense in terms
        if all(getattr(r.terms, name) is not None for r in recs)
    ]
    if not used:
        return []
    pts = np.array(
        [[sense * float(getattr(r.terms, name)) for name, sense in used] for r in recs],
        dtype=np.float64,
    )
    pts = np.nan_to_num(pts, nan=-np.inf)
    keep = []
    for i in range(len(recs)):
        ge = np.all(pts >= pts[i], axis=1)
        gt = np.any(pts > pts[i], axis=1)
        if not np.any(ge & gt):
            keep.append(i)
    front = [recs[i] for i in keep]
    if len(used) > 1:
        front.sort(key=lambda r: float(getattr(r.terms, used[1][0])))
    return front


# ---- history -------------------------------------------------------------------------


@dataclass
class History:
    """Every candidate a search evaluated, in order, with the run's description.

    Attributes:
        meta: run id, algorithm, settings, space, seed, objective configuration.
        records: the evaluated candidates.
        final: what the searcher returns at the end when it is not simply the
            best record (NASWOT evaluates its pick with the user's accuracy term).
    """

    meta: dict[str, Any] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    final: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def rewards(self) -> np.ndarray:
        return np.array([r.reward for r in self.records], dtype=np.float64)

    def best(self, feasible_only: bool = True, key: str = "reward") -> Record | None:
        """Highest ``key`` (``reward`` or ``accuracy``) among (feasible) records."""
        pool = [r for r in self.records if r.feasible or not feasible_only]
        pool = [r for r in pool if _finite(getattr(r.terms, key))]
        return max(pool, key=lambda r: float(getattr(r.terms, key)), default=None)

    def best_so_far(self, key: str = "reward", feasible_only: bool = True) -> np.ndarray:
        """Running maximum of ``key`` over (feasible) records; NaN until the first one."""
        out = np.full(len(self.records), np.nan)
        cur = -np.inf
        for i, r in enumerate(self.records):
            v = getattr(r.terms, key)
            if (r.feasible or not feasible_only) and _finite(v):
                cur = max(cur, float(v))
            out[i] = cur if cur > -np.inf else np.nan
        return out

    def pareto_front(self, terms: Sequence[tuple[str, int]] | None = None) -> list[Record]:
        return pareto_front(self.records, terms)

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.records]

    def write_csv(self, path: str | Path) -> Path:
        import csv

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        cols = list(Record(0, Arch("x", ()), "", Terms()).row())
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        return path

    def answer(self) -> Record | None:
        """What the search answers: with verification, the best record whose *measured*
        latency meets the target (None if none was verified feasible); else :meth:`best`."""
        if self.meta.get("verify"):
            pool = [
                r
                for r in self.records
                if r.terms.verified == "ok" and r.feasible and _finite(r.reward)
            ]
            return max(pool, key=lambda r: float(r.reward), default=None)
        return self.best()

    def summary(self) -> dict[str, Any]:
        best = self.answer()
        front = self.pareto_front()
        return {
            **{k: self.meta.get(k) for k in ("run_id", "algorithm", "space", "seed")},
            "evaluated": len(self.records),
            "unique": len({r.arch.id for r in self.records}),
            "feasible": sum(r.feasible for r in self.records),
            "accuracy_evaluations": self.meta.get("accuracy_evaluations"),
            "screened": self.meta.get("screened"),
            "latency_predictions": self.meta.get("latency_predictions"),
            "device_measurements": self.meta.get("device_measurements"),
            "verify": self.meta.get("verify"),
            "stopped": self.meta.get("stopped"),
            "best": best.row() if best else None,
            "final": self.final,
            "front": [r.row() for r in front],
        }


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


# ---- the searcher interface ----------------------------------------------------------


@dataclass(frozen=True)
class NoSettings:
    """A searcher without settings."""


def run_id_of(
    algorithm: str, settings: dict, space: SearchSpace, objective: Objective, seed: int
) -> str:
    """Stable id of a search: what must match for a re-run to resume it (not the budget)."""
    doc = {
        "algorithm": algorithm,
        "settings": settings,
        "space": {
            "name": space.name,
            "input_shape": list(space.input_shape),
            "decisions": space.decisions(),
        },
        "objective": objective.config(),
        "seed": int(seed),
    }
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


ProgressFn = Callable[[Record, "History"], None]


class Searcher(ABC):
    """Base class of every searcher.

    Subclasses set :attr:`name` and :attr:`Settings` (a frozen dataclass whose
    fields the CLI fills from ``--set key=value``) and implement :meth:`reset`,
    :meth:`propose` and :meth:`update`. :meth:`run` is the shared loop.

    Attributes:
        objective: the objective candidates are evaluated with, set by
            :meth:`run` before :meth:`reset`; a searcher that evaluates with
            another one (NASWOT's score, MemNAS' reward) assigns it in ``reset``.

    Args:
        settings: an instance of :attr:`Settings`; keyword overrides on top.
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    #: Whether ``update`` may be told one record at a time, in completion order
    #: (``run(..., asynchronous=True)``, e.g. on Ray); searchers that learn from
    #: whole batches say False.
    asynchronous: ClassVar[bool] = False

    def __init__(self, settings: Any = None, **overrides: Any):
        base = settings if settings is not None else self.Settings()
        if not isinstance(base, self.Settings):
            raise ConfigError(
                f"{self.name} takes {self.Settings.__name__} settings, got {type(base).__name__}"
            )
        self.settings = dataclasses.replace(base, **overrides) if overrides else base
        self.space: SearchSpace | None = None
        self.objective: Objective | None = None

    @classmethod
    def from_pairs(cls, pairs: Iterable[str] | None) -> Searcher:
        """Build with settings from ``key=value`` strings (the CLI's ``--set``)."""
        return cls(settings_from_pairs(cls.Settings, pairs, what=f"{cls.name} settings"))

    # ---- the three steps ------------------------------------------------------------

    @abstractmethod
    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        """Start from scratch: all randomness comes from ``seed``.

        ``objective`` is what the user asked for; assign ``self.objective`` to
        evaluate candidates with another one (see the class attributes).
        """

    @abstractmethod
    def propose(self, n: int) -> list[Candidate]:
        """Up to ``n`` candidates that can be evaluated independently (ask)."""

    @abstractmethod
    def update(self, records: list[Record]) -> None:
        """Learn from evaluated candidates, in proposal order (tell).

        A record whose ``terms.screened`` is set was rejected on cheap terms
        (its predicted latency's upper bound broke a hard target): it has no
        accuracy, its reward is minus the relative excess, and it cost nothing
        of the budget.
        """

    def batch_size(self) -> int:
        """How many candidates :meth:`propose` can usefully give now."""
        return 1

    def done(self) -> bool:
        """True when the algorithm has nothing more to propose before the budget ends."""
        return False

    # ---- hooks for searchers that evaluate differently -----------------------------

    def finalize(self, history: History, space: SearchSpace, objective: Objective) -> dict | None:
        """Anything to record once the search is over (e.g. the pick's real accuracy)."""
        return None

    # ---- the loop --------------------------------------------------------------------

    def prepare(
        self, space: SearchSpace, objective: Objective, budget: int, seed: int
    ) -> Objective:
        """Reset for a run and return the objective candidates are evaluated with.

        Raises:
            ConfigError: a budget below 1, or a verification that cannot work.
        """
        if int(budget) < 1:
            raise ConfigError(f"the budget must be at least 1 evaluation, got {budget}")
        verifier = getattr(objective, "verifier", None)
        if verifier is not None:
            verifier.check(objective, space)
        self.space = space
        self.objective = objective
        self.reset(space, int(seed), int(budget), objective)
        return self.objective

    def run_meta(
        self, space: SearchSpace, search_obj: Objective, budget: int, seed: int, algorithm: str = ""
    ) -> dict[str, Any]:
        """The run's description; its ``run_id`` is what a re-run must match to resume."""
        algo = algorithm or self.name
        settings = (
            settings_to_dict(self.settings) if dataclasses.is_dataclass(self.settings) else {}
        )
        meta: dict[str, Any] = {
            "run_id": run_id_of(algo, settings, space, search_obj, seed),
            "algorithm": algo,
            "settings": settings,
            "space": space.name,
            "seed": int(seed),
            "budget": int(budget),
            "objective": search_obj.config(),
        }
        verifier = getattr(search_obj, "verifier", None)
        if verifier is not None:
            meta["verify"] = verifier.name
        return meta

    def run(
        self,
        space: SearchSpace,
        objective: Objective,
        budget: int,
        seed: int = 0,
        log: SearchLog | None = None,
        progress: ProgressFn | None = None,
        max_rejections: int | None = None,
        executor: Executor | None = None,
        asynchronous: bool = False,
    ) -> History:
        """Search ``space`` until ``budget`` distinct architectures had their accuracy evaluated.

        The budget counts accuracy evaluations. With a ``hard`` or ``constraint``
        reward, cheap terms come first: a candidate whose predicted latency's
        upper bound (or memory estimate) already breaks a target is told to
        the searcher as rejected (``terms.screened``) without an accuracy
        evaluation and without counting. A candidate proposed again is served
        from the objective's cache, recorded (flagged ``repeat``) and told to
        the searcher, but not counted. A searcher that proposes nothing new for
        ``max(budget, 100)`` proposals in a row has converged
        (``meta["converged"]``); one whose last ``max_rejections`` proposals
        were all rejected on cheap terms stops with ``meta["stopped"]`` saying
        why (nearly nothing is feasible).

        With ``objective.verifier`` (``--verify``), the candidates that decide
        the answer are measured on the device (:mod:`hwnas.objectives.verify`)
        and :meth:`History.answer` is a network whose measured latency meets
        the target.

        This is the only search loop (:mod:`hwnas.searchers.loop`); the Ray path
        passes an ``executor`` and otherwise runs exactly this.

        Args:
            log: where records are committed as they arrive; a run already in it
                (same algorithm, settings, space, objective and seed) is resumed.
            progress: called after every record (replayed ones too).
            max_rejections: cheap rejections in a row before giving up
                (default ``max(20 * budget, 2000)``).
            executor: where evaluations run (default: in this process, one at a
                time; :class:`hwnas.distributed.RayExecutor` runs them on Ray).
            asynchronous: tell each result as it arrives and propose the next
                candidate at once (not reproducible; searchers with
                :attr:`asynchronous` only, no verification; see
                :mod:`hwnas.searchers.loop`).

        Raises:
            ConfigError: a budget below 1; ``asynchronous`` for a searcher that
                learns from whole batches, or with verification.
        """
        from hwnas.searchers.loop import SearchLoop

        loop = SearchLoop(
            self, space, objective, int(budget), seed, log, progress, max_rejections, asynchronous
        )
        return loop.run(executor)
