"""What the machine was doing around a measurement, and whether it was quiet enough.

A latency stored without its circumstances cannot be trusted later: a median
taken while another program shared our core is 2-5x too slow, and nothing in
the samples alone says so (the runs are all slow together, so the CV stays
small). Every measurement therefore gets a *snapshot* before and after it:

* load average and runnable tasks (``/proc/loadavg``);
* CPU time shares over the window: steal (a hypervisor gave our vCPU to
  someone else), iowait (``/proc/stat`` deltas);
* current CPU frequency where readable (cpufreq in sysfs, else ``/proc/cpuinfo``);
* the hottest thermal zone (``/sys/class/thermal``);
* the busiest *other* processes' CPU share (psutil; our own process tree, which
  includes the isolated measurement worker, is left out).

**What "busy" means** (:func:`assess`). The measurement uses ``threads`` of the
machine's ``cores``; the rest, ``headroom = cores - threads``, is where other
work may run without taking our core. On a 2-core machine timing one thread the
headroom is one core, but our own export worker on that other core tripled the
medians (shared caches and memory bandwidth), so a full headroom is not "free".
The window counts as busy when any of these holds:

* other processes used more than ``max(0.25, 0.5 * headroom)`` cores on
  average (on 2 cores / 1 thread: half a core);
* more tasks were runnable than our threads plus the headroom
  (``/proc/loadavg``'s running count includes us; a queue means someone waits
  for a core, possibly ours);
* steal time above 2% of the CPU time (a virtual machine whose host is busy: the
  interference the guest's process list never shows);
* the frequency fell more than 10% below the highest this guard has seen
  (throttling, power capping);
* a thermal zone above ``temp_limit_c`` (when set).

A :class:`Policy` decides what happens: ``warn`` records and flags, ``wait``
(the default) pauses with a visible message until a probe window is quiet (up
to ``wait_limit_s``, then records and flags), ``fail`` refuses to measure.
The probe costs nothing when it need not: the gap since the previous
measurement (spent exporting, storing) serves as the probe window when long
enough, and measurements back to back (a campaign's timing phase) follow a
quiet one straight away, each still judged by its own window.
Remote devices (adb, ssh) are read on the far side through their transport
with one shell script; per-process shares are not read there.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import ConfigError, DeviceError

POLICIES = ("warn", "wait", "fail")

_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class InterferenceError(DeviceError):
    """``--interference fail`` and the machine was busy."""


def check_policy(policy: str) -> str:
    """Validate ``--interference`` (one line naming the allowed values)."""
    if policy not in POLICIES:
        raise ConfigError(
            f"unknown --interference policy '{policy}'; use one of {', '.join(POLICIES)}"
        )
    return policy


# ---- parsers of the kernel's texts (pure, tested on given texts) ------------------


def parse_loadavg(text: str) -> dict[str, float]:
    """``/proc/loadavg`` -> load1/5/15, running (includes the reader) and total tasks."""
    parts = text.split()
    if len(parts) < 4 or "/" not in parts[3]:
        raise ValueError(f"not a /proc/loadavg line: {text[:80]!r}")
    running, total = parts[3].split("/", 1)
    return {
        "load1": float(parts[0]),
        "load5": float(parts[1]),
        "load15": float(parts[2]),
        "running": int(running),
        "tasks": int(total),
    }


def parse_proc_stat(text: str) -> dict[str, int]:
    """The aggregate ``cpu`` line of ``/proc/stat`` -> jiffies per field (missing ones 0)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            vals = [int(v) for v in parts[1 : 1 + len(_STAT_FIELDS)]]
            vals += [0] * (len(_STAT_FIELDS) - len(vals))
            return dict(zip(_STAT_FIELDS, vals, strict=True))
    raise ValueError("no aggregate 'cpu' line in /proc/stat text")


def cpu_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Shares of CPU time between two ``/proc/stat`` readings: busy, steal, iowait."""
    d = {k: max(0, after.get(k, 0) - before.get(k, 0)) for k in _STAT_FIELDS}
    total = sum(d.values())
    if total <= 0:
        return {"busy": 0.0, "steal": 0.0, "iowait": 0.0}
    busy = total - d["idle"] - d["iowait"]
    return {"busy": busy / total, "steal": d["steal"] / total, "iowait": d["iowait"] / total}


def parse_cpuinfo_mhz(text: str) -> float | None:
    """Mean ``cpu MHz`` over the cores listed in ``/proc/cpuinfo`` (None when absent)."""
    vals = []
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip().lower() == "cpu mhz":
            try:
                vals.append(float(val))
            except ValueError:
                continue
    return sum(vals) / len(vals) if vals else None


def parse_temperature(raw: str) -> float | None:
    """A thermal zone's ``temp`` (millidegrees on most kernels) in degrees C."""
    try:
        v = float(raw.strip())
    except ValueError:
        return None
    return v / 1000.0 if abs(v) > 200 else v


# ---- snapshots ---------------------------------------------------------------------


@dataclass
class Snapshot:
    """One reading of the machine. ``procs`` maps pid -> (name, CPU seconds so far)."""

    t: float
    loadavg: dict[str, float] = field(default_factory=dict)
    stat: dict[str, int] = field(default_factory=dict)
    freq_mhz: float | None = None
    temp_c: float | None = None
    procs: dict[int, tuple[str, float]] = field(default_factory=dict)
    cores: int = 1
    where: str = "local"


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _local_freq() -> float | None:
    vals = []
    for f in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        raw = _read(f)
        if raw and raw.strip().isdigit():
            vals.append(int(raw) / 1000.0)  # kHz -> MHz
    if vals:
        return sum(vals) / len(vals)
    text = _read("/proc/cpuinfo")
    return parse_cpuinfo_mhz(text) if text else None


def _local_temp(root: str = "/sys/class/thermal") -> float | None:
    temps = [parse_temperature(_read(z) or "") for z in Path(root).glob("thermal_zone*/temp")]
    temps = [t for t in temps if t is not None]
    return max(temps) if temps else None


def _process_times() -> dict[int, tuple[str, float]]:
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        ct = p.info.get("cpu_times")
        if ct is not None:
            out[p.pid] = (p.info.get("name") or "?", float(ct.user + ct.system))
    return out


def local_snapshot() -> Snapshot:
    """Read this machine (missing sources stay empty; nothing raises)."""
    snap = Snapshot(t=time.monotonic(), cores=os.cpu_count() or 1)
    la = _read("/proc/loadavg")
    st = _read("/proc/stat")
    try:
        snap.loadavg = parse_loadavg(la) if la else {}
        snap.stat = parse_proc_stat(st) if st else {}
    except ValueError:
        pass
    snap.freq_mhz = _local_freq()
    snap.temp_c = _local_temp()
    try:
        snap.procs = _process_times()
    except ImportError:  # psutil is a dependency; a broken install still measures
        snap.procs = {}
    return snap


#: One shell script for the far side of an adb/ssh transport (fixed text, no user input).
REMOTE_SCRIPT = (
    "cat /proc/loadavg; echo '@@'; head -n 1 /proc/stat; echo '@@'; "
    "cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq 2>/dev/null; echo '@@'; "
    "cat /sys/class/thermal/thermal_zone*/temp 2>/dev/null; echo '@@'; "
    "grep -c ^processor /proc/cpuinfo"
)


def parse_remote(text: str, where: str = "remote") -> Snapshot:
    """The output of :data:`REMOTE_SCRIPT` -> a :class:`Snapshot` (no per-process shares)."""
    parts = (text.split("@@") + [""] * 5)[:5]
    snap = Snapshot(t=time.monotonic(), where=where)
    with contextlib.suppress(ValueError):
        snap.loadavg = parse_loadavg(parts[0])
    with contextlib.suppress(ValueError):
        snap.stat = parse_proc_stat(parts[1])
    khz = [int(v) for v in parts[2].split() if v.isdigit()]
    snap.freq_mhz = sum(khz) / len(khz) / 1000.0 if khz else None
    temps = [t for t in (parse_temperature(v) for v in parts[3].split()) if t is not None]
    snap.temp_c = max(temps) if temps else None
    snap.cores = int(parts[4].strip()) if parts[4].strip().isdigit() else 1
    return snap


def transport_snapshot(transport: Any) -> Callable[[], Snapshot]:
    """A snapshot reader running :data:`REMOTE_SCRIPT` over an adb/ssh transport."""

    def read() -> Snapshot:
        res = transport.run_script(REMOTE_SCRIPT, timeout=30.0)
        return parse_remote(res.stdout, where=getattr(transport, "where", "remote"))

    return read


# ---- assessing a window -------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Limits of a quiet window (see the module docstring for why these)."""

    max_other_cores: float | None = None  # None: max(0.25, 0.5 * headroom)
    steal: float = 0.02
    freq_drop: float = 0.10
    temp_limit_c: float | None = None


@dataclass
class Window:
    """What happened between two snapshots, and whether that was busy."""

    seconds: float
    load1: float | None
    runnable: int | None
    other_cores: float | None
    top: list[tuple[str, int, float]]
    steal: float | None
    iowait: float | None
    freq_mhz: float | None
    temp_c: float | None
    busy: bool
    reasons: list[str]
    where: str = "local"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top"] = [{"name": n, "pid": p, "cores": round(c, 3)} for n, p, c in self.top]
        return d


def assess(
    before: Snapshot,
    after: Snapshot,
    *,
    threads: int = 1,
    own_pids: set[int] | frozenset[int] = frozenset(),
    thresholds: Thresholds = Thresholds(),
    max_freq_seen: float | None = None,
    top_n: int = 3,
) -> Window:
    """Judge the window between two snapshots (pure: tested on given snapshots)."""
    secs = max(1e-6, after.t - before.t)
    cores = max(1, after.cores or before.cores or 1)
    headroom = max(0, cores - threads)
    reasons: list[str] = []

    other = None
    top: list[tuple[str, int, float]] = []
    if before.procs and after.procs:
        shares = []
        for pid, (name, cpu) in after.procs.items():
            if pid in own_pids or pid not in before.procs:
                continue
            used = (cpu - before.procs[pid][1]) / secs
            if used > 0:
                shares.append((name, pid, used))
        shares.sort(key=lambda x: -x[2])
        other = sum(s[2] for s in shares)
        top = shares[:top_n]
        limit = thresholds.max_other_cores
        if limit is None:
            limit = max(0.25, 0.5 * headroom)
        if other > limit:
            names = ", ".join(f"{n}[{p}] {c:.2f}" for n, p, c in top)
            reasons.append(f"other processes used {other:.2f} cores (limit {limit:.2f}): {names}")

    runnable = None
    if after.loadavg:
        runnable = int(after.loadavg["running"])
        if runnable > threads + headroom:
            reasons.append(f"{runnable} runnable tasks for {cores} cores")
    steal = iowait = None
    if before.stat and after.stat:
        sh = cpu_shares(before.stat, after.stat)
        steal, iowait = sh["steal"], sh["iowait"]
        if steal > thresholds.steal:
            reasons.append(f"CPU steal {steal:.1%} (the hypervisor ran someone else)")
    freq = after.freq_mhz
    if freq and max_freq_seen and freq < (1 - thresholds.freq_drop) * max_freq_seen:
        reasons.append(
            f"CPU at {freq:.0f} MHz, {1 - freq / max_freq_seen:.0%} below {max_freq_seen:.0f}"
        )
    temp = after.temp_c
    if temp is not None and thresholds.temp_limit_c and temp > thresholds.temp_limit_c:
        reasons.append(f"{temp:.1f} C above the {thresholds.temp_limit_c:.1f} C limit")
    return Window(
        seconds=secs,
        load1=after.loadavg.get("load1") if after.loadavg else None,
        runnable=runnable,
        other_cores=other,
        top=top,
        steal=steal,
        iowait=iowait,
        freq_mhz=freq,
        temp_c=temp,
        busy=bool(reasons),
        reasons=reasons,
        where=after.where,
    )


def own_process_tree() -> set[int]:
    """This process and its descendants (the isolated measurement worker is ours)."""
    try:
        import psutil

        me = psutil.Process()
        return {me.pid, *(c.pid for c in me.children(recursive=True))}
    except Exception:  # psutil missing or a child vanished mid-walk
        return {os.getpid()}


# ---- the policy --------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What to do about a busy machine.

    Attributes:
        mode: ``warn`` (record and flag), ``wait`` (pause until quiet, at most
            ``wait_limit_s``, then record and flag), ``fail`` (refuse).
        wait_limit_s: longest pause before measuring anyway.
        probe_s: length of the window a quiet check observes.
        thresholds: see :class:`Thresholds`.
    """

    mode: str = "wait"
    wait_limit_s: float = 120.0
    probe_s: float = 1.0
    thresholds: Thresholds = Thresholds()

    def __post_init__(self) -> None:
        check_policy(self.mode)
        if self.wait_limit_s < 0 or self.probe_s <= 0:
            raise ConfigError("the interference wait limit must be >= 0 and the probe > 0 seconds")


@dataclass
class Decision:
    """The verdict before a measurement: go, and whether the wait gave up."""

    proceed: bool
    waited_s: float
    gave_up: bool
    window: Window | None


def decide(window: Window, mode: str, waited_s: float, wait_limit_s: float) -> str:
    """``go``, ``wait`` or ``fail`` for a probe window (pure: tested on given windows)."""
    if not window.busy or mode == "warn":
        return "go"
    if mode == "fail":
        return "fail"
    return "wait" if waited_s < wait_limit_s else "go"


class InterferenceGuard:
    """Checks before, records during: the policy applied around each measurement.

    Args:
        policy: the :class:`Policy`.
        threads: threads the measurement uses (sets the headroom).
        reader: takes a :class:`Snapshot` (default: this machine).
        log: where the visible "waiting" message goes.
        sleep: injectable for tests.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        threads: int = 1,
        reader: Callable[[], Snapshot] | None = None,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        own_pids: Callable[[], set[int]] = own_process_tree,
    ):
        self.policy = policy or Policy()
        self.threads = threads
        self.reader = reader or local_snapshot
        self.log = log or (lambda _m: None)
        self.sleep = sleep
        self.own_pids = own_pids
        self.max_freq: float | None = None
        self._stuck = False
        self._last: Snapshot | None = None
        self._last_quiet = False
        self._probe_end: Snapshot | None = None

    def _assess(self, a: Snapshot, b: Snapshot) -> Window:
        w = assess(
            a,
            b,
            threads=self.threads,
            own_pids=self.own_pids(),
            thresholds=self.policy.thresholds,
            max_freq_seen=self.max_freq,
        )
        for f in (a.freq_mhz, b.freq_mhz):
            if f:
                self.max_freq = max(self.max_freq or 0.0, f)
        return w

    def wait_quiet(self, what: str = "") -> Decision:
        """Probe, and per the policy go, wait (with a message) or raise :class:`InterferenceError`."""
        t0 = time.monotonic()
        announced = False
        # After one wait gave up, later ones are short until a quiet window is
        # seen again: a machine busy for an hour must not cost the limit per model.
        limit = self.policy.wait_limit_s / 10 if self._stuck else self.policy.wait_limit_s
        first = True
        while True:
            b = self.reader()
            # The time since the previous measurement ended (spent exporting and
            # storing, by our own processes) is the first probe window when it is
            # long enough: no extra second per model on a quiet machine.
            a = self._last if first and self._last is not None else None
            if (
                a is not None
                and self._last_quiet
                and b.t - a.t < 0.25 * self.policy.probe_s
                and self.policy.mode != "fail"
            ):
                # Measurements back to back (a campaign's timing phase): the previous
                # measurement's own window, which ended a moment ago, was quiet; a new
                # probe second per model would only repeat it. Whatever starts now still
                # shows in this measurement's own window, which flags it.
                self._probe_end = b
                return Decision(True, 0.0, False, None)
            if a is None or b.t - a.t < 0.25 * self.policy.probe_s:
                a = b
                self.sleep(self.policy.probe_s)
                b = self.reader()
            first = False
            self._probe_end = b
            w = self._assess(a, b)
            waited = time.monotonic() - t0
            verdict = decide(w, self.policy.mode, waited, limit)
            if verdict == "fail":
                raise InterferenceError(
                    f"the machine is busy ({'; '.join(w.reasons)}); stop the other work, or use "
                    "--interference wait|warn"
                )
            if verdict == "go":
                gave_up = w.busy and self.policy.mode == "wait"
                self._stuck = gave_up
                if announced:
                    self.log(
                        f"interference: still busy after {waited:.0f} s; measuring {what} anyway, flagged"
                        if gave_up
                        else f"interference: quiet again after {waited:.0f} s"
                    )
                return Decision(True, waited, gave_up, w)
            if not announced:
                self.log(
                    f"interference: waiting for a quiet machine before {what or 'measuring'} "
                    f"(up to {limit:.3g} s): {'; '.join(w.reasons)}"
                )
                announced = True

    def around(self, measure: Callable[[], Any], what: str = "") -> tuple[Any, dict[str, Any]]:
        """Run ``measure`` under the policy; returns (its result, the interference record)."""
        decision = self.wait_quiet(what)
        before = self._probe_end or self.reader()
        result = measure()
        self._last = self.reader()
        during = self._assess(before, self._last)
        self._last_quiet = not during.busy
        record = {
            "policy": self.policy.mode,
            "waited_s": round(decision.waited_s, 3),
            "gave_up_waiting": decision.gave_up,
            "before": decision.window.to_dict() if decision.window else None,
            "during": during.to_dict(),
            "busy": during.busy or decision.gave_up,
            "reasons": during.reasons or (decision.window.reasons if decision.window else []),
        }
        return result, record


class GuardedDevice:
    """A device whose every measurement runs under an :class:`InterferenceGuard`.

    The record lands in ``measurement.environment["interference"]``, so the
    store keeps it in the measurement's environment JSON with no new column;
    other attributes pass through to the wrapped device.
    """

    def __init__(self, device: Any, guard: InterferenceGuard):
        self.device = device
        self.guard = guard
        self.name = getattr(device, "name", "")

    def measure(self, artifact: Any, settings: Any = None) -> Any:
        m, rec = self.guard.around(
            lambda: self.device.measure(artifact, settings), getattr(artifact, "label", "")
        )
        m.environment = {**(m.environment or {}), "interference": rec}
        return m

    def close(self) -> None:
        self.device.close()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.device, item)


def reader_for(device: Any, device_name: str = "", **device_kwargs: Any) -> Callable[[], Snapshot]:
    """The snapshot reader for where ``device`` runs: its transport's far side, or here.

    An isolated adb/ssh device keeps its transport in the worker process, so a
    second device object is created here only to reach the same phone/board.
    """
    transport = getattr(device, "transport", None)
    name = device_name or getattr(device, "name", "")
    if transport is None and (name.startswith("adb") or name.startswith("ssh:")):
        from hwnas.devices import create_device

        transport = getattr(create_device(name, **device_kwargs), "transport", None)
    return transport_snapshot(transport) if transport is not None else local_snapshot


def guard_device(
    device: Any,
    policy: Policy,
    *,
    threads: int = 1,
    device_name: str = "",
    log: Callable[[str], None] | None = None,
    device_options: dict[str, Any] | None = None,
) -> GuardedDevice:
    """``device`` under an :class:`InterferenceGuard` reading where it runs (here, or the
    far side of its adb/ssh transport): the one recipe of ``hwnas sample``, ``profile``,
    ``repeatability`` and the Ray campaign's device actors. ``device_options`` (which may
    hold ``threads`` too) create a second adb/ssh device object to reach its transport."""
    guard = InterferenceGuard(
        policy,
        threads=threads,
        reader=reader_for(device, device_name, **(device_options or {})),
        log=log,
    )
    return GuardedDevice(device, guard)
