"""The store under several writers: one row per experiment, claims, migrations, read-only opens."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
from pathlib import Path

import pytest

from hwnas.arch import Arch
from hwnas.errors import StoreError
from hwnas.profilers.latency import Measurement, MeasurementFailure
from hwnas.store import Store
from hwnas.store.sqlite import SCHEMA_VERSION, MeasurementKey

SHAPE = (1, 3, 8, 8)


def _m(ms: float = 1.0) -> Measurement:
    return Measurement(samples_ms=(ms, ms * 1.1, ms * 0.9), device="dev")


def _arch(i: int) -> Arch:
    return Arch("tiny", (i, 0))


def _ok_rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT arch_id, device, input_shape, num_classes, exporter FROM measurements "
            "WHERE status='ok' AND dup_of IS NULL"
        ).fetchall()
    finally:
        con.close()


def test_a_successful_measurement_is_stored_once_per_experiment(tmp_path):
    db = tmp_path / "u.db"
    with Store(db) as s:
        a = _arch(0)
        s.add_arch(a)
        first = s.add_measurement(a.id, _m(1.0), SHAPE, num_classes=10, exporter="dynamo")
        again = s.add_measurement(a.id, _m(2.0), SHAPE, num_classes=10, exporter="dynamo")
        assert again == first
        # another number of classes, or another exporter, is another network
        s.add_measurement(a.id, _m(3.0), SHAPE, num_classes=100, exporter="dynamo")
        s.add_measurement(a.id, _m(4.0), SHAPE, num_classes=10, exporter="torchscript")
        # failures are history, not results: they may repeat
        fail = MeasurementFailure("dev", a.id, "runtime", "boom")
        s.add_measurement(a.id, fail, SHAPE, num_classes=10, exporter="dynamo")
        s.add_measurement(a.id, fail, SHAPE, num_classes=10, exporter="dynamo")
        assert len(s.measurements()) == 3
        assert [r["median_ms"] for r in s.measurements()] == [1.0, 3.0, 4.0]
        # the repeat is kept, readable, but is not a second result
        repeats = [r for r in s.measurements(include_duplicates=True) if r["dup_of"]]
        assert [(r["dup_of"], r["median_ms"]) for r in repeats] == [(first, 2.0)]
        assert s.counts()["measurements_failed"] == 2
    rows = _ok_rows(db)
    assert len(rows) == len(set(rows)) == 3


def test_the_already_measured_key_covers_classes_and_exporter(tmp_path):
    with Store(tmp_path / "k.db") as s:
        a = _arch(1)
        s.add_arch(a)
        s.add_measurement(a.id, _m(), SHAPE, device="dev", num_classes=10, exporter="dynamo")
        has = s.has_measurement
        assert has(a.id, "dev", SHAPE, num_classes=10, exporter="dynamo")
        assert not has(a.id, "dev", SHAPE, num_classes=1000, exporter="dynamo")
        assert not has(a.id, "dev", SHAPE, num_classes=10, exporter="torchscript")
        assert not has(a.id, "dev", (1, 3, 16, 16), num_classes=10, exporter="dynamo")
        assert has(a.id, "dev", SHAPE)  # None: any classes, any exporter


def test_device_failures_are_retried_after_a_cool_down_arch_failures_are_not(tmp_path):
    with Store(tmp_path / "f.db") as s:
        crash, export = _arch(2), _arch(3)
        for a, kind in ((crash, "crash"), (export, "export")):
            s.add_arch(a)
            s.add_measurement(a.id, MeasurementFailure("dev", a.id, kind, "x"), SHAPE)
        kw = {"num_classes": None, "exporter": None}
        # a fresh device failure counts (no hammering a broken phone) ...
        assert s.has_measurement(crash.id, "dev", SHAPE, retry_after_s=3600, **kw)
        # ... once the cool-down is over, the next run tries again
        s.conn.execute(
            "UPDATE measurements SET created=? WHERE arch_id=?",
            ((dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat(), crash.id),
        )
        s.conn.commit()
        assert not s.has_measurement(crash.id, "dev", SHAPE, retry_after_s=3600, **kw)
        # an export failure is the architecture's: done until --retry-failed
        assert s.has_measurement(export.id, "dev", SHAPE, retry_after_s=0.001, **kw)
        assert not s.has_measurement(export.id, "dev", SHAPE, include_failed=False, **kw)


def test_claims_split_the_work_and_dead_claimants_are_taken_over(tmp_path):
    db = tmp_path / "c.db"
    a = _arch(4)
    key = MeasurementKey.of(a.id, "dev", SHAPE, 10, "dynamo")
    with Store(db) as one, Store(db) as two:
        assert one.claim(key, "one", ttl_s=60) == "claimed"
        assert one.claim(key, "one", ttl_s=60) == "claimed"  # re-entrant for its owner
        assert two.claim(key, "two", ttl_s=60) == "busy"
        one.release(key, "one")
        assert two.claim(key, "two", ttl_s=60) == "claimed"
        two.add_arch(a)
        two.add_measurement(a.id, _m(), SHAPE, device="dev", num_classes=10, exporter="dynamo")
        two.release(key, "two")
        assert one.claim(key, "one", ttl_s=60) == "done"
        # a claimant that died (kill -9) on this host: taken over at once
        other = MeasurementKey.of(_arch(5).id, "dev", SHAPE, 10, "dynamo")
        gone = subprocess.Popen(["true"])
        gone.wait()
        one.conn.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?, ?, 'dead', ?, ?, 1e18)",
            (*other.claim_params(), gone.pid, __import__("socket").gethostname()),
        )
        one.conn.commit()
        assert two.claim(other, "two", ttl_s=60) == "claimed"
        # another machine's claim holds until it expires
        far = MeasurementKey.of(_arch(6).id, "dev", SHAPE, 10, "dynamo")
        one.conn.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?, ?, 'far', 1, 'elsewhere', ?)",
            (*far.claim_params(), __import__("time").time() + 60),
        )
        one.conn.commit()
        assert two.claim(far, "two", ttl_s=60) == "busy"
        one.conn.execute("UPDATE claims SET expires=0 WHERE owner='far'")
        one.conn.commit()
        assert two.claim(far, "two", ttl_s=60) == "claimed"


def _make_schema_1(db: Path, doubles: int) -> None:
    """A store as hwnas wrote it before schema 2, with doubles left by concurrent runs."""
    with Store(db) as s:
        for i in range(3):
            s.add_arch(_arch(i))
    con = sqlite3.connect(db)
    con.executescript(
        "DROP INDEX measurements_ok_unique; DROP TABLE claims;"
        "ALTER TABLE measurements DROP COLUMN num_classes;"
        "ALTER TABLE measurements DROP COLUMN exporter;"
        "ALTER TABLE measurements DROP COLUMN dup_of;"
        "UPDATE meta SET value='1' WHERE key='schema_version'; PRAGMA user_version=0;"
    )
    for i in range(3):
        for k in range(1 + (doubles if i == 0 else 0)):
            con.execute(
                "INSERT INTO measurements (arch_id, device, input_shape, status, median_ms, n, "
                "samples, created) VALUES (?, 'dev', '1x3x8x8', 'ok', ?, 1, '[1.0]', ?)",
                (_arch(i).id, 1.0 + k, f"2026-01-01T00:00:0{k}+00:00"),
            )
    con.commit()
    con.close()


def test_schema_1_stores_with_doubles_migrate_and_stay_readable(tmp_path):
    db = tmp_path / "old.db"
    _make_schema_1(db, doubles=2)
    with Store(db, readonly=True) as ro:  # readable as it is, and left as it is
        assert len(ro.measurements()) == 5
        assert ro.has_measurement(_arch(0).id, "dev", SHAPE, num_classes=10)
    assert int(sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0]) == 0
    with Store(db) as s:
        assert any("2 successful measurements doubled" in n for n in s.notes)
        rows = s.measurements()
        assert [(r["arch_id"], r["median_ms"]) for r in rows] == [
            (_arch(0).id, 1.0),
            (_arch(1).id, 1.0),
            (_arch(2).id, 1.0),
        ]
        assert len(s.measurements(include_duplicates=True)) == 5
        assert s.counts()["measurements_ok"] == 3
        # legacy rows (classes not recorded) count for the space's defaults only
        assert s.has_measurement(_arch(1).id, "dev", SHAPE, num_classes=10, exporter="dynamo")
        assert not s.has_measurement(
            _arch(1).id, "dev", SHAPE, num_classes=10, exporter="dynamo", legacy_ok=False
        )
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError):
        con.execute(
            "INSERT INTO measurements (arch_id, device, input_shape, status, created) "
            "VALUES (?, 'dev', '1x3x8x8', 'ok', 'now')",
            (_arch(1).id,),
        )
    con.close()
    with Store(db) as s:  # a second open finds nothing to migrate
        assert s.notes == []


def test_unreadable_json_in_a_row_is_a_store_error_naming_the_column(tmp_path):
    db = tmp_path / "j.db"
    with Store(db) as s:
        s.add_arch(_arch(0))
        s.add_measurement(_arch(0).id, _m(), SHAPE)
        s.conn.execute("UPDATE measurements SET settings='{oops'")
        s.conn.commit()
        with pytest.raises(StoreError, match="column 'settings'"):
            s.measurements()


def test_a_store_of_a_newer_hwnas_is_refused(tmp_path):
    db = tmp_path / "n.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer hwnas"):
            Store(db, readonly=readonly)


def test_export_cache_writes_are_atomic_and_partials_of_dead_writers_are_cleaned(tmp_path):
    from hwnas.export import atomic

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"{atomic.PARTIAL_PREFIX}{gone.pid}-abc.onnx"
    dead.write_bytes(b"half a model")
    tmp = atomic.temp_path(tmp_path, ".onnx")  # first use of the folder cleans it
    assert not dead.exists()
    assert Path(tmp).name.startswith(f"{atomic.PARTIAL_PREFIX}{__import__('os').getpid()}-")
    Path(tmp).write_bytes(b"whole model")
    atomic.publish(tmp, tmp_path / "final.onnx")
    assert (tmp_path / "final.onnx").read_bytes() == b"whole model" and not Path(tmp).exists()
    # a live writer's partial file is left alone
    mine = tmp_path / f"{atomic.PARTIAL_PREFIX}{__import__('os').getpid()}-xyz.onnx"
    mine.write_bytes(b"in progress")
    atomic._cleaned.clear()
    atomic.clean_partials(tmp_path)
    assert mine.exists()


def test_classes_and_exporter_make_a_campaign_measure_again(tmp_path):
    """A 5-class run on a store of 3-class results measures, it does not say "skipped"."""
    from campaign_helpers import TinySpace

    from hwnas.campaigns import run_campaign
    from hwnas.devices import create_device
    from hwnas.profilers.latency import MeasureSettings

    fast = MeasureSettings(warmup=1, runs=3)
    dev = create_device("cpu-ort")
    kw = {"settings": fast, "check": False, "exporter": "torchscript"}
    with Store(tmp_path / "k.db") as s:
        assert run_campaign(TinySpace(), 2, dev, s, **kw).measured == 2
        assert run_campaign(TinySpace(), 2, dev, s, **kw).skipped == 2
        again = run_campaign(TinySpace(num_classes=5), 2, dev, s, **kw)
        assert (again.measured, again.skipped) == (2, 0)
        rows = s.measurements()
        assert sorted(r["num_classes"] for r in rows) == [3, 3, 5, 5]
        assert {r["exporter"] for r in rows} == {"torchscript"}


def test_the_cli_says_what_a_migration_did(tmp_path, capsys):
    from hwnas.commands._common import open_store

    db = tmp_path / "old.db"
    _make_schema_1(db, doubles=1)
    open_store(db).close()
    err = capsys.readouterr().err
    assert "1 successful measurements doubled" in err and "dup_of" in err
