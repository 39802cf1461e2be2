"""Per-thread connections to the station's database for the API.

The store's writer owns its own connection; request handlers run on a thread
pool, and a sqlite3 connection must not be used by two threads at once, so
each thread gets its own (WAL lets them read while the writer commits).
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlite_utils

from kanjian.station.store import open_db


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
                raise RuntimeError("the API's database connections are closed")
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
