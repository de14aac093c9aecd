"""How far a store's measurements can be trusted: canary series, flags, repeatability.

Kept beside the main schema (``sqlite.py``) in tables of its own, created
with ``CREATE TABLE IF NOT EXISTS`` only on write paths (:func:`ensure`): a
read-only command (``export``, ``compare-flops``, ``eval-predictor``) on a
database that never ran a canary finds no table and reads nothing, instead of
writing to a file it was only asked to read.

* ``canary``: every measurement of the reference model during a campaign, its
  drift against the campaign's first (baseline) canary, and the last
  measurement row id at that moment: rows with an id between the last good
  canary and a drifted one were taken under the same conditions.
* ``measurement_flags``: one row per flagged measurement (``interference``:
  the guard saw a busy machine; ``canary``: the canary drifted). ``state`` is
  ``pending`` until the row is measured again, then ``remeasured`` with the
  original median kept in ``original_median_ms``. A re-measurement replaces
  the measurement row's figures in place, so a row is never doubled.
* ``repeatability``: re-measured random subsets, as agreement figures.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from typing import Any

from hwnas.profilers.latency import STAT_FIELDS, Measurement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS canary (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign TEXT NOT NULL, device TEXT NOT NULL, model TEXT NOT NULL,
    median_ms REAL NOT NULL, baseline_ms REAL NOT NULL, drift REAL NOT NULL,
    ok INTEGER NOT NULL, last_measurement_id INTEGER NOT NULL,
    samples TEXT, environment TEXT, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS measurement_flags (
    measurement_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, reason TEXT, canary_id INTEGER,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'remeasured')),
    original_median_ms REAL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repeatability (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, input_shape TEXT, campaign TEXT, n INTEGER NOT NULL,
    within5 REAL, within10 REAL, spearman REAL, pairs TEXT, created TEXT NOT NULL
);
"""

_STAT_COLUMNS = [f"{f}_ms" if f not in ("cv", "n") else f for f in STAT_FIELDS]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def ensure(conn: sqlite3.Connection) -> None:
    """Create this module's tables (write paths only)."""
    conn.executescript(_SCHEMA)


def has_tables(conn: sqlite3.Connection) -> bool:
    """Whether the quality tables exist (read paths check this instead of creating them)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='measurement_flags'"
    ).fetchone()
    return row is not None


def last_measurement_id(conn: sqlite3.Connection, device: str, campaign: str) -> int:
    row = conn.execute(
        "SELECT max(id) FROM measurements WHERE device=? AND campaign=?", (device, campaign)
    ).fetchone()
    return int(row[0] or 0)


# ---- canary ------------------------------------------------------------------------


def add_canary(
    conn: sqlite3.Connection,
    *,
    campaign: str,
    device: str,
    model: str,
    m: Measurement,
    baseline_ms: float,
    drift: float,
    ok: bool,
    rows_device: str | None = None,
) -> int:
    """Store one canary measurement (one commit; the row exists whole or not at all).

    Args:
        device: the series the canary belongs to (the stored device name; one
            member of a Ray farm sharing that name has a series of its own).
        rows_device: the device name of the measurement rows it vouches for
            (default ``device``).
    """
    ensure(conn)
    with conn:
        cur = conn.execute(
            "INSERT INTO canary (campaign, device, model, median_ms, baseline_ms, drift, ok, "
            "last_measurement_id, samples, environment, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                campaign,
                device,
                model,
                m.median,
                baseline_ms,
                drift,
                int(ok),
                last_measurement_id(conn, rows_device or device, campaign),
                json.dumps(list(m.samples_ms)),
                json.dumps(m.environment, default=str),
                _now(),
            ),
        )
    return int(cur.lastrowid)


def canary_series(
    conn: sqlite3.Connection, device: str | None = None, campaign: str | None = None
) -> list[dict]:
    """The canary rows (oldest first); empty when the store never ran one."""
    if not has_tables(conn):
        return []
    sql, params = "SELECT * FROM canary WHERE 1=1", []
    if device is not None:
        sql += " AND device=?"
        params.append(device)
    if campaign is not None:
        sql += " AND campaign=?"
        params.append(campaign)
    return [dict(r) | {"samples": None} for r in conn.execute(sql + " ORDER BY id", params)]


# ---- flags -------------------------------------------------------------------------


def flag(
    conn: sqlite3.Connection,
    measurement_ids: list[int],
    kind: str,
    reason: str,
    canary_id: int | None = None,
) -> int:
    """Flag measurement rows (already-flagged pending rows keep their first reason)."""
    ensure(conn)
    with conn:
        for mid in measurement_ids:
            conn.execute(
                "INSERT INTO measurement_flags (measurement_id, kind, reason, canary_id, state, created) "
                "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT(measurement_id) DO UPDATE SET "
                "state='pending', kind=excluded.kind, reason=excluded.reason, canary_id=excluded.canary_id "
                "WHERE state='remeasured'",
                (mid, kind, reason, canary_id, _now()),
            )
    return len(measurement_ids)


def _owned(ids: list[int], only: set[int] | None) -> list[int]:
    return ids if only is None else [i for i in ids if i in only]


def flag_since_good_canary(
    conn: sqlite3.Connection,
    *,
    device: str,
    campaign: str,
    canary_id: int,
    reason: str,
    rows_device: str | None = None,
    only: set[int] | None = None,
) -> list[int]:
    """Flag the rows measured after the last good canary up to the drifted ``canary_id``.

    ``device`` names the canary series, ``rows_device`` (default ``device``) the
    measurement rows; ``only`` restricts the flags to these row ids (the rows one
    member of a device farm measured, when several share a stored name).
    """
    row = conn.execute("SELECT last_measurement_id FROM canary WHERE id=?", (canary_id,)).fetchone()
    upto = int(row[0])
    good = conn.execute(
        "SELECT max(last_measurement_id) FROM canary WHERE device=? AND campaign=? AND ok=1 AND id<?",
        (device, campaign, canary_id),
    ).fetchone()
    since = int(good[0] or 0)
    ids = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM measurements WHERE device=? AND campaign=? AND status='ok' "
            "AND id>? AND id<=? ORDER BY id",
            (rows_device or device, campaign, since, upto),
        )
    ]
    ids = _owned(ids, only)
    flag(conn, ids, "canary", reason, canary_id)
    return ids


def flag_upto(
    conn: sqlite3.Connection,
    *,
    device: str,
    campaign: str,
    canary_id: int,
    reason: str,
    rows_device: str | None = None,
    only: set[int] | None = None,
) -> list[int]:
    """Flag every ok row of the campaign measured before ``canary_id`` (a re-based baseline);
    ``rows_device`` and ``only`` as in :func:`flag_since_good_canary`."""
    row = conn.execute("SELECT last_measurement_id FROM canary WHERE id=?", (canary_id,)).fetchone()
    ids = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM measurements WHERE device=? AND campaign=? AND status='ok' AND id<=? "
            "ORDER BY id",
            (rows_device or device, campaign, int(row[0])),
        )
    ]
    ids = _owned(ids, only)
    flag(conn, ids, "canary", reason, canary_id)
    return ids


def pending(conn: sqlite3.Connection, device: str, campaign: str | None = None) -> list[dict]:
    """Flagged rows not yet re-measured (with their arch id and input shape)."""
    if not has_tables(conn):
        return []
    sql = (
        "SELECT f.measurement_id, f.kind, m.arch_id, m.input_shape FROM measurement_flags f "
        "JOIN measurements m ON m.id=f.measurement_id WHERE f.state='pending' AND m.device=?"
    )
    params: list[Any] = [device]
    if campaign is not None:
        sql += " AND m.campaign=?"
        params.append(campaign)
    return [dict(r) for r in conn.execute(sql + " ORDER BY f.measurement_id", params)]


def replace_measurement(conn: sqlite3.Connection, measurement_id: int, m: Measurement) -> None:
    """Put a re-measurement's figures into the flagged row and mark the flag done, in one commit.

    Done in place so that the row count never changes: a campaign killed
    between the two halves cannot exist (one transaction), and one killed
    before it re-measures the row again on resume.
    """
    stats = m.stats.to_dict()
    sets = ", ".join(f"{c}=?" for c in _STAT_COLUMNS)
    env = dict(m.environment or {})
    with conn:
        old = conn.execute(
            "SELECT median_ms FROM measurements WHERE id=?", (measurement_id,)
        ).fetchone()
        conn.execute(
            f"UPDATE measurements SET {sets}, samples=?, warmup=?, environment=? WHERE id=?",
            (
                *[stats[f] for f in STAT_FIELDS],
                json.dumps(list(m.samples_ms)),
                json.dumps(list(m.warmup_ms)),
                json.dumps(env, default=str),
                measurement_id,
            ),
        )
        conn.execute(
            "UPDATE measurement_flags SET state='remeasured', original_median_ms=? "
            "WHERE measurement_id=? AND state='pending'",
            (old[0] if old else None, measurement_id),
        )


def flag_states(conn: sqlite3.Connection) -> dict[int, str]:
    """measurement id -> ``pending``/``remeasured`` (empty when nothing was ever flagged)."""
    if not has_tables(conn):
        return {}
    return {
        int(r[0]): r[1] for r in conn.execute("SELECT measurement_id, state FROM measurement_flags")
    }


def pending_kinds(conn: sqlite3.Connection) -> dict[int, str]:
    """measurement id -> flag kind (``canary``/``interference``) of rows still flagged.

    Read-only, like :func:`flag_states`: the readers of training data
    (:func:`hwnas.predictors.data.load_store`) leave these rows out by default.
    """
    if not has_tables(conn):
        return {}
    return {
        int(r[0]): str(r[1])
        for r in conn.execute(
            "SELECT measurement_id, kind FROM measurement_flags WHERE state='pending'"
        )
    }


# ---- filtering and normalising rows for export / compare-flops ----------------------


def apply_quality(
    conn: sqlite3.Connection, rows: list[dict], *, flagged: str = "keep", normalize: str = "none"
) -> tuple[list[dict], str]:
    """Leave out still-flagged rows and/or normalise medians by the canary.

    Args:
        rows: :meth:`Store.measurements` rows (need ``id``, ``device``, ``campaign``).
        flagged: ``keep`` or ``drop`` (rows whose flag is still pending).
        normalize: ``none`` or ``canary``: each row's latency columns are
            scaled by baseline / (the canary closest before it), so a slow
            stretch of the machine is divided out.

    Returns:
        (rows, a sentence saying what was done, for printing beside the figures).
    """
    states = flag_states(conn)
    notes = []
    if flagged == "drop":
        before = len(rows)
        rows = [r for r in rows if states.get(int(r["id"])) != "pending"]
        notes.append(f"left out {before - len(rows)} flagged rows (interference or canary drift)")
    else:
        n = sum(1 for r in rows if states.get(int(r["id"])) == "pending")
        notes.append(f"kept {n} flagged rows (--flagged drop leaves them out)")
    if normalize == "canary":
        series: dict[tuple[str, str], list[dict]] = {}
        for c in canary_series(conn):
            series.setdefault((c["device"], c["campaign"]), []).append(c)
        scaled = 0
        out = []
        for r in rows:
            cs = series.get((r.get("device"), r.get("campaign")))
            if not cs:
                out.append(r)
                continue
            # the canary taken last before this row (or the first one), against the
            # campaign's final baseline (a baseline re-based when found slow)
            ref = cs[0]
            for c in cs:
                if c["last_measurement_id"] < int(r["id"]):
                    ref = c
            base = cs[-1]["baseline_ms"]
            f = base / ref["median_ms"] if ref["median_ms"] > 0 else 1.0
            r = dict(r)
            for col in _STAT_COLUMNS:
                if col.endswith("_ms") and r.get(col) is not None:
                    r[col] = r[col] * f
            out.append(r)
            scaled += 1
        rows = out
        notes.append(
            f"normalised {scaled} rows by their campaign's canary (baseline / nearest canary)"
        )
    else:
        notes.append("latencies as measured (--normalize canary divides out canary drift)")
    return rows, "; ".join(notes)


# ---- repeatability -----------------------------------------------------------------


def add_repeatability(
    conn: sqlite3.Connection,
    *,
    device: str,
    input_shape: str | None,
    campaign: str | None,
    result: dict[str, Any],
) -> int:
    """Store one repeat-vs-repeat agreement (write path: creates the tables if needed)."""
    ensure(conn)
    with conn:
        cur = conn.execute(
            "INSERT INTO repeatability (device, input_shape, campaign, n, within5, within10, "
            "spearman, pairs, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                device,
                input_shape,
                campaign,
                result["n"],
                result["within5"],
                result["within10"],
                result["spearman"],
                json.dumps(result.get("pairs", [])),
                _now(),
            ),
        )
    return int(cur.lastrowid)


def latest_repeatability(conn: sqlite3.Connection, device: str) -> dict | None:
    """The newest repeatability figures stored for ``device`` (None when there are none)."""
    if not has_tables(conn):
        return None
    row = conn.execute(
        "SELECT device, input_shape, campaign, n, within5, within10, spearman, created "
        "FROM repeatability WHERE device=? ORDER BY id DESC LIMIT 1",
        (device,),
    ).fetchone()
    return dict(row) if row else None


def ceiling_line(db: str, device: str) -> str | None:
    """One line for ``hwnas eval-predictor``: the device's measured noise ceiling, if stored.

    Opens the file read-only (``mode=ro``): evaluating a predictor never writes.
    """
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    conn.row_factory = sqlite3.Row
    try:
        r = latest_repeatability(conn, device)
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if r is None:
        return None
    return (
        f"noise ceiling on {device} (repeat vs repeat, {r['n']} archs, {r['created']}): "
        f"+-5% {r['within5']:.1%}, +-10% {r['within10']:.1%}, Spearman {r['spearman']:.3f}; "
        "a predictor cannot beat the agreement of the data with itself"
    )
