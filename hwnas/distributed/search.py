"""Search evaluations fanned out over Ray tasks: same searcher, same history.

A searcher is three separable steps (:mod:`hwnas.searchers.base`): propose a
batch, evaluate it, update. Only the evaluation is expensive (a proxy
training, a NASWOT score, a measurement) and its candidates are independent,
so :class:`RayEvaluator` replaces that one step: it ships each new candidate
of a batch to a Ray task, keeps at most ``max_in_flight`` of them running, and
hands the results back *in proposal order*. Proposing and updating stay in the
driver, untouched, which is why this is the **synchronous batched** variant:
``random``, ``evolution`` and ``mnasnet-rl`` produce exactly the history of a
local run with the same seed and settings (same candidates, same terms, same
rewards; only timings differ). Parallelism is bounded by the searcher's batch:
evolution's ``batch_size`` children per round, the RL controller's PPO batch,
random search's ``batch_size``. With ``batch_size=1`` evolution runs one
evaluation at a time wherever it runs (its first population still fans out).
:func:`run_search_ray_async` is the **asynchronous** variant, for ``random``
and ``evolution``: it tells the searcher each result as soon as it arrives
and asks for the next candidate, so no worker waits for a batch to finish,
but the history then depends on timing and differs from run to run (it says
so in ``meta["reproducible"] = False``).

What the driver still owns:

* the **search log** (records are appended as the in-order results arrive,
  so a killed search resumes as the local one does);
* the **store**: a shipped objective's store is replaced on the worker by a
  recorder; the writes it would have made (a measured latency, memory
  figures) come back with the result and the driver commits them as each task
  finishes, so a measurement is never lost and never written twice;
* the **caches**: a candidate the objective already knows (a repeat, a
  resumed step, a latency already in the store) is never sent out.

A latency measured on a device (``--latency device:NAME``) is taken in the
task, which then holds the device's Ray resource
(:func:`~hwnas.distributed.cluster.device_resource`) so that two measurements
never share a device; such evaluations therefore run one at a time per device.
"""

from __future__ import annotations

import copy
import json
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwnas.distributed.cluster import connect, device_resource, ray_module, remote_error
from hwnas.errors import ConfigError
from hwnas.searchers.base import rejection_message
from hwnas.store import Store

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.objectives import Objective, Terms
    from hwnas.searchers.base import History, ProgressFn, Searcher, SearchLog
    from hwnas.spaces.base import SearchSpace


# ---- shipping an objective without its store ---------------------------------------------


class _StoreSlot:
    """Stands in a shipped objective for the driver's store number ``index``."""

    def __init__(self, index: int):
        self.index = index


class RecordingStore(Store):
    """An in-memory store on a worker that also logs every write for the driver to replay.

    Reads see what this worker wrote (so an evaluator reading back its own
    write works); the driver's database is never opened from a worker.
    """

    _WRITES = ("add_device", "add_arch", "add_artifact", "set_metrics", "add_measurement")

    def __init__(self, index: int, journal: list[tuple[int, str, tuple, dict]]):
        super().__init__(":memory:")
        self.index = index
        self.journal = journal
        self._depth = 0

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name not in RecordingStore._WRITES:
            return attr

        def logged(*args: Any, **kwargs: Any) -> Any:
            # Only the outermost write is journalled: one write may call another.
            if self._depth == 0:
                self.journal.append((self.index, name, args, kwargs))
            self._depth += 1
            try:
                return attr(*args, **kwargs)
            finally:
                self._depth -= 1

        return logged


def _walk(obj: Any, fn, depth: int = 0, memo: dict[int, Any] | None = None) -> Any:
    """A copy of ``obj`` with ``fn`` applied to the attributes of it and of the hwnas
    objects it holds (evaluators, latency sources, estimators), three levels deep.

    Only objects of hwnas's own classes are copied (shallowly); tensors, tables
    and arrays are shared, which is all a pickled copy needs.
    """
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if depth > 3 or not type(obj).__module__.startswith("hwnas.") or not hasattr(obj, "__dict__"):
        return obj
    out = copy.copy(obj)
    memo[id(obj)] = out
    for k, v in list(vars(obj).items()):
        nv = fn(k, v)
        if nv is v:
            nv = _walk(v, fn, depth + 1, memo)
        if nv is not v:
            setattr(out, k, nv)
    return out


def detach(objective: Objective) -> tuple[Objective, list[Store]]:
    """A picklable copy of ``objective`` whose stores are slots, and the stores in slot order.

    Open devices (a ``DeviceLatency``'s ``_device``) are dropped: the worker
    opens its own on first use.
    """
    stores: list[Store] = []

    def fn(name: str, value: Any) -> Any:
        if isinstance(value, Store):
            for i, s in enumerate(stores):
                if s is value:
                    return _StoreSlot(i)
            stores.append(value)
            return _StoreSlot(len(stores) - 1)
        return value  # a device latency drops its open device itself (__getstate__)

    return _walk(objective, fn), stores


def attach(objective: Objective, journal: list) -> Objective:
    """On a worker: replace each store slot of a shipped objective with a :class:`RecordingStore`."""
    recorders: dict[int, RecordingStore] = {}

    def fn(name: str, value: Any) -> Any:
        if isinstance(value, _StoreSlot):
            if value.index not in recorders:
                recorders[value.index] = RecordingStore(value.index, journal)
            return recorders[value.index]
        return value

    return _walk(objective, fn)


def _prime(objective: Objective, space: SearchSpace) -> None:
    """Load on the driver what the workers would otherwise read themselves.

    A device latency's cache of the store's measurements travels with the
    shipped copy, so a worker never re-measures an architecture the store
    holds; a predictor file is read here, so the nodes need no copy of it.
    (Evaluators that read files lazily, such as an image folder for NASWOT or
    a proxy training, need those files on every node.)
    """
    lat = objective.latency
    prepare = getattr(lat, "prepare", None)  # duck-typed sources may not have it
    if callable(prepare):
        prepare(space)


# ---- the task ----------------------------------------------------------------------------

#: Per worker process: shipped objectives already unpickled, by object id (a few at most).
_WORKER_STATE: OrderedDict[str, tuple[Any, Any, list]] = OrderedDict()


def _evaluate_task(box: list, arch: Arch) -> tuple[Terms, list, float]:
    """Evaluate one architecture with a shipped objective; return (terms, store writes, seconds).

    The objective comes as an object reference inside a list, so Ray does not
    resolve it for every task: each worker process unpickles it once (a
    benchmark table or a minibatch is not cheap) and keeps it for the run.
    """
    ray = ray_module()
    ref = box[0]
    key = ref.hex()
    state = _WORKER_STATE.get(key)
    if state is None:
        shipped, space = ray.get(ref)
        journal: list = []
        state = (attach(shipped, journal), space, journal)
        _WORKER_STATE[key] = state
        while len(_WORKER_STATE) > 4:
            _WORKER_STATE.popitem(last=False)
    objective, space, journal = state
    t0 = time.perf_counter()
    terms = objective.evaluate(space, [arch])[0]
    writes = list(journal)
    journal.clear()
    return terms, writes, time.perf_counter() - t0


_REMOTE: Any = None


def _remote_fn() -> Any:
    global _REMOTE
    if _REMOTE is None:
        _REMOTE = ray_module().remote(_evaluate_task)
    return _REMOTE


# ---- the driver side ----------------------------------------------------------------------


@dataclass
class FanoutStats:
    """What the fan-out did: how many tasks, how long they worked, what Ray cost on top."""

    tasks: int = 0
    cache_hits: int = 0
    max_in_flight: int = 0
    busy_s: list[float] = field(default_factory=list)
    roundtrip_s: list[float] = field(default_factory=list)
    store_writes: int = 0

    def overheads_s(self) -> list[float]:
        """Per task: submission to result in hand, minus the time spent evaluating in the task."""
        return [r - b for r, b in zip(self.roundtrip_s, self.busy_s, strict=True)]

    @property
    def overhead_per_task_s(self) -> float:
        """Mean overhead (includes each worker's first task: imports, unpickling the objective)."""
        o = self.overheads_s()
        return sum(o) / len(o) if o else 0.0

    @property
    def overhead_median_s(self) -> float:
        """Median overhead: the steady-state cost of one task."""
        o = sorted(self.overheads_s())
        return o[len(o) // 2] if o else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "cache_hits": self.cache_hits,
            "max_in_flight": self.max_in_flight,
            "busy_s": sum(self.busy_s),
            "overhead_per_task_s": self.overhead_per_task_s,
            "overhead_median_s": self.overhead_median_s,
            "store_writes": self.store_writes,
        }


class RayEvaluator:
    """The evaluation step of a searcher, on Ray tasks with a bounded number in flight.

    Args:
        max_in_flight: tasks running or queued at once (at least 1).
        num_cpus: CPUs each task reserves (its torch threads).
        resources: custom resources each task needs (e.g. a device's).
        max_retries: times Ray re-runs a task whose worker died (evaluation is
            side-effect free on the worker, so a re-run is safe).
    """

    def __init__(
        self,
        max_in_flight: int,
        *,
        num_cpus: float = 1,
        resources: Mapping[str, float] | None = None,
        max_retries: int = 3,
    ):
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = int(max_in_flight)
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.max_retries = max_retries
        self.stats = FanoutStats()
        self._shipped: dict[tuple, tuple[Any, list[Store], Objective]] = {}
        self._pending: dict[Any, tuple[list[Store], float]] = {}

    def _ship(self, objective: Objective, space: SearchSpace) -> tuple[Any, list[Store]]:
        ray = ray_module()
        # The configuration is part of the key: MemNAS moves its base network between rounds.
        key = (
            id(objective),
            space.name,
            json.dumps(objective.config(), sort_keys=True, default=str),
        )
        hit = self._shipped.get(key)
        if hit is None:
            _prime(objective, space)
            shipped, stores = detach(objective)
            hit = (ray.put((shipped, space)), stores, objective)  # keep objective: ids stay unique
            self._shipped[key] = hit
        return hit[0], hit[1]

    # ---- one task at a time ---------------------------------------------------------------

    @staticmethod
    def knows(objective: Objective, space: SearchSpace, arch: Arch) -> bool:
        """Whether ``objective`` answers ``arch`` from its own cache (no task needed)."""
        return (space.name, arch.id) in getattr(objective, "_cache", {})

    def submit(self, objective: Objective, space: SearchSpace, arch: Arch) -> Any:
        """Start evaluating ``arch`` in a task; returns its reference (see :meth:`collect`)."""
        ref, stores = self._ship(objective, space)
        task = _remote_fn().options(
            num_cpus=self.num_cpus,
            resources=self.resources or None,
            max_retries=self.max_retries,
        )
        out = task.remote([ref], arch)
        self._pending[out] = (stores, time.perf_counter())
        self.stats.tasks += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._pending))
        return out

    def collect(self, ref: Any) -> Terms:
        """The terms of a finished task; the store writes it made are committed here, now.

        Raises:
            the task's own error (an ``HwnasError`` stays one).
        """
        ray = ray_module()
        stores, t_submit = self._pending.pop(ref)
        try:
            terms, writes, busy = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise remote_error(exc) from None
        self.stats.roundtrip_s.append(time.perf_counter() - t_submit)
        self.stats.busy_s.append(busy)
        for index, method, args, kwargs in writes:
            getattr(stores[index], method)(*args, **kwargs)
        self.stats.store_writes += len(writes)
        return terms

    def cancel_pending(self) -> None:
        """Cancel every task not collected (a search stopped early leaves no work behind)."""
        ray = ray_module()
        for r in list(self._pending):
            with suppress(Exception):  # already finished, or its worker already gone
                ray.cancel(r)
        self._pending.clear()

    # ---- the Searcher.evaluate contract ---------------------------------------------------

    def evaluate(
        self, objective: Objective, space: SearchSpace, archs: list[Arch]
    ) -> Iterator[Terms]:
        """Terms of each architecture, yielded in order (the ``Searcher.evaluate`` contract).

        Each architecture the objective does not know yet is evaluated once in
        a task; repeats and known ones are answered by the objective itself,
        exactly as the local loop would (a cache hit with ``eval_s = 0``).
        """
        ray = ray_module()
        first: dict[str, int] = {}
        for i, a in enumerate(archs):
            if not self.knows(objective, space, a) and a.id not in first:
                first[a.id] = i
        jobs = list(first.values())
        results: dict[int, Terms] = {}
        index_of: dict[Any, int] = {}
        nxt = 0
        try:
            for i, a in enumerate(archs):
                if first.get(a.id) != i:
                    self.stats.cache_hits += 1
                    yield objective.evaluate(space, [a])[0]
                    continue
                while i not in results:
                    while nxt < len(jobs) and len(index_of) < self.max_in_flight:
                        index_of[self.submit(objective, space, archs[jobs[nxt]])] = jobs[nxt]
                        nxt += 1
                    done, _ = ray.wait(list(index_of), num_returns=1)
                    for d in done:
                        results[index_of.pop(d)] = self.collect(d)
                terms = results.pop(i)
                objective.remember(space, a, terms)
                yield terms
        finally:
            self.cancel_pending()


def task_resources(objective: Objective) -> tuple[dict[str, float], float]:
    """(custom resources, CPUs) an evaluation task of ``objective`` needs.

    A latency measured on a device makes each task hold that device's
    resource, and as many CPUs as the device's runtime threads.
    """
    from hwnas.objectives import DeviceLatency

    lat = getattr(objective, "latency", None)
    if isinstance(lat, DeviceLatency):
        return {device_resource(lat.device_name): 1.0}, float(max(1, int(lat.threads or 1)))
    return {}, 1.0


def fanout_note(history: History) -> str | None:
    """A hint when a search on Ray ran nothing in parallel (every batch had one candidate)."""
    stats = history.meta.get("ray") or {}
    if stats.get("tasks", 0) > 1 and stats.get("max_in_flight", 0) <= 1:
        return (
            f"{history.meta.get('algorithm')} proposed one candidate at a time, so no two "
            "evaluations ran together on Ray; give it a batch (e.g. --set batch_size=4: "
            "a different, equally reproducible run) to use the cluster"
        )
    return None


def run_search_ray(
    searcher: Searcher,
    space: SearchSpace,
    objective: Objective,
    budget: int,
    seed: int = 0,
    log: SearchLog | None = None,
    progress: ProgressFn | None = None,
    *,
    address: str | None = None,
    max_in_flight: int | None = None,
    num_cpus: int | None = None,
    resources: Mapping[str, float] | None = None,
) -> History:
    """``searcher.run(...)`` with its evaluations on Ray (synchronous batched variant).

    The history equals a local run's for the same seed and settings whenever
    the evaluator is deterministic (a table, a predictor); see the module
    docstring. ``history.meta["ray"]`` holds the fan-out's statistics.

    Args:
        address: Ray cluster (``None``: a local cluster started here).
        max_in_flight: tasks at once (default: the cluster's CPUs / CPUs per task).
        num_cpus: CPUs of a local cluster (default: all of this machine).
        resources: custom resources each task needs (default: the measured
            device's, see :func:`task_resources`).

    Raises:
        ConfigError: a searcher with its own evaluation, or a device resource on no node.
    """
    from hwnas.searchers.base import Searcher

    if type(searcher).evaluate is not Searcher.evaluate or type(searcher).run is not Searcher.run:
        raise ConfigError(
            f"searcher {searcher.name!r} runs its own evaluation loop, so its candidates "
            "cannot be fanned out on Ray; run it without --ray"
        )
    needed, cpus = task_resources(objective)
    if resources is not None:
        needed = dict(resources)
    cluster = connect(address, num_cpus=num_cpus, resources=dict.fromkeys(needed, 1))
    try:
        cluster.check_resources(needed)
        limit = max_in_flight or max(1, int(cluster.cpus // cpus))
        fan = RayEvaluator(limit, num_cpus=cpus, resources=needed)
        history = searcher.run(
            space, objective, budget, seed=seed, log=log, progress=progress, evaluator=fan
        )
        history.meta["ray"] = {
            "address": address,
            "max_in_flight_limit": limit,
            **fan.stats.to_dict(),
        }
        return history
    finally:
        cluster.close()


# ---- the asynchronous variant ------------------------------------------------------------


def async_searchers() -> list[str]:
    """Registered searchers whose ``update`` takes one record at any time
    (``Searcher.asynchronous``), so that telling them results in completion order
    is still their algorithm (Real et al. ran regularised evolution with
    asynchronous workers; random search learns nothing)."""
    from hwnas.searchers import SEARCHERS, searcher_class

    return [n for n in SEARCHERS.names() if getattr(searcher_class(n), "asynchronous", False)]


def run_search_ray_async(
    searcher: Searcher,
    space: SearchSpace,
    objective: Objective,
    budget: int,
    seed: int = 0,
    log: SearchLog | None = None,
    progress: ProgressFn | None = None,
    *,
    address: str | None = None,
    max_in_flight: int | None = None,
    num_cpus: int | None = None,
    resources: Mapping[str, float] | None = None,
) -> History:
    """Asynchronous search on Ray: keep ``max_in_flight`` evaluations running, and as soon as
    one finishes, tell the searcher and ask it for the next candidate.

    **Not reproducible**: results are told in the order they finish, which
    depends on timing, so the history differs between runs and from the local
    loop even with the same seed (``meta["variant"] = "async"``,
    ``meta["reproducible"] = False``). In exchange no worker waits for the
    slowest candidate of a batch, and evolution with one child per step
    (``batch_size=1``, the paper's setting) still uses every worker. The log
    keeps it as a run of its own (``ALGO/async``); a resumed run tells the
    searcher every logged record, in order, and carries on.

    Raises:
        ConfigError: a searcher that needs whole batches (``mnasnet-rl``'s PPO
            update) or a budget below 1.
    """
    from hwnas.searchers.base import History, Record

    if not getattr(searcher, "asynchronous", False):
        raise ConfigError(
            f"searcher {searcher.name!r} learns from whole batches, so it has no asynchronous "
            f"variant; run it synchronously (run_search_ray), or use one of: "
            f"{', '.join(async_searchers())}"
        )
    if getattr(objective, "verifier", None) is not None:
        raise ConfigError(
            "--verify needs the synchronous loop (verifications change what the searcher was "
            "told, in order); run the search without the asynchronous variant"
        )
    budget = int(budget)
    ray = ray_module()
    search_obj = searcher.prepare(space, objective, budget, seed)
    algo = f"{searcher.name}/async"
    meta: dict[str, Any] = {
        **searcher.run_meta(space, search_obj, budget, seed, algorithm=algo),
        "variant": "async",
        "reproducible": False,
    }
    run_id = meta["run_id"]
    recorded: list[Record] = []
    if log is not None:
        log.open_run(run_id, algo, space.name, seed, meta)
        recorded = log.records(run_id, space.name)
    history = History(meta=meta)
    seen: set[str] = set()
    evaluated: set[str] = set()  # accuracy evaluated: what the budget counts
    for rec in recorded:
        if not rec.terms.screened:
            search_obj.remember(space, rec.arch, rec.terms)
            evaluated.add(rec.arch.id)
        seen.add(rec.arch.id)
        history.records.append(rec)
        if progress is not None:
            progress(rec, history)
    if recorded:
        searcher.update(list(recorded))

    needed, cpus = task_resources(search_obj)
    if resources is not None:
        needed = dict(resources)
    cluster = connect(address, num_cpus=num_cpus, resources=dict.fromkeys(needed, 1))
    t_start = time.perf_counter()
    converged = False
    stopped: str | None = None
    try:
        cluster.check_resources(needed)
        limit = max_in_flight or max(1, int(cluster.cpus // cpus))
        fan = RayEvaluator(limit, num_cpus=cpus, resources=needed)
        running: dict[Any, Any] = {}  # ref -> candidate
        stall, stall_limit = 0, max(budget, 100)
        rejected, reject_limit = 0, max(20 * budget, 2000)

        def tell(cand: Any, terms: Terms, repeat: bool) -> None:
            rec = Record(
                step=len(history),
                arch=cand.arch,
                arch_str=space.format(cand.arch),
                terms=terms,
                origin=cand.origin,
                info=dict(cand.info),
                repeat=repeat,
                elapsed_s=time.perf_counter() - t_start,
            )
            if log is not None:
                log.append(run_id, rec)
            seen.add(rec.arch.id)
            if not terms.screened:
                evaluated.add(rec.arch.id)
            history.records.append(rec)
            if progress is not None:
                progress(rec, history)
            searcher.update([rec])

        try:
            while True:
                flying = {c.arch.id for c in running.values()}
                while (
                    len(running) < limit
                    and len(evaluated | flying) < budget
                    and not searcher.done()
                ):
                    if stall >= stall_limit:
                        converged = True  # only known architectures are proposed any more
                        break
                    if rejected >= reject_limit:
                        stopped = rejection_message(rejected, search_obj)
                        break
                    cands = searcher.propose(1)
                    if not cands:
                        break
                    cand = cands[0]
                    if not fan.knows(search_obj, space, cand.arch):
                        cheap = search_obj.cheap_terms(space, [cand.arch])[0]
                        if search_obj.screen(cheap):  # rejected on cheap terms, in the driver
                            stall = stall + 1 if cand.arch.id in seen else 0
                            rejected += 1
                            tell(cand, search_obj.screened(cheap), cand.arch.id in seen)
                            continue
                    rejected = 0
                    if fan.knows(search_obj, space, cand.arch):
                        fan.stats.cache_hits += 1
                        repeat = cand.arch.id in seen
                        stall = stall + 1 if repeat else 0
                        tell(cand, search_obj.evaluate(space, [cand.arch])[0], repeat)
                        continue
                    if cand.arch.id in flying:  # proposed again while being evaluated
                        stall += 1
                        continue
                    running[fan.submit(search_obj, space, cand.arch)] = cand
                    flying.add(cand.arch.id)
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                for d in done:
                    cand = running.pop(d)
                    terms = fan.collect(d)
                    search_obj.remember(space, cand.arch, terms)
                    stall = 0
                    tell(cand, terms, repeat=False)
        finally:
            fan.cancel_pending()
        history.meta["ray"] = {
            "address": address,
            "max_in_flight_limit": limit,
            **fan.stats.to_dict(),
        }
    finally:
        cluster.close()
    history.meta["replayed"] = len(recorded)
    history.meta["evaluated"] = history.meta["accuracy_evaluations"] = len(evaluated)
    history.meta["screened"] = sum(r.terms.screened and not r.repeat for r in history.records)
    history.meta["converged"] = converged
    history.meta["stopped"] = stopped
    history.final = searcher.finalize(history, space, objective)
    if log is not None:
        log.set_final(run_id, history.final)
    return history
