"""Search evaluations on Ray: same loop, same searcher, same history.

:meth:`Searcher.run <hwnas.searchers.base.Searcher.run>` is the only search
loop (:mod:`hwnas.searchers.loop`); it takes an *executor* that evaluates the
candidates it submits. :class:`RayExecutor` is that executor on Ray: each
architecture the objective does not know yet becomes a Ray task, at most
``max_in_flight`` run at once, and results come back as they finish.
Everything else (the budget, cheap-first screening, the search log and
resuming, verification, progress) is the loop's, so it is the same code as a
local run.

:func:`run_search_ray` is the **synchronous batched** variant: the loop
records results in proposal order and tells the searcher whole batches, so
``random``, ``evolution`` and ``mnasnet-rl`` produce exactly the history of a
local run with the same seed and settings (same candidates, same terms, same
rewards; only timings differ). Parallelism is bounded by the searcher's batch:
evolution's ``batch_size`` children per round, the RL controller's PPO batch,
random search's ``batch_size``. With ``batch_size=1`` evolution runs one
evaluation at a time wherever it runs (its first population still fans out).
:func:`run_search_ray_async` is the **asynchronous** variant, for searchers
with ``Searcher.asynchronous`` (``random``, ``evolution``): the loop tells the
searcher each result as soon as it arrives and asks for the next candidate,
so no worker waits for a batch to finish, but the history then depends on
timing and differs from run to run (it says so in
``meta["reproducible"] = False``).

What stays in the driver:

* the **search log** (records are appended as results are recorded, so a
  killed search resumes as the local one does);
* the **store**: an objective is shipped to the workers pickled with its
  stores left behind (pickle's persistent ids, :func:`ship`); on a worker each
  becomes a :class:`RecordingStore`, whose writes (a measured latency, memory
  figures) come back with the result and are committed by the driver as each
  task finishes, so a measurement is never lost and never written twice;
* the **caches**: a candidate the objective already knows (a repeat, a
  resumed step, a latency already in the store) is never sent out.

A latency measured on a device (``--latency device:NAME``) is taken in the
task, which then holds the device's Ray resource
(:func:`~hwnas.distributed.cluster.device_resource`) so that two measurements
never share a device; such evaluations therefore run one at a time per device.
"""

from __future__ import annotations

import io
import json
import pickle
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwnas.distributed.cluster import connect, device_resource, ray_module, remote_error
from hwnas.errors import ConfigError
from hwnas.searchers.loop import Executor, check_asynchronous
from hwnas.store import Store

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.objectives import Objective, Terms
    from hwnas.searchers.base import History, ProgressFn, Searcher
    from hwnas.spaces.base import SearchSpace
    from hwnas.store.search_log import SearchLog


# ---- shipping an objective without its stores ----------------------------------------------


class RecordingStore(Store):
    """An in-memory store on a worker that also logs every write for the driver to replay.

    Reads see what this worker wrote (so an evaluator reading back its own
    write works); the driver's database is never opened from a worker. Only
    the outermost write is journalled: one write may call another.
    """

    def __init__(self, index: int, journal: list[tuple[int, str, tuple, dict]]):
        super().__init__(":memory:")
        self.index = index
        self.journal = journal
        self._depth = 0

    def _journalled(self, name: str, write: Any, args: tuple, kwargs: dict) -> Any:
        if self._depth == 0:
            self.journal.append((self.index, name, args, kwargs))
        self._depth += 1
        try:
            return write(*args, **kwargs)
        finally:
            self._depth -= 1

    def add_device(self, *args: Any, **kwargs: Any) -> Any:
        return self._journalled("add_device", super().add_device, args, kwargs)

    def add_arch(self, *args: Any, **kwargs: Any) -> Any:
        return self._journalled("add_arch", super().add_arch, args, kwargs)

    def add_artifact(self, *args: Any, **kwargs: Any) -> Any:
        return self._journalled("add_artifact", super().add_artifact, args, kwargs)

    def set_metrics(self, *args: Any, **kwargs: Any) -> Any:
        return self._journalled("set_metrics", super().set_metrics, args, kwargs)

    def add_measurement(self, *args: Any, **kwargs: Any) -> Any:
        return self._journalled("add_measurement", super().add_measurement, args, kwargs)


#: The writes a :class:`RecordingStore` journals, by the name the journal carries.
STORE_WRITES: dict[str, Any] = {
    "add_device": Store.add_device,
    "add_arch": Store.add_arch,
    "add_artifact": Store.add_artifact,
    "set_metrics": Store.set_metrics,
    "add_measurement": Store.add_measurement,
}


def ship(objective: Objective, space: SearchSpace) -> tuple[bytes, list[Store]]:
    """``(objective, space)`` pickled for a worker, and the stores left behind, in slot order.

    A store is an open database of the driver's: pickle's persistent-id hook
    writes each one as a slot number wherever it sits in the objective (a
    device latency's, the memory estimator's, a verifier's), and
    :func:`unship` puts a :class:`RecordingStore` in its place. Open devices
    do not travel either (``DeviceLatency.__getstate__``): the worker opens
    its own on first use.
    """
    ray = ray_module()
    stores: list[Store] = []

    class Pickler(ray.cloudpickle.CloudPickler):  # cloudpickle, as Ray would ship it
        def persistent_id(self, obj: Any) -> Any:
            if not isinstance(obj, Store):
                return None
            for i, s in enumerate(stores):
                if s is obj:
                    return ("store", i)
            stores.append(obj)
            return ("store", len(stores) - 1)

    buf = io.BytesIO()
    Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump((objective, space))
    return buf.getvalue(), stores


def unship(blob: bytes, journal: list) -> tuple[Objective, SearchSpace]:
    """On a worker: what :func:`ship` pickled, each store slot a :class:`RecordingStore`."""
    recorders: dict[int, RecordingStore] = {}

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            kind, index = pid
            if kind != "store":
                raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
            if index not in recorders:
                recorders[index] = RecordingStore(index, journal)
            return recorders[index]

    return Unpickler(io.BytesIO(blob)).load()


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
        journal: list = []
        objective, space = unship(ray.get(ref), journal)
        state = (objective, space, journal)
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


class RayExecutor(Executor):
    """The search loop's evaluations on Ray tasks, at most ``max_in_flight`` at once.

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
        self.capacity = self.max_in_flight = int(max_in_flight)
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
            blob, stores = ship(objective, space)
            hit = (ray.put(blob), stores, objective)  # keep objective: ids stay unique
            self._shipped[key] = hit
        return hit[0], hit[1]

    def submit(self, objective: Objective, space: SearchSpace, arch: Arch) -> Any:
        """Start evaluating ``arch`` in a task; returns its object reference."""
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

    def wait(self, tickets: Sequence[Any]) -> list[tuple[Any, Terms]]:
        """The tasks among ``tickets`` that have finished (at least one); their store writes
        are committed here, now.

        Raises:
            the task's own error (an ``HwnasError`` stays one).
        """
        done, _ = ray_module().wait(list(tickets), num_returns=1)
        return [(ref, self._collect(ref)) for ref in done]

    def _collect(self, ref: Any) -> Terms:
        ray = ray_module()
        stores, t_submit = self._pending.pop(ref)
        try:
            terms, writes, busy = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise remote_error(exc) from None
        self.stats.roundtrip_s.append(time.perf_counter() - t_submit)
        self.stats.busy_s.append(busy)
        for index, method, args, kwargs in writes:
            STORE_WRITES[method](stores[index], *args, **kwargs)
        self.stats.store_writes += len(writes)
        return terms

    def cached(self) -> None:
        self.stats.cache_hits += 1

    def cancel(self) -> None:
        """Cancel every task not collected (a search stopped early leaves no work behind)."""
        ray = ray_module()
        for r in list(self._pending):
            with suppress(Exception):  # already finished, or its worker already gone
                ray.cancel(r)
        self._pending.clear()


def task_resources(objective: Objective) -> tuple[dict[str, float], float]:
    """(custom resources, CPUs) an evaluation task of ``objective`` needs.

    A latency measured on a device makes each task hold that device's
    resource, and as many CPUs as the device's runtime threads.
    """
    from hwnas.objectives import DeviceLatency

    lat = objective.latency
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
    asynchronous: bool = False,
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
        asynchronous: the asynchronous variant (:func:`run_search_ray_async`).

    Raises:
        ConfigError: a device resource on no node; see also :meth:`Searcher.run`.
    """
    if asynchronous:  # before a cluster is started for nothing
        check_asynchronous(searcher, objective)
    needed, cpus = task_resources(objective)
    if resources is not None:
        needed = dict(resources)
    cluster = connect(address, num_cpus=num_cpus, resources=dict.fromkeys(needed, 1))
    try:
        cluster.check_resources(needed)
        limit = max_in_flight or max(1, int(cluster.cpus // cpus))
        fan = RayExecutor(limit, num_cpus=cpus, resources=needed)
        history = searcher.run(
            space,
            objective,
            budget,
            seed=seed,
            log=log,
            progress=progress,
            executor=fan,
            asynchronous=asynchronous,
        )
        history.meta["ray"] = {
            "address": address,
            "max_in_flight_limit": limit,
            **fan.stats.to_dict(),
        }
        return history
    finally:
        cluster.close()


def run_search_ray_async(*args: Any, **kwargs: Any) -> History:
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

    Takes the arguments of :func:`run_search_ray` (it is
    ``run_search_ray(..., asynchronous=True)``).

    Raises:
        ConfigError: a searcher that needs whole batches (``mnasnet-rl``'s PPO
            update), verification, or a budget below 1.
    """
    return run_search_ray(*args, **kwargs, asynchronous=True)
