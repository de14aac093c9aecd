"""SQLite store of devices, architectures, artifacts, static metrics and measurements.

Why SQLite: one file a user can copy, open with any tool, and that survives a
crash. WAL mode lets a reader (a report, a second terminal) read while a
campaign writes, and every result is committed the moment it arrives, so a
killed campaign loses at most the measurement that was in flight.

A measurement is keyed by (architecture id, device name, input shape): the
same architecture measured on the same device at the same input size is the
same experiment, and :meth:`Store.has_measurement` is what makes a re-run
campaign skip it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.arch import Arch
from hwnas.errors import StoreError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import STAT_FIELDS, Measurement, MeasurementFailure

SCHEMA_VERSION = 2
"""Version of the layout, in ``PRAGMA user_version`` and ``meta.schema_version``.

1: the first layout. 2: measurements record ``num_classes`` and ``exporter``
(both change the network that was timed), successful measurements are unique
per (arch, device, input shape, classes, exporter), and a ``claims`` table lets
several processes split a campaign instead of doubling it.
"""

#: Failure kinds that belong to the architecture itself: trying again gives the same
#: failure, so they count as "already done" until ``--retry-failed``. Every other kind
#: (runtime, crash, timeout, device) is the device's and is tried again after a cool-down.
PERMANENT_FAILURES = ("build", "export")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS archs (
    id TEXT PRIMARY KEY,
    space TEXT NOT NULL,
    choices TEXT NOT NULL,
    label TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY,
    arch_id TEXT REFERENCES archs(id),
    format TEXT NOT NULL,
    path TEXT NOT NULL,
    input_shapes TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    arch_id TEXT NOT NULL REFERENCES archs(id),
    input_shape TEXT NOT NULL,
    flops INTEGER, macs INTEGER, params INTEGER,
    param_bytes INTEGER, peak_activation_bytes INTEGER,
    extra TEXT,
    PRIMARY KEY (arch_id, input_shape)
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arch_id TEXT NOT NULL REFERENCES archs(id),
    device TEXT NOT NULL REFERENCES devices(name),
    input_shape TEXT NOT NULL,
    artifact_sha256 TEXT,
    campaign TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    failure_kind TEXT,
    reason TEXT,
    source TEXT NOT NULL DEFAULT 'measured',
    median_ms REAL, iqr_ms REAL, p10_ms REAL, p90_ms REAL, mean_ms REAL, std_ms REAL,
    cv REAL, min_ms REAL, max_ms REAL, n INTEGER,
    samples TEXT,
    warmup TEXT,
    settings TEXT,
    environment TEXT,
    extra TEXT,
    created TEXT NOT NULL,
    num_classes INTEGER,
    exporter TEXT,
    dup_of INTEGER
);
CREATE INDEX IF NOT EXISTS measurements_key ON measurements (arch_id, device, input_shape, status);
CREATE INDEX IF NOT EXISTS archs_space ON archs (space);
CREATE TABLE IF NOT EXISTS claims (
    arch_id TEXT NOT NULL,
    device TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    num_classes INTEGER NOT NULL DEFAULT -1,
    exporter TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (arch_id, device, input_shape, num_classes, exporter)
);
"""

#: One successful measurement per experiment; rows marked ``dup_of`` (doubles left by
#: concurrent writers before schema 2) stay readable but are outside the rule.
_UNIQUE_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS measurements_ok_unique ON measurements "
    "(arch_id, device, input_shape, coalesce(num_classes, -1), coalesce(exporter, '')) "
    "WHERE status='ok' AND dup_of IS NULL"
)

_SQLITE_HEADER = b"SQLite format 3\x00"

_STAT_COLUMNS = [f"{f}_ms" if f not in ("cv", "n") else f for f in STAT_FIELDS]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def shape_key(shape: Iterable[int] | None) -> str:
    """Canonical text of an input shape: ``1x3x224x224`` (``-`` when unknown)."""
    return "x".join(str(int(s)) for s in shape) if shape else "-"


@dataclass(frozen=True)
class MeasurementKey:
    """What makes two measurements the same experiment: everything that changes the timed network.

    ``num_classes``/``exporter`` ``None`` means "not recorded" (rows of schema 1,
    imported tables).
    """

    arch_id: str
    device: str
    input_shape: str
    num_classes: int | None = None
    exporter: str | None = None

    @classmethod
    def of(
        cls,
        arch_id: str,
        device: str,
        input_shape: Iterable[int] | str | None,
        num_classes: int | None = None,
        exporter: str | None = None,
    ) -> MeasurementKey:
        shape = input_shape if isinstance(input_shape, str) else shape_key(input_shape)
        return cls(arch_id, device, shape, num_classes, exporter)

    def claim_params(self) -> tuple:
        nc = -1 if self.num_classes is None else int(self.num_classes)
        return (self.arch_id, self.device, self.input_shape, nc, self.exporter or "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is someone else's
        return True
    return True


class Store:
    """A measurement database in one SQLite file.

    Args:
        path: the file (created with its folders if missing); ``":memory:"`` for tests.
        readonly: open with SQLite's ``mode=ro``: nothing is created, migrated or
            switched (commands that only read: export, compare-flops, training
            data). The file must exist.

    Raises:
        StoreError: the file is not an hwnas database (it is left untouched), is
            corrupt, was written by a newer hwnas, or (read-only) does not exist.
    """

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = str(path)
        self.readonly = readonly
        self.notes: list[str] = []
        memory = self.path == ":memory:"
        if not memory:
            p = Path(self.path)
            if p.is_dir():
                raise StoreError(
                    f"--db {p} is a directory; give a file name such as {p / 'hwnas.db'}"
                )
            if readonly and not p.exists():
                raise StoreError(f"no database at {p}; give the --db file a campaign wrote")
            if p.exists() and p.stat().st_size > 0:
                try:
                    with open(p, "rb") as f:
                        head = f.read(16)
                except OSError as exc:
                    raise StoreError(f"cannot read --db {p} ({exc.strerror}); check it") from exc
                if head != _SQLITE_HEADER:
                    raise StoreError(
                        f"{p} is not an hwnas SQLite database (not an SQLite file at all); "
                        "it was left untouched; give another --db file"
                    )
            elif not readonly:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot create the folder of --db {p} ({exc.strerror}); "
                        "give a writable path"
                    ) from exc
        try:
            self.conn = self._connect(readonly and not memory)
            self._check_kind()
            if not self.readonly:
                self._init_schema()
            self._columns = {
                r[1] for r in self.conn.execute("PRAGMA table_info(measurements)").fetchall()
            }
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self.conn.close()
            raise StoreError(
                f"{self.path} is not a usable hwnas SQLite database ({exc}); give another --db file"
            ) from exc

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            conn = sqlite3.connect(self.path, timeout=30.0)
        else:
            uri = Path(self.path).resolve().as_uri()
            try:
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # A WAL store on read-only media without its -shm file: nothing can be
                # writing to it, so read the file as it is.
                conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30.0)
            conn.execute("PRAGMA query_only=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def _check_kind(self) -> None:
        """Refuse, before writing anything, a file that is another program's database
        or a store of a newer hwnas."""
        tables = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if "meta" in tables:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None:
                version = max(version, int(row[0]))
        elif tables - {"sqlite_sequence"}:
            listed = ", ".join(sorted(tables)[:5])
            raise StoreError(
                f"{self.path} is an SQLite database but not an hwnas store (tables: {listed}); "
                "it was left untouched; give another --db file"
            )
        elif self.readonly:
            raise StoreError(
                f"{self.path} is an empty SQLite file, not an hwnas store; give the --db file "
                "a campaign wrote"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer hwnas (store schema {version}; this hwnas "
                f"reads up to {SCHEMA_VERSION}); upgrade hwnas to use it"
            )
        self.schema_version = version or SCHEMA_VERSION

    def _init_schema(self) -> None:
        """Create the tables, or bring a schema-1 store to schema 2, in one transaction."""
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(measurements)")}
            for col, decl in (
                ("num_classes", "INTEGER"),
                ("exporter", "TEXT"),
                ("dup_of", "INTEGER"),
            ):
                if col not in cols:
                    self.conn.execute(f"ALTER TABLE measurements ADD COLUMN {col} {decl}")
            doubles = self._mark_duplicates()
            self.conn.execute(_UNIQUE_INDEX)
            self.conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        self.schema_version = SCHEMA_VERSION
        if doubles:
            self.notes.append(
                f"{self.path}: {doubles} successful measurements doubled an earlier one (written "
                "by concurrent runs of an older hwnas); they are kept and readable (column "
                "dup_of names the row they double) but left out of reads, exports and resumes"
            )

    def _mark_duplicates(self) -> int:
        """Mark every successful row that repeats an earlier one of the same experiment."""
        cur = self.conn.execute(
            "UPDATE measurements SET dup_of = (SELECT min(o.id) FROM measurements o "
            "WHERE o.status='ok' AND o.dup_of IS NULL AND o.arch_id=measurements.arch_id "
            "AND o.device=measurements.device AND o.input_shape=measurements.input_shape "
            "AND coalesce(o.num_classes, -1)=coalesce(measurements.num_classes, -1) "
            "AND coalesce(o.exporter, '')=coalesce(measurements.exporter, '') "
            "AND o.id < measurements.id) "
            "WHERE status='ok' AND dup_of IS NULL AND EXISTS (SELECT 1 FROM measurements o "
            "WHERE o.status='ok' AND o.arch_id=measurements.arch_id "
            "AND o.device=measurements.device AND o.input_shape=measurements.input_shape "
            "AND coalesce(o.num_classes, -1)=coalesce(measurements.num_classes, -1) "
            "AND coalesce(o.exporter, '')=coalesce(measurements.exporter, '') "
            "AND o.id < measurements.id)"
        )
        return cur.rowcount or 0

    # ---- writes: each one commits ---------------------------------------------

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        self._writable()
        with self.conn:  # commits, or rolls back on error
            return self.conn.execute(sql, params)

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only; this command cannot write to it")

    def add_device(self, name: str, info: dict) -> None:
        """Insert a device, or refresh its recorded info."""
        self._write(
            "INSERT INTO devices (name, info, created) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET info=excluded.info",
            (name, json.dumps(info, sort_keys=True, default=str), _now()),
        )

    def add_arch(self, arch: Arch, label: str | None = None) -> str:
        self._write(
            "INSERT OR IGNORE INTO archs (id, space, choices, label, created) VALUES (?, ?, ?, ?, ?)",
            (arch.id, arch.space, json.dumps(list(arch.choices)), label, _now()),
        )
        return arch.id

    def add_artifact(self, artifact: Artifact, arch_id: str | None) -> None:
        self._write(
            "INSERT OR IGNORE INTO artifacts (sha256, arch_id, format, path, input_shapes, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                artifact.sha256,
                arch_id,
                artifact.format,
                artifact.path,
                json.dumps([[n, list(s)] for n, s in artifact.input_shapes]),
                _now(),
            ),
        )

    def set_metrics(
        self,
        arch_id: str,
        input_shape: Iterable[int] | None,
        *,
        flops: int | None = None,
        macs: int | None = None,
        params: int | None = None,
        param_bytes: int | None = None,
        peak_activation_bytes: int | None = None,
        extra: dict | None = None,
    ) -> None:
        """Record static figures of an architecture; ``None`` keeps what was there."""
        self._write(
            "INSERT INTO metrics (arch_id, input_shape, flops, macs, params, param_bytes, "
            "peak_activation_bytes, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(arch_id, input_shape) DO UPDATE SET "
            "flops=coalesce(excluded.flops, flops), macs=coalesce(excluded.macs, macs), "
            "params=coalesce(excluded.params, params), "
            "param_bytes=coalesce(excluded.param_bytes, param_bytes), "
            "peak_activation_bytes=coalesce(excluded.peak_activation_bytes, peak_activation_bytes), "
            "extra=coalesce(excluded.extra, extra)",
            (
                arch_id,
                shape_key(input_shape),
                flops,
                macs,
                params,
                param_bytes,
                peak_activation_bytes,
                json.dumps(extra) if extra else None,
            ),
        )

    def add_measurement(
        self,
        arch_id: str,
        result: Measurement | MeasurementFailure,
        input_shape: Iterable[int] | None,
        *,
        device: str | None = None,
        campaign: str | None = None,
        source: str = "measured",
        num_classes: int | None = None,
        exporter: str | None = None,
    ) -> int:
        """Store a measurement or a failure (with its reason). Commits at once.

        The device row must exist (:meth:`add_device`); it is created with
        empty info otherwise, so imported tables need no device object.

        A successful measurement of an experiment that already has one (another
        process got there first, or ``hwnas profile`` run again) does not become
        a second result: it is kept as a repeat (``dup_of`` = the first row's id,
        read with ``measurements(include_duplicates=True)``) and the first row's
        id is returned.
        """
        self._writable()
        dev = device or result.device
        key = MeasurementKey.of(arch_id, dev, input_shape, num_classes, exporter)
        common = (
            arch_id,
            dev,
            key.input_shape,
            result.artifact_sha256 or None,
            campaign,
            num_classes,
            exporter,
        )
        head = (
            "INSERT INTO measurements (arch_id, device, input_shape, artifact_sha256, campaign, "
            "num_classes, exporter, "
        )
        with self.conn:  # one transaction: commits, or rolls back on error
            self.conn.execute(
                "INSERT OR IGNORE INTO devices (name, info, created) VALUES (?, '{}', ?)",
                (dev, _now()),
            )
            if isinstance(result, MeasurementFailure):
                cur = self.conn.execute(
                    head + "status, failure_kind, reason, source, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?, ?)",
                    (*common, result.kind, result.reason, source, _now()),
                )
                return int(cur.lastrowid)
            stats = result.stats.to_dict()
            cols = ", ".join(_STAT_COLUMNS)
            marks = ", ".join("?" for _ in _STAT_COLUMNS)
            sql = (
                head + f"status, source, {cols}, samples, warmup, settings, environment, "
                f"extra, created, dup_of) VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', ?, {marks}, "
                "?, ?, ?, ?, ?, ?, ?)"
            )
            values = (
                *common,
                source,
                *[stats[f] for f in STAT_FIELDS],
                json.dumps(list(result.samples_ms)),
                json.dumps(list(result.warmup_ms)),
                json.dumps(result.settings, default=str),
                json.dumps(result.environment, default=str),
                json.dumps(result.extra, default=str),
                _now(),
            )
            try:
                cur = self.conn.execute(sql, (*values, None))
                return int(cur.lastrowid)
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
            # The experiment has its result already (another process, or a user who
            # measured it again): keep this one readable as a repeat, outside the rule.
            first = self.conn.execute(
                "SELECT id FROM measurements WHERE status='ok' AND dup_of IS NULL AND "
                + self._key_sql(exact=True),
                self._key_params(key, exact=True),
            ).fetchone()[0]
            self.conn.execute(sql, (*values, first))
            return int(first)

    def add_imported_latency(
        self,
        arch: Arch,
        device: str,
        median_ms: float,
        input_shape: Iterable[int] | None = None,
        campaign: str | None = None,
    ) -> None:
        """A published latency (one figure, no raw samples), marked ``source='imported'``."""
        self.add_arch(arch)
        m = Measurement(samples_ms=(float(median_ms),), device=device, label=arch.id)
        self.add_measurement(arch.id, m, input_shape, campaign=campaign, source="imported")

    def add_imported_many(
        self,
        rows: Iterable[tuple[Arch, float]],
        device: str,
        input_shape: Iterable[int] | None = None,
        campaign: str | None = None,
    ) -> int:
        """Bulk form of :meth:`add_imported_latency`, in one transaction (15k rows in a second)."""
        self._writable()
        now = _now()
        shape = shape_key(input_shape)
        n = 0
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO devices (name, info, created) VALUES (?, '{}', ?)",
                (device, now),
            )
            for arch, ms in rows:
                if self.conn.execute(
                    "SELECT 1 FROM measurements WHERE arch_id=? AND device=? AND input_shape=? "
                    "AND status='ok' AND num_classes IS NULL AND exporter IS NULL "
                    "AND dup_of IS NULL",
                    (arch.id, device, shape),
                ).fetchone():
                    continue
                self.conn.execute(
                    "INSERT OR IGNORE INTO archs (id, space, choices, label, created) VALUES (?, ?, ?, NULL, ?)",
                    (arch.id, arch.space, json.dumps(list(arch.choices)), now),
                )
                self.conn.execute(
                    "INSERT INTO measurements (arch_id, device, input_shape, campaign, status, source, "
                    "median_ms, mean_ms, min_ms, max_ms, n, samples, created) "
                    "VALUES (?, ?, ?, ?, 'ok', 'imported', ?, ?, ?, ?, 1, ?, ?)",
                    (arch.id, device, shape, campaign, ms, ms, ms, ms, json.dumps([ms]), now),
                )
                n += 1
        return n

    # ---- reads ------------------------------------------------------------------

    @staticmethod
    def _key_sql(exact: bool = False, legacy_ok: bool = True, table: str = "") -> str:
        """WHERE text matching a :class:`MeasurementKey` (see :meth:`_key_params`).

        ``exact``: NULL classes/exporter match only NULL (the uniqueness rule).
        Otherwise a requested ``None`` matches anything, and a stored NULL (a row
        of schema 1, which did not record them) matches only when ``legacy_ok``
        (the request equals what schema-1 campaigns used: the space's default
        classes and the default exporter).
        """
        t = table
        base = f"{t}arch_id=? AND {t}device=? AND {t}input_shape=?"
        if exact:
            return base + f" AND coalesce({t}num_classes, -1)=? AND coalesce({t}exporter, '')=?"
        legacy = "1" if legacy_ok else "0"
        return (
            base + f" AND (? IS NULL OR {t}num_classes=? OR ({t}num_classes IS NULL AND {legacy}))"
            f" AND (? IS NULL OR {t}exporter=? OR ({t}exporter IS NULL AND {legacy}))"
        )

    @staticmethod
    def _key_params(key: MeasurementKey, exact: bool = False) -> tuple:
        if exact:
            return key.claim_params()
        return (
            key.arch_id,
            key.device,
            key.input_shape,
            key.num_classes,
            key.num_classes,
            key.exporter,
            key.exporter,
        )

    def _done(
        self,
        key: MeasurementKey,
        include_failed: bool,
        legacy_ok: bool,
        retry_after_s: float | None,
        failed_after_id: int | None = None,
    ) -> bool:
        if "num_classes" not in self._columns:  # a schema-1 store opened read-only
            key = MeasurementKey(key.arch_id, key.device, key.input_shape)
            sql = "SELECT 1 FROM measurements WHERE arch_id=? AND device=? AND input_shape=?"
            params: tuple = key.claim_params()[:3]
            ok = " AND status='ok'"
        else:
            sql = "SELECT 1 FROM measurements WHERE " + self._key_sql(legacy_ok=legacy_ok)
            params = self._key_params(key)
            ok = " AND status='ok' AND dup_of IS NULL"
        if self.conn.execute(sql + ok + " LIMIT 1", params).fetchone() is not None:
            return True
        # failures recorded during this run (rows after failed_after_id) count as done
        if (
            failed_after_id is not None
            and self.conn.execute(
                sql + " AND status='failed' AND id > ? LIMIT 1", (*params, failed_after_id)
            ).fetchone()
        ):
            return True
        if not include_failed:
            return False
        kinds = ", ".join(f"'{k}'" for k in PERMANENT_FAILURES)
        fail_sql = sql + f" AND status='failed' AND (failure_kind IN ({kinds})"
        fail_params = params
        if retry_after_s is None:
            fail_sql += " OR 1"
        else:
            cutoff = _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=float(retry_after_s))
            fail_sql += " OR created > ?"
            fail_params = (*params, cutoff.isoformat(timespec="seconds"))
        return self.conn.execute(fail_sql + ") LIMIT 1", fail_params).fetchone() is not None

    def has_measurement(
        self,
        arch_id: str,
        device: str,
        input_shape: Iterable[int] | None,
        include_failed: bool = True,
        *,
        num_classes: int | None = None,
        exporter: str | None = None,
        legacy_ok: bool = True,
        retry_after_s: float | None = None,
    ) -> bool:
        """Whether this experiment was already run.

        Args:
            num_classes / exporter: ``None`` matches any (see :meth:`_key_sql`).
            include_failed: whether a failure counts as done.
            legacy_ok: whether rows that did not record classes/exporter match.
            retry_after_s: when given, a failure of the device's (runtime, crash,
                timeout) counts only if it is younger than this; failures of the
                architecture (build, export) always count. ``None``: every failure counts.
        """
        key = MeasurementKey.of(arch_id, device, input_shape, num_classes, exporter)
        return self._done(key, include_failed, legacy_ok, retry_after_s)

    # ---- claims: several processes share one campaign ----------------------------

    def claim(
        self,
        key: MeasurementKey,
        owner: str,
        ttl_s: float,
        *,
        include_failed: bool = True,
        legacy_ok: bool = True,
        retry_after_s: float | None = None,
        failed_after_id: int | None = None,
    ) -> str:
        """Reserve an experiment for ``owner`` before measuring it.

        Checked and written in one ``BEGIN IMMEDIATE`` transaction, so two
        processes cannot both get it. A claim lasts ``ttl_s`` seconds; one held by
        a process that is gone (same host, pid not running) is taken over at once,
        so a killed campaign's work is picked up by the next run.

        Returns:
            ``"claimed"`` (go ahead), ``"done"`` (already measured, or a failure
            that counts), or ``"busy"`` (another live process holds it).
        """
        self._writable()
        host = socket.gethostname()
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if self._done(key, include_failed, legacy_ok, retry_after_s, failed_after_id):
                self.conn.commit()
                return "done"
            row = self.conn.execute(
                "SELECT owner, pid, host, expires FROM claims WHERE arch_id=? AND device=? "
                "AND input_shape=? AND num_classes=? AND exporter=?",
                key.claim_params(),
            ).fetchone()
            if (
                row is not None
                and row["owner"] != owner
                and row["expires"] > now
                and (row["host"] != host or _pid_alive(int(row["pid"])))
            ):
                self.conn.commit()
                return "busy"
            self.conn.execute(
                "INSERT OR REPLACE INTO claims (arch_id, device, input_shape, num_classes, "
                "exporter, owner, pid, host, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key.claim_params(), owner, os.getpid(), host, now + ttl_s),
            )
            self.conn.commit()
            return "claimed"
        except BaseException:
            self.conn.rollback()
            raise

    def last_measurement_id(self) -> int:
        """Id of the newest measurement row (0 when empty): rows after it are newer."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM measurements").fetchone()[0])

    def release(self, key: MeasurementKey, owner: str) -> None:
        """Drop ``owner``'s claim (after its result is stored, or when it gives up)."""
        self._write(
            "DELETE FROM claims WHERE arch_id=? AND device=? AND input_shape=? "
            "AND num_classes=? AND exporter=? AND owner=?",
            (*key.claim_params(), owner),
        )

    def metrics(
        self, arch_id: str, input_shape: Iterable[int] | str | None
    ) -> dict[str, Any] | None:
        """The static figures recorded by :meth:`set_metrics` (``None`` if there are none)."""
        shape = input_shape if isinstance(input_shape, str) else shape_key(input_shape)
        row = self.conn.execute(
            "SELECT * FROM metrics WHERE arch_id=? AND input_shape=?", (arch_id, shape)
        ).fetchone()
        return dict(row) if row is not None else None

    def devices(self) -> list[dict]:
        return [
            {"name": r["name"], "info": self._json(r["info"], {}, "info"), "created": r["created"]}
            for r in self.conn.execute("SELECT * FROM devices ORDER BY name")
        ]

    def arch(self, arch_id: str) -> Arch:
        row = self.conn.execute(
            "SELECT space, choices FROM archs WHERE id=?", (arch_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no architecture with id {arch_id} in {self.path}")
        return Arch(row["space"], tuple(self._json(row["choices"], {"id": arch_id}, "choices")))

    def measurements(
        self,
        device: str | None = None,
        space: str | None = None,
        status: str | None = "ok",
        campaign: str | None = None,
        with_samples: bool = False,
        include_duplicates: bool = False,
    ) -> list[dict[str, Any]]:
        """Measurements joined with their architecture and static metrics, as plain dicts.

        Rows marked as doubles of an earlier measurement (``dup_of``, see
        :meth:`_mark_duplicates`) are left out unless ``include_duplicates``.
        """
        where, params = [], []
        if "dup_of" in self._columns and not include_duplicates:
            where.append("m.dup_of IS NULL")
        for col, val in (
            ("m.device", device),
            ("a.space", space),
            ("m.status", status),
            ("m.campaign", campaign),
        ):
            if val is not None:
                where.append(f"{col}=?")
                params.append(val)
        sql = (
            "SELECT m.*, a.space, a.choices, a.label, x.flops, x.macs, x.params, x.param_bytes, "
            "x.peak_activation_bytes FROM measurements m JOIN archs a ON a.id=m.arch_id "
            "LEFT JOIN metrics x ON x.arch_id=m.arch_id AND x.input_shape=m.input_shape"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.id"
        out = []
        for r in self.conn.execute(sql, params):
            d = dict(r)
            d["choices"] = self._json(d["choices"], d, "choices")
            for k in ("settings", "environment", "extra", "samples", "warmup"):
                if k in d:
                    if with_samples or k not in ("samples", "warmup", "environment"):
                        d[k] = self._json(d[k], d, k) if d[k] else None
                    else:
                        d.pop(k)
            out.append(d)
        return out

    def _json(self, text: str, row: dict, column: str) -> Any:
        try:
            return json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise StoreError(
                f"{self.path}: measurement {row.get('id')} has unreadable JSON in column "
                f"'{column}' ({exc}); repair or delete that row"
            ) from None

    def counts(self) -> dict[str, int]:
        q = self.conn.execute
        return {
            "devices": q("SELECT count(*) FROM devices").fetchone()[0],
            "archs": q("SELECT count(*) FROM archs").fetchone()[0],
            "measurements_ok": q(
                "SELECT count(*) FROM measurements WHERE status='ok'"
                + (" AND dup_of IS NULL" if "dup_of" in self._columns else "")
            ).fetchone()[0],
            "measurements_failed": q(
                "SELECT count(*) FROM measurements WHERE status='failed'"
            ).fetchone()[0],
        }

    # ---- export -----------------------------------------------------------------

    EXPORT_COLUMNS = (
        "arch_id", "space", "choices", "label", "device", "input_shape", "status", "failure_kind",
        "reason", "source", *_STAT_COLUMNS, "flops", "macs", "params", "param_bytes",
        "peak_activation_bytes", "campaign", "created",
    )  # fmt: skip

    def export_csv(self, path: str | Path, **filters: Any) -> int:
        """Write measurements as CSV (no pandas needed to read them). Returns rows written."""
        rows = self.measurements(status=filters.pop("status", None), **filters)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.EXPORT_COLUMNS)
            for r in rows:
                w.writerow(
                    [json.dumps(r[c]) if c == "choices" else r.get(c) for c in self.EXPORT_COLUMNS]
                )
        return len(rows)

    def export_json(self, path: str | Path, **filters: Any) -> int:
        """Write measurements with raw samples and environments as JSON."""
        rows = self.measurements(status=filters.pop("status", None), with_samples=True, **filters)
        Path(path).write_text(
            json.dumps({"devices": self.devices(), "measurements": rows}, indent=1, default=str)
        )
        return len(rows)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
