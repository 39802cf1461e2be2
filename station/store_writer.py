"""The store's SQLite writer: one transaction per batch of rows, in its own process.

:class:`~kanjian.station.store.ResultStore` makes rows from inspections (Python, ~10 us
each) and hands each batch to this writer, which inserts and commits it. Run as a
child process (``python -I store_writer.py DB SYNCHRONOUS``), it commits batch N
while the station's process makes the rows of batch N+1: two cores work at once,
which two threads of one CPython process cannot (the GIL; benchmarks/store_gil.py
measured the store at 0.57-0.60x of SQLite alone in one process, 0.91-0.96x with
this split). The same :func:`write_batch` also runs inside the station's process
when ``store.writer: thread`` is configured.

Standard library only: the child imports nothing of kanjian (it starts in ~40 ms).

Protocol, over the child's stdin and stdout, each message a frame of an 8-byte
little-endian length and a pickle (the parent is the same program; nothing else
writes to these pipes):

- child -> parent at start: ``("ready", pid, synchronous)`` (the mode SQLite reports);
- parent -> child: a batch, a list of ``(table, columns, or_ignore, rows)``;
- child -> parent: ``("ok", commit_ms)`` once the batch's transaction is durable, or
  ``("error", class_name, message, errno)``; the transaction was rolled back;
- the parent closing stdin stops the child (after the batch at hand). SIGINT and
  SIGTERM are ignored: a service stop signals the whole group, and the station's
  process decides when its writer ends (after it committed what it holds).
"""

from __future__ import annotations

import functools
import itertools
import pickle
import signal
import sqlite3
import struct
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

#: one batch: (table, columns, INSERT OR IGNORE?, rows of len(columns) values)
Tables = list[tuple[str, tuple[str, ...], bool, Sequence[Sequence[Any]]]]

_HEADER = struct.Struct("<Q")
#: most rows one INSERT carries (the variable limit may allow fewer): past ~500 the
#: statement's parse grows and the gain is gone
MAX_ROWS_PER_STATEMENT = 512
#: SQLite's bound-variable limit before 3.32, and Python < 3.11's (no getlimit)
_OLD_VARIABLE_LIMIT = 999
_flatten = itertools.chain.from_iterable


def write_frame(out: IO[bytes], payload: bytes) -> None:
    """One message: its length (8 bytes, little-endian), then ``payload``."""
    out.write(_HEADER.pack(len(payload)))
    out.write(payload)
    out.flush()


def read_frame(inp: IO[bytes]) -> bytes | None:
    """The next message, or ``None`` at the end of the stream (the other side is gone)."""
    head = inp.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    body = inp.read(n)
    return body if len(body) == n else None


@functools.lru_cache(maxsize=512)
def insert_sql(table: str, cols: tuple[str, ...], rows: int = 1, or_ignore: bool = False) -> str:
    """``INSERT [OR IGNORE] INTO table (cols) VALUES (?, ..), ..`` for ``rows`` rows."""
    one = f"({', '.join('?' * len(cols))})"
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES {', '.join([one] * rows)}"


def _variable_limit(conn: sqlite3.Connection) -> int:
    getlimit = getattr(conn, "getlimit", None)  # Python >= 3.11
    if getlimit is None:
        return _OLD_VARIABLE_LIMIT
    return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def _chunk(left: int, most: int) -> int:
    """Rows for the next statement: ``most`` if that many are left, else a multiple of
    64 or (under 64) a power of two, so a table needs ~15 distinct SQL texts at most
    and they stay in the statement cache (500 rows: 448 + 32 + 16 + 4)."""
    if left >= most:
        return most
    if left >= 64:
        return left - left % 64
    return 1 << (left.bit_length() - 1)


def insert_rows(
    conn: sqlite3.Connection,
    table: str,
    cols: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    or_ignore: bool = False,
) -> None:
    """Insert ``rows`` into ``table`` in multi-row statements, inside the caller's
    transaction: the same rows, values and errors as ``executemany`` of the one-row
    statement, with one ``sqlite3_step`` per statement instead of per row."""
    n = len(rows)
    if not n:
        return
    per = max(1, min(MAX_ROWS_PER_STATEMENT, _variable_limit(conn) // max(len(cols), 1)))
    most = per if per < 64 else per - per % 64
    i = 0
    while i < n:
        size = _chunk(n - i, most)
        conn.execute(insert_sql(table, cols, size, or_ignore), list(_flatten(rows[i : i + size])))
        i += size


def write_batch(conn: sqlite3.Connection, tables: Tables) -> None:
    """One transaction: every table's rows, or nothing (rolled back, the error raised).

    ``BEGIN IMMEDIATE`` takes the write lock up front: a deferred BEGIN that reads
    first fails at once with SQLITE_BUSY when another connection commits in between.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, cols, or_ignore, rows in tables:
            insert_rows(conn, table, cols, rows, or_ignore)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """The writer's connection: WAL (the store set it up), ``synchronous`` as the
    store's, foreign keys on, waits up to 30 s for a lock."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, cached_statements=256)
    for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _answer(e: BaseException) -> tuple[str, str, str, int | None]:
    return ("error", type(e).__name__, str(e), getattr(e, "errno", None))


def main(argv: list[str]) -> int:
    """The child's loop: ``argv`` = [database path, synchronous mode]. Returns its exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    path, synchronous = argv
    conn = connect(path, synchronous)
    mode = conn.execute("PRAGMA synchronous").fetchone()[0]
    write_frame(out, pickle.dumps(("ready", _pid(), mode)))
    try:
        while (msg := read_frame(inp)) is not None:
            t0 = time.perf_counter()
            try:
                write_batch(conn, pickle.loads(msg))
                reply: tuple[Any, ...] = ("ok", (time.perf_counter() - t0) * 1e3)
            except Exception as e:  # every failure is the parent's to judge
                reply = _answer(e)
            write_frame(out, pickle.dumps(reply))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the station's process is gone; what was committed stays committed
    finally:
        conn.close()
    return 0


def _pid() -> int:
    import os

    return os.getpid()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
