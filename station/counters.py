"""Numbers unique per station forever: trigger numbers that survive restarts and crashes.

A counter is one row of the store's ``counters`` table (schema migration
``040_counters``): ``next`` is the first number no run has reserved yet. A run
reserves numbers in blocks (:data:`BLOCK` at a time, one durable write each), hands
them out from memory, and at a clean close writes back the first one it did not
hand out. After a crash (SIGKILL, power loss) the rest of the last block is
skipped: numbers may jump, they are never reused.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

#: numbers reserved per durable write: one trigger in this many waits for a commit
BLOCK = 1000


class Numbers(Protocol):
    """What hands out trigger numbers: :class:`IdCounter`, or :class:`MemoryNumbers`."""

    @property
    def last(self) -> int:
        """The last number handed out (before this run's first: the last one reserved before)."""
        ...

    def next(self) -> int:
        """The next number (> every number handed out before)."""
        ...


class MemoryNumbers:
    """1, 2, 3, ... in memory: for a handshake or queue without a store (tests, tools)."""

    def __init__(self, last: int = 0) -> None:
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        with self._lock:
            self._last += 1
            return self._last


Seed = Callable[[sqlite3.Connection], int]
"""For a counter the table does not hold yet: the last number already in use (0: none)."""


def last_numbered(prefixes: Sequence[str]) -> Seed:
    """A :data:`Seed` reading the store: the highest ``N`` of trigger ids ``<prefix>N``.

    A station upgraded from a version without the counters table keeps its old
    rows' ids; its counter starts above them. A suffix that is not a whole number
    counts by its leading digits (``plc-12x`` as 12), which can only skip numbers.
    """

    def seed(conn: sqlite3.Connection) -> int:
        best = 0
        for prefix in prefixes:
            row = conn.execute(
                "SELECT MAX(CAST(substr(trigger_id, ?) AS INTEGER)) FROM inspections "
                "WHERE substr(trigger_id, 1, ?) = ?",
                [len(prefix) + 1, len(prefix), prefix],
            ).fetchone()
            best = max(best, int(row[0] or 0))
        return best

    return seed


class IdCounter:
    """A persisted counter, reserved in blocks (thread-safe).

    Args:
        db_path: the station's SQLite file (migrated: it has the ``counters`` table).
        name: the counter's key, e.g. ``"trigger.plc"``.
        block: numbers reserved per durable write.
        seed: when the table has no row for ``name`` yet, the last number in use.
        synchronous: SQLite ``synchronous`` for the reservations (the store's).
    """

    def __init__(
        self,
        db_path: Path,
        name: str,
        block: int = BLOCK,
        seed: Seed | None = None,
        synchronous: str = "FULL",
    ) -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.db_path = db_path
        self.name = name
        self._block = block
        self._seed = seed
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._closed = False
        # [_next, _end): reserved, not handed out yet; the first block now, so that
        # ``last`` is right before the first trigger and a bad database fails at start
        self._next, self._end = self._reserve()
        self._last = self._next - 1

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        """The next number; reserves a new block (one durable write) when this one is used up."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"counter {self.name} is closed")
            if self._next >= self._end:
                self._next, self._end = self._reserve()
            n = self._next
            self._next += 1
            self._last = n
            return n

    def close(self) -> None:
        """Give back the numbers not handed out, so a clean restart skips none. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                with self._connect() as conn:
                    # only if no other run reserved after us (one station per data folder)
                    conn.execute(
                        "UPDATE counters SET next = ? WHERE name = ? AND next = ?",
                        [self._next, self.name, self._end],
                    )
            except sqlite3.Error as exc:  # the numbers are only skipped: never reused
                log.warning("counter %s: unused numbers not given back: %s", self.name, exc)

    def _connect(self) -> closing[sqlite3.Connection]:
        # its own short-lived connection: the store's is inside the writer's
        # transactions, which a reservation must not join
        conn = sqlite3.connect(str(self.db_path), timeout=30.0, isolation_level=None)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return closing(conn)

    def _reserve(self) -> tuple[int, int]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT next FROM counters WHERE name = ?", [self.name])
                got = row.fetchone()
                start = int(got[0]) if got else (self._seed(conn) if self._seed else 0) + 1
                end = start + self._block
                conn.execute(
                    "INSERT INTO counters (name, next) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET next = excluded.next",
                    [self.name, end],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.debug("counter %s: reserved %d..%d", self.name, start, end - 1)
        return start, end
