"""Interference snapshots and the canary on the far side: the stand-in adb and a loopback sshd."""

from __future__ import annotations

import sys

import pytest
from fake_adb.phone import FakePhone
from fake_adb.tiny import tiny_onnx
from ssh_server import SshServer, unavailable_reason

from hwnas.campaigns.canary import CanaryMonitor, CanarySettings
from hwnas.devices import create_device
from hwnas.profilers.interference import (
    GuardedDevice,
    InterferenceGuard,
    Policy,
    Thresholds,
    reader_for,
)
from hwnas.profilers.latency import MeasureSettings
from hwnas.store import Store, quality


@pytest.mark.android
def test_adb_snapshot_reads_the_phone(tmp_path, monkeypatch):
    phone = FakePhone(tmp_path / "phone", temps_c=(41.0, 47.5))
    phone.apply(monkeypatch)
    dev = create_device("adb")
    read = reader_for(dev)
    snap = read()
    # the phone's sysfs (cpufreq at half of max, the hottest zone), not this machine's
    assert snap.temp_c == 47.5
    assert snap.freq_mhz is not None and snap.freq_mhz > 0
    assert snap.loadavg and snap.stat and snap.where.startswith("adb")
    # an isolated adb device has no transport here: one is made to reach the same phone
    assert reader_for(object(), "adb")().temp_c == 47.5
    guard = InterferenceGuard(
        Policy("warn", probe_s=0.05, thresholds=Thresholds(temp_limit_c=45.0)),
        reader=read,
        own_pids=lambda: set(),
    )
    _, rec = guard.around(lambda: None)
    assert rec["busy"] and any("47.5 C" in r for r in rec["reasons"])
    dev.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    srv = SshServer(tmp_path_factory.mktemp("sshd")).start()
    yield srv
    srv.stop()


@pytest.mark.ssh
@pytest.mark.slow  # ~40 s on the shared machine: the runner's probe imports onnxruntime remotely
def test_ssh_guarded_canary_runs_on_the_board(server, tmp_path):
    dev = create_device("ssh:" + server.target, python=sys.executable, **server.device_kwargs())
    snap = reader_for(dev)()
    assert snap.loadavg and snap.stat and snap.cores >= 1 and snap.where.startswith("ssh")
    guarded = GuardedDevice(
        dev, InterferenceGuard(Policy("warn", probe_s=0.05), reader=reader_for(dev))
    )
    with Store(tmp_path / "s.db") as store:
        mon = CanaryMonitor(
            store,
            guarded,
            CanarySettings("cifar_resnet20", every_archs=1),
            device_name=dev.name,
            campaign="c",
            measure_settings=MeasureSettings(warmup=1, runs=5),
            artifact=tiny_onnx(),
        )
        mon.start()
        series = quality.canary_series(store.conn, dev.name, "c")
        assert len(series) == 1 and series[0]["ok"] == 1 and series[0]["median_ms"] > 0
        env = store.conn.execute("SELECT environment FROM canary").fetchone()[0]
        assert '"interference"' in env and '"where": "ssh' in env.replace("'", '"')
    dev.close()
