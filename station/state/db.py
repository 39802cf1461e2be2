"""Per-thread connections to the station's database for its state and the API.

The store's writer owns its own connection; request handlers run on a thread
pool, platform deploys and PLC recipes on their own threads, and a sqlite3
connection must not be used by two threads at once, so each thread gets its
own (WAL lets them read while the writer commits).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from pydantic import BaseModel, ValidationError

from kanjian.station.store import open_db

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

#: largest integer SQLite stores; query parameters above it would raise OverflowError
SQLITE_MAX_INT = 2**63 - 1


class ConnectionPool:
    """Hands each thread its own open, migrated connection to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise RuntimeError("the station state's database connections are closed")
            db = open_db(self.path)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            for db in self._all:
                db.conn.close()
            self._all.clear()


@contextmanager
def write_tx(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that takes SQLite's write lock at once (``BEGIN IMMEDIATE``).

    A plain ``BEGIN`` that reads first and writes later fails at once with
    "database is locked" (no busy wait) when the store's writer committed in
    between: SQLite cannot upgrade a stale read snapshot. Taking the lock up
    front makes it wait (busy timeout) instead.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.conn.rollback()
        raise
    else:
        db.execute("COMMIT")


def stored_override(
    conn: Any, key: str, model: type[M], what: str
) -> tuple[M, str, str | None] | None:
    """A setting kept through the API in ``settings`` (row ``key``), validated as
    ``model``: ``(value, set_at, set_by)``, or ``None`` when there is none.

    One that no longer validates (a release changed its model) is logged, naming
    ``what`` it was, and ignored: station.yaml's value stays in force.
    ``conn``: a ``sqlite3.Connection`` or ``sqlite_utils.Database``.
    """
    row = conn.execute(
        "SELECT value_json, set_at, set_by FROM settings WHERE key = ?", [key]
    ).fetchone()
    if row is None:
        return None
    try:
        value = model.model_validate(json.loads(row[0]))
    except (ValueError, ValidationError) as e:
        log.error("the %s set through the API on %s are not valid any more, "
                  "station.yaml's are used: %s", what, row[1], e)  # fmt: skip
        return None
    return value, str(row[1]), row[2]
