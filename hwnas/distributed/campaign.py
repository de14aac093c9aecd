"""Measurement campaigns over many devices on Ray: one actor per device, one writer.

The local campaign (:func:`hwnas.campaigns.run_campaign`) measures N
architectures on one device. Here several devices, on several machines, work
through the same N at once:

* **One actor per device**, placed with the device's custom resource
  (:func:`~hwnas.distributed.cluster.device_resource`, e.g. ``{"adb:SERIAL": 1}``)
  on the node the device is attached to. The resource's quantity is 1, so no
  two actors, hence no two measurements, ever share a device. The actor runs
  the campaign's own per-architecture step (:func:`hwnas.campaigns.measure_arch`:
  build, export, count, measure) and returns the result; it never touches the
  store.
* **The driver is the only writer**: results stream back as they finish and
  each is committed with :func:`hwnas.campaigns.record_result`, exactly as the
  local loop does, into the same store.
* **Groups**: devices stored under the same name (a farm of identical phones,
  ``DeviceSpec(..., store_as="pixel7")``) share one queue, so each
  architecture is measured once by whichever is free; devices under different
  names each measure every architecture (one experiment per device).
* **Lost workers**: an actor whose process dies (killed, OOM, node lost) is
  restarted by Ray up to ``max_restarts`` times; the architecture it had in
  flight goes back to the front of its group's queue. One that kills its
  worker ``max_attempts`` times is recorded as a ``crash`` failure instead of
  taking the farm down. An actor out of restarts leaves its group's work to
  the group's other devices (or to a re-run).
* **Trust, per device**: with an interference ``Policy`` each actor wraps its
  device in the local campaign's guard (read on the far side of an adb/ssh
  transport), so every row records what the machine was doing; with
  ``CanarySettings`` the driver keeps one
  :class:`~hwnas.campaigns.canary.CanaryMonitor` per actor, which measures the
  reference model on that actor's device, flags that device's rows on a drift
  or a busy record, and re-measures them there once the canary is back. The
  driver waits for a device's canary check (seconds, every K architectures)
  after handing the other devices their next architecture.
* **Resumable**: what is skipped is decided exactly as in the local path
  (``Store.has_measurement`` per device name and input shape), so re-running
  the same command after the driver died measures only what is not stored.
  Nothing in flight was recorded, so nothing is recorded twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.arch import Arch
from hwnas.campaigns.runner import (
    CampaignSummary,
    _account,  # the local loop's bookkeeping, shared so both summaries read alike
    _status,
    default_campaign_name,
    sample_distinct,
    store_device_name,
)
from hwnas.campaigns.step import ArchResult, record_result
from hwnas.distributed.cluster import Cluster, connect, device_resource, ray_module, remote_error
from hwnas.errors import ConfigError, DeviceError, HwnasError
from hwnas.profilers.latency import Measurement, MeasurementFailure, MeasureSettings
from hwnas.spaces.base import SearchSpace

#: Called after every architecture: (how many to advance the bar, status text).
ProgressFn = Callable[[int, str], None]


@dataclass(frozen=True)
class DeviceSpec:
    """One device of a distributed campaign.

    Attributes:
        device: registry name (``cpu-ort``, ``adb:SERIAL``, ``ssh:user@host``).
        kwargs: passed to :func:`hwnas.devices.create_device` (``threads``...).
        store_as: the name its results are stored under (default: as the
            local path would, :func:`~hwnas.campaigns.store_device_name`).
            Devices with the same ``store_as`` split the architectures between them.
        resource: the Ray custom resource that places the actor (default
            :func:`~hwnas.distributed.cluster.device_resource` of ``device``).
        isolate: measure in a child process of the actor, so a crashing
            runtime is a recorded failure and not a lost actor (as ``--isolate``).
        num_cpus: CPUs the actor reserves (default: the device's threads for a
            device of the node's own CPU/GPU, so that no two local measurements
            share a core; 0 for a phone or board, which times on its own CPU:
            a USB host with eight phones must be able to hold eight actors).
    """

    device: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    store_as: str | None = None
    resource: str | None = None
    isolate: bool = True
    num_cpus: float | None = None

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> DeviceSpec:
        """``DEVICE[=STORE_NAME]`` (the CLI's comma-separated ``--device`` items)."""
        name, _, store_as = text.strip().partition("=")
        if not name:
            raise ConfigError(f"empty device in {text!r}; write e.g. adb:SERIAL or cpu-ort=bench-a")
        return cls(device=name.strip(), store_as=store_as.strip() or None, **defaults)

    @property
    def threads(self) -> int:
        return int(self.kwargs.get("threads") or 1)

    @property
    def store_name(self) -> str:
        return self.store_as or store_device_name(self.device, self.threads)

    @property
    def ray_resource(self) -> str:
        return self.resource or device_resource(self.device)

    @property
    def cpus(self) -> float:
        if self.num_cpus is not None:
            return float(self.num_cpus)
        remote = ":" in self.device  # adb:SERIAL, ssh:HOST: the target has its own CPU
        return 0.0 if remote else float(self.threads)


def as_specs(devices: Iterable[str | DeviceSpec], **defaults: Any) -> list[DeviceSpec]:
    """Strings become :class:`DeviceSpec` (with ``defaults``); two specs for one device are refused.

    Raises:
        ConfigError: no device, or the same resource twice (two actors on one device).
    """
    specs = [d if isinstance(d, DeviceSpec) else DeviceSpec.parse(d, **defaults) for d in devices]
    if not specs:
        raise ConfigError("a distributed campaign needs at least one device")
    seen: dict[str, str] = {}
    for s in specs:
        r = s.ray_resource
        if r in seen:
            raise ConfigError(
                f"devices {seen[r]!r} and {s.device!r} both hold Ray resource {r!r}: two "
                "measurements would share one device. Give each its own resource "
                "(DeviceSpec(resource=...)) if they really are different devices"
            )
        seen[r] = s.device
    return specs


# ---- the actor -----------------------------------------------------------------------


class DeviceWorker:
    """Owns one device on the node it is attached to and measures architectures on it.

    Made into a Ray actor by :class:`RayCampaign` (this module imports no ray).
    Every call is the campaign's own step function; nothing here writes a store.
    With an interference ``policy`` the device is wrapped in the local campaign's
    guard; its messages ("waiting for a quiet machine") travel back with each
    call's answer for the driver to show.
    """

    def __init__(
        self,
        spec: DeviceSpec,
        space: SearchSpace,
        settings: MeasureSettings,
        options: dict[str, Any],
        policy: Any = None,
    ):
        from hwnas.devices import create_device
        from hwnas.devices.isolated import IsolatedDevice

        self.spec = spec
        self.space = space
        self.settings = settings
        self.options = options
        kwargs = {k: v for k, v in spec.kwargs.items() if v is not None}
        self.device = (
            IsolatedDevice(spec.device, **kwargs)
            if spec.isolate
            else create_device(spec.device, **kwargs)
        )
        self.messages: list[str] = []
        if policy is not None:
            from hwnas.profilers.interference import guard_device

            self.device = guard_device(
                self.device,
                policy,
                threads=spec.threads,
                device_name=spec.device,
                log=self.messages.append,
                device_options=kwargs,
            )
        self._canary: Any = None

    def _drain(self) -> list[str]:
        out, self.messages[:] = list(self.messages), []
        return out

    def ready(self) -> dict[str, Any]:
        """Where the actor runs (its pid changes when Ray restarts it)."""
        return {"pid": os.getpid(), "host": socket.gethostname()}

    def measure(
        self, arch: Arch, discard_artifact: bool = False
    ) -> tuple[ArchResult, float, int, list[str]]:
        """(result, seconds spent here, pid, guard messages): the step of
        :func:`hwnas.campaigns.measure_arch`."""
        from hwnas.campaigns.step import measure_arch

        t0 = time.perf_counter()
        result = measure_arch(self.space, arch, self.device, self.settings, **self.options)
        if discard_artifact and result.artifact is not None:
            with contextlib.suppress(OSError):  # the export cache is this node's
                os.unlink(result.artifact.path)
        return result, time.perf_counter() - t0, os.getpid(), self._drain()

    def canary(self, model: str) -> tuple[Measurement | None, str | None, list[str]]:
        """Measure the reference model here: (measurement or None, error text, messages).

        The canary is exported on this node (its export cache) once per actor.
        """
        from hwnas.campaigns.canary import canary_artifact

        try:
            if self._canary is None:
                self._canary = canary_artifact(
                    model,
                    cache_dir=self.options.get("cache_dir"),
                    exporter=self.options.get("exporter", "dynamo"),
                )
            return self.device.measure(self._canary, self.settings), None, self._drain()
        except HwnasError as exc:
            return None, str(exc).strip().splitlines()[0], self._drain()

    def remeasure(self, arch: Arch) -> tuple[Measurement | None, list[str]]:
        """Measure a flagged architecture again (its export is a cache hit): (measurement
        or None when it cannot be measured now, messages)."""
        from hwnas.campaigns.step import prepare_arch

        prepared = prepare_arch(self.space, arch, **{**self.options, "check": False})
        if prepared.artifact is None:
            return None, self._drain()
        try:
            return self.device.measure(prepared.artifact, self.settings), self._drain()
        except HwnasError as exc:
            msg = (
                f"re-measuring {arch.id} failed ({str(exc).strip().splitlines()[0]}); left flagged"
            )
            return None, [*self._drain(), msg]

    def close(self) -> None:
        self.device.close()


# ---- the driver ----------------------------------------------------------------------


@dataclass
class WorkerState:
    """The driver's view of one device actor."""

    spec: DeviceSpec
    handle: Any = None
    pid: int | None = None
    host: str | None = None
    in_flight: dict[Any, tuple[Arch, float]] = field(
        default_factory=dict
    )  # ref -> (arch, t_submit)
    processed: int = 0
    losses: int = 0  # times the actor was lost with work in flight
    probe: Any = None  # a ready() call in flight while Ray restarts the actor
    dead: bool = False
    death: str | None = None

    @property
    def store_name(self) -> str:
        return self.spec.store_name

    def row(self) -> dict[str, Any]:
        return {
            "device": self.spec.device,
            "store_as": self.store_name,
            "resource": self.spec.ray_resource,
            "host": self.host,
            "pid": self.pid,
            "processed": self.processed,
            "lost": self.losses,
            "dead": self.dead,
            "death": self.death,
        }


@dataclass
class RayCampaignSummary:
    """What a distributed campaign did.

    Attributes:
        devices: one local-style :class:`~hwnas.campaigns.CampaignSummary` per
            stored device name (measured, failed, skipped, failures, timings).
        workers: per actor: device, resource, host, pid, processed, losses.
        requeued: architectures put back in a queue because their worker was lost.
        task_s: seconds each architecture spent in its actor (the work).
        roundtrip_s: seconds from submission to the driver holding the result.
        wall_s: wall time of the run (connecting and starting actors included).
        startup_s: of which connecting to Ray and starting the actors.
        interrupted: stopped by Ctrl-C (everything finished is stored).
        notes: what the user should know (work left for lack of a live device...).
    """

    space: str
    campaign: str
    requested: int
    devices: dict[str, CampaignSummary] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    requeued: int = 0
    task_s: list[float] = field(default_factory=list)
    roundtrip_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    startup_s: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> int:
        return sum(s.measured for s in self.devices.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.devices.values())

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.devices.values())

    @property
    def processed(self) -> int:
        return self.measured + self.failed

    @property
    def overhead_per_task_s(self) -> float:
        """Mean of (round trip - time in the actor): Ray's scheduling and transfer cost."""
        pairs = list(zip(self.roundtrip_s, self.task_s, strict=True))
        return sum(r - t for r, t in pairs) / len(pairs) if pairs else 0.0

    @property
    def overhead_median_s(self) -> float:
        """Median of the same: the steady-state cost of one task."""
        o = sorted(r - t for r, t in zip(self.roundtrip_s, self.task_s, strict=True))
        return o[len(o) // 2] if o else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "campaign": self.campaign,
            "requested": self.requested,
            "measured": self.measured,
            "failed": self.failed,
            "skipped": self.skipped,
            "requeued": self.requeued,
            "interrupted": self.interrupted,
            "wall_s": self.wall_s,
            "startup_s": self.startup_s,
            "overhead_per_task_s": self.overhead_per_task_s,
            "overhead_median_s": self.overhead_median_s,
            "workers": self.workers,
            "notes": self.notes,
            "devices": {k: v.to_dict() for k, v in self.devices.items()},
        }


class RayCampaign:
    """A campaign of ``n`` architectures of ``space`` over ``devices``, driven from here.

    Use :func:`run_campaign_ray` for a one-shot run; the class exposes the
    actors (:attr:`workers`) between :meth:`start` and :meth:`close` for
    monitoring and tests.

    Args:
        space: the search space.
        n: architectures (the same ``sample_distinct(space, n, seed)`` as the local path).
        devices: device names (``DEVICE[=STORE_NAME]``) or :class:`DeviceSpec` s.
        store: the :class:`~hwnas.store.Store` the driver writes (the only writer).
        seed: sampling seed.
        settings: timing settings for every device.
        campaign: label stored with each row (default as the local path).
        address: Ray cluster (``None``: start a local one with the devices'
            resources; see :func:`~hwnas.distributed.cluster.connect`).
        cache_dir: export cache on each node (default: the node's own).
        check: parity-check every export.
        exporter: ``dynamo`` or ``torchscript`` (see :func:`hwnas.export.to_onnx`).
        retry_failed: measure again what failed before.
        discard_artifacts: delete each exported file on its node once measured.
        max_restarts: times Ray restarts a lost device actor.
        max_attempts: times an architecture may be in flight on a lost worker
            before it is recorded as a ``crash`` failure.
        start_timeout_s: time for every actor to be placed and create its device.
        interference: a :class:`~hwnas.profilers.interference.Policy`: each actor
            measures under the interference guard (``None``: no guard, as a local
            ``run_campaign`` with an unguarded device).
        canary: :class:`~hwnas.campaigns.canary.CanarySettings`: a reference canary
            per device, flags and re-measurements as in the local campaign
            (``None``: none).
        log: live messages (canary drift, re-measurements, interference waits),
            each prefixed with its device.
        repeat_n: at the end, re-measure this many random rows per stored device
            name on one of its devices, in a new order, and store the noise ceiling
            (as the local ``run_campaign(repeat_n=)``).
    """

    def __init__(
        self,
        space: SearchSpace,
        n: int,
        devices: Sequence[str | DeviceSpec],
        store: Any,
        *,
        seed: int = 0,
        settings: MeasureSettings | None = None,
        campaign: str | None = None,
        address: str | None = None,
        num_cpus: int | None = None,
        cache_dir: str | Path | None = None,
        check: bool = True,
        retry_failed: bool = False,
        discard_artifacts: bool = False,
        exporter: str = "dynamo",
        max_restarts: int = 3,
        max_attempts: int = 3,
        start_timeout_s: float = 300.0,
        interference: Any = None,
        canary: Any = None,
        log: Callable[[str], None] | None = None,
        repeat_n: int = 0,
    ):
        if max_restarts < 0 or max_attempts < 1:
            raise ConfigError("max_restarts must be >= 0 and max_attempts >= 1")
        self.space = space
        self.n = int(n)
        self.specs = as_specs(devices)
        self.store = store
        self.seed = seed
        self.settings = settings or MeasureSettings()
        self.campaign = campaign or default_campaign_name(space, seed)
        self.address = address
        self.num_cpus = num_cpus
        self.options = {
            "cache_dir": str(cache_dir) if cache_dir else None,
            "check": check,
            "seed": 0,
            "exporter": exporter,
        }
        self.retry_failed = retry_failed
        self.discard_artifacts = discard_artifacts
        self.max_restarts = max_restarts
        self.max_attempts = max_attempts
        self.start_timeout_s = start_timeout_s
        self.interference = interference
        self.canary = canary
        self.log = log or (lambda _m: None)
        self.repeat_n = int(repeat_n)
        self.cluster: Cluster | None = None
        self.workers: list[WorkerState] = []
        self._t_start = 0.0
        self._startup_s = 0.0

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect to Ray, place one actor per device and wait until each has its device.

        Raises:
            ConfigError: a device's resource is on no node.
            DeviceError: an actor could not be placed in time, or its device failed to start.
        """
        ray = ray_module()
        self._t_start = time.perf_counter()
        needed = [s.ray_resource for s in self.specs]
        self.cluster = connect(
            self.address, num_cpus=self.num_cpus, resources=dict.fromkeys(needed, 1)
        )
        self.cluster.check_resources(needed)
        actor_cls = ray.remote(DeviceWorker)
        for spec in self.specs:
            handle = actor_cls.options(
                resources={spec.ray_resource: 1},
                num_cpus=spec.cpus,
                max_restarts=self.max_restarts,
                max_task_retries=0,  # a lost task is requeued by the driver, not re-run blindly
            ).remote(spec, self.space, self.settings, self.options, self.interference)
            self.workers.append(WorkerState(spec=spec, handle=handle))
        refs = {w.handle.ready.remote(): w for w in self.workers}
        done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout_s)
        if pending:
            names = ", ".join(refs[r].spec.device for r in pending)
            raise DeviceError(
                f"device actors for {names} were not placed within {self.start_timeout_s:.0f} s: "
                "another job holds the device's resource, or its node has no free CPU; "
                "free the device or raise start_timeout_s"
            )
        for r in done:
            w = refs[r]
            try:
                info = ray.get(r)
            except ray.exceptions.RayError as exc:
                cause = remote_error(exc)
                raise DeviceError(
                    f"device {w.spec.device} could not start on its node: "
                    f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__}; "
                    "check that the device is attached and `hwnas devices` works there"
                ) from cause
            w.pid, w.host = info["pid"], info["host"]
        self._startup_s = time.perf_counter() - self._t_start

    def close(self) -> None:
        """Release the devices (close, then end each actor) and disconnect."""
        if self.cluster is None:
            return
        ray = ray_module()
        live = [w for w in self.workers if w.handle is not None and not w.dead]
        if ray.is_initialized() and live:
            closing = [w.handle.close.remote() for w in live]
            with contextlib.suppress(ray.exceptions.RayError):
                ray.wait(closing, num_returns=len(closing), timeout=30)
            for w in live:
                with contextlib.suppress(ray.exceptions.RayError, ValueError):
                    ray.kill(w.handle, no_restart=True)
        self.cluster.close()
        self.cluster = None

    def __enter__(self) -> RayCampaign:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the run -----------------------------------------------------------------------

    def in_flight(self) -> list[tuple[WorkerState, Arch]]:
        """(worker, architecture) pairs being measured now."""
        return [(w, arch) for w in self.workers for arch, _ in w.in_flight.values()]

    def run(self, progress: ProgressFn | None = None) -> RayCampaignSummary:
        """Measure everything not yet stored; commit each result as it arrives.

        Returns:
            a :class:`RayCampaignSummary`; after Ctrl-C ``interrupted`` is set and
            everything finished until then is stored.
        """
        ray = ray_module()
        if self.cluster is None:
            self.start()
        tick = progress or (lambda _n, _s: None)
        shape = tuple(int(s) for s in self.space.input_shape)
        summary = RayCampaignSummary(
            space=self.space.name, campaign=self.campaign, requested=self.n
        )
        summary.startup_s = self._startup_s
        t0 = time.perf_counter()
        archs = sample_distinct(self.space, self.n, self.seed)
        queues: dict[str, deque[Arch]] = {}
        for name in dict.fromkeys(w.store_name for w in self.workers):
            s = CampaignSummary(
                space=self.space.name,
                device=name,
                campaign=self.campaign,
                input_shape=shape,
                requested=self.n,
            )
            todo = [
                a
                for a in archs
                if not self.store.has_measurement(
                    a.id, name, shape, include_failed=not self.retry_failed
                )
            ]
            s.skipped = len(archs) - len(todo)
            s.timings["sample"] = time.perf_counter() - t0
            summary.devices[name] = s
            queues[name] = deque(todo)
            if s.skipped:
                tick(s.skipped, f"{name}: {s.skipped} already in the store")
        recorded_device: set[str] = set()
        attempts: dict[tuple[str, str], int] = {}
        owner: dict[Any, WorkerState] = {}
        rows: dict[int, set[int]] = {id(w): set() for w in self.workers}
        monitors = self._monitors(rows)

        def submit(w: WorkerState) -> None:
            q = queues[w.store_name]
            if w.dead or w.probe is not None or w.in_flight or not q:
                return
            arch = q.popleft()
            ref = w.handle.measure.remote(arch, self.discard_artifacts)
            w.in_flight[ref] = (arch, time.perf_counter())
            owner[ref] = w

        def record(w: WorkerState, result: ArchResult) -> None:
            s = summary.devices[w.store_name]
            t = time.perf_counter()
            if result.ok and w.store_name not in recorded_device:
                assert result.measurement is not None
                self.store.add_device(w.store_name, result.measurement.environment)
                recorded_device.add(w.store_name)
            mid = record_result(
                self.store, result, device_name=w.store_name, campaign=self.campaign
            )
            if mid is not None:
                rows[id(w)].add(int(mid))
            s.timings["store"] += time.perf_counter() - t
            _account(s, result)
            mon = monitors.get(id(w))
            extra = f", {mon.status()}" if mon is not None and mon.status() else ""
            tick(1, f"{w.store_name}: {_status(result)}{extra}")

        def lost(w: WorkerState, arch: Arch, exc: BaseException) -> None:
            key = (w.store_name, arch.id)
            attempts[key] = attempts.get(key, 0) + 1
            w.losses += 1
            if attempts[key] >= self.max_attempts:
                reason = (
                    f"the Ray worker measuring it was lost {attempts[key]} times "
                    f"(last: {type(exc).__name__}); recorded as a crash so the campaign goes on"
                )
                failure = MeasurementFailure(w.spec.device, arch.id, "crash", reason)
                record(
                    w,
                    ArchResult(
                        arch=arch,
                        label=_label(self.space, arch),
                        input_shape=shape,
                        artifact=None,
                        metrics={},
                        failure=failure,
                    ),
                )
            else:
                queues[w.store_name].appendleft(
                    arch
                )  # first in line for the group's next free device
                summary.requeued += 1

        def probe(w: WorkerState) -> None:
            # A call made while Ray restarts the actor fails at once, and would count
            # against the architecture; ask the actor where it is first, and give it
            # work again only once it answers.
            w.probe = w.handle.ready.remote()
            owner[w.probe] = w

        try:
            for w in self.workers:  # a first canary, and what an earlier run left flagged
                mon = monitors.get(id(w))
                if mon is not None and (queues[w.store_name] or mon.has_pending()):
                    self._guarded(w, mon.start)
            for w in self.workers:
                submit(w)
            while owner:
                ready, _ = ray.wait(list(owner), num_returns=1, timeout=1.0)
                for ref in ready:
                    w = owner.pop(ref)
                    if ref is w.probe:
                        w.probe = None
                        try:
                            info = ray.get(ref)
                        except ray.exceptions.ActorDiedError as exc:
                            w.dead, w.death = True, str(exc).strip().splitlines()[0]
                        except ray.exceptions.RayActorError:
                            time.sleep(0.2)  # still restarting
                            probe(w)
                        else:
                            w.pid, w.host = info["pid"], info["host"]
                            submit(w)
                        continue
                    arch, t_submit = w.in_flight.pop(ref)
                    try:
                        result, busy_s, pid, messages = ray.get(ref)
                    except ray.exceptions.ActorDiedError as exc:
                        # out of restarts (or its node is gone): its group carries on without it
                        w.dead, w.death = True, str(exc).strip().splitlines()[0]
                        lost(w, arch, exc)
                    except ray.exceptions.RayActorError as exc:
                        lost(w, arch, exc)  # the actor restarts; the architecture goes back in line
                        probe(w)
                    except ray.exceptions.RayTaskError as exc:
                        raise remote_error(exc) from None  # a bug in the step: as in the local loop
                    else:
                        summary.roundtrip_s.append(time.perf_counter() - t_submit)
                        summary.task_s.append(busy_s)
                        w.pid = pid
                        w.processed += 1
                        self._say(w, messages)
                        record(w, result)
                        mon = monitors.get(id(w))
                        if mon is not None and result.ok:
                            for x in self.workers:  # the others measure while this one checks
                                if x is not w:
                                    submit(x)
                            self._guarded(w, lambda m=mon, r=result: m.after_arch(r.measurement))
                    for x in self.workers:  # a requeued arch may go to any free device of its group
                        if x.store_name == w.store_name:
                            submit(x)
            for w in self.workers:  # a closing canary per device, then what is left flagged
                mon = monitors.get(id(w))
                if mon is None or w.dead:
                    continue
                self._guarded(w, mon.finish)
                summary.devices[w.store_name].notes.append(f"{w.spec.device}: {mon.note()}")
            if self.repeat_n > 0:
                self._repeatability(summary)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            summary.wall_s = time.perf_counter() - self._t_start
            for s in summary.devices.values():
                s.wall_s = summary.wall_s
            summary.workers = [w.row() for w in self.workers]
        for name, q in queues.items():
            if q and not summary.interrupted:
                summary.notes.append(
                    f"{name}: {len(q)} architectures left unmeasured because no device of "
                    "that name is alive; run the same command again once it is back"
                )
        return summary

    # ---- trust: the guard's messages and one canary monitor per device ----------------

    def _repeatability(self, summary: RayCampaignSummary) -> None:
        """The noise ceiling per stored name, re-measured on the first live device of it."""
        from hwnas.campaigns.repeatability import choose_rows, repeat_rows, unflagged_rows

        timeout = max(900.0, 2 * self.settings.timeout_s)
        for name, s in summary.devices.items():
            w = next((x for x in self.workers if x.store_name == name and not x.dead), None)
            rows = unflagged_rows(self.store, name, self.campaign)
            if w is None or len(rows) < 2:
                continue
            calls = _ActorCalls(w, None, self.store, timeout, self._say)
            try:
                s.repeatability = repeat_rows(
                    self.store,
                    choose_rows(rows, self.repeat_n, self.seed + 1),
                    calls.remeasure,
                    device_name=name,
                    campaign=self.campaign,
                    log=lambda m, w=w: self._say(w, [m]),
                )
            except HwnasError as exc:  # e.g. fewer than 2 rows could be measured again
                s.notes.append(f"no noise ceiling for {name}: {exc}")

    def _say(self, w: WorkerState, messages: Iterable[str]) -> None:
        for m in messages:
            self.log(f"{w.spec.device}: {m}")

    def _guarded(self, w: WorkerState, fn: Callable[[], Any]) -> None:
        """Run a canary step; a device that cannot answer must not stop the campaign."""
        try:
            fn()
        except HwnasError as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.log(
                f"{w.spec.device}: canary check stopped ({text}); its flagged rows stay "
                "flagged (re-run the command to re-measure them)"
            )

    def _monitors(self, rows: dict[int, set[int]]) -> dict[int, Any]:
        """One :class:`~hwnas.campaigns.canary.CanaryMonitor` per actor (none without a canary).

        Devices that share a stored name (a farm) each keep a canary series of
        their own (``NAME@RESOURCE``: two phones differ) and a drift flags only
        the rows that device measured; the rows flagged are re-measured by
        whichever device of the name checks next.
        """
        if self.canary is None:
            return {}
        from hwnas.campaigns.canary import CanaryMonitor

        sizes = Counter(w.store_name for w in self.workers)
        timeout = max(900.0, 2 * self.settings.timeout_s)
        out: dict[int, Any] = {}
        for w in self.workers:
            shared = sizes[w.store_name] > 1
            calls = _ActorCalls(w, self.canary.model, self.store, timeout, self._say)
            own = rows[id(w)]
            out[id(w)] = CanaryMonitor(
                self.store,
                None,
                self.canary,
                device_name=w.store_name,
                campaign=self.campaign,
                measure_settings=self.settings,
                remeasure=calls.remeasure,
                log=lambda m, w=w: self._say(w, [m]),
                measure_canary=calls.canary,
                series=f"{w.store_name}@{w.spec.ray_resource}" if shared else None,
                own_rows=(lambda own=own: own) if shared else None,
            )
        return out


class _ActorCalls:
    """A canary monitor's hands on one device actor: blocking calls with a time limit."""

    def __init__(
        self,
        w: WorkerState,
        model: str | None,
        store: Any,
        timeout_s: float,
        say: Callable[[WorkerState, Iterable[str]], None],
    ):
        self.w, self.model, self.store, self.timeout_s, self.say = w, model, store, timeout_s, say

    def _get(self, ref: Any) -> Any:
        ray = ray_module()
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            raise DeviceError(
                f"the actor of {self.w.spec.device} did not answer ({type(exc).__name__})"
            ) from None

    def canary(self) -> Measurement:
        m, err, messages = self._get(self.w.handle.canary.remote(self.model))
        self.say(self.w, messages)
        if m is None:
            raise DeviceError(err or "the canary could not be measured")
        return m

    def remeasure(self, arch_id: str) -> Measurement | None:
        try:
            m, messages = self._get(self.w.handle.remeasure.remote(self.store.arch(arch_id)))
        except DeviceError:
            return None  # stays flagged; the next check tries again
        self.say(self.w, messages)
        return m


def _label(space: SearchSpace, arch: Arch) -> str:
    try:
        return space.format(arch)
    except Exception:  # a space that cannot format its own arch still gets its failure stored
        return arch.id


def run_campaign_ray(
    space: SearchSpace,
    n: int,
    devices: Sequence[str | DeviceSpec],
    store: Any,
    *,
    progress: ProgressFn | None = None,
    **options: Any,
) -> RayCampaignSummary:
    """Measure ``n`` distinct architectures of ``space`` on every device, on Ray.

    The distributed counterpart of :func:`hwnas.campaigns.run_campaign`: the
    same architectures, the same per-architecture step, the same store rows
    and the same skip logic, so the two can continue each other's campaigns.
    ``options`` are those of :class:`RayCampaign` (``seed``, ``settings``,
    ``address``, ``max_restarts``...).

    Example:
        >>> with Store("farm.db") as store:  # doctest: +SKIP
        ...     s = run_campaign_ray(get_space("mnasnet"), 300,
        ...                          ["adb:R5CT1", "adb:R5CT2"], store,
        ...                          address="head:6379")
    """
    rc = RayCampaign(space, n, devices, store, **options)
    try:
        rc.start()
        return rc.run(progress)
    finally:
        rc.close()
