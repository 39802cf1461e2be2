"""The shadow's rows: ``shadow_results`` (one per judged frame) and ``shadow_sessions``.

Migration 050 made both. A result row sits beside the active model's under the same
inspection (``seq``, ``inspection_id``); retention deletes it with the inspection, by
seq range (:func:`~kanjian.station.retention_ops.delete_rows`). The open session
(``ended_at`` NULL) is the current shadow; its counters are written every few seconds
and when it ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from kanjian.station.records import utc_iso
from kanjian.station.shadow.protocol import ShadowResult

#: one result row, written only if its inspection still exists (read by its id)
_INSERT = (
    "INSERT OR IGNORE INTO shadow_results (seq, model_sha256, inspection_id, verdict, reason, "
    "top_class, top_confidence, score, detections_json, probs_json, latency_ms, judged_at) "
    "SELECT seq, ?, id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM inspections WHERE id = ?"
)


@dataclass
class Counters:
    """What happened to the frames offered to a shadow session (since it started).

    Attributes:
        offered: inspections the active model judged (PASS / FAIL / REVIEW with pixels)
            while this shadow was loaded.
        judged: of those, the ones the shadow judged (a ``shadow_results`` row each).
        skipped: the ones it never saw: a newer frame took their place while the child
            was busy, starting or restarting (sampling).
        errors: frames lost to a child that died, hung or answered nonsense, and child
            starts that failed.
    """

    offered: int = 0
    judged: int = 0
    skipped: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Session:
    """One ``shadow_sessions`` row: a shadow model loaded from ``started_at`` on."""

    id: int
    model_sha256: str
    started_at: str
    started_by: str
    counters: Counters


def result_args(sha: str, r: ShadowResult, judged_at: str) -> tuple[object, ...]:
    """``_INSERT``'s parameters for one result of model ``sha``."""
    return (
        sha,
        r.verdict,
        r.reason,
        r.top_class,
        r.top_confidence,
        r.score,
        json.dumps([list(d) for d in r.detections]),
        None if r.probs is None else json.dumps(list(r.probs)),
        r.latency_ms,
        judged_at,
        r.inspection_id,
    )


def write_results(db: sqlite_utils.Database, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert result rows (:func:`result_args`) inside the caller's transaction; a row whose
    inspection retention already deleted is not written."""
    if rows:
        db.conn.executemany(_INSERT, rows)


def open_session(db: sqlite_utils.Database) -> Session | None:
    """The current shadow's session (``ended_at`` NULL), if any."""
    row = db.execute(
        "SELECT id, model_sha256, started_at, started_by, offered, judged, skipped, errors "
        "FROM shadow_sessions WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return Session(int(row[0]), str(row[1]), str(row[2]), str(row[3]), Counters(*row[4:8]))


def start_session(db: sqlite_utils.Database, sha: str, by: str) -> Session:
    """Open a session for model ``sha`` (inside the caller's transaction)."""
    at = utc_iso()
    cur = db.execute(
        "INSERT INTO shadow_sessions (model_sha256, started_at, started_by) VALUES (?, ?, ?)",
        [sha, at, by],
    )
    return Session(int(cur.lastrowid or 0), sha, at, by, Counters())


def save_counters(db: sqlite_utils.Database, session_id: int, c: Counters) -> None:
    db.execute(
        "UPDATE shadow_sessions SET offered = ?, judged = ?, skipped = ?, errors = ? WHERE id = ?",
        [c.offered, c.judged, c.skipped, c.errors, session_id],
    )


def end_session(
    db: sqlite_utils.Database, session_id: int, by: str, reason: str, c: Counters
) -> None:
    """Close a session with its last counters (inside the caller's transaction)."""
    save_counters(db, session_id, c)
    db.execute(
        "UPDATE shadow_sessions SET ended_at = ?, ended_by = ?, end_reason = ? "
        "WHERE id = ? AND ended_at IS NULL",
        [utc_iso(), by, reason, session_id],
    )
