"""Measure in a child process, so a runtime that crashes or hangs is a recorded
failure and not a dead campaign.

One worker process is started per device and reused for every measurement
(starting Python and importing a runtime costs seconds; a campaign measures
hundreds of models). If the worker dies (segfault, OOM kill) or does not answer
within ``settings.timeout_s``, it is killed, the measurement is reported as a
:class:`MeasurementFailed` with the reason, and the next request starts a
fresh worker. The worker uses the ``spawn`` start method: forking a process
that already runs torch/ORT thread pools is unsafe.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
import traceback
from typing import Any

from hwnas.errors import DeviceError, HwnasError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import Measurement, MeasurementFailure, MeasureSettings


class MeasurementFailed(DeviceError):
    """A measurement produced no samples; ``failure`` says why (crash, timeout...)."""

    def __init__(self, failure: MeasurementFailure):
        super().__init__(f"{failure.label} on {failure.device}: {failure.kind}: {failure.reason}")
        self.failure = failure


def start_without_sigint(proc: mp.process.BaseProcess) -> None:
    """Start a worker process that ignores Ctrl-C from its first instruction.

    Ctrl-C reaches every process of the terminal's group; the parent handles it
    (stops, keeps what is stored, prints one line) and ends its workers. A
    worker that took it too would print a ``KeyboardInterrupt`` traceback, even
    while still importing. An ignored SIGINT survives the ``spawn`` start (exec),
    and Python leaves an inherited "ignore" in place, so the child is born deaf
    to it.
    """
    if threading.current_thread() is not threading.main_thread():
        proc.start()  # signal handlers can only be changed from the main thread
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, old)


def _worker(conn, device_name: str, device_kwargs: dict) -> None:  # pragma: no cover - child
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    from hwnas.devices import create_device

    try:
        device = create_device(device_name, **device_kwargs)
    except BaseException as exc:  # report any start-up failure to the parent
        conn.send(("error", "device", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None, None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            device.close()
            return
        artifact_dict, settings_dict = msg
        try:
            m = device.measure(Artifact.from_dict(artifact_dict), MeasureSettings(**settings_dict))
            conn.send(("ok", m.__dict__, None))
        except HwnasError as exc:
            conn.send(("error", "runtime", str(exc)))
        except Exception as exc:
            conn.send(
                (
                    "error",
                    "runtime",
                    f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}",
                )
            )


class IsolatedDevice:
    """Wraps a registered device so that each measurement runs in a worker process.

    Args:
        device_name: registry name (``cpu-ort``...).
        device_kwargs: passed to :func:`hwnas.devices.create_device` in the worker.
        start_timeout_s: time allowed for the worker to import and create the device.
    """

    def __init__(self, device_name: str, start_timeout_s: float = 120.0, **device_kwargs: Any):
        self.name = device_name
        self.kwargs = {k: v for k, v in device_kwargs.items() if v is not None}
        self.start_timeout_s = start_timeout_s
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, self.name, self.kwargs), daemon=True)
        start_without_sigint(proc)
        child.close()
        if not parent.poll(self.start_timeout_s):
            proc.kill()
            raise DeviceError(
                f"measurement worker for {self.name} did not start within {self.start_timeout_s:.0f} s"
            )
        status, _, reason = parent.recv()
        if status != "ready":
            proc.join(5)
            raise DeviceError(f"cannot start {self.name} in a worker process: {reason}")
        self._proc, self._conn = proc, parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        """Measure in the worker.

        Raises:
            MeasurementFailed: the worker crashed, timed out, or the runtime raised.
        """
        from dataclasses import asdict

        settings = settings or MeasureSettings()
        if self._proc is None or not self._proc.is_alive():
            self._start()
        assert self._conn is not None and self._proc is not None

        def fail(kind: str, reason: str) -> MeasurementFailed:
            return MeasurementFailed(
                MeasurementFailure(self.name, artifact.label, kind, reason, artifact.sha256)
            )

        try:
            self._conn.send((asdict(artifact), settings.to_dict()))
            ready = self._conn.poll(settings.timeout_s)
        except (BrokenPipeError, EOFError, OSError):
            ready = False
        if not ready:
            alive = self._proc.is_alive()
            code = self._proc.exitcode
            self._kill()
            if alive:
                raise fail(
                    "timeout", f"no result within {settings.timeout_s:.0f} s; the worker was killed"
                )
            raise fail("crash", f"the worker process died (exit code {code})")
        try:
            status, payload, reason = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode
            self._kill()
            raise fail("crash", f"the worker process died (exit code {code})") from None
        if status == "ok":
            return Measurement(**payload)
        raise fail(payload or "runtime", reason)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
                if self._proc is not None:
                    self._proc.join(5)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
