"""The fleet page's connections to PostgreSQL: a few, reused, and read-only.

Every connection is opened with ``default_transaction_read_only`` on (the page and
its API never write: PostgreSQL itself refuses a write that a bug might attempt), a
statement timeout (a slow question must not hold a worker thread for ever) and the
UTC time zone (times leave as UTC). Each request borrows one connection in autocommit
mode and gives it back; one that broke (server restart, fail-over) is dropped and
the next request opens a new one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kanjian.platform.schema import LATEST, applied

#: options of every connection the page opens (libpq ``options``)
READ_ONLY_OPTIONS = "-c default_transaction_read_only=on -c timezone=UTC -c statement_timeout={ms}"


class SchemaTooOld(RuntimeError):
    """The database is not at the schema this code reads (the message says what to run)."""


class ReadPool:
    """At most ``size`` read-only connections to ``url``, handed out one per request.

    Args:
        url: ``postgresql://user:pw@host/db``.
        size: most connections open at once (more requests wait for one).
        statement_timeout_s: PostgreSQL cancels a statement running longer.
    """

    def __init__(self, url: str, size: int = 4, statement_timeout_s: float = 15.0) -> None:
        import importlib

        # the platform's optional driver (pip install "psycopg[binary]"); the receiver's too
        self._psycopg: Any = importlib.import_module("psycopg")
        self.url = url
        self.options = READ_ONLY_OPTIONS.format(ms=round(statement_timeout_s * 1000))
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    def check_schema(self) -> None:
        """Refuse a database below :data:`~kanjian.platform.schema.LATEST` (or above it)."""
        with self.connection() as conn:
            have = applied(conn)
        if not have or max(have) < LATEST:
            at = max(have) if have else 0
            raise SchemaTooOld(
                f"the platform database is at schema version {at}, this page needs {LATEST}: "
                "run kanjian platform migrate --db ... first"
            )
        if max(have) > LATEST:
            raise SchemaTooOld(
                f"the platform database is at schema version {max(have)}, newer than this "
                f"kanjian knows ({LATEST}): run a kanjian at least as new as the one that "
                "migrated it"
            )

    def _open(self) -> Any:
        return self._psycopg.connect(self.url, autocommit=True, options=self.options)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A read-only connection (autocommit) for the duration of the ``with`` block."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        self._slots.acquire()
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = None
            if conn is None or conn.closed or conn.broken:
                conn = self._open()
            yield conn
        finally:
            if conn is not None:
                if conn.closed or conn.broken or self._closed:
                    conn.close()
                else:
                    self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections; borrowed ones close when given back."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
