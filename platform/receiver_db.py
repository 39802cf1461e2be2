"""The receiver's database: inspections stored once per UUID, streams, gaps, the report.

PostgreSQL (a ``postgresql://`` URL; needs ``psycopg``) is the platform's database:
opening it runs the versioned migrations (:mod:`kanjian.platform.schema`) up to the
typed schema the fleet's questions are asked of (:mod:`kanjian.platform.schema_v2`),
and the writes go through :mod:`kanjian.platform.pg_writer`. Any number of receivers
may write to one PostgreSQL database at once.

SQLite (a file path) is the single-file reference receiver for benches and tests:
release 1's tables (times as text, detections inside ``payload_json``), upgraded
on open by :data:`~kanjian.platform.schema.ADDED_COLUMNS`. The reading half
(gaps, streams, report) is the same SQL on both.

Release 1's tables::

    inspections(inspection_id PK, site, line, station, stream, seq, verdict, ..., score)
    streams(stream PK, site, line, station, through, max_seq, received, duplicates, ...)
    lost(stream, first_seq, last_seq)       seqs the station dropped by retention
    events(event_id PK, site, line, station, event, at, payload_json, received_at)
    stations(site, line, station, availability, updated_at)

``through`` is the highest seq up to which every seq of the stream is stored
(or known lost): confirmations carry it, so one lost confirmation costs nothing.

Several writers: a batch takes its streams' rows first, in stream order (the
``streams`` upsert locks them), so two receivers holding messages of the same
stations queue behind each other instead of deadlocking, and ``through`` is always
computed by the one transaction that holds its stream.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kanjian.inference.types import Verdict
from kanjian.platform import pg_writer
from kanjian.platform.inbound import number, timestamp
from kanjian.platform.schema import ADDED_COLUMNS, V1_DDL, migrate
from kanjian.station.records import JUDGED_VERDICTS, utc_iso
from kanjian.station.sync.outbox_types import to_ranges

#: ``pg_try_advisory_lock`` key of the one receiver that asks stations for gaps
GAP_LEAD_LOCK = 0x6B6A676170  # "kjgap"


@dataclass(frozen=True)
class StoredBatch:
    """What one commit did, per stream: seqs received (new or duplicate) and ``through``."""

    seqs: dict[str, list[int]]
    through: dict[str, int]
    stations: dict[str, tuple[str, str, str]]
    new: int
    duplicates: int


@dataclass(frozen=True)
class StationReport:
    """Per-station numbers for ``kanjian platform report``.

    ``yield_`` is PASS / (PASS + FAIL + REVIEW): ERROR and MISSED judged no part.
    ``gaps`` are seq ranges neither stored nor reported lost, below the highest seq seen.
    """

    site: str
    line: str
    station: str
    stream: str
    inspections: int
    verdicts: dict[str, int]
    yield_: float | None
    through: int
    max_seq: int
    duplicates: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    missing: int = 0
    lost: int = 0
    availability: str | None = None


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
        if self.pg:
            try:
                migrate(self.conn)
            except BaseException:
                self.conn.close()
                raise
            return
        with self.tx() as cur:
            for ddl in V1_DDL:
                cur.execute(ddl)
            self._add_columns(cur)

    def _add_columns(self, cur: Any) -> None:
        """SQLite: add the :data:`ADDED_COLUMNS` an older database lacks (in the opening
        transaction; BEGIN IMMEDIATE keeps the check and the add together)."""
        for table, col, sqltype in ADDED_COLUMNS:
            cur.execute(f"PRAGMA table_info({table})")
            if col not in {str(r[1]) for r in cur.fetchall()}:
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {col} {sqltype}")

    def close(self) -> None:
        self.conn.close()

    @property
    def broken(self) -> bool:
        """PostgreSQL: the connection is lost for good (a new :class:`ReceiverDB` is needed)."""
        return bool(self.pg and (self.conn.closed or self.conn.broken))

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
        """Store ``inspection`` messages (checked by :func:`~kanjian.platform.inbound.problem`)
        idempotently, in one transaction; say per stream what was received and ``through``."""
        at = datetime.now(timezone.utc)
        now = at if self.pg else utc_iso(at)
        msgs = sorted(messages, key=lambda m: (str(m["stream"]), int(m["seq"])))
        stations = {str(m["stream"]): (str(m["site"]), str(m["line"]), str(m["station"]))
                    for m in msgs}  # fmt: skip
        with self.tx() as cur:
            for stream in sorted(stations):  # lock the streams first, in one order
                cur.execute(
                    self._q(
                        "INSERT INTO streams (stream, site, line, station, first_seen, "
                        "last_seen) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream) "
                        "DO UPDATE SET last_seen = excluded.last_seen"
                    ),
                    [stream, *stations[stream], now, now],
                )
            if self.pg:
                ids = pg_writer.insert_inspections(cur, msgs, at)
                is_new = [_uuid_of(m) in ids for m in msgs]
                seen: set[Any] = set()
                for k, m in enumerate(msgs):  # the same UUID twice: the second is a duplicate
                    if is_new[k]:
                        is_new[k] = _uuid_of(m) not in seen
                        seen.add(_uuid_of(m))
            else:
                is_new = [self._insert_v1(cur, m, str(now)) for m in msgs]
            seqs: dict[str, list[int]] = {}
            new = Counter[str]()
            for m, fresh in zip(msgs, is_new, strict=True):
                seqs.setdefault(str(m["stream"]), []).append(int(m["seq"]))
                new[str(m["stream"])] += fresh
            for stream, got in seqs.items():
                cur.execute(
                    self._q(
                        "UPDATE streams SET max_seq = CASE WHEN max_seq > ? THEN max_seq "
                        "ELSE ? END, received = received + ?, duplicates = duplicates + ? "
                        "WHERE stream = ?"
                    ),
                    [max(got), max(got), len(got), len(got) - new[stream], stream],
                )
            through = {s: self._advance(cur, s) for s in seqs}
        n_new = sum(new.values())
        return StoredBatch(seqs, through, stations, n_new, len(msgs) - n_new)

    def _insert_v1(self, cur: Any, m: dict[str, Any], now: str) -> bool:
        """SQLite: one inspection into release 1's table; whether it was new."""
        img = m.get("image") or {}
        model = m.get("model") or {}
        cur.execute(
            "INSERT INTO inspections (inspection_id, site, line, station, stream, seq, "
            "captured_at, judged_at, verdict, reason, model_name, model_version, "
            "model_sha256, num_detections, image_bucket, image_key, received_at, "
            "payload_json, score) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [m["inspection_id"], m["site"], m["line"], m["station"], m["stream"], m["seq"],
             m.get("captured_at"), m.get("judged_at"), m["verdict"], m.get("reason"),
             model.get("name"), model.get("version"), model.get("sha256"),
             len(m.get("detections") or []), img.get("bucket"), img.get("key"), now,
             json.dumps(m, separators=(",", ":")), number(m.get("score"))],
        )  # fmt: skip
        return bool(cur.rowcount == 1)

    def _advance(self, cur: Any, stream: str) -> int:
        """Move ``through`` over stored and lost seqs; return it."""
        # FOR UPDATE: a sync_dropped event moving `through` waits for a batch that holds
        # the stream (and then reads what it committed) instead of writing over it
        lock = " FOR UPDATE" if self.pg else ""
        cur.execute(self._q("SELECT through FROM streams WHERE stream = ?" + lock), [stream])
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

    def record_event(
        self, m: dict[str, Any], where: tuple[str, str, str] = ("", "", "")
    ) -> list[str]:
        """Store an ``event`` message once; a ``sync_dropped`` one marks its seqs lost.

        ``where``: the topic's site, line, station (PostgreSQL fills what the message
        leaves out from it). Returns the streams whose ``through`` may have moved.
        """
        moved = []
        at = datetime.now(timezone.utc)
        with self.tx() as cur:
            if self.pg:
                pg_writer.insert_event(cur, m, where, at)
            else:
                cur.execute(
                    "INSERT INTO events (event_id, site, line, station, event, at, payload_json, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [m["event_id"], m.get("site"), m.get("line"), m.get("station"), m["event"],
                     m.get("at"), json.dumps(m), utc_iso(at)],
                )  # fmt: skip
            data: dict[str, Any] = m["data"] if isinstance(m.get("data"), dict) else {}
            if m["event"] == "sync_dropped" and isinstance(data.get("stream"), str):
                stream = str(data["stream"])
                reported = timestamp(m.get("at")) if self.pg else m.get("at")
                for a, b in _ranges(data.get("ranges")):
                    cur.execute(
                        self._q(
                            "INSERT INTO lost (stream, first_seq, last_seq, reported_at) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
                        ),
                        [stream, a, b, reported],
                    )
                cur.execute(self._q("SELECT 1 FROM streams WHERE stream = ?"), [stream])
                if cur.fetchone() is not None:
                    self._advance(cur, stream)
                    moved.append(stream)
        return moved

    def record_availability(self, site: str, line: str, station: str, value: str) -> None:
        at = datetime.now(timezone.utc)
        with self.tx() as cur:
            if self.pg:
                pg_writer.record_availability(cur, site, line, station, value, at)
                return
            cur.execute(
                "INSERT INTO stations (site, line, station, availability, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, line, station) DO UPDATE SET "
                "availability = excluded.availability, updated_at = excluded.updated_at",
                [site, line, station, value, utc_iso(at)],
            )

    def lead_gap_checks(self) -> bool:
        """Whether this connection is the one that asks stations for gaps.

        PostgreSQL: the first receiver to take a session advisory lock keeps it until it
        goes away, then the next one to try takes over (so N receivers do not ask N
        times). SQLite: always (one file, one receiver in practice).
        """
        if not self.pg:
            return True
        row = self.query("SELECT pg_try_advisory_lock(%s)", [GAP_LEAD_LOCK])
        return bool(row[0][0])

    # -- reading -----------------------------------------------------------------------
    def gaps(
        self, stream: str, limit: int = 1000, window: int = 1_000_000
    ) -> list[tuple[int, int]]:
        """Seq ranges above ``through`` and below ``max_seq`` neither stored nor lost.

        Only the ``window`` seqs after ``through`` are examined.
        """
        row = self.query("SELECT through, max_seq FROM streams WHERE stream = ?", [stream])
        if not row:
            return []
        through, max_seq = int(row[0][0]), int(row[0][1])
        if max_seq <= through:
            return []
        # look at most `window` seqs past `through`: the first gaps are the ones that matter
        top = min(max_seq, through + window)
        have = {
            int(r[0])
            for r in self.query(
                "SELECT seq FROM inspections WHERE stream = ? AND seq > ? AND seq <= ?",
                [stream, through, top],
            )
        }
        lost = self.query("SELECT first_seq, last_seq FROM lost WHERE stream = ?", [stream])
        for a, b in lost:
            have.update(range(max(int(a), through + 1), min(int(b), top) + 1))
        missing = (s for s in range(through + 1, top + 1) if s not in have)
        return to_ranges(missing)[:limit]

    def streams(self) -> list[tuple[str, str, str, str, int, int, int]]:
        """``(stream, site, line, station, through, max_seq, duplicates)`` rows."""
        return [
            (str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), int(r[6]))
            for r in self.query(
                "SELECT stream, site, line, station, through, max_seq, duplicates FROM streams "
                "ORDER BY site, line, station, first_seen"
            )
        ]

    def report(self) -> list[StationReport]:
        """Per stream: counts by verdict, yield, gaps, losses."""
        out = []
        avail = {
            (r[0], r[1], r[2]): r[3]
            for r in self.query("SELECT site, line, station, availability FROM stations")
        }
        for stream, site, line, station, through, max_seq, dups in self.streams():
            verdicts = {
                str(v): int(n)
                for v, n in self.query(
                    "SELECT verdict, COUNT(*) FROM inspections WHERE stream = ? GROUP BY verdict",
                    [stream],
                )
            }
            judged = sum(verdicts.get(v.value, 0) for v in JUDGED_VERDICTS)
            gaps = self.gaps(stream, limit=1_000_000)
            lost = sum(
                int(b) - int(a) + 1
                for a, b in self.query(
                    "SELECT first_seq, last_seq FROM lost WHERE stream = ?", [stream]
                )
            )
            out.append(
                StationReport(
                    site=site,
                    line=line,
                    station=station,
                    stream=stream,
                    inspections=sum(verdicts.values()),
                    verdicts=verdicts,
                    yield_=(verdicts.get(Verdict.PASS.value, 0) / judged) if judged else None,
                    through=through,
                    max_seq=max_seq,
                    duplicates=dups,
                    gaps=gaps[:20],
                    missing=sum(b - a + 1 for a, b in gaps),
                    lost=lost,
                    availability=avail.get((site, line, station)),
                )
            )
        return out


def _uuid_of(m: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(str(m["inspection_id"]))


def _ranges(v: Any) -> list[tuple[int, int]]:
    """The ``[first, last]`` seq ranges of a ``sync_dropped`` event that make sense."""
    out = []
    for r in v if isinstance(v, list) else []:
        if isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r):
            a, b = r
            if 1 <= a <= b <= 2**63 - 1:
                out.append((a, b))
    return out


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
