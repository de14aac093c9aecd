"""The reference canary: drift flags the right rows, they are re-measured, resumption is clean."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest
from campaign_helpers import TinySpace

from hwnas.arch import Arch
from hwnas.campaigns import canary as canary_mod
from hwnas.campaigns import run_campaign
from hwnas.campaigns.canary import CanaryMonitor, CanarySettings, check_canary_model, parse_every
from hwnas.errors import ConfigError
from hwnas.profilers.latency import Measurement, MeasureSettings
from hwnas.store import Store, quality

FAST = MeasureSettings(warmup=1, runs=3)


class StubDevice:
    """Returns chosen medians: the canary's from a list (``"stop"`` raises Ctrl-C), archs' fixed."""

    name = "stub"

    def __init__(self, canary_ms, arch_ms=5.0, busy_labels=()):
        self.canary_ms = list(canary_ms)
        self.arch_ms = arch_ms
        self.busy_labels = set(busy_labels)
        self.calls: list[str] = []

    def measure(self, artifact, settings=None):
        label = artifact.label
        if label.startswith("canary"):
            v = self.canary_ms.pop(0) if len(self.canary_ms) > 1 else self.canary_ms[0]
            if v == "stop":
                raise KeyboardInterrupt
        else:
            v = self.arch_ms
        self.calls.append(label)
        env = {"interference": {"busy": label in self.busy_labels, "reasons": ["test"]}}
        return Measurement(samples_ms=(v, v, v), device=self.name, label=label, environment=env)

    def close(self):
        pass


def _add_rows(store, n, campaign="c", start=0):
    ids = []
    for i in range(start, start + n):
        arch = Arch("s", (i,))
        store.add_arch(arch)
        m = Measurement(samples_ms=(9.0,), device="stub", label=arch.id)
        ids.append(
            store.add_measurement(arch.id, m, (1, 3, 8, 8), device="stub", campaign=campaign)
        )
    return ids


def _monitor(store, dev, every=3, remeasured=None):
    def remeasure(arch_id):
        remeasured.append(arch_id) if remeasured is not None else None
        return dev.measure(SimpleNamespace(label=arch_id))

    return CanaryMonitor(
        store,
        dev,
        CanarySettings("cifar_resnet20", every_archs=every, drift=0.05),
        device_name="stub",
        campaign="c",
        remeasure=remeasure,
        artifact=SimpleNamespace(label="canary:x"),
    )


def _count(store):
    return store.conn.execute("SELECT count(*) FROM measurements").fetchone()[0]


def test_drift_flags_rows_since_last_good_canary_and_remeasures_them(tmp_path):
    # canaries: baseline 10, good 10.2 (+2%), drifted 12 (+20%), back to 10.1
    dev = StubDevice([10.0, 10.2, 12.0, 10.1])
    done: list[str] = []
    with Store(tmp_path / "q.db") as store:
        mon = _monitor(store, dev, every=3, remeasured=done)
        mon.start()
        first = _add_rows(store, 3)
        for _ in first:
            mon.after_arch()
        assert mon.last_drift == pytest.approx(0.02)  # good canary after the first 3
        second = _add_rows(store, 3, start=3)
        for _ in second:
            mon.after_arch()
        # the drifted canary flagged rows 4-6 only, the good one let them be re-measured
        assert done == [
            store.conn.execute("SELECT arch_id FROM measurements WHERE id=?", (i,)).fetchone()[0]
            for i in second
        ]
        states = quality.flag_states(store.conn)
        assert set(states) == set(second) and set(states.values()) == {"remeasured"}
        meds = dict(store.conn.execute("SELECT id, median_ms FROM measurements").fetchall())
        assert all(meds[i] == 9.0 for i in first) and all(meds[i] == 5.0 for i in second)
        orig = store.conn.execute("SELECT original_median_ms FROM measurement_flags").fetchall()
        assert {r[0] for r in orig} == {9.0}
        assert _count(store) == 6  # replaced in place, never doubled
        series = quality.canary_series(store.conn, "stub", "c")
        assert [c["ok"] for c in series] == [1, 1, 0, 1]
        assert series[2]["drift"] == pytest.approx(0.2)


def test_busy_measurement_is_flagged_and_remeasured_at_the_next_good_canary(tmp_path):
    dev = StubDevice([10.0])
    with Store(tmp_path / "b.db") as store:
        mon = _monitor(store, dev, every=2)
        mon.start()
        ids = _add_rows(store, 1)
        mon.after_arch(
            SimpleNamespace(environment={"interference": {"busy": True, "reasons": ["x"]}})
        )
        assert quality.pending(store.conn, "stub", "c")[0]["measurement_id"] == ids[0]
        _add_rows(store, 1, start=1)
        mon.after_arch()  # canary due: good -> re-measure the busy one
        assert not quality.pending(store.conn, "stub", "c")
        assert mon.remeasured == 1


def test_interrupt_during_canary_resumes_without_losing_or_doubling(tmp_path):
    db = tmp_path / "r.db"
    dev = StubDevice([10.0, 13.0, "stop"])  # baseline, drift (flags 3 rows), Ctrl-C on the re-check
    with Store(db) as store:
        mon = _monitor(store, dev, every=3)
        mon.start()
        ids = _add_rows(store, 3)
        with pytest.raises(KeyboardInterrupt):
            for _ in ids:
                mon.after_arch()
        assert [p["measurement_id"] for p in quality.pending(store.conn, "stub", "c")] == ids
    dev2 = StubDevice([10.3])
    with Store(db) as store:
        mon = _monitor(store, dev2, every=3)
        assert mon.baseline == 10.0  # kept from the first run
        assert mon.has_pending()
        mon.start()
        assert not quality.pending(store.conn, "stub", "c")
        assert _count(store) == 3
        assert dev2.calls.count("canary:x") == 1 and len(dev2.calls) == 4


def test_campaign_with_canary_and_interrupt_resumes_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(
        canary_mod, "canary_artifact", lambda *a, **k: SimpleNamespace(label="canary:z")
    )
    db = tmp_path / "camp.db"
    space = TinySpace()
    settings = CanarySettings("cifar_resnet20", every_archs=2, drift=0.05)
    # baseline, then a drift whose re-check is interrupted: the campaign stops mid-canary
    with Store(db) as store:
        s = run_campaign(
            space,
            5,
            StubDevice([10.0, 20.0, "stop"]),
            store,
            settings=FAST,
            canary=settings,
            device_name="stub",
            exporter="torchscript",
        )
        assert s.interrupted and s.measured == 2
        assert len(quality.pending(store.conn, "stub", s.campaign)) == 2
    with Store(db) as store:
        s2 = run_campaign(
            space,
            5,
            StubDevice([10.0]),
            store,
            settings=FAST,
            canary=settings,
            device_name="stub",
            repeat_n=3,
            exporter="torchscript",
        )
        assert not s2.interrupted and s2.measured == 3 and s2.skipped == 2
        assert not quality.pending(store.conn, "stub", s2.campaign)
        rows = store.conn.execute("SELECT arch_id FROM measurements").fetchall()
        assert len(rows) == 5 and len({r[0] for r in rows}) == 5
        assert s2.repeatability is not None and s2.repeatability["n"] == 3
        assert s2.repeatability["within5"] == 1.0
        assert any("re-measured, 0 still flagged" in n for n in s2.notes)
    # read-only checks must not create the tables in a fresh store
    con = sqlite3.connect(tmp_path / "fresh.db")
    assert quality.flag_states(con) == {} and not quality.has_tables(con)


def test_bad_canary_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown --canary model 'nope'"):
        check_canary_model("nope")
    assert check_canary_model("none") is None
    assert check_canary_model("cifar_resnet20") == "cifar_resnet20"
    with pytest.raises(ConfigError, match="> 0"):
        CanarySettings(every_archs=0)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"\(0, 1\)"):
            CanarySettings(drift=bad)
    assert parse_every("25") == (25, 300.0)
    assert parse_every("10,60s") == (10, 60.0)
    for bad in ("0", "-3", "x", "5,0s"):
        with pytest.raises(ConfigError, match="--canary-every"):
            parse_every(bad)


def test_a_canary_the_device_cannot_run_is_dropped_with_a_message(tmp_path):
    from hwnas.errors import DeviceError

    class Broken(StubDevice):
        def measure(self, artifact, settings=None):
            if artifact.label.startswith("canary"):
                raise DeviceError("cannot run it")
            return super().measure(artifact, settings)

    logs: list[str] = []
    with Store(tmp_path / "x.db") as store:
        mon = _monitor(store, Broken([10.0]), every=1)
        mon.log = logs.append
        mon.start()
        assert mon.broken and not mon.enabled and "continuing without a canary" in logs[0]
        _add_rows(store, 1)
        mon.after_arch()  # no canary any more, nothing raised
        assert quality.canary_series(store.conn) == []


def test_remeasuring_stops_at_the_first_busy_result(tmp_path):
    dev = StubDevice([10.0], busy_labels={Arch("s", (1,)).id, Arch("s", (2,)).id})
    with Store(tmp_path / "s.db") as store:
        mon = _monitor(store, dev, every=10)
        ids = _add_rows(store, 4)
        quality.flag(store.conn, ids, "interference", "busy")
        mon.start()
        # row 0 re-measured quietly; row 1 came back busy: rows 1-3 wait for a later check
        assert [p["measurement_id"] for p in quality.pending(store.conn, "stub", "c")] == ids[1:]
        assert [c for c in dev.calls if not c.startswith("canary")] == [
            Arch("s", (0,)).id,
            Arch("s", (1,)).id,
        ]


def test_interrupt_during_remeasurement_resumes_without_losing_or_doubling(tmp_path):
    db = tmp_path / "m.db"
    stop_at = Arch("s", (1,)).id

    class StopsOnce(StubDevice):
        def measure(self, artifact, settings=None):
            if artifact.label == stop_at:
                raise KeyboardInterrupt
            return super().measure(artifact, settings)

    with Store(db) as store:
        ids = _add_rows(store, 3)
        quality.flag(store.conn, ids, "interference", "busy")
        mon = _monitor(store, StopsOnce([10.0]), every=10)
        with pytest.raises(KeyboardInterrupt):
            mon.start()  # row 0 replaced, Ctrl-C while re-measuring row 1
        assert [p["measurement_id"] for p in quality.pending(store.conn, "stub", "c")] == ids[1:]
    with Store(db) as store:
        mon = _monitor(store, StubDevice([10.0]), every=10)
        mon.start()
        assert not quality.pending(store.conn, "stub", "c") and _count(store) == 3
        meds = [r[0] for r in store.conn.execute("SELECT median_ms FROM measurements ORDER BY id")]
        assert meds == [5.0, 5.0, 5.0]
        assert len(quality.canary_series(store.conn)) == 2  # one per run, none lost


def test_a_slow_baseline_is_replaced_and_everything_before_it_flagged(tmp_path):
    # the first canary ran on a busy machine (20 ms); later ones agree on 10 ms
    dev = StubDevice([20.0, 10.0, 10.2, 10.1])
    with Store(tmp_path / "b.db") as store:
        mon = _monitor(store, dev, every=3)
        mon.start()
        ids = _add_rows(store, 3)
        for _ in ids:
            mon.after_arch()  # canary 10.0 (-50%), confirmed by 10.2: re-base to 10.2
        assert mon.baseline == 10.2
        states = quality.flag_states(store.conn)
        assert set(states) == set(ids) and set(states.values()) == {"remeasured"}
        series = quality.canary_series(store.conn, "stub", "c")
        assert [c["baseline_ms"] for c in series] == [20.0, 10.2]
        assert series[-1]["ok"] == 1
    with Store(tmp_path / "b.db") as store:  # a resumed run keeps the new baseline
        assert _monitor(store, StubDevice([10.0])).baseline == 10.2


def test_one_fast_canary_is_noise_not_a_new_baseline(tmp_path):
    dev = StubDevice([10.0, 8.0, 10.1, 10.0])  # 8.0 not confirmed by 10.1
    with Store(tmp_path / "n.db") as store:
        mon = _monitor(store, dev, every=2)
        mon.start()
        ids = _add_rows(store, 2)
        for _ in ids:
            mon.after_arch()
        assert mon.baseline == 10.0
        # the unconfirmed fast canary counts as a drift: its rows are flagged, then re-measured
        assert set(quality.flag_states(store.conn)) == set(ids)
