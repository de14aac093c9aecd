"""Export ahead of the measurement, in worker processes on cores the device does not use.

Exporting a search-space model with torch's exporter costs seconds of CPU,
often more than timing it. A pool of export workers can prepare the next
architectures while the current one is measured, which hides that cost, but
only if the two do not share cores: an export running on the measurement's
core would be timed as part of the model. :func:`split_cores` therefore gives
the measurement the first ``threads`` cores this process may use and the
export workers the rest, and :class:`ExportPool` pins its workers there.
They still share caches and memory bandwidth with the measurement, so
``benchmarks/campaign_overhead.py`` measures how much a concurrent export
moves the latencies before anyone relies on it. On a 2-core machine shared
with other work it did not pay: throughput stayed the same (the one pinned
exporter is slower than torch exporting on both cores between measurements)
and the medians measured beside a running export were about 3x those measured
alone. Hence :func:`plan_export`: on such machines the pool works in *phases*
(export a batch on every core, then time the batch while the workers sit
idle), and pins exporters beside the timing only when at least two cores are
spare. :func:`verify_this` checks exports against torch on a sample.

The workers use the ``spawn`` start method (forking a process whose torch/ORT
thread pools are running is unsafe), ignore Ctrl-C (the campaign decides when
to stop) and exit when their pipe closes, so a campaign killed with SIGKILL
leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any

from hwnas.arch import Arch
from hwnas.campaigns.step import Prepared, prepare_arch
from hwnas.devices.isolated import start_without_sigint
from hwnas.errors import ExportError
from hwnas.profilers.latency import MeasurementFailure
from hwnas.spaces.base import SearchSpace


def usable_cores() -> list[int]:
    """Cores this process may run on (all logical cores where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # pragma: no cover - non-Linux


def split_cores(threads: int) -> tuple[set[int], set[int]] | None:
    """(measurement cores, export cores), or ``None`` when no core is left for exporting."""
    cores = usable_cores()
    if len(cores) <= threads:
        return None
    return set(cores[:threads]), set(cores[threads:])


def _export_worker(
    conn, space: SearchSpace, cores: list[int], options: dict
) -> None:  # pragma: no cover - child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    import torch

    torch.set_num_threads(max(1, len(cores) if cores else 1))
    while True:
        try:
            arch = conn.recv()
        except (EOFError, OSError):
            return
        if arch is None:
            return
        overrides: dict = {}
        if isinstance(arch, tuple):  # (arch, per-job options such as check=False)
            arch, overrides = arch
        try:
            prepared = prepare_arch(space, arch, **{**options, **overrides})
        except Exception as exc:  # a bug in preparation must not kill the pool
            prepared = Prepared(
                arch=arch,
                label=arch.id,
                input_shape=tuple(space.input_shape),
                failure=MeasurementFailure(
                    options.get("device_name", ""),
                    arch.id,
                    "export",
                    f"{type(exc).__name__}: {exc}",
                ),
            )
        try:
            conn.send(prepared)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx, space: SearchSpace, cores: list[int], options: dict):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_export_worker, args=(child, space, cores, options), daemon=True
        )
        start_without_sigint(self.proc)  # Ctrl-C is the parent's to handle
        child.close()
        self.conn = parent
        self.job: Arch | None = None
        self.since = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class ExportPool:
    """A few processes running :func:`~hwnas.campaigns.step.prepare_arch` ahead.

    Args:
        space: the search space (pickled to each worker).
        workers: number of worker processes.
        cores: the cores the workers may use (``None``: wherever the OS puts them).
        job_timeout_s: an export taking longer is killed and recorded as failed.
        **options: passed to :func:`prepare_arch` (cache_dir, check, seed, device_name).
    """

    max_consecutive_deaths = 3

    def __init__(
        self,
        space: SearchSpace,
        workers: int,
        *,
        cores: set[int] | None = None,
        job_timeout_s: float = 900.0,
        **options: Any,
    ):
        if workers < 1:
            raise ValueError("an ExportPool needs at least one worker")
        self.space = space
        self.cores = sorted(cores) if cores else []
        self.options = options
        self.job_timeout_s = job_timeout_s
        self._ctx = mp.get_context("spawn")
        self._workers = [self._spawn() for _ in range(workers)]
        self._queue: deque[Arch | tuple[Arch, dict]] = deque()
        self._done: deque[Prepared] = deque()
        self._deaths = 0

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.space, self.cores, self.options)

    @property
    def pending(self) -> int:
        """Architectures submitted and not yet returned by :meth:`next_result`."""
        return len(self._queue) + len(self._done) + sum(w.job is not None for w in self._workers)

    def submit(self, arch: Arch, **overrides: Any) -> None:
        """Queue ``arch``; ``overrides`` replace pool options for this job (``check=False``)."""
        self._queue.append((arch, overrides) if overrides else arch)
        self._dispatch()

    def _dispatch(self) -> None:
        for w in self._workers:
            if w.job is None and self._queue:
                job = self._queue.popleft()
                w.job, w.since = job[0] if isinstance(job, tuple) else job, time.monotonic()
                try:
                    w.conn.send(job)
                except (BrokenPipeError, OSError):
                    self._replace(w, "the export worker died before taking the job")

    def _fail(self, arch: Arch, reason: str) -> Prepared:
        return Prepared(
            arch=arch,
            label=arch.id,
            input_shape=tuple(self.space.input_shape),
            failure=MeasurementFailure(
                self.options.get("device_name", ""), arch.id, "export", reason
            ),
        )

    def _replace(self, w: _Worker, reason: str) -> None:
        code = w.proc.exitcode
        arch = w.job
        w.kill()
        self._deaths += 1
        if self._deaths > self.max_consecutive_deaths:
            raise ExportError(
                f"export workers died {self._deaths} times in a row (last exit code {code}); "
                "run with --export-workers 0 to see the error in this process"
            )
        if arch is not None:
            self._done.append(self._fail(arch, f"{reason} (exit code {code})"))
        i = self._workers.index(w)
        self._workers[i] = self._spawn()

    def next_result(self) -> Prepared:
        """Block until one submitted architecture is prepared (or failed) and return it."""
        while not self._done:
            busy = [w for w in self._workers if w.job is not None]
            if not busy:
                raise RuntimeError("next_result() called with nothing submitted")
            now = time.monotonic()
            remaining = min(w.since + self.job_timeout_s for w in busy) - now
            ready = wait(
                [w.conn for w in busy] + [w.proc.sentinel for w in busy],
                timeout=max(0.0, remaining),
            )
            for w in busy:
                if w.conn in ready:
                    try:
                        prepared = w.conn.recv()
                    except (EOFError, OSError):
                        self._replace(w, "the export worker died")
                        continue
                    w.job = None
                    self._deaths = 0
                    self._done.append(prepared)
                elif w.proc.sentinel in ready:
                    self._replace(w, "the export worker died")
                elif time.monotonic() - w.since >= self.job_timeout_s:
                    self._replace(w, f"export took more than {self.job_timeout_s:.0f} s; killed")
            self._dispatch()
        return self._done.popleft()

    def close(self) -> None:
        for w in self._workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                w.conn.send(None)
        deadline = time.monotonic() + 5
        for w in self._workers:
            if w.job is None:
                w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(5)
            w.conn.close()
        self._workers = []

    def __enter__(self) -> ExportPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- which exports are checked against torch ------------------------------------------

VERIFY_MODES = ("sample", "all", "none")


def verify_this(arch: Arch, mode: str, index: int, every: int = 10) -> bool:
    """Whether ``arch``'s export is compared with torch under ``--verify-export mode``.

    ``sample`` checks the first architecture of a run and one in ``every``
    (chosen by the architecture id, so a resumed run checks the same ones):
    the check re-runs the model in torch and in ONNX Runtime, about a third
    of a torchscript export's time, and an exporter bug shows on many archs
    at once, not on one in a thousand.
    """
    if mode == "all":
        return True
    if mode == "none":
        return False
    return index == 0 or int(arch.id[:8], 16) % every == 0


# ---- export placement: never beside a timed run on a shared core ----------------------

EXPORT_MODES = ("auto", "inline", "phase", "pinned")


def plan_export(mode: str, workers: int | None, threads: int, todo: int) -> tuple[str, int, str]:
    """(mode, workers, why) for a campaign of ``todo`` architectures timed on ``threads`` cores.

    * ``inline``: export in this process between measurements (nothing of ours
      runs while timing, one core exports).
    * ``phase``: a pool on *all* cores exports a batch, then the batch is
      timed while the workers sit idle: the export uses every core and never
      overlaps a timed run.
    * ``pinned``: workers on the cores the measurement does not use export
      ahead while it times; chosen only when at least ``max(2, threads)``
      cores are spare, since the one spare core of a 2-core machine shares
      caches and memory bandwidth with the timed one (medians 3x, measured).
    """
    cores = len(usable_cores())
    spare = cores - threads
    if mode == "auto":
        if workers == 0 or todo < 2 * max(1, cores):
            mode = "inline"
        elif spare >= max(2, threads):
            mode = "pinned"
        else:
            mode = "phase"
        why = f"auto on {cores} cores, {threads} timed"
    else:
        why = f"--export-mode {mode}"
    if mode == "pinned" and spare < 1:
        return "phase", workers or cores, why + "; no spare core to pin exporters to: phase instead"
    if mode == "inline":
        return "inline", 0, why
    if mode == "phase":
        return "phase", workers or cores, why
    return "pinned", workers or spare, why


def phase_batches(todo: list[Arch], batch: int) -> list[list[Arch]]:
    """``todo`` cut into export phases of ``batch`` architectures."""
    return [todo[i : i + batch] for i in range(0, len(todo), max(1, batch))]
