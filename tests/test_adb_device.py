"""The adb device against the stand-in adb and benchmark_model in tests/fake_adb/.

The stand-in adb runs every ``adb shell`` command with the real /bin/sh over
a temporary directory playing the phone, and the stand-in benchmark_model
really runs the model (with hwnas's LiteRT runner) and prints the tool's
format; so quoting, pushing, parsing and cleanup are exercised for real.
What is NOT exercised: a real phone, a real adb server, a real
benchmark_model binary (see the README's hardware table).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from fake_adb.phone import FakePhone
from fake_adb.tiny import tiny_tflite

from hwnas.devices import create_device
from hwnas.devices.adb import (
    big_core_mask,
    cpu_temperature,
    parse_devices_list,
    parse_snapshot,
)
from hwnas.devices.transport import AdbTransport
from hwnas.errors import DeviceError
from hwnas.export.tflite import load_tflite
from hwnas.profilers.latency import MeasureSettings

pytestmark = pytest.mark.android
needs_litert = pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None
    or importlib.util.find_spec("ai_edge_litert") is None,
    reason="the tflite extra (litert-torch, ai-edge-litert) is not installed",
)
EVIL = "my model 'v2'; touch PWNED; $(touch PWNED2) `touch PWNED3`.tflite"
EVIL_DIR = "/data/local/tmp/hw nas 'x'; touch PWNED4"
FAST = MeasureSettings(warmup=2, runs=15)


@pytest.fixture
def phone(tmp_path, monkeypatch) -> FakePhone:
    p = FakePhone(tmp_path / "phone")
    p.apply(monkeypatch)
    monkeypatch.chdir(tmp_path)
    return p


@pytest.fixture(scope="module")
def evil_model(tmp_path_factory):
    """The tiny model under a file name with spaces, quotes and shell syntax."""
    art = tiny_tflite()
    d = tmp_path_factory.mktemp("models with space")
    shutil.copyfile(art.path, d / EVIL)
    return load_tflite(d / EVIL, label="tiny")


def no_pwned(*roots: Path) -> bool:
    return not any(p.name.startswith("PWNED") for r in roots for p in r.rglob("PWNED*"))


# -- pure parsing ------------------------------------------------------------------


def test_devices_list_parsing():
    text = (
        "List of devices attached\n"
        "emulator-5554          device product:sdk_gphone64_x86_64 model:sdk_gphone64_x86_64 "
        "device:emu64xa transport_id:1\n"
        "R58M123                unauthorized usb:1-1 transport_id:2\n"
        "0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules "
        "wrong?); see [http://developer.android.com/tools/device.html] usb:1-2\n"
        "192.168.1.7:5555       offline transport_id:4\n\n"
    )
    assert parse_devices_list(text) == {
        "emulator-5554": "device",
        "R58M123": "unauthorized",
        "0123456789ABCDEF": "no permissions",
        "192.168.1.7:5555": "offline",
    }


def test_big_core_mask_takes_fastest_tiers_enough_for_the_threads():
    cores = [
        {"cpu": i, "online": True, "max_khz": f}
        for i, f in enumerate([18] * 4 + [23] * 2 + [28] * 2)
    ]
    assert big_core_mask(cores, 1) == ("c0", [6, 7])
    assert big_core_mask(cores, 2) == ("c0", [6, 7])
    assert big_core_mask(cores, 3) == ("f0", [4, 5, 6, 7])
    assert big_core_mask(cores, 8) == ("ff", list(range(8)))
    same = [{"cpu": i, "online": True, "max_khz": 20} for i in range(4)]
    assert big_core_mask(same, 1) == (None, [])  # nothing to choose between
    assert big_core_mask([{"cpu": 0, "online": True, "max_khz": None}], 1) == (None, [])


def test_snapshot_parsing_and_temperature_units():
    snap = parse_snapshot(
        "cpu cpu1 1 2400000 1200000 schedutil\ncpu cpu0 1 1800000 - schedutil\n"
        "zone thermal_zone0 41500 cpu-1-0-usr\nzone thermal_zone1 -273000 bogus\n"
        "zone thermal_zone2 455 battery\nbattery 315\n"
    )
    assert [c["cpu"] for c in snap["cores"]] == [0, 1] and snap["cores"][0]["cur_khz"] is None
    assert snap["thermal_zones"]["thermal_zone0"]["c"] == 41.5  # millidegrees
    assert "thermal_zone1" not in snap["thermal_zones"]  # nonsense readings dropped
    assert snap["thermal_zones"]["thermal_zone2"]["c"] == 45.5  # decidegrees
    assert snap["battery_c"] == 31.5
    assert cpu_temperature(snap) == 41.5  # the zone named like a CPU wins


# -- phone states and setup errors -----------------------------------------------


@pytest.mark.parametrize(
    ("devices", "name", "match"),
    [
        ("FAKE0001:unauthorized", "adb:FAKE0001", "Allow USB debugging"),
        ("FAKE0001:offline", "adb:FAKE0001", "replug the USB cable"),
        ("FAKE0001:device", "adb:OTHER", "OTHER is not attached.*FAKE0001"),
        ("", "adb", "no phone attached"),
        ("A1:device,B2:device", "adb", "several phones.*adb:SERIAL"),
        ("A1:unauthorized", "adb", "A1 is unauthorized"),
    ],
)
def test_phone_states_give_errors_that_say_what_to_do(phone, monkeypatch, devices, name, match):
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    with pytest.raises(DeviceError, match=match):
        create_device(name)


def test_missing_adb_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match="apt install adb"):
        create_device("adb")


def test_adb_alone_takes_the_only_phone(phone):
    dev = create_device("adb")
    assert dev.name == "adb:FAKE0001"
    info = dev.info()
    assert info["model"] == "Pixel 7" and info["board_platform"] == "gs201"
    assert info["android"] == "14" and info["abi"] == "arm64-v8a"
    assert info["cpu_mask"] == "c0" and info["usable_cores"] == [6, 7]  # the two big cores
    assert info["governor"] == "schedutil" and info["logical_cores"] == 8


# -- quoting: names are data, never commands --------------------------------------


def test_adb_transport_quotes_paths_with_spaces_and_shell_syntax(phone, tmp_path):
    local = tmp_path / EVIL
    local.write_bytes(b"not a model \x00\x01")
    t = AdbTransport("FAKE0001", remote_dir=EVIL_DIR)
    remote = t.push(local)
    assert remote.startswith(EVIL_DIR) and remote.endswith(EVIL)
    assert phone.path(remote).read_bytes() == local.read_bytes()
    res = t.run(["cat", remote])
    assert res.ok and res.stdout == "not a model \x00\x01"
    assert t.run(["echo", "a  b", "$HOME", "'"]).stdout == "a  b $HOME '\n"
    back = t.pull(remote, tmp_path / "back")
    assert back.read_bytes() == local.read_bytes()
    t.cleanup()
    assert not phone.path(EVIL_DIR).exists() or not any(phone.path(EVIL_DIR).iterdir())
    assert no_pwned(phone.root, tmp_path)


# -- measuring ---------------------------------------------------------------------


@needs_litert
def test_measure_end_to_end_on_the_stand_in(phone, evil_model, tmp_path):
    phone.install_benchmark_model()
    dev = create_device(
        "adb:FAKE0001", threads=2, op_profiling=True, remote_dir=EVIL_DIR, thermal_poll_s=0.01
    )
    m = dev.measure(evil_model, FAST)
    bm = m.extra["benchmark_model"][0]
    # the stand-in ran exactly the runs asked for (min_secs=0 makes the count exact)
    assert bm["inference"]["count"] == 15 and bm["warmup"]["count"] == 2
    # one sample per invocation, the tool's median: nothing invented
    assert m.samples_ms == (bm["inference"]["median_ms"],) and m.extra["summary_only"]
    assert "no per-run times" in m.extra["sample_kind"]
    assert bm["init_ms"] > 0 and bm["memory"]["kind"] == "delta"
    ops = [r["node_type"] for r in m.extra["op_profile"]["run_order"]]
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    env = m.environment
    assert env["model"] == "Pixel 7" and env["cpu_mask"] == "c0" and env["threads"] == 2
    assert env["before"]["cores"][7]["max_khz"] == 2850000 and env["after"]["cpu_temp_c"] == 38.5
    assert m.extra["thermal_guard"]["cooled"] and m.extra["attempts"] == 1
    assert (
        "--num_threads=2" in m.extra["command"]
        and "--enable_op_profiling=true" in m.extra["command"]
    )
    assert phone.taskset_masks() == ["c0"]  # pinned to the two big cores
    assert phone.leftovers() != [] and not list(phone.path(EVIL_DIR).rglob("*.tflite"))
    dev.close()
    assert not phone.path(EVIL_DIR).exists() or not any(phone.path(EVIL_DIR).iterdir())
    assert no_pwned(phone.root, tmp_path, Path(evil_model.path).parent)


@needs_litert
def test_benchmark_binary_is_pushed_or_its_absence_explained(phone, evil_model):
    with (
        create_device("adb", thermal_limit_c=None) as dev,
        pytest.raises(DeviceError, match="no benchmark_model on phone.*benchmark_binary"),
    ):
        dev.measure(evil_model, FAST)
    dev = create_device(
        "adb", benchmark_binary=str(phone.stand_in_benchmark), cpu_mask="none", repeats=2
    )
    m = dev.measure(evil_model, MeasureSettings(warmup=1, runs=5))
    assert len(m.samples_ms) == 2 and m.extra["command"].split()[0].endswith("/benchmark_model")
    assert phone.taskset_masks() == []  # cpu_mask="none": not pinned
    assert any(p.name == "benchmark_model" for p in phone.path("/data/local/tmp").rglob("*"))
    dev.close()
    assert phone.leftovers() == []  # the pushed binary went with the scratch directory


@needs_litert
def test_a_phone_that_drops_mid_run_is_retried(phone, evil_model, monkeypatch):
    phone.install_benchmark_model()
    monkeypatch.setenv("FAKE_ADB_DROP_RUNS", "1")
    monkeypatch.setenv("FAKE_ADB_AWAY_CALLS", "2")
    dev = create_device("adb", backoff_s=0.01, thermal_limit_c=None)
    with pytest.warns(RuntimeWarning, match="retrying"):
        m = dev.measure(evil_model, MeasureSettings(warmup=1, runs=5))
    assert m.extra["attempts"] >= 2 and m.extra["benchmark_model"][0]["inference"]["count"] == 5
    # a phone that never comes back: a DeviceError for this model, after the retries
    monkeypatch.setenv("FAKE_ADB_DROP_RUNS", "100")
    dev.retries = 1
    with pytest.warns(RuntimeWarning), pytest.raises(DeviceError, match="did not come back"):
        dev.measure(evil_model, MeasureSettings(warmup=1, runs=5))
    dev.close()


def test_thermal_guard_waits_for_the_phone_to_cool(phone, monkeypatch):
    phone.set_temps((52.0, 50.0))
    monkeypatch.setenv("FAKE_ADB_COOL_PER_CALL", "2")
    dev = create_device("adb", thermal_limit_c=45.0, thermal_poll_s=0.01, thermal_wait_s=30)
    g = dev.thermal_guard()
    assert g["start_c"] >= 45.0 and g["end_c"] <= 45.0 and g["cooled"]


def test_thermal_guard_gives_up_with_a_warning(phone):
    phone.set_temps((60.0, 61.0))
    dev = create_device("adb", thermal_limit_c=45.0, thermal_poll_s=0.05, thermal_wait_s=0.2)
    with pytest.warns(RuntimeWarning, match="still at 61.0 C"):
        g = dev.thermal_guard()
    assert not g["cooled"] and g["waited_s"] >= 0.2 and g["end_c"] == 61.0


def test_retry_lost_backs_off_and_gives_up():
    from hwnas.devices.transport import TransportLost, retry_lost

    waits, calls = [], []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 2:
            raise TransportLost("cable")
        return "ok"

    assert retry_lost(flaky, retries=3, backoff_s=0.5, sleep=waits.append) == "ok"
    assert calls == [0, 1, 2] and waits == [0.5, 1.0]  # doubling waits
    with pytest.raises(TransportLost):
        retry_lost(lambda a: flaky(-1), retries=2, backoff_s=0.1, sleep=waits.append)

    def needs_a_person(attempt: int) -> None:
        calls.append(attempt)
        raise DeviceError("unauthorized")

    calls.clear()
    with pytest.raises(DeviceError, match="unauthorized"):
        retry_lost(needs_a_person, retries=3, backoff_s=0.1, sleep=waits.append)
    assert calls == [0]  # not retried: retrying cannot fix it


def test_remote_devices_share_one_retry_loop():
    """adb and ssh both measure through measure_with_retries: a warning per retry, then one
    DeviceError naming the device, what happened and the fix."""
    from hwnas.devices.transport import TransportLost, measure_with_retries

    waits: list[float] = []

    def lost(attempt: int) -> str:
        raise TransportLost(f"gone {attempt}")

    with (
        pytest.warns(RuntimeWarning) as rec,
        pytest.raises(DeviceError, match=r"^board unreachable after 2 retries \(gone 2\); plug"),
    ):
        measure_with_retries(
            "board", lost, retries=2, backoff_s=1.0, lost="unreachable", fix="plug it in",
            sleep=waits.append,
        )  # fmt: skip
    assert [str(w.message) for w in rec] == [
        "board: gone 0; retrying in 1 s (attempt 2 of 3)",
        "board: gone 1; retrying in 2 s (attempt 3 of 3)",
    ]
    assert waits == [1.0, 2.0]
    ok = measure_with_retries(
        "board", lambda a: "ok", retries=2, backoff_s=1.0, lost="x", fix="y", sleep=waits.append
    )
    assert ok == "ok" and waits == [1.0, 2.0]
