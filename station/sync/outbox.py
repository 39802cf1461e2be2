"""The outbox's SQL: what the sync worker reads and marks, on its own connection.

The store writes one ``outbox`` row per inspection in the inspection's own
transaction (seq = the inspection's seq). This module is the only code that
changes those rows afterwards. An entry moves through::

    new ──publish──▶ handed to MQTT ──PUBACK──▶ sent ──platform confirms──▶ confirmed
                       ▲                          │
                       └── re-sent when unconfirmed past the timeout (doubling)

or is dropped by retention (counted, reported). Its image, when it has one to
upload, moves independently: new ─▶ pending ─▶ done (or missing / dropped).

All methods run on the calling thread's own connection (one per thread);
each is one short transaction so the store's writer never waits long. The
values it hands out live in :mod:`kanjian.station.sync.outbox_types`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kanjian.station.records import (
    INSPECTION_COLUMNS,
    StoredInspection,
    columns,
    load_detections,
    utc_iso,
)
from kanjian.station.store import open_db
from kanjian.station.sync.outbox_types import (
    BacklogStats,
    ImageTodo,
    OutboxEntry,
    PendingWrites,
    RetentionResult,
    to_ranges,
)


class Outbox:
    """The sync side of the store's database, on a connection of its own.

    Args:
        db_path: the store's ``kanjian.db``.
        synchronous: SQLite synchronous mode for this connection's writes.
    """

    def __init__(self, db_path: Path, synchronous: str = "NORMAL") -> None:
        # Marks are hints, not data: a mark lost to a power cut only makes an entry
        # go out again (receivers deduplicate), so this connection does not fsync
        # each commit. The store's own commits (synchronous=FULL) fsync the WAL,
        # ours included. Events are the exception: see apply().
        self.db = open_db(db_path, synchronous)
        self.synchronous = synchronous
        self.conn: sqlite3.Connection = self.db.conn
        self.stream_id = self.get_state("stream_id") or ""

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front, through the busy handler.
        # A deferred transaction that reads first and writes later fails at once
        # with SQLITE_BUSY when another connection committed in between.
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def apply(self, w: PendingWrites, timeout_s: float, max_s: float) -> tuple[int, int]:
        """Write one step's worth of marks in one transaction.

        Returns ``(confirmed, resend_requested)`` entry counts.
        """
        confirmed = resend = 0
        if w.events_new and self.synchronous != "FULL":
            # an event (e.g. a deploy's outcome) must survive a power cut once recorded
            self.conn.execute("PRAGMA synchronous=FULL")
        try:
            confirmed, resend = self._apply(w, timeout_s, max_s)
        finally:
            if w.events_new and self.synchronous != "FULL":
                self.conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return confirmed, resend

    def _apply(self, w: PendingWrites, timeout_s: float, max_s: float) -> tuple[int, int]:
        confirmed = resend = 0
        with self._tx():
            if w.published:
                self.mark_published(w.published, w.retry_at)
            if w.acked:
                self.mark_acked(w.acked, time.time(), timeout_s, max_s)
            for ranges, through in w.confirms:
                confirmed += self.confirm(ranges, through)
            for ranges in w.resends:
                resend += self.request_resend(ranges)
            if w.events_new:
                self.add_events(w.events_new)
            if w.events_sent:
                self.mark_events_sent(w.events_sent)
        return confirmed, resend

    # -- state ---------------------------------------------------------------------
    def get_state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM sync_state WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, values: dict[str, str]) -> None:
        with self._tx():
            self.conn.executemany(
                "INSERT INTO sync_state (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def add_counter(self, key: str, n: int) -> int:
        """Add ``n`` to a persistent counter; returns the new value."""
        with self._tx():
            self.conn.execute(
                "INSERT INTO sync_state (key, value) VALUES (?, ?) ON CONFLICT(key) "
                "DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
                [key, str(n), n],
            )
        return int(self.get_state(key) or 0)

    # -- reading entries --------------------------------------------------------------
    def _records(
        self, where: str, args: Sequence[object], order: str, limit: int
    ) -> list[OutboxEntry]:
        rows = self.conn.execute(
            "SELECT o.attempts, o.image_state, o.image_key, "
            f"{columns(INSPECTION_COLUMNS, 'i')} "
            f"FROM outbox o JOIN inspections i ON i.id = o.inspection_id "
            f"WHERE {where} ORDER BY {order} LIMIT ?",
            [*args, limit],
        ).fetchall()
        dets = load_detections(self.conn, [r[3] for r in rows])
        return [
            OutboxEntry(
                StoredInspection.from_row(r[3:], dets.get(r[3], ())),
                attempts=int(r[0]),
                image_state=r[1],
                image_key=r[2],
            )
            for r in rows
        ]

    def fetch_fresh(self, after_seq: int, limit: int) -> list[OutboxEntry]:
        """Backlog entries after ``after_seq``, in seq order (the drain cursor)."""
        return self._records(
            "o.confirmed_at IS NULL AND o.dropped_at IS NULL AND o.seq > ?",
            [after_seq],
            "o.seq",
            limit,
        )

    def fetch_due(self, now: float, up_to_seq: int, limit: int) -> list[OutboxEntry]:
        """Entries at or below the cursor whose re-send time has come, oldest first."""
        return self._records(
            "o.confirmed_at IS NULL AND o.dropped_at IS NULL AND o.next_attempt_at <= ? "
            "AND o.seq <= ?",
            [now, up_to_seq],
            "o.next_attempt_at, o.seq",
            limit,
        )

    # -- marking ---------------------------------------------------------------------
    def mark_published(self, seqs: Sequence[int], retry_at: float) -> None:
        """Handed to MQTT: if no PUBACK comes, these become due again at ``retry_at``."""
        with self._tx():
            self.conn.executemany(
                "UPDATE outbox SET next_attempt_at = ? WHERE seq BETWEEN ? AND ?",
                [(retry_at, a, b) for a, b in to_ranges(seqs)],
            )

    def mark_acked(self, seqs: Sequence[int], now: float, timeout_s: float, max_s: float) -> None:
        """The broker acknowledged (PUBACK): wait for the platform's confirmation.

        The next re-send is ``timeout_s * 2**attempts`` later, capped at ``max_s``.
        """
        at = utc_iso()
        with self._tx():
            self.conn.executemany(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, "
                "next_attempt_at = ? + MIN(?, ? * (1 << MIN(attempts, 20))) "
                "WHERE seq BETWEEN ? AND ? AND confirmed_at IS NULL",
                [(at, now, max_s, timeout_s, a, b) for a, b in to_ranges(seqs)],
            )

    def confirm(self, ranges: Sequence[tuple[int, int]], through: int | None) -> int:
        """The platform stored these seqs (inclusive ranges, and all ``<= through``).

        Returns how many entries became confirmed.
        """
        at = utc_iso()
        n = 0
        with self._tx():
            if through is not None and through > 0:
                n += self.conn.execute(
                    "UPDATE outbox SET confirmed_at = ? WHERE confirmed_at IS NULL "
                    "AND dropped_at IS NULL AND seq <= ?",
                    [at, through],
                ).rowcount
            for a, b in ranges:
                n += self.conn.execute(
                    "UPDATE outbox SET confirmed_at = ? WHERE confirmed_at IS NULL "
                    "AND dropped_at IS NULL AND seq BETWEEN ? AND ?",
                    [at, a, b],
                ).rowcount
        return n

    def request_resend(self, ranges: Sequence[tuple[int, int]]) -> int:
        """The platform misses these seqs: make them due now, even if confirmed before."""
        n = 0
        with self._tx():
            for a, b in ranges:
                n += self.conn.execute(
                    "UPDATE outbox SET confirmed_at = NULL, next_attempt_at = 0 "
                    "WHERE dropped_at IS NULL AND seq BETWEEN ? AND ?",
                    [a, b],
                ).rowcount
        return n

    def dropped_in(self, ranges: Sequence[tuple[int, int]], limit: int = 100_000) -> list[int]:
        """Seqs within ``ranges`` that retention dropped (they will never be sent)."""
        out: list[int] = []
        for a, b in ranges:
            out += [
                int(r[0])
                for r in self.conn.execute(
                    "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ? AND dropped_at IS NOT NULL "
                    "LIMIT ?",
                    [a, b, limit - len(out)],
                )
            ]
            if len(out) >= limit:
                break
        return out

    def make_all_due(self) -> int:
        """After a reconnect: the broker may have lost what it acknowledged; re-send it."""
        with self._tx():
            return self.conn.execute(
                "UPDATE outbox SET next_attempt_at = 0 WHERE confirmed_at IS NULL "
                "AND dropped_at IS NULL AND next_attempt_at > 0 AND sent_at IS NOT NULL"
            ).rowcount

    # -- retention ----------------------------------------------------------------------
    def apply_retention(
        self,
        max_age_h: float,
        max_backlog: int,
        max_images: int,
        report: Callable[[RetentionResult], tuple[str, str, str, str]] | None = None,
    ) -> RetentionResult:
        """Drop what is past the bounds: unconfirmed entries and pending images.

        Entries older than ``max_age_h`` go, then the oldest beyond
        ``max_backlog``; likewise images; and event rows sent longer than ``max_age_h``
        ago (10,000 a call). Dropped entries keep their rows (the
        inspection stays in the station's database); they are only no longer sent.

        When anything is dropped, the persistent counters ``dropped_messages`` /
        ``dropped_images`` grow and ``report(result)`` (an event row for
        :meth:`add_events`) is stored in the same transaction: a crash can
        never drop entries without counting and reporting them.
        """
        cutoff = utc_iso(datetime.now(timezone.utc) - timedelta(hours=max_age_h))
        at = utc_iso()
        live = "confirmed_at IS NULL AND dropped_at IS NULL"
        with self._tx():
            seqs = [
                r[0]
                for r in self.conn.execute(
                    f"SELECT seq FROM outbox WHERE {live} AND created_at < ? ORDER BY seq",
                    [cutoff],
                )
            ]
            n_live = self.conn.execute(f"SELECT COUNT(*) FROM outbox WHERE {live}").fetchone()[0]
            excess = n_live - len(seqs) - max_backlog
            if excess > 0:
                after = seqs[-1] if seqs else 0
                seqs += [
                    r[0]
                    for r in self.conn.execute(
                        f"SELECT seq FROM outbox WHERE {live} AND seq > ? ORDER BY seq LIMIT ?",
                        [after, excess],
                    )
                ]
            ranges = to_ranges(seqs)
            for a, b in ranges:
                self.conn.execute(
                    f"UPDATE outbox SET dropped_at = ? WHERE {live} AND seq BETWEEN ? AND ?",
                    [at, a, b],
                )
            img = [
                r[0]
                for r in self.conn.execute(
                    "SELECT seq FROM outbox WHERE image_state = 'pending' AND created_at < ? "
                    "ORDER BY seq",
                    [cutoff],
                )
            ]
            n_img = self.conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE image_state = 'pending'"
            ).fetchone()[0]
            img_excess = n_img - len(img) - max_images
            if img_excess > 0:
                img += [
                    r[0]
                    for r in self.conn.execute(
                        "SELECT seq FROM outbox WHERE image_state = 'pending' AND seq > ? "
                        "ORDER BY seq LIMIT ?",
                        [img[-1] if img else 0, img_excess],
                    )
                ]
            self.conn.executemany(
                "UPDATE outbox SET image_state = 'dropped' WHERE seq = ?", [(s,) for s in img]
            )
            res = RetentionResult(tuple(ranges), len(seqs), len(img))
            if seqs or img:
                res = dataclasses.replace(
                    res,
                    total_messages=self.add_counter("dropped_messages", len(seqs)),
                    total_images=self.add_counter("dropped_images", len(img)),
                )
                if report is not None:
                    self.add_events([report(res)])
            # events the broker took longer ago than the bound: the platform has them
            # (feedback and shadow reports would otherwise grow this table for ever)
            self.conn.execute(
                "DELETE FROM sync_events WHERE id IN (SELECT id FROM sync_events WHERE "
                "sent_at IS NOT NULL AND sent_at < ? ORDER BY id LIMIT 10000)",
                [cutoff],
            )
        return res

    # -- images ---------------------------------------------------------------------------
    def images_to_examine(self, limit: int) -> list[ImageTodo]:
        """Entries whose image has not been looked at yet, in seq order."""
        rows = self.conn.execute(
            "SELECT o.seq, o.inspection_id, i.verdict, i.image_path, i.captured_at, o.image_key "
            "FROM outbox o JOIN inspections i ON i.id = o.inspection_id "
            "WHERE o.image_state IS NULL ORDER BY o.seq LIMIT ?",
            [limit],
        ).fetchall()
        return [ImageTodo(*r) for r in rows]

    def set_image_plans(self, plans: Sequence[tuple[int, str | None]]) -> None:
        """Record per entry the object key to upload to (``None``: no image to upload)."""
        with self._tx():
            self.conn.executemany(
                # only unplanned entries: the uploader and the publisher may both plan one
                "UPDATE outbox SET image_key = ?, image_state = ? "
                "WHERE seq = ? AND image_state IS NULL",
                [(key, "none" if key is None else "pending", seq) for seq, key in plans],
            )

    def skip_images(self) -> int:
        """Object storage is off: nothing made now will be uploaded later."""
        with self._tx():
            return self.conn.execute(
                "UPDATE outbox SET image_state = 'off' WHERE image_state IS NULL"
            ).rowcount

    def pending_images(self, limit: int) -> list[ImageTodo]:
        rows = self.conn.execute(
            "SELECT o.seq, o.inspection_id, i.verdict, i.image_path, i.captured_at, o.image_key "
            "FROM outbox o JOIN inspections i ON i.id = o.inspection_id "
            "WHERE o.image_state = 'pending' ORDER BY o.seq LIMIT ?",
            [limit],
        ).fetchall()
        return [ImageTodo(*r) for r in rows]

    def mark_image(self, seq: int, state: str) -> None:
        """``done`` (uploaded), ``missing`` (the local file is gone) or a failed attempt."""
        with self._tx():
            if state == "attempt":
                self.conn.execute(
                    "UPDATE outbox SET image_attempts = image_attempts + 1 WHERE seq = ?", [seq]
                )
            else:
                self.conn.execute(
                    "UPDATE outbox SET image_state = ?, image_done_at = ?, "
                    "image_attempts = image_attempts + 1 WHERE seq = ?",
                    [state, utc_iso(), seq],
                )

    # -- events -------------------------------------------------------------------------------
    def add_events(self, events: Sequence[tuple[str, str, str, str]]) -> None:
        """Append ``(event_id, event, payload_json, created_at)`` rows to publish."""
        with self._tx():
            self.conn.executemany(
                "INSERT OR IGNORE INTO sync_events (event_id, event, payload_json, created_at) "
                "VALUES (?, ?, ?, ?)",
                events,
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock from its start) for
        a caller's reads and writes; the methods called inside join it."""
        with self._tx():
            yield

    def add_events_with_state(
        self, events: Sequence[tuple[str, str, str, str]], state: dict[str, str]
    ) -> None:
        """:meth:`add_events` and :meth:`set_state` in one transaction (a feed's rows and
        its watermark: both or neither)."""
        with self._tx():
            self.add_events(events)
            self.set_state(state)

    def unsent_events(self, limit: int) -> list[tuple[int, str]]:
        """``(id, payload_json)`` of events not yet acknowledged by the broker."""
        rows = self.conn.execute(
            "SELECT id, payload_json FROM sync_events WHERE sent_at IS NULL ORDER BY id LIMIT ?",
            [limit],
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def mark_events_sent(self, ids: Sequence[int]) -> None:
        at = utc_iso()
        with self._tx():
            self.conn.executemany(
                "UPDATE sync_events SET sent_at = ? WHERE id = ?", [(at, i) for i in ids]
            )

    # -- status ----------------------------------------------------------------------------------
    def backlog_stats(self) -> BacklogStats:
        live = "confirmed_at IS NULL AND dropped_at IS NULL"
        n, unacked = self.conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(sent_at IS NULL), 0) FROM outbox WHERE {live}"
        ).fetchone()
        oldest = self.conn.execute(
            f"SELECT created_at FROM outbox WHERE {live} ORDER BY seq LIMIT 1"
        ).fetchone()
        n_img = self.conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE image_state = 'pending'"
        ).fetchone()[0]
        oldest_img = self.conn.execute(
            "SELECT created_at FROM outbox WHERE image_state = 'pending' ORDER BY seq LIMIT 1"
        ).fetchone()
        last = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        return BacklogStats(
            backlog=int(n),
            unacked=int(unacked),
            oldest_created_at=None if oldest is None else str(oldest[0]),
            images_pending=int(n_img),
            oldest_image_created_at=None if oldest_img is None else str(oldest_img[0]),
            last_seq=int(last),
        )
