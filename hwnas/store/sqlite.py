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

import csv
import datetime as _dt
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hwnas.arch import Arch
from hwnas.errors import StoreError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import STAT_FIELDS, Measurement, MeasurementFailure

SCHEMA_VERSION = 1

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
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_key ON measurements (arch_id, device, input_shape, status);
CREATE INDEX IF NOT EXISTS archs_space ON archs (space);
"""

_STAT_COLUMNS = [f"{f}_ms" if f not in ("cv", "n") else f for f in STAT_FIELDS]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def shape_key(shape: Iterable[int] | None) -> str:
    """Canonical text of an input shape: ``1x3x224x224`` (``-`` when unknown)."""
    return "x".join(str(int(s)) for s in shape) if shape else "-"


class Store:
    """A measurement database in one SQLite file.

    Args:
        path: the file (created with its folders if missing); ``":memory:"`` for tests.

    Raises:
        StoreError: the file exists but is not an hwnas database (or is corrupt).
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if p.is_dir():
                raise StoreError(
                    f"--db {p} is a directory; give a file name such as {p / 'hwnas.db'}"
                )
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(_SCHEMA)
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                self.conn.commit()
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer hwnas (schema {row[0]}); upgrade hwnas"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not an hwnas SQLite database ({exc}); give another --db file"
            ) from exc

    # ---- writes: each one commits ---------------------------------------------

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        with self.conn:  # commits, or rolls back on error
            return self.conn.execute(sql, params)

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
    ) -> int:
        """Store a measurement or a failure (with its reason). Commits at once.

        The device row must exist (:meth:`add_device`); it is created with
        empty info otherwise, so imported tables need no device object.
        """
        dev = device or result.device
        self._write(
            "INSERT OR IGNORE INTO devices (name, info, created) VALUES (?, '{}', ?)", (dev, _now())
        )
        common = (arch_id, dev, shape_key(input_shape), result.artifact_sha256 or None, campaign)
        if isinstance(result, MeasurementFailure):
            cur = self._write(
                "INSERT INTO measurements (arch_id, device, input_shape, artifact_sha256, campaign, "
                "status, failure_kind, reason, source, created) VALUES (?, ?, ?, ?, ?, 'failed', ?, ?, ?, ?)",
                (*common, result.kind, result.reason, source, _now()),
            )
            return int(cur.lastrowid)
        stats = result.stats.to_dict()
        cols = ", ".join(_STAT_COLUMNS)
        marks = ", ".join("?" for _ in _STAT_COLUMNS)
        cur = self._write(
            f"INSERT INTO measurements (arch_id, device, input_shape, artifact_sha256, campaign, "
            f"status, source, {cols}, samples, warmup, settings, environment, extra, created) "
            f"VALUES (?, ?, ?, ?, ?, 'ok', ?, {marks}, ?, ?, ?, ?, ?, ?)",
            (
                *common,
                source,
                *[stats[f] for f in STAT_FIELDS],
                json.dumps(list(result.samples_ms)),
                json.dumps(list(result.warmup_ms)),
                json.dumps(result.settings, default=str),
                json.dumps(result.environment, default=str),
                json.dumps(result.extra, default=str),
                _now(),
            ),
        )
        return int(cur.lastrowid)

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
                    "SELECT 1 FROM measurements WHERE arch_id=? AND device=? AND input_shape=? AND status='ok'",
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

    def has_measurement(
        self,
        arch_id: str,
        device: str,
        input_shape: Iterable[int] | None,
        include_failed: bool = True,
    ) -> bool:
        """Whether this experiment was already run (a failure counts unless ``include_failed=False``)."""
        sql = "SELECT 1 FROM measurements WHERE arch_id=? AND device=? AND input_shape=?"
        if not include_failed:
            sql += " AND status='ok'"
        return (
            self.conn.execute(sql, (arch_id, device, shape_key(input_shape))).fetchone() is not None
        )

    def metrics(self, arch_id: str, input_shape: Iterable[int] | str | None) -> dict[str, Any] | None:
        """The static figures recorded by :meth:`set_metrics` (``None`` if there are none)."""
        shape = input_shape if isinstance(input_shape, str) else shape_key(input_shape)
        row = self.conn.execute(
            "SELECT * FROM metrics WHERE arch_id=? AND input_shape=?", (arch_id, shape)
        ).fetchone()
        return dict(row) if row is not None else None

    def devices(self) -> list[dict]:
        return [
            {"name": r["name"], "info": json.loads(r["info"]), "created": r["created"]}
            for r in self.conn.execute("SELECT * FROM devices ORDER BY name")
        ]

    def arch(self, arch_id: str) -> Arch:
        row = self.conn.execute(
            "SELECT space, choices FROM archs WHERE id=?", (arch_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no architecture with id {arch_id} in {self.path}")
        return Arch(row["space"], tuple(json.loads(row["choices"])))

    def measurements(
        self,
        device: str | None = None,
        space: str | None = None,
        status: str | None = "ok",
        campaign: str | None = None,
        with_samples: bool = False,
    ) -> list[dict[str, Any]]:
        """Measurements joined with their architecture and static metrics, as plain dicts."""
        where, params = [], []
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
            d["choices"] = json.loads(d["choices"])
            for k in ("settings", "environment", "extra", "samples", "warmup"):
                if k in d:
                    if with_samples or k not in ("samples", "warmup", "environment"):
                        d[k] = json.loads(d[k]) if d[k] else None
                    else:
                        d.pop(k)
            out.append(d)
        return out

    def counts(self) -> dict[str, int]:
        q = self.conn.execute
        return {
            "devices": q("SELECT count(*) FROM devices").fetchone()[0],
            "archs": q("SELECT count(*) FROM archs").fetchone()[0],
            "measurements_ok": q("SELECT count(*) FROM measurements WHERE status='ok'").fetchone()[
                0
            ],
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
