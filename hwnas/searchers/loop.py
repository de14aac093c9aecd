"""The one search loop behind :meth:`Searcher.run`, and where its evaluations run.

The loop owns everything that decides *what* a search does: the budget of
accuracy evaluations, cheap-first screening, the search log (records
committed as they arrive, a logged run resumed), verification of the
candidates that decide the answer, progress, and when to give up. *Where* an
architecture is evaluated is an :class:`Executor`: :class:`InProcess` (the
default, one after another in this process) or a Ray pool
(:class:`hwnas.distributed.RayExecutor`). An executor only takes candidates
(``submit``) and hands back results as they finish (``wait``), so a
distributed search and a local one run the same code and, in the synchronous
mode, give the same history.

Two modes:

synchronous (default)
    ``propose(batch_size)``, evaluate the batch (up to ``executor.capacity``
    at once), record the results in proposal order, ``update(batch)``. The
    history depends only on the seed, wherever the evaluations ran.
asynchronous
    keep ``capacity`` evaluations running; as soon as one finishes, record it,
    ``update([record])`` and propose the next candidate. No worker waits for
    a batch, but results arrive in an order that depends on timing, so the
    history is not reproducible (``meta["reproducible"] = False``). Only for
    searchers whose ``update`` takes one record at any time
    (``Searcher.asynchronous``); a resumed run tells the searcher every logged
    record, in order, and carries on. It is logged as a run of its own
    (``ALGO/async``). Once it has converged or stopped it proposes nothing
    more, and records the evaluations still running.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from itertools import count
from typing import TYPE_CHECKING, Any

from hwnas.errors import ConfigError

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.objectives import Objective, Terms
    from hwnas.searchers.base import Candidate, History, ProgressFn, Record, Searcher
    from hwnas.spaces.base import SearchSpace
    from hwnas.store.search_log import SearchLog

#: Latency fields the driver's cheap prediction decides (see :meth:`SearchLoop.adopt`).
_PREDICTED = ("latency_ms", "latency_predicted_ms", "latency_lower_ms", "latency_upper_ms")


class Executor(ABC):
    """Where the search loop's evaluations run.

    The loop submits only architectures the objective does not know yet (a
    repeat, a resumed step or a candidate rejected on cheap terms never
    reaches an executor) and never more than :attr:`capacity` at once.

    Attributes:
        capacity: evaluations that may be in flight at once.
    """

    capacity: int = 1

    @abstractmethod
    def submit(self, objective: Objective, space: SearchSpace, arch: Arch) -> Any:
        """Start (or queue) evaluating ``arch``; returns a hashable ticket for :meth:`wait`."""

    @abstractmethod
    def wait(self, tickets: Sequence[Any]) -> list[tuple[Any, Terms]]:
        """Block until at least one of ``tickets`` has finished; (ticket, terms) of those that did.

        Raises:
            the evaluation's own error (an ``HwnasError`` stays one).
        """

    def cached(self) -> None:
        """Told when the loop answered a candidate from the objective's cache instead."""

    def cancel(self) -> None:
        """Drop every evaluation not waited for (the loop stopped early or failed)."""


class InProcess(Executor):
    """Evaluate in this process, one architecture at a time.

    Evaluation is deferred to :meth:`wait`, so each result is logged before
    the next evaluation starts (a killed search loses at most the one running).
    """

    capacity = 1

    def __init__(self) -> None:
        self._queued: dict[int, tuple[Objective, SearchSpace, Arch]] = {}
        self._ids = count()

    def submit(self, objective: Objective, space: SearchSpace, arch: Arch) -> int:
        ticket = next(self._ids)
        self._queued[ticket] = (objective, space, arch)
        return ticket

    def wait(self, tickets: Sequence[Any]) -> list[tuple[Any, Terms]]:
        ticket = tickets[0]
        objective, space, arch = self._queued.pop(ticket)
        return [(ticket, objective.evaluate(space, [arch])[0])]

    def cancel(self) -> None:
        self._queued.clear()


def rejection_message(n: int, obj: Objective) -> str:
    return (
        f"stopped: the last {n} candidates all broke a hard target on cheap terms alone (the "
        f"predicted latency's {obj.latency_quantile:g} quantile, or the memory estimate), so "
        "nearly nothing proposed is feasible; raise --latency-target/--memory-target, lower "
        "--latency-quantile, or check that the predictor is for this device"
    )


def async_searchers() -> list[str]:
    """Registered searchers whose ``update`` takes one record at any time
    (``Searcher.asynchronous``), so that telling them results in completion order
    is still their algorithm (Real et al. ran regularised evolution with
    asynchronous workers; random search learns nothing)."""
    from hwnas.searchers.registry import SEARCHERS, searcher_class

    return [n for n in SEARCHERS.names() if searcher_class(n).asynchronous]


def check_asynchronous(searcher: Searcher, objective: Objective) -> None:
    """Refuse the asynchronous mode where it would change the algorithm.

    Raises:
        ConfigError: a searcher that learns from whole batches, or verification.
    """
    if not searcher.asynchronous:
        raise ConfigError(
            f"searcher {searcher.name!r} learns from whole batches, so it has no asynchronous "
            f"variant; run it synchronously, or use one of: "
            f"{', '.join(async_searchers())}"
        )
    if objective.verifier is not None:
        raise ConfigError(
            "--verify needs the synchronous loop (verifications change what the searcher was "
            "told, in order); run the search without the asynchronous variant"
        )


class SearchLoop:
    """One run of :meth:`Searcher.run`: its history, budget accounting and stop conditions.

    ``SearchLoop(searcher, space, objective, budget, ...).run(executor)``;
    the arguments are :meth:`Searcher.run`'s.

    Raises:
        ConfigError: a budget below 1; the asynchronous mode for a searcher that
            learns from whole batches, or with verification.
    """

    def __init__(
        self,
        searcher: Searcher,
        space: SearchSpace,
        objective: Objective,
        budget: int,
        seed: int,
        log: SearchLog | None,
        progress: ProgressFn | None,
        max_rejections: int | None,
        asynchronous: bool = False,
    ):
        from hwnas.searchers.base import History

        if asynchronous:
            check_asynchronous(searcher, objective)
        self.asynchronous = asynchronous
        self.searcher = searcher
        self.space = space
        self.user_objective = objective
        self.budget = budget
        self.obj = searcher.prepare(space, objective, budget, seed)
        self.log = log
        self.progress = progress
        self.seed = seed
        self.history = History()
        self.recorded: list[Record] = []
        self.seen: set[str] = set()  # proposed and recorded
        self.evaluated: set[str] = set()  # accuracy evaluated: what the budget counts
        self.stall = 0  # consecutive records that were repeats
        self.stall_limit = max(budget, 100)
        self.rejected_run = 0  # consecutive cheap rejections
        self.reject_limit = int(max_rejections or max(20 * budget, 2000))
        self.screened = 0
        self.predictions = 0
        self.converged = False
        self.stopped: str | None = None
        self.diverged = False
        self.verifier = self.obj.verifier
        self.t_start = time.perf_counter()

    def run(self, executor: Executor | None = None) -> History:
        """Search; evaluations run on ``executor`` (default :class:`InProcess`)."""
        ex = executor if executor is not None else InProcess()
        try:
            if self.asynchronous:
                self.run_async(ex)
            else:
                self.run_sync(ex)
        finally:
            ex.cancel()
        return self.finish()

    # ---- opening, recording, closing --------------------------------------------------------

    def open(self, algorithm: str = "", **extra: Any) -> None:
        """Describe the run, open it in the log and read what the log already holds."""
        s = self.searcher
        meta = {**s.run_meta(self.space, self.obj, self.budget, self.seed, algorithm), **extra}
        self.history.meta = meta
        if self.log is not None:
            run_id = meta["run_id"]
            self.log.open_run(run_id, meta["algorithm"], self.space.name, self.seed, meta)
            self.recorded = self.log.records(run_id, self.space.name)
            if self.verifier is not None:
                self.verifier.resume(self.log.verifications(run_id))
        self.t_start = time.perf_counter()

    def add(self, rec: Record, fresh: bool) -> None:
        """Append a record: committed to the log (if new) before anything else is evaluated."""
        if fresh and self.log is not None:
            self.log.append(self.history.meta["run_id"], rec)
        self.stall = self.stall + 1 if rec.repeat else 0
        if rec.terms.screened:
            self.rejected_run += 1
            self.screened += not rec.repeat
        else:
            self.rejected_run = 0
            self.evaluated.add(rec.arch.id)
        self.predictions += self.obj.latency_is_cheap and not rec.repeat
        self.seen.add(rec.arch.id)
        self.history.records.append(rec)
        if self.progress is not None:
            self.progress(rec, self.history)

    def record(self, cand: Candidate, terms: Terms, repeat: bool) -> Record:
        """A fresh record of ``cand``, committed (see :meth:`add`)."""
        from hwnas.searchers.base import Record

        rec = Record(
            step=len(self.history),
            arch=cand.arch,
            arch_str=self.space.format(cand.arch),
            terms=terms,
            origin=cand.origin,
            info=dict(cand.info),
            repeat=repeat,
            elapsed_s=time.perf_counter() - self.t_start,
        )
        self.add(rec, True)
        return rec

    def should_stop(self) -> bool:
        """Whether the searcher has converged or proposes nearly nothing feasible."""
        if self.stall >= self.stall_limit:
            self.converged = True  # the searcher only re-proposes what it has seen
        elif self.rejected_run >= self.reject_limit:
            self.stopped = rejection_message(self.rejected_run, self.obj)
        return self.converged or self.stopped is not None

    def finish(self) -> History:
        h, obj, v = self.history, self.obj, self.verifier
        if v is not None:
            _decide(v, self.space, obj, h, self.log)
            h.meta["verification"] = v.summary()
            h.meta["verification_rows"] = [
                {k: x for k, x in r.items() if k != "violates"} for r in v.rows
            ]
        h.meta["replayed"] = min(len(self.recorded), len(h))
        h.meta["diverged"] = self.diverged
        h.meta["evaluated"] = len(self.evaluated)
        h.meta["accuracy_evaluations"] = len(self.evaluated)
        h.meta["screened"] = self.screened
        h.meta["latency_predictions"] = self.predictions
        h.meta["device_measurements"] = _device_measurements(obj)
        h.meta["converged"] = self.converged
        h.meta["stopped"] = self.stopped
        h.final = self.searcher.finalize(h, self.space, self.user_objective)
        if self.log is not None:
            self.log.set_final(h.meta["run_id"], h.final)
        return h

    # ---- evaluation helpers -------------------------------------------------------------------

    def cheap_screen(self, cands: Sequence[Candidate]) -> tuple[dict[str, Terms], dict[int, Terms]]:
        """Cheap terms of the candidates the objective does not know, and (by index) those
        whose cheap terms alone break a hard target."""
        obj, space = self.obj, self.space
        new = [c for c in cands if not obj.knows(space, c.arch)]
        cheap = dict(
            zip(
                [c.arch.id for c in new], obj.cheap_terms(space, [c.arch for c in new]), strict=True
            )
        )
        rejected = {
            i: cheap[c.arch.id]
            for i, c in enumerate(cands)
            if c.arch.id in cheap and obj.screen(cheap[c.arch.id])
        }
        return cheap, rejected

    def adopt(self, terms: Terms, known: Terms | None) -> Terms:
        """Terms of an evaluation, with the driver's cheap latency prediction where it made one.

        The driver's prediction decides: an executor's copy of the predictor
        does not know the latest verifications.
        """
        if known is not None and known.latency_ms is not None:
            for f in _PREDICTED:
                setattr(terms, f, getattr(known, f))
            terms.sources["latency"] = known.sources.get("latency", "")
            self.obj.score(terms)
        return terms

    def from_cache(self, ex: Executor, arch: Arch) -> Terms:
        ex.cached()
        return self.obj.evaluate(self.space, [arch])[0]

    # ---- synchronous ------------------------------------------------------------------------

    def run_sync(self, ex: Executor) -> None:
        self.open()
        s, space, obj = self.searcher, self.space, self.obj
        while len(self.evaluated) < self.budget and not s.done():
            if self.should_stop():
                break
            n = max(1, min(s.batch_size(), self.budget - len(self.evaluated)))
            cands = s.propose(n)[:n]
            if not cands:
                break
            batch: list[Record] = []
            fresh: list[Candidate] = []
            for cand in cands:
                step = len(self.history)
                if step >= len(self.recorded):
                    fresh.append(cand)
                    continue
                rec = self.recorded[step]
                if rec.arch != cand.arch and not self.diverged:
                    self.diverged = True
                    warnings.warn(
                        f"search {self.history.meta['run_id']}: step {step} re-proposed "
                        f"{space.format(cand.arch)} but the log holds {rec.arch_str}; continuing "
                        "from the logged candidates (the code or a numerical library changed "
                        "since the run started)",
                        stacklevel=4,
                    )
                if not rec.terms.screened:
                    obj.remember(space, rec.arch, rec.terms)
                batch.append(rec)
                self.add(rec, fresh=False)
            batch += self.evaluate_in_order(ex, fresh)
            s.update(batch)
            # The incumbent changes only with a newly evaluated candidate.
            v = self.verifier
            if v is not None and any(not r.terms.screened and not r.repeat for r in batch):
                while v.remaining > 0:
                    inc = v.incumbent(self.history)
                    if inc is None:
                        break
                    v.verify(space, obj, inc, self.history, self.log)

    def evaluate_in_order(self, ex: Executor, fresh: list[Candidate]) -> list[Record]:
        """Cheap terms first; the rest evaluated, up to ``ex.capacity`` at once, and
        recorded in proposal order as each one's result is in hand."""
        if not fresh:
            return []
        obj, space = self.obj, self.space
        cheap, rejected = self.cheap_screen(fresh)
        jobs: dict[str, Arch] = {}  # first occurrence of what the objective does not know
        for i, c in enumerate(fresh):
            if i not in rejected and c.arch.id not in jobs and not obj.knows(space, c.arch):
                jobs[c.arch.id] = c.arch
        queue = deque(jobs.values())
        running: dict[Any, Arch] = {}
        done: dict[str, Terms] = {}
        out = []
        for i, cand in enumerate(fresh):
            aid = cand.arch.id
            if i in rejected:
                out.append(self.record(cand, obj.screened(rejected[i]), aid in self.seen))
                continue
            if aid in jobs:
                while aid not in done:
                    while queue and len(running) < ex.capacity:
                        a = queue.popleft()
                        running[ex.submit(obj, space, a)] = a
                    for ticket, terms in ex.wait(list(running)):
                        a = running.pop(ticket)
                        obj.remember(space, a, terms)
                        done[a.id] = terms
                del jobs[aid]
                terms = done.pop(aid)
            else:  # a repeat, or proposed twice in this batch
                terms = self.from_cache(ex, cand.arch)
            terms = self.adopt(terms, cheap.get(aid))
            out.append(self.record(cand, terms, aid in self.evaluated))
        return out

    # ---- asynchronous -----------------------------------------------------------------------

    def run_async(self, ex: Executor) -> None:
        s, space, obj = self.searcher, self.space, self.obj
        self.open(f"{s.name}/async", variant="async", reproducible=False)
        for rec in self.recorded:  # every logged record, told at once, in order
            if not rec.terms.screened:
                obj.remember(space, rec.arch, rec.terms)
            self.add(rec, fresh=False)
        if self.recorded:
            s.update(list(self.recorded))
        self.stall = self.rejected_run = 0
        running: dict[Any, tuple[Candidate, Terms | None]] = {}
        flying: set[str] = set()
        while True:
            while (
                len(running) < ex.capacity
                and len(self.evaluated | flying) < self.budget
                and not s.done()
                and not self.should_stop()
            ):
                cands = s.propose(1)
                if not cands:
                    break
                cand = cands[0]
                known: Terms | None = None
                if not obj.knows(space, cand.arch):
                    cheap, rejected = self.cheap_screen([cand])
                    known = cheap[cand.arch.id]
                    if rejected:  # rejected on cheap terms, in the driver
                        terms = obj.screened(known)
                        s.update([self.record(cand, terms, cand.arch.id in self.seen)])
                        continue
                self.rejected_run = 0
                if obj.knows(space, cand.arch):
                    terms = self.from_cache(ex, cand.arch)
                    s.update([self.record(cand, terms, cand.arch.id in self.seen)])
                    continue
                if cand.arch.id in flying:  # proposed again while being evaluated
                    self.stall += 1
                    continue
                running[ex.submit(obj, space, cand.arch)] = (cand, known)
                flying.add(cand.arch.id)
            if not running:
                break
            for ticket, terms in ex.wait(list(running)):
                cand, known = running.pop(ticket)
                flying.discard(cand.arch.id)
                obj.remember(space, cand.arch, terms)
                s.update([self.record(cand, self.adopt(terms, known), repeat=False)])


def _decide(verifier: Any, space: SearchSpace, obj: Objective, history: History, log: Any) -> None:
    """After the search: verify, while the budget lasts, every candidate that could still beat
    the verified answer (and, without a hard target, the front's members)."""
    from hwnas.objectives import HARD_REWARDS

    while verifier.remaining > 0:
        rec = verifier.next_deciding(obj, history)
        if rec is None and obj.reward_kind not in HARD_REWARDS:
            rec = verifier.front_member(history)
        if rec is None:
            break
        verifier.verify(space, obj, rec, history, log)
    verifier.refresh(space, obj, history)


def _device_measurements(obj: Objective) -> int:
    n = int(getattr(obj.latency, "measured", 0) or 0) if obj.latency is not None else 0
    verifier = obj.verifier
    return n + (verifier.new_measurements if verifier is not None else 0)
