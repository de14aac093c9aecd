"""A scripted device for the trust tests on Ray (not collected by pytest).

``drift-stub:10_10_13_10`` times every architecture at 5 ms and the reference
canary at the listed medians in turn (the last one repeats), so a test knows
when a drift happens. Like an adb/ssh device it has a ``transport`` whose
``run_script`` answers the interference guard's probe script, quiet except
right after the measurement calls listed in ``busy`` (1-based, canary calls not
counted): then it reports a run queue, as a busy phone would.

Ray workers import this module when they unpickle :class:`TrustTinySpace`, which
registers the device there too.
"""

from __future__ import annotations

from campaign_helpers import TinySpace

from hwnas.devices import DEVICES
from hwnas.profilers.latency import Measurement

QUIET = "0.10 0.10 0.10 1/100 1\n@@\ncpu  {t} 0 0 {idle} 0 0 0 0\n@@\n\n@@\n\n@@\n2\n"
BUSY = "3.00 3.00 3.00 6/100 1\n@@\ncpu  {t} 0 0 {idle} 0 0 0 0\n@@\n\n@@\n\n@@\n2\n"


class _Result:
    def __init__(self, stdout: str):
        self.stdout = stdout


class ScriptedTransport:
    """Answers the guard's probe script: quiet, or busy once after a chosen measurement."""

    where = "stub"

    def __init__(self) -> None:
        self.busy_next = False
        self.reads = 0

    def run_script(self, script: str, timeout: float = 30.0) -> _Result:
        self.reads += 1
        text = BUSY if self.busy_next else QUIET
        self.busy_next = False
        return _Result(text.format(t=10 * self.reads, idle=1000 * self.reads))


class DriftStub:
    """A device whose canary medians follow a script (see the module docstring)."""

    def __init__(self, target: str = "10", busy: str = "", threads: int | None = None):
        self.name = f"drift-stub:{target}"
        self.canary_ms = [float(v) for v in target.split("_")]
        self.busy_calls = {int(v) for v in busy.split("_") if v}
        self.transport = ScriptedTransport()
        self.arch_calls = 0
        self.threads = threads or 1

    def info(self) -> dict:
        return {"device": self.name}

    def measure(self, artifact, settings=None) -> Measurement:
        if artifact.label.startswith("canary"):
            v = self.canary_ms.pop(0) if len(self.canary_ms) > 1 else self.canary_ms[0]
        else:
            self.arch_calls += 1
            v = 5.0
            if self.arch_calls in self.busy_calls:
                self.transport.busy_next = True
        return Measurement(samples_ms=(v, v, v), device=self.name, label=artifact.label)

    def close(self) -> None:
        pass


if "drift-stub" not in DEVICES.names():  # imported again by every Ray worker
    DEVICES.register("drift-stub", help="scripted test device")(DriftStub)


class TrustTinySpace(TinySpace):
    """TinySpace under the same name (same archs, same exports), living here so that a
    Ray worker unpickling it imports this module and knows ``drift-stub``."""
