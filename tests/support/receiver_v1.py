"""The reference receiver's database writer as release 62f750c shipped it, kept frozen.

Not a test: ``tests/test_platform_schema.py`` writes a PostgreSQL database with this
code, exactly as receivers of that release wrote theirs (schema "v1": times as text,
detections only inside ``payload_json``), and then runs the platform's migrations on
it. Copied from ``git show 62f750c:platform/receiver_db.py``: the DDL and the
writing half (``store``, ``record_event``, ``record_availability``), unchanged but
for this docstring and the reading half (gaps, report) left out. Never edit it to
follow the live code: its point is to stay what was released.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanjian.station.records import utc_iso

_DDL = [
    """CREATE TABLE IF NOT EXISTS inspections (
        inspection_id TEXT PRIMARY KEY, site TEXT NOT NULL, line TEXT NOT NULL,
        station TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
        captured_at TEXT, judged_at TEXT, verdict TEXT NOT NULL, reason TEXT,
        model_name TEXT, model_version TEXT, model_sha256 TEXT, num_detections INTEGER,
        image_bucket TEXT, image_key TEXT, received_at TEXT NOT NULL, payload_json TEXT,
        score DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS inspections_stream_seq ON inspections(stream, seq)",
    "CREATE INDEX IF NOT EXISTS inspections_station ON inspections(site, line, station)",
    """CREATE TABLE IF NOT EXISTS streams (
        stream TEXT PRIMARY KEY, site TEXT NOT NULL, line TEXT NOT NULL, station TEXT NOT NULL,
        through BIGINT NOT NULL DEFAULT 0, max_seq BIGINT NOT NULL DEFAULT 0,
        received BIGINT NOT NULL DEFAULT 0, duplicates BIGINT NOT NULL DEFAULT 0,
        first_seen TEXT, last_seen TEXT)""",
    """CREATE TABLE IF NOT EXISTS lost (
        stream TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
        reported_at TEXT, PRIMARY KEY (stream, first_seq))""",
    """CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY, site TEXT, line TEXT, station TEXT, event TEXT NOT NULL,
        at TEXT, payload_json TEXT, received_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS stations (
        site TEXT NOT NULL, line TEXT NOT NULL, station TEXT NOT NULL, availability TEXT,
        updated_at TEXT, PRIMARY KEY (site, line, station))""",
]


#: ``(table, column, SQL type)`` added after the tables were first made, in order; a
#: database without them gets them when opened (SQLite and PostgreSQL both read
#: ``DOUBLE PRECISION``). Add new columns here and to the ``CREATE TABLE`` above.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("inspections", "score", "DOUBLE PRECISION"),  # anomaly models' image score, 0-1
)


@dataclass(frozen=True)
class StoredBatch:
    """What one commit did, per stream: seqs received (new or duplicate) and ``through``."""

    seqs: dict[str, list[int]]
    through: dict[str, int]
    stations: dict[str, tuple[str, str, str]]
    new: int
    duplicates: int


class ReceiverDB:
    """A connection to the receiver's database; use from one thread.

    Args:
        url: a file path (SQLite) or ``postgresql://user:pw@host/db``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = url.startswith(("postgresql://", "postgres://"))
        if self.pg:
            import importlib

            # optional dependency, only for PostgreSQL: pip install "psycopg[binary]"
            self.conn: Any = importlib.import_module("psycopg").connect(url)
        else:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                url, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            # confirmations promise the row survives: commit durably
            self.conn.execute("PRAGMA synchronous=FULL")
        with self.tx() as cur:
            for ddl in _DDL:
                cur.execute(ddl)
            self._add_columns(cur)

    def _add_columns(self, cur: Any) -> None:
        """Add the :data:`ADDED_COLUMNS` an older database lacks (in the opening transaction)."""
        for table, col, sqltype in ADDED_COLUMNS:
            if self.pg:  # IF NOT EXISTS: two receivers may open one database at once
                cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {sqltype}")
                continue
            # SQLite has no IF NOT EXISTS here; BEGIN IMMEDIATE keeps the check and the add
            # together
            cur.execute(f"PRAGMA table_info({table})")
            if col not in {str(r[1]) for r in cur.fetchall()}:
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {col} {sqltype}")

    def close(self) -> None:
        self.conn.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def tx(self) -> Any:
        return _Tx(self)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        cur.execute(self._q(sql), list(args))
        rows = list(cur.fetchall())
        if self.pg:
            self.conn.commit()  # end the read transaction
        return rows

    # -- writing -----------------------------------------------------------------------
    def store(self, messages: Sequence[dict[str, Any]]) -> StoredBatch:
        """Store validated ``inspection`` messages idempotently, in one transaction."""
        now = utc_iso()
        seqs: dict[str, list[int]] = {}
        stations: dict[str, tuple[str, str, str]] = {}
        new = dup = 0
        with self.tx() as cur:
            for m in messages:
                img = m.get("image") or {}
                model = m.get("model") or {}
                cur.execute(
                    self._q(
                        "INSERT INTO inspections (inspection_id, site, line, station, stream, "
                        "seq, captured_at, judged_at, verdict, reason, model_name, "
                        "model_version, model_sha256, num_detections, image_bucket, image_key, "
                        "received_at, payload_json, score) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    [m["inspection_id"], m["site"], m["line"], m["station"], m["stream"],
                     m["seq"], m.get("captured_at"), m.get("judged_at"), m["verdict"],
                     m.get("reason"), model.get("name"), model.get("version"),
                     model.get("sha256"), len(m.get("detections") or []), img.get("bucket"),
                     img.get("key"), now, json.dumps(m, separators=(",", ":")),
                     _number(m.get("score"))],
                )  # fmt: skip
                inserted = cur.rowcount == 1
                new += inserted
                dup += not inserted
                seqs.setdefault(m["stream"], []).append(int(m["seq"]))
                stations[m["stream"]] = (m["site"], m["line"], m["station"])
                cur.execute(
                    self._q(
                        "INSERT INTO streams (stream, site, line, station, max_seq, received, "
                        "duplicates, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?) "
                        "ON CONFLICT (stream) DO UPDATE SET "
                        "max_seq = CASE WHEN excluded.max_seq > streams.max_seq "
                        "THEN excluded.max_seq ELSE streams.max_seq END, "
                        "received = streams.received + 1, "
                        "duplicates = streams.duplicates + excluded.duplicates, "
                        "last_seen = excluded.last_seen"
                    ),
                    [m["stream"], m["site"], m["line"], m["station"], m["seq"],
                     0 if inserted else 1, now, now],
                )  # fmt: skip
            through = {s: self._advance(cur, s) for s in seqs}
        return StoredBatch(seqs, through, stations, new, dup)

    def _advance(self, cur: Any, stream: str) -> int:
        """Move ``through`` over stored and lost seqs; return it."""
        cur.execute(self._q("SELECT through FROM streams WHERE stream = ?"), [stream])
        through = int(cur.fetchone()[0])
        lost = self._lost(cur, stream)
        while True:
            through = _skip_lost(through, lost)
            cur.execute(
                self._q(
                    "SELECT seq FROM inspections WHERE stream = ? AND seq > ? "
                    "ORDER BY seq LIMIT 1000"
                ),
                [stream, through],
            )
            rows = [int(r[0]) for r in cur.fetchall()]
            contiguous = True
            for s in rows:
                through = _skip_lost(through, lost)
                if s <= through:
                    continue
                if s != through + 1:
                    contiguous = False
                    break
                through = s
            if not contiguous or len(rows) < 1000:
                through = _skip_lost(through, lost)
                break
        cur.execute(self._q("UPDATE streams SET through = ? WHERE stream = ?"), [through, stream])
        return through

    def _lost(self, cur: Any, stream: str) -> list[tuple[int, int]]:
        cur.execute(
            self._q("SELECT first_seq, last_seq FROM lost WHERE stream = ? ORDER BY first_seq"),
            [stream],
        )
        return [(int(a), int(b)) for a, b in cur.fetchall()]

    def record_event(self, m: dict[str, Any]) -> list[str]:
        """Store an ``event`` message once; a ``sync_dropped`` one marks its seqs lost.

        Returns the streams whose ``through`` may have moved.
        """
        moved = []
        with self.tx() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO events (event_id, site, line, station, event, at, payload_json, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                [m["event_id"], m.get("site"), m.get("line"), m.get("station"), m["event"],
                 m.get("at"), json.dumps(m), utc_iso()],
            )  # fmt: skip
            data = m.get("data") or {}
            if m["event"] == "sync_dropped" and data.get("stream"):
                stream = str(data["stream"])
                for a, b in data.get("ranges") or []:
                    cur.execute(
                        self._q(
                            "INSERT INTO lost (stream, first_seq, last_seq, reported_at) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
                        ),
                        [stream, int(a), int(b), m.get("at")],
                    )
                cur.execute(self._q("SELECT 1 FROM streams WHERE stream = ?"), [stream])
                if cur.fetchone() is not None:
                    self._advance(cur, stream)
                    moved.append(stream)
        return moved

    def record_availability(self, site: str, line: str, station: str, value: str) -> None:
        with self.tx() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO stations (site, line, station, availability, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, line, station) DO UPDATE SET "
                    "availability = excluded.availability, updated_at = excluded.updated_at"
                ),
                [site, line, station, value, utc_iso()],
            )

    # -- reading -----------------------------------------------------------------------


def _number(v: Any) -> float | None:
    """``v`` as a finite float, else None: a malformed optional field must not make the
    batch's insert fail (it would be retried forever); ``payload_json`` keeps it as sent."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer too large for a double
        return None
    return f if math.isfinite(f) else None


def _skip_lost(through: int, lost: list[tuple[int, int]]) -> int:
    for a, b in lost:
        if a <= through + 1 <= b:
            through = b
    return through


class _Tx:
    """``with db.tx() as cur:`` one transaction on either backend."""

    def __init__(self, db: ReceiverDB) -> None:
        self.db = db

    def __enter__(self) -> Any:
        self.cur = self.db.conn.cursor()
        if not self.db.pg:
            self.cur.execute("BEGIN IMMEDIATE")
        return self.cur

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.db.conn.commit() if self.db.pg else self.cur.execute("COMMIT")
        else:
            self.db.conn.rollback() if self.db.pg else self.cur.execute("ROLLBACK")
