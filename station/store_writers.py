"""How the result store reaches its SQLite writer: a child process, or its own thread.

Both take one batch (:data:`~kanjian.station.store_writer.Tables`) at a time:
``send`` hands it over, ``wait`` returns once it is committed (the commit's
milliseconds) or raises what made it fail, rebuilt as the same ``sqlite3`` or
``OSError`` class so the store tells a full disk from a bad row as before.

``store.writer: process`` (the default, :class:`ProcessWriter`) commits in a child
process while the station's process makes the next batch's rows;
``store.writer: thread`` (:class:`ThreadWriter`) commits in the store's writer
thread, on the store's own connection (one core: nothing to overlap).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from kanjian.station.store_writer import Tables, read_frame, write_batch, write_frame

log = logging.getLogger(__name__)

#: the child's program (standard library only; run by path, not as kanjian's module)
WRITER_SCRIPT = Path(__file__).with_name("store_writer.py")


class WriterDied(OSError):
    """The writer process ended before it answered: whether the batch it held was
    committed is unknown until the store looks (an ``OSError``: retried)."""


class WriterError(Exception):
    """A batch failed in the writer for a reason that is not a ``sqlite3`` or
    ``OSError`` one (e.g. a text SQLite cannot take): not retried as it is."""


class StoreWriter(Protocol):
    """One batch at a time: :meth:`encode` (any time before), :meth:`send`, :meth:`wait`."""

    #: what ``PRAGMA synchronous`` answers on the writer's connection (2 = FULL)
    synchronous: int
    #: the child's PID (``None``: no process); writers that died and were replaced
    pid: int | None
    restarts: int

    def encode(self, tables: Tables) -> Any: ...
    def send(self, wire: Any) -> None: ...
    def wait(self) -> float: ...
    def restart(self) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...
    def kill(self) -> None: ...


class ThreadWriter:
    """Commits on ``conn`` in the caller's thread, at :meth:`send`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        self.pid: int | None = None
        self.restarts = 0
        self._result: float | Exception | None = None

    def encode(self, tables: Tables) -> Any:
        """The batch as :meth:`send` takes it: as it is."""
        return tables

    def send(self, wire: Any) -> None:
        tables: Tables = wire
        t0 = time.perf_counter()
        try:
            write_batch(self.conn, tables)
            self._result = (time.perf_counter() - t0) * 1e3
        except Exception as e:  # wait() raises it, as the process writer does
            self._result = e

    def wait(self) -> float:
        r, self._result = self._result, None
        if isinstance(r, Exception):
            try:
                raise r
            finally:
                del r  # no cycle through this frame (it holds the caller's batch)
        if r is None:
            raise RuntimeError("ThreadWriter.wait() without a batch sent")
        return r

    def restart(self) -> None:
        """Nothing to restart: the store's connection stays."""

    def close(self, timeout_s: float = 10.0) -> None:
        """The store closes its connection itself."""

    def kill(self) -> None:
        """Nothing runs on its own."""


def rebuild_error(kind: str, message: str, err_no: int | None) -> Exception:
    """The child's exception as the parent's class: ``sqlite3.<kind>``, an ``OSError``
    with its errno (a full disk stays ``ENOSPC``), or :class:`WriterError`."""
    cls = getattr(sqlite3, kind, None)
    if isinstance(cls, type) and issubclass(cls, sqlite3.Error):
        return cls(message)
    if err_no is not None:
        return OSError(err_no, message)
    if kind == "MemoryError":
        return OSError(errno.ENOMEM, message)
    return WriterError(f"{kind}: {message}")


class ProcessWriter:
    """A child process (``python -I store_writer.py``) that commits the batches.

    Args:
        db_path: the store's database (migrated by the store before).
        synchronous: SQLite's mode for the child's connection.
    """

    def __init__(self, db_path: Path, synchronous: str, pass_fds: tuple[int, ...] = ()) -> None:
        self.db_path = db_path
        self.mode = synchronous
        # the data folder's lock: the child holds it too, so a station started after this
        # one died waits until the batch the child was committing is done
        self.pass_fds = pass_fds
        self.synchronous = -1
        self.pid: int | None = None
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed: Exception | None = None  # raised by the next wait()
        self._start()

    def _start(self) -> None:
        cmd = [sys.executable, "-I", str(WRITER_SCRIPT), str(self.db_path), self.mode]
        self._proc = None
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=self.pass_fds
            )
        except OSError as e:  # ENOMEM, EAGAIN: no child; the next wait() says so again
            raise WriterDied(e.errno or errno.EPIPE, f"cannot start the store's writer: {e}") from e
        self._proc = proc
        hello = self._read()
        if hello is None:
            self.kill()
            self._discard()
            self._proc = None
            raise WriterDied(
                errno.EPIPE,
                f"the store's writer process could not start (exit code {proc.returncode}; "
                f"its error is in the log above): {' '.join(cmd)}",
            )
        _, self.pid, self.synchronous = hello
        log.debug("store writer process %s started", self.pid)

    def _read(self) -> Any:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        try:
            frame = read_frame(proc.stdout)
        except (OSError, ValueError):  # a pipe closed under us: the same as its end
            return None
        return None if frame is None else pickle.loads(frame)

    def encode(self, tables: Tables) -> Any:
        """The batch pickled (made while the child commits the batch before), or the
        error a value pickle cannot carry (raised by the :meth:`wait` after its send)."""
        try:
            return pickle.dumps(tables, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            return WriterError(f"{type(e).__name__}: {e}")

    def send(self, wire: Any) -> None:
        if isinstance(wire, Exception):  # that batch fails, not the store
            self._failed = wire
            return
        proc = self._proc
        if proc is None or proc.stdin is None:
            self._failed = WriterDied(errno.EPIPE, "the store has no writer process running")
            return
        try:
            write_frame(proc.stdin, wire)
        except (OSError, ValueError):  # the child is gone: wait() says so
            self._failed = self._died()

    def _died(self) -> WriterDied:
        code = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(timeout=5)
        return WriterDied(
            errno.EPIPE,
            f"the store's writer process {self.pid} ended (exit code {code}) before it answered",
        )

    def wait(self) -> float:
        if self._failed is not None:
            e, self._failed = self._failed, None
            try:
                raise e
            finally:
                del e  # no cycle through this frame (it holds the caller's batch)
        reply = self._read()
        if reply is None:
            raise self._died()
        if reply[0] == "ok":
            return float(reply[1])
        raise rebuild_error(*reply[1:])

    def restart(self) -> None:
        """A new child in place of a dead (or stuck) one; raises :class:`WriterDied` if
        none starts (the next :meth:`wait` then raises it again)."""
        self.kill()
        self._discard()
        self._failed = None
        self._start()
        self.restarts += 1

    def close(self, timeout_s: float = 10.0) -> None:
        """End the child after the batch it holds (closing its stdin); kill it after
        ``timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            log.error("the store writer process %s did not stop: killed", self.pid)
            self.kill()
        finally:
            self._discard()

    def kill(self) -> None:
        """Stop the child now (SQLite rolls back the transaction it was in). Safe from
        another thread while the store's writer thread waits for the child's answer."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # stuck in the kernel (a dying disk)
                log.error("the store writer process %s does not end after SIGKILL", self.pid)

    def _discard(self) -> None:
        """Close the pipes to a child that ended."""
        proc = self._proc
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass  # a broken pipe to a dead child: nothing left to flush
