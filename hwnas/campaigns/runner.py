"""`run_campaign`: sample N distinct architectures, measure each once, store everything.

Resumable by construction: the architectures are a deterministic function of
(space, seed, N) (and the first N of a longer run are the same N), every
result is committed the moment it arrives, and an experiment already in the
store (same architecture, device, input shape, classes and exporter) is
skipped. Re-running the same command after Ctrl-C, a crash or ``kill -9``
therefore continues where it stopped and never measures anything twice; at
most the measurement in flight is lost.

Several processes (or machines) may run campaigns on one store at once: each
architecture is *claimed* in the store before it is exported and measured
(:meth:`~hwnas.store.Store.claim`), so they split the work instead of doubling
it; one that finds an architecture claimed by a live process does the others
first and comes back to it. The store's uniqueness rule backs this up: a
successful measurement is stored once per experiment whatever happens.

Failures of the architecture (build, export) count as done until
``retry_failed``; failures of the device (runtime error, crash, timeout) are
tried again by a later run once ``retry_after_s`` has passed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.arch import Arch
from hwnas.campaigns.pool import ExportPool, plan_export, split_cores, verify_this
from hwnas.campaigns.step import (
    ArchResult,
    MeasuringDevice,
    Prepared,
    measure_prepared,
    prepare_arch,
    record_result,
)
from hwnas.errors import ConfigError, SpaceError
from hwnas.profilers.latency import MeasureSettings
from hwnas.spaces.base import SearchSpace
from hwnas.store.sqlite import MeasurementKey

#: Seconds after which a device failure (runtime, crash, timeout) is tried again.
DEFAULT_RETRY_AFTER_S = 3600.0
#: Seconds between two looks at architectures another process is measuring.
CLAIM_POLL_S = 0.5

#: Called after every architecture processed: (how many to advance the bar, status text).
ProgressFn = Callable[[int, str], None]

TIMING_KEYS = (
    "sample",
    "build",
    "export",
    "count",
    "export_wait",
    "measure",
    "session_init",
    "warmup",
    "timed_runs",
    "store",
)


def sample_distinct(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """The first ``n`` distinct architectures drawn from ``space`` with ``seed``.

    Deterministic, and prefix-stable: the first 100 of ``n=300`` are the
    architectures of ``n=100``, so a campaign can be extended by raising ``-n``.

    Raises:
        ConfigError: ``n`` exceeds the size of the space.
        SpaceError: sampling keeps repeating itself (a space far smaller than it claims).
    """
    if n < 0:
        raise ConfigError(f"-n must be >= 0, got {n}")
    size = space.size()
    if n > size:
        raise ConfigError(
            f"space '{space.name}' has only {size} distinct architectures; ask for -n {size} or fewer"
        )
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[Arch] = []
    attempts = 0
    limit = 50 * n + 1000
    while len(out) < n:
        attempts += 1
        if attempts > limit:
            raise SpaceError(
                f"drew {attempts} samples from '{space.name}' but found only {len(out)} distinct "
                f"architectures; ask for fewer than {n}"
            )
        a = space.sample(rng)
        if a.id not in seen:
            seen.add(a.id)
            out.append(a)
    return out


def store_device_name(device: str, threads: int | None = 1) -> str:
    """The name a device's results are stored under: ``cpu-ort``, or ``cpu-ort-2t`` with 2 threads.

    The thread count changes the latency, so results at 1 and 2 threads are
    different experiments and must not make each other look "already measured".
    """
    t = int(threads or 1)
    return device if t == 1 else f"{device}-{t}t"


def default_campaign_name(space: SearchSpace, seed: int) -> str:
    return f"{space.name}-{space.input_size}px-seed{seed}"


@dataclass
class CampaignSummary:
    """What a campaign run did, with where its wall time went.

    Attributes:
        requested: N, the number of architectures asked for.
        measured / failed: architectures measured / failed in *this* run.
        skipped: already in the store (from an earlier run or another campaign).
        failures: ``(arch_id, kind, reason)`` of this run's failures.
        results: one flat row per architecture processed in this run.
        timings: seconds per stage (:data:`TIMING_KEYS`); ``build``/``export``/``count``
            are spent in the export workers when there are any.
        wall_s: wall time of the run.
        interrupted: stopped by Ctrl-C before the end.
        notes: what the user should know (no spare core for exporting...).
    """

    space: str
    device: str
    campaign: str
    input_shape: tuple[int, ...]
    requested: int
    export_workers: int = 0
    measured: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))
    wall_s: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    repeatability: dict[str, Any] | None = None

    @property
    def processed(self) -> int:
        return self.measured + self.failed

    @property
    def remaining(self) -> int:
        return self.requested - self.processed - self.skipped

    @property
    def archs_per_minute(self) -> float:
        return self.processed / self.wall_s * 60 if self.wall_s > 0 else 0.0

    @property
    def overhead_share(self) -> float:
        """Share of the wall time spent outside the timed runs (sampling, building,
        exporting, counting, session set-up, warm-up, storing, waiting)."""
        if self.wall_s <= 0:
            return 0.0
        return max(0.0, 1.0 - self.timings["timed_runs"] / self.wall_s)

    def failure_kinds(self) -> dict[str, int]:
        return dict(Counter(kind for _, kind, _ in self.failures))

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "device": self.device,
            "campaign": self.campaign,
            "input_shape": list(self.input_shape),
            "requested": self.requested,
            "measured": self.measured,
            "failed": self.failed,
            "skipped": self.skipped,
            "remaining": self.remaining,
            "export_workers": self.export_workers,
            "interrupted": self.interrupted,
            "wall_s": self.wall_s,
            "archs_per_minute": self.archs_per_minute,
            "overhead_share": self.overhead_share,
            "timings": self.timings,
            "failure_kinds": self.failure_kinds(),
            "failures": [{"arch_id": a, "kind": k, "reason": r} for a, k, r in self.failures],
            "notes": self.notes,
            "repeatability": self.repeatability,
            "results": self.results,
        }


def _device_threads(device: Any) -> int:
    kw = getattr(device, "kwargs", None)  # IsolatedDevice keeps the device's kwargs
    if isinstance(kw, dict) and kw.get("threads"):
        return int(kw["threads"])
    return int(getattr(device, "threads", 1) or 1)


@contextlib.contextmanager
def _pinned(cores: set[int] | None) -> Iterator[None]:
    """Run the block with this thread pinned to ``cores``; processes it spawns inherit them."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_campaign(
    space: SearchSpace,
    n: int,
    device: MeasuringDevice,
    store: Any,
    *,
    seed: int = 0,
    settings: MeasureSettings | None = None,
    device_name: str | None = None,
    campaign: str | None = None,
    export_workers: int = 0,
    pin_cores: bool = True,
    cache_dir: str | Path | None = None,
    check: bool = True,
    retry_failed: bool = False,
    discard_artifacts: bool = False,
    progress: ProgressFn | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    exporter: str = "dynamo",
    retry_after_s: float | None = DEFAULT_RETRY_AFTER_S,
    claim_ttl_s: float | None = None,
    export_mode: str = "auto",
    verify_export: str | None = None,
    canary: Any = None,
    repeat_n: int = 0,
    log: Callable[[str], None] | None = None,
) -> CampaignSummary:
    """Measure ``n`` distinct architectures of ``space`` on ``device`` into ``store``.

    Measurements run one at a time. With ``export_workers=0`` each
    architecture is built and exported in this process between measurements,
    so nothing of ours runs while the device is timing. With
    ``export_workers=K`` a pool of K processes exports ahead; if this process
    may use more cores than the device's threads, the measurement (this
    process and the device's worker it spawns) is pinned to the first
    ``threads`` cores and the exporters to the others, so they never share a
    core (``pin_cores=False`` leaves placement to the OS).

    Args:
        space: the search space (its input size and classes are the space's).
        n: number of distinct architectures (see :func:`sample_distinct`).
        device: anything with ``name`` and ``measure(artifact, settings)``;
            an :class:`~hwnas.devices.isolated.IsolatedDevice` turns crashes
            and hangs into recorded failures. Not closed here.
        store: a :class:`~hwnas.store.Store`.
        seed: sampling seed; the same seed gives the same architectures.
        settings: timing settings (``timeout_s`` bounds an isolated measurement).
        device_name: name results are stored under (default: the device's name).
        campaign: label stored with each row (default ``SPACE-SIZEpx-seedS``).
        export_workers: processes exporting ahead (0 = export in this process).
        cache_dir: export cache (default: ``$HWNAS_CACHE`` or ``~/.cache/hwnas``).
        check: parity-check every export against torch.
        retry_failed: measure again the architectures whose earlier attempt failed
            (each once per run, even with several processes).
        retry_after_s: a device failure (runtime, crash, timeout) older than this
            is tried again; ``None`` never retries them without ``retry_failed``.
        claim_ttl_s: how long a claim holds before another machine may take it over
            (default: 4 x the timeout, at least 30 min); on this machine the claim
            of a process that is gone is taken over at once.
        discard_artifacts: delete each exported file once measured (saves disk
            on long campaigns; the store keeps its sha256).
        progress: called after each architecture measured or failed in this run.
        on_plan: called once before the first one with (architectures to do,
            architectures skipped), e.g. to size a progress bar.
        exporter: ``dynamo`` (default) or ``torchscript``, about 9x faster to
            export (see :func:`hwnas.export.to_onnx`).
        export_mode: ``auto``/``inline``/``phase``/``pinned`` with ``export_workers``
            > 0 (see :func:`hwnas.campaigns.pool.plan_export`); ``export_workers=0``
            is always inline.
        verify_export: ``sample``/``all``/``none``; ``None`` follows ``check``.
        canary: :class:`~hwnas.campaigns.canary.CanarySettings` (``None``: no canary
            and no re-measurement of flagged rows).
        repeat_n: re-measure this many random rows at the end (noise ceiling).
        log: live messages (canary drift, re-measurements).

    Returns:
        a :class:`CampaignSummary`; after Ctrl-C it has ``interrupted=True``
        and holds everything done until then (all of it already stored).
    """
    if export_workers is not None and export_workers < 0:
        raise ConfigError(f"--export-workers must be >= 0, got {export_workers}")
    settings = settings or MeasureSettings()
    name = device_name or getattr(device, "name", "")
    campaign = campaign or default_campaign_name(space, seed)
    shape = tuple(int(s) for s in space.input_shape)
    summary = CampaignSummary(
        space=space.name,
        device=name,
        campaign=campaign,
        input_shape=shape,
        requested=n,
        export_workers=export_workers,
    )
    tick = progress or (lambda _n, _s: None)
    t_start = time.perf_counter()
    first_new_row = store.last_measurement_id() if hasattr(store, "last_measurement_id") else 0
    archs = sample_distinct(space, n, seed)
    # Rows of stores older than schema 2 did not record classes and exporter; they
    # count when this run asks for what those campaigns used (the space's defaults).
    legacy_ok = (
        space.num_classes == getattr(type(space), "num_classes", space.num_classes)
        and exporter == "dynamo"
    )
    check_kw = {
        "include_failed": not retry_failed,
        "legacy_ok": legacy_ok,
        "retry_after_s": retry_after_s,
    }

    def key(a: Arch) -> MeasurementKey:
        return MeasurementKey.of(a.id, name, shape, space.num_classes, exporter)

    todo = [
        a
        for a in archs
        if not store.has_measurement(
            a.id, name, shape, num_classes=space.num_classes, exporter=exporter, **check_kw
        )
    ]
    summary.skipped = len(archs) - len(todo)
    summary.timings["sample"] = time.perf_counter() - t_start
    if on_plan is not None:
        on_plan(len(todo), summary.skipped)

    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    ttl = claim_ttl_s or max(1800.0, 4 * settings.timeout_s)
    pending: deque[Arch] = deque(todo)
    busy: list[Arch] = []
    held: set[MeasurementKey] = set()
    can_claim = hasattr(store, "claim")

    def next_arch(block: bool) -> Arch | None:
        """The next architecture this process holds the claim of, or ``None`` when none is left
        (or, with ``block=False``, when the rest are being measured by others)."""
        while True:
            while pending:
                a = pending.popleft()
                if not can_claim:
                    return a
                k = key(a)
                state = store.claim(
                    k,
                    owner,
                    ttl,
                    failed_after_id=first_new_row if retry_failed else None,
                    **check_kw,
                )
                if state == "claimed":
                    held.add(k)
                    return a
                if state == "done":  # another process measured it meanwhile
                    summary.skipped += 1
                    tick(1, f"{a.id}: measured by another process")
                else:
                    busy.append(a)
            if not busy or not block:
                return None
            time.sleep(CLAIM_POLL_S)  # come back to what others are measuring
            pending.extend(busy)
            busy.clear()

    options = {
        "cache_dir": cache_dir,
        "check": check,
        "seed": 0,
        "device_name": name,
        "exporter": exporter,
    }
    device_recorded = False
    verify = verify_export or ("all" if check else "none")
    monitor = None
    if canary is not None:
        from hwnas.campaigns.canary import make_monitor

        monitor = make_monitor(store, device, canary, space, options, settings, name, campaign, log)

    def handle(prepared: Prepared) -> None:
        nonlocal device_recorded
        result = measure_prepared(prepared, device, settings, device_name=name)
        t0 = time.perf_counter()
        if result.ok and not device_recorded:
            assert result.measurement is not None
            store.add_device(name, result.measurement.environment)
            device_recorded = True
        record_result(
            store,
            result,
            device_name=name,
            campaign=campaign,
            num_classes=space.num_classes,
            exporter=exporter,
        )
        k = key(prepared.arch)
        if k in held:
            store.release(k, owner)
            held.discard(k)
        summary.timings["store"] += time.perf_counter() - t0
        _account(summary, result)
        if discard_artifacts and result.artifact is not None:
            with contextlib.suppress(OSError):
                os.unlink(result.artifact.path)
        tick(1, _status(result) + (f", {monitor.status()}" if monitor and monitor.status() else ""))
        if monitor is not None and result.ok:  # may run the canary and re-measure flagged rows
            monitor.after_arch(result.measurement)

    mode, export_workers, why = plan_export(
        export_mode, export_workers, _device_threads(device), len(todo)
    )
    summary.export_workers = export_workers
    summary.notes.append(
        f"export: {mode}"
        + (f" ({export_workers} workers)" if export_workers else "")
        + f", {why}; exports checked against torch: {verify}"
    )
    split = split_cores(_device_threads(device)) if mode == "pinned" and pin_cores else None
    pool: ExportPool | None = None
    try:
        if monitor is not None and (todo or monitor.has_pending()):
            monitor.start()
        if not todo:
            pass
        elif mode == "inline":
            i = 0
            while (arch := next_arch(block=True)) is not None:
                t0 = time.perf_counter()
                prepared = prepare_arch(
                    space, arch, **{**options, "check": verify_this(arch, verify, i)}
                )
                i += 1
                summary.timings["export_wait"] += time.perf_counter() - t0
                handle(prepared)
        elif mode == "phase":  # export a batch on every core, then time it with the pool idle
            pool = ExportPool(
                space,
                min(export_workers, len(todo)),
                job_timeout_s=max(900.0, settings.timeout_s),
                **options,
            )
            i = 0
            while True:  # batches of architectures this process holds the claims of
                batch: list[Arch] = []
                while len(batch) < max(1, 4 * export_workers):
                    arch = next_arch(block=not batch)
                    if arch is None:
                        break
                    batch.append(arch)
                if not batch:
                    break
                t0 = time.perf_counter()
                for arch in batch:
                    pool.submit(arch, check=verify_this(arch, verify, i))
                    i += 1
                ready = [pool.next_result() for _ in batch]
                summary.timings["export_wait"] += time.perf_counter() - t0
                for prepared in ready:
                    handle(prepared)
        else:
            with _pinned(split[0] if split else None):
                pool = ExportPool(
                    space,
                    min(export_workers, len(todo)),
                    cores=split[1] if split else None,
                    job_timeout_s=max(900.0, settings.timeout_s),
                    **options,
                )
                n_sub = 0

                def fill(block: bool) -> None:
                    # keep the workers exporting ahead while this process measures
                    nonlocal n_sub
                    while pool.pending < export_workers:
                        arch = next_arch(block=block and not pool.pending)
                        if arch is None:
                            return
                        pool.submit(arch, check=verify_this(arch, verify, n_sub))
                        n_sub += 1

                fill(block=True)
                while pool.pending:
                    t0 = time.perf_counter()
                    prepared = pool.next_result()
                    summary.timings["export_wait"] += time.perf_counter() - t0
                    fill(block=False)  # the next one exports while this one is measured
                    handle(prepared)
                    if not pool.pending:
                        fill(block=True)
        if monitor is not None and (todo or monitor.has_pending()):
            monitor.finish()
            summary.notes.append(monitor.note())
        if repeat_n > 0 and not summary.interrupted:
            from hwnas.campaigns.repeatability import campaign_repeatability

            summary.repeatability = campaign_repeatability(
                store, device, space, options, settings, name, campaign, repeat_n, seed, log
            )
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool is not None:
            pool.close()
        for k in held:  # give back what was claimed but not measured
            with contextlib.suppress(Exception):
                store.release(k, owner)
        summary.wall_s = time.perf_counter() - t_start
    return summary


def _account(summary: CampaignSummary, result: ArchResult) -> None:
    for k, v in result.timings.items():
        if k in summary.timings:
            summary.timings[k] += v
    if result.ok:
        summary.measured += 1
    else:
        assert result.failure is not None
        summary.failed += 1
        summary.failures.append((result.arch.id, result.failure.kind, result.failure.reason))
    summary.results.append(result.row())


def _status(result: ArchResult) -> str:
    if result.ok:
        return f"{result.arch.id}: {result.median_ms:.2f} ms"
    assert result.failure is not None
    return f"{result.arch.id}: {result.failure.kind} failure"
