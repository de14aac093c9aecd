"""Interference snapshots parsed from given /proc texts, and policy decisions on given snapshots."""

from __future__ import annotations

import pytest

from hwnas.errors import ConfigError
from hwnas.profilers.interference import (
    GuardedDevice,
    InterferenceError,
    InterferenceGuard,
    Policy,
    Snapshot,
    Thresholds,
    assess,
    check_policy,
    cpu_shares,
    decide,
    parse_cpuinfo_mhz,
    parse_loadavg,
    parse_proc_stat,
    parse_remote,
    parse_temperature,
)
from hwnas.profilers.latency import Measurement

STAT_A = """cpu  1000 0 500 8000 100 0 0 0 0 0
cpu0 500 0 250 4000 50 0 0 0 0 0
intr 12345
"""
STAT_B = """cpu  1300 0 600 8300 200 0 0 100 0 0
cpu0 650 0 300 4150 100 0 0 50 0 0
"""


def test_parse_loadavg_and_stat():
    la = parse_loadavg("0.88 0.60 0.27 3/98 6394\n")
    assert la == {"load1": 0.88, "load5": 0.60, "load15": 0.27, "running": 3, "tasks": 98}
    with pytest.raises(ValueError):
        parse_loadavg("garbage")
    a, b = parse_proc_stat(STAT_A), parse_proc_stat(STAT_B)
    assert a["user"] == 1000 and a["idle"] == 8000 and a["steal"] == 0
    sh = cpu_shares(a, b)
    # deltas: user 300, system 100, idle 300, iowait 100, steal 100 -> total 900
    assert sh["steal"] == pytest.approx(100 / 900)
    assert sh["iowait"] == pytest.approx(100 / 900)
    assert sh["busy"] == pytest.approx(500 / 900)
    # an old kernel's short cpu line: missing fields read as 0
    assert parse_proc_stat("cpu 1 2 3 4\n")["steal"] == 0


def test_parse_cpuinfo_temperature_and_remote_text():
    info = "processor : 0\ncpu MHz\t\t: 2000.000\nprocessor : 1\ncpu MHz\t\t: 3000.5\n"
    assert parse_cpuinfo_mhz(info) == pytest.approx(2500.25)
    assert parse_cpuinfo_mhz("processor : 0\n") is None
    assert parse_temperature("45000\n") == 45.0
    assert parse_temperature("38\n") == 38.0
    assert parse_temperature("n/a") is None
    text = (
        "1.50 1.20 1.00 2/300 999\n@@\n"
        + STAT_A.splitlines()[0]
        + "\n@@\n1800000\n2400000\n@@\n41000\n52000\n@@\n8\n"
    )
    s = parse_remote(text, where="adb:X")
    assert s.loadavg["running"] == 2 and s.stat["idle"] == 8000
    assert s.freq_mhz == pytest.approx(2100.0) and s.temp_c == 52.0 and s.cores == 8
    assert s.where == "adb:X"
    empty = parse_remote("")  # a phone that lets us read nothing: empty, no exception
    assert empty.loadavg == {} and empty.freq_mhz is None


def _snap(t, procs=None, running=1, stat=None, freq=None, temp=None, cores=2):
    return Snapshot(
        t=t,
        loadavg={"load1": 1.0, "load5": 1.0, "load15": 1.0, "running": running, "tasks": 100},
        stat=stat or {},
        freq_mhz=freq,
        temp_c=temp,
        procs=procs or {},
        cores=cores,
    )


def test_assess_counts_other_processes_not_our_own():
    a = _snap(0.0, {1: ("me", 0.0), 2: ("worker", 0.0), 3: ("other", 0.0), 4: ("idle", 5.0)})
    # in 2 s: our worker used 2 s (ours), another process 0.8 s = 0.4 cores
    b = _snap(2.0, {1: ("me", 0.5), 2: ("worker", 2.0), 3: ("other", 0.8), 4: ("idle", 5.0)})
    quiet = assess(a, b, threads=1, own_pids={1, 2})
    assert not quiet.busy and quiet.other_cores == pytest.approx(0.4)
    assert quiet.top[0][:2] == ("other", 3)
    # 2 cores, 1 thread: headroom 1, limit 0.5 core; 1.2 s of 2 s = 0.6 cores is busy
    b2 = _snap(2.0, {1: ("me", 0.5), 2: ("worker", 2.0), 3: ("other", 1.2), 4: ("idle", 5.0)})
    busy = assess(a, b2, threads=1, own_pids={1, 2})
    assert busy.busy and "other processes used 0.60 cores" in busy.reasons[0]
    # the worker is not ours any more (someone else's): now busy
    assert assess(a, b, threads=1, own_pids={1}).busy
    # an explicit limit wins
    assert not assess(
        a, b2, threads=1, own_pids={1, 2}, thresholds=Thresholds(max_other_cores=1.0)
    ).busy


def test_assess_runnable_steal_frequency_and_temperature():
    a, b = _snap(0, running=2), _snap(1, running=2)
    assert not assess(a, b, threads=1).busy  # us + one other on 2 cores: fits
    assert "3 runnable tasks" in assess(a, _snap(1, running=3), threads=1).reasons[0]
    st_a = parse_proc_stat(STAT_A)
    st_b = parse_proc_stat(STAT_B)
    w = assess(_snap(0, stat=st_a), _snap(1, stat=st_b), threads=1)
    assert w.busy and "steal" in w.reasons[0]
    assert w.steal == pytest.approx(100 / 900)
    w = assess(a, _snap(1, freq=1500.0), threads=1, max_freq_seen=2000.0)
    assert w.busy and "25% below" in w.reasons[0]
    assert not assess(a, _snap(1, freq=1900.0), threads=1, max_freq_seen=2000.0).busy
    hot = assess(a, _snap(1, temp=80.0), threads=1, thresholds=Thresholds(temp_limit_c=45.0))
    assert hot.busy and "80.0 C" in hot.reasons[0]
    # 8 cores timing 4 threads: headroom 4, limit 2 cores; 8 runnable fit
    assert not assess(_snap(0, cores=8), _snap(1, running=8, cores=8), threads=4).busy


def test_policy_decisions_on_given_windows():
    a = _snap(0.0)
    quiet = assess(a, _snap(1.0), threads=1)
    busy = assess(a, _snap(1.0, running=5), threads=1)
    assert decide(quiet, "fail", 0, 10) == "go"
    assert decide(busy, "warn", 0, 10) == "go"
    assert decide(busy, "fail", 0, 10) == "fail"
    assert decide(busy, "wait", 5, 10) == "wait"
    assert decide(busy, "wait", 10, 10) == "go"
    assert check_policy("wait") == "wait"
    with pytest.raises(ConfigError, match="unknown --interference policy 'often'"):
        check_policy("often")
    with pytest.raises(ConfigError):
        Policy(mode="bogus")


class _Script:
    """Snapshots from a list, with a fake clock advanced by the guard's sleeps."""

    def __init__(self, running: list[int]):
        self.running = list(running)
        self.t = 0.0

    def read(self) -> Snapshot:
        r = self.running.pop(0) if len(self.running) > 1 else self.running[0]
        return _snap(self.t, running=r)

    def sleep(self, s: float) -> None:
        self.t += s


class _Dev:
    name = "stub"

    def measure(self, artifact, settings=None):
        return Measurement(
            samples_ms=(1.0, 1.0), device="stub", label="x", environment={"cpu": "x"}
        )

    def close(self):
        pass


def test_guard_waits_until_quiet_and_records(monkeypatch):
    s = _Script([5, 5, 1, 1, 1, 1])  # busy probe, then quiet
    logs: list[str] = []
    guard = InterferenceGuard(
        Policy("wait", wait_limit_s=100, probe_s=1.0),
        reader=s.read,
        sleep=s.sleep,
        log=logs.append,
        own_pids=lambda: set(),
    )
    dev = GuardedDevice(_Dev(), guard)
    m = dev.measure(type("A", (), {"label": "x"})())
    rec = m.environment["interference"]
    assert m.environment["cpu"] == "x"  # the device's own environment kept
    assert rec["policy"] == "wait" and not rec["busy"] and not rec["gave_up_waiting"]
    assert logs[0].startswith("interference: waiting") and "quiet again" in logs[1]


def test_guard_gives_up_and_flags_then_fail_policy_raises():
    s = _Script([5])  # always busy
    guard = InterferenceGuard(
        Policy("wait", wait_limit_s=0.0, probe_s=0.1),
        reader=s.read,
        sleep=s.sleep,
        own_pids=lambda: set(),
    )
    _, rec = guard.around(lambda: 1)
    assert rec["busy"] and rec["gave_up_waiting"] and rec["reasons"]
    strict = InterferenceGuard(
        Policy("fail", probe_s=0.1), reader=s.read, sleep=s.sleep, own_pids=lambda: set()
    )
    with pytest.raises(InterferenceError, match="--interference wait"):
        strict.around(lambda: 1)


def test_guard_uses_the_gap_since_the_last_measurement_as_its_probe():
    s = _Script([1])
    sleeps: list[float] = []

    def sleep(x: float) -> None:
        sleeps.append(x)
        s.sleep(x)

    guard = InterferenceGuard(
        Policy("wait", probe_s=1.0), reader=s.read, sleep=sleep, own_pids=lambda: set()
    )
    guard.around(lambda: s.sleep(0.5))
    assert sleeps == [1.0]  # the first measurement probes for a second
    s.sleep(2.0)  # exporting the next model
    guard.around(lambda: s.sleep(0.5))
    assert sleeps == [1.0]  # the 2 s gap was the probe: no extra wait
    guard.around(lambda: s.sleep(0.5))  # no gap, but the last measurement's own window was quiet
    assert sleeps == [1.0]  # back-to-back timing (a campaign's phase) pays no probe per model
    s.running = [5]  # something starts during the next measurement
    _, rec = guard.around(lambda: s.sleep(0.5))
    assert rec["busy"] and sleeps == [1.0]  # its own window flags it
    s.running = [1]
    guard.around(lambda: s.sleep(0.5))  # after a busy window: probe again before measuring
    assert sleeps == [1.0, 1.0]


def test_local_snapshot_reads_this_machine():
    from hwnas.profilers.interference import local_snapshot, own_process_tree

    a = local_snapshot()
    assert a.loadavg["tasks"] >= 1 and a.stat["idle"] > 0 and a.cores >= 1
    assert own_process_tree() & set(a.procs)  # psutil sees this process
    w = assess(a, local_snapshot(), own_pids=own_process_tree())
    assert w.other_cores is not None and w.other_cores >= 0 and isinstance(w.busy, bool)
