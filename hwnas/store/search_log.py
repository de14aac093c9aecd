"""The search log: search runs, their records and verifications, in the store's SQLite file.

A search commits every record as it is evaluated (and every verification on
the device as it is made) so that re-running the same command resumes it; see
:meth:`hwnas.searchers.base.Searcher.run`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.arch import Arch
from hwnas.errors import StoreError
from hwnas.objectives.terms import Terms

if TYPE_CHECKING:
    from hwnas.searchers.base import Record

_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS search_runs (
    run_id TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    space TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    final TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS search_records (
    run_id TEXT NOT NULL REFERENCES search_runs(run_id),
    step INTEGER NOT NULL,
    arch_id TEXT NOT NULL,
    choices TEXT NOT NULL,
    arch TEXT NOT NULL,
    origin TEXT NOT NULL,
    info TEXT,
    accuracy REAL, latency_ms REAL, peak_activation_bytes INTEGER, param_bytes INTEGER,
    memory_bytes INTEGER, reward REAL, feasible INTEGER NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0,
    terms TEXT NOT NULL,
    elapsed_s REAL,
    created TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS search_verifications (
    run_id TEXT NOT NULL REFERENCES search_runs(run_id),
    seq INTEGER NOT NULL,
    arch_id TEXT NOT NULL,
    arch TEXT NOT NULL,
    device TEXT NOT NULL,
    after_step INTEGER NOT NULL,
    predicted_ms REAL, lower_ms REAL, upper_ms REAL, measured_ms REAL,
    status TEXT NOT NULL,
    new_measurement INTEGER NOT NULL,
    reason TEXT,
    created TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _real(v: Any) -> Any:
    """SQLite REAL column value: inf/nan stored as NULL (the JSON terms keep them)."""
    return v if v is None or not isinstance(v, float) or math.isfinite(v) else None


class SearchLog:
    """Search runs and their records, in tables of their own inside the store's SQLite file.

    A second connection to the same file as :class:`~hwnas.store.Store`
    (WAL mode lets both write); every record commits as it arrives.

    Args:
        path: the ``--db`` file; ``":memory:"`` for a throw-away log.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if p.is_dir():
                raise StoreError(f"--db {p} is a directory; give a file such as {p / 'hwnas.db'}")
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_LOG_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not an hwnas SQLite database ({exc}); give another --db file"
            ) from exc

    def open_run(self, run_id: str, algorithm: str, space: str, seed: int, config: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO search_runs (run_id, algorithm, space, seed, config, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    algorithm,
                    space,
                    int(seed),
                    json.dumps(config, sort_keys=True),
                    _now(),
                    _now(),
                ),
            )

    def append(self, run_id: str, rec: Record) -> None:
        t = rec.terms
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO search_records (run_id, step, arch_id, choices, arch, origin, "
                "info, accuracy, latency_ms, peak_activation_bytes, param_bytes, memory_bytes, reward, "
                "feasible, repeat, terms, elapsed_s, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    rec.step,
                    rec.arch.id,
                    json.dumps(list(rec.arch.choices)),
                    rec.arch_str,
                    rec.origin,
                    json.dumps(rec.info, default=str),
                    _real(t.accuracy),
                    _real(t.latency_ms),
                    t.peak_activation_bytes,
                    t.param_bytes,
                    t.memory_bytes,
                    _real(t.reward),
                    int(t.feasible),
                    int(rec.repeat),
                    json.dumps(t.to_dict(), default=str),
                    rec.elapsed_s,
                    _now(),
                ),
            )
            self.conn.execute("UPDATE search_runs SET updated=? WHERE run_id=?", (_now(), run_id))

    def add_verification(self, run_id: str, seq: int, row: dict[str, Any]) -> None:
        """One verification of a run (``seq`` orders them); a replayed one is not written twice."""
        cols = [
            "arch_id",
            "arch",
            "device",
            "after_step",
            "predicted_ms",
            "lower_ms",
            "upper_ms",
            "measured_ms",
            "status",
            "new_measurement",
            "reason",
        ]
        with self.conn:
            self.conn.execute(
                f"INSERT OR IGNORE INTO search_verifications (run_id, seq, {', '.join(cols)}, created) "
                f"VALUES (?, ?, {', '.join('?' for _ in cols)}, ?)",
                (run_id, int(seq), *[_real(row.get(c)) for c in cols], _now()),
            )

    def verifications(self, run_id: str) -> list[dict[str, Any]]:
        """The verifications of a run, in order."""
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT * FROM search_verifications WHERE run_id=? ORDER BY seq", (run_id,)
            )
        ]

    def set_final(self, run_id: str, final: dict | None) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE search_runs SET final=?, updated=? WHERE run_id=?",
                (json.dumps(final, default=str) if final is not None else None, _now(), run_id),
            )

    def records(self, run_id: str, space: str) -> list[Record]:
        from hwnas.searchers.base import Record

        out = []
        for r in self.conn.execute(
            "SELECT * FROM search_records WHERE run_id=? ORDER BY step", (run_id,)
        ):
            out.append(
                Record(
                    step=int(r["step"]),
                    arch=Arch(space, tuple(json.loads(r["choices"]))),
                    arch_str=r["arch"],
                    terms=Terms.from_dict(json.loads(r["terms"])),
                    origin=r["origin"],
                    info=json.loads(r["info"]) if r["info"] else {},
                    repeat=bool(r["repeat"]),
                    elapsed_s=float(r["elapsed_s"] or 0.0),
                )
            )
        # Steps are contiguous from 0 unless the file was edited; replay only the prefix.
        prefix = []
        for i, rec in enumerate(out):
            if rec.step != i:
                break
            prefix.append(rec)
        return prefix

    def runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT r.*, (SELECT count(*) FROM search_records s WHERE s.run_id=r.run_id) AS n "
            "FROM search_runs r ORDER BY created"
        ).fetchall()
        return [
            {
                **dict(r),
                "config": json.loads(r["config"]),
                "final": json.loads(r["final"]) if r["final"] else None,
            }
            for r in rows
        ]

    def close(self) -> None:
        self.conn.close()
