"""The station's result store: SQLite (WAL, ``synchronous=FULL``), written in batches.

The inspection loop calls :meth:`ResultStore.put`, which only enqueues; a writer
thread takes batches, writes the JPEGs of the verdicts that are kept and makes the
rows (inspections, their detections, class index and outbox entries); a writer
process (store_writer.py; ``store.writer: thread`` keeps it in this process)
commits each batch in one transaction while the thread makes the next one's rows.
A row is acknowledged — shown as stored, synced — only after its batch committed.

On a full disk rows come first, images are best effort (retried without, off until
``min_free_mb`` is free); a stalled writer folds all queued rows into the batch it
retries (one transaction when space returns); queued pixels are bounded by
``queue_max_mb``; :meth:`ResultStore.close` counts what was never committed.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from kanjian.inference.types import Inspection, Verdict
from kanjian.station.counters import IdCounter, Seed
from kanjian.station.datalock import held_fd
from kanjian.station.images import IMAGES_DIR, remove_leftover_tmp
from kanjian.station.schema import check_not_newer, migrate
from kanjian.station.store_batches import STOP, BatchWriter
from kanjian.station.store_health import (
    MB,
    Stall,
    StoreCloseResult,
    StoreStats,
    pixel_bytes,
    without_pixels,
)
from kanjian.station.store_rows import OUTBOX_COLUMNS
from kanjian.station.store_writers import ProcessWriter, StoreWriter, ThreadWriter

__all__ = ["DB_NAME", "OUTBOX_COLUMNS", "ResultStore", "open_db"]

log = logging.getLogger(__name__)

DB_NAME = "kanjian.db"


def open_db(path: Path, synchronous: str = "FULL") -> sqlite_utils.Database:
    """Open (and migrate) the store's database file in WAL mode.

    Raises :class:`~kanjian.station.schema.StoreTooNewError`, having written nothing,
    when a newer kanjian release migrated the database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit at the sqlite3 level; transactions are explicit (Database.atomic)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0, isolation_level=None)
    try:
        check_not_newer(conn)  # before any pragma or migration writes to it
    except BaseException:
        conn.close()
        raise
    db = sqlite_utils.Database(conn)
    # auto_vacuum acts on a new file only (before its first table): it can then shrink
    # after retention deletes (PRAGMA incremental_vacuum); an older file keeps its mode
    for pragma in ("auto_vacuum=INCREMENTAL", "journal_mode=WAL", f"synchronous={synchronous}",
                   "foreign_keys=ON"):  # fmt: skip
        db.execute(f"PRAGMA {pragma}")
    migrate(db)
    return db


def _lock_fds(data_dir: Path) -> tuple[int, ...]:
    fd = held_fd(data_dir)
    return () if fd is None else (fd,)


class ResultStore(BatchWriter):
    """SQLite store with a background batch writer.

    Args:
        data_dir: folder for ``kanjian.db`` and ``images/``.
        station_id: written into every row.
        save_verdicts: verdict names whose frames are saved as JPEG.
        on_commit: called from the writer thread with the committed inspections,
            after their transaction is durable (sinks that must not see
            uncommitted rows hook in here).
        queue_max_mb: memory bound of the queued frames' pixels, MB. Over it an
            inspection is still queued (rows come first) but its pixels are
            dropped: its image is not saved (counted, logged). 0: no bound.
        min_free_mb: after a write failed for lack of space, images are saved
            again only once the data folder has this much free space.
        writer: ``process``: batches are committed by a child process while this
            one makes the next batch's rows (two cores at work); ``thread``: by the
            writer thread itself, on this process's connection.
    """

    def __init__(
        self,
        data_dir: Path,
        station_id: str = "station-1",
        save_verdicts: tuple[str, ...] = (Verdict.FAIL.value, Verdict.REVIEW.value),
        jpeg_quality: int = 90,
        batch_max_rows: int = 500,
        batch_max_delay_ms: float = 0.0,
        queue_size: int = 100_000,
        synchronous: str = "FULL",
        on_commit: Callable[[list[Inspection]], None] | None = None,
        queue_max_mb: float = 256.0,
        min_free_mb: float = 200.0,
        writer: Literal["process", "thread"] = "process",
    ) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.station_id = station_id
        self.save_verdicts = set(save_verdicts)
        self.jpeg_quality = jpeg_quality
        self.batch_max_rows = batch_max_rows
        self.batch_max_delay_s = batch_max_delay_ms / 1e3
        self._listeners: list[Callable[[list[Inspection]], None]] = []
        if on_commit is not None:
            self._listeners.append(on_commit)
        self.db = open_db(self.db_path, synchronous)
        self._synchronous = synchronous
        self._counters: list[IdCounter] = []
        leftovers = remove_leftover_tmp(data_dir / IMAGES_DIR)
        if leftovers:
            log.warning("removed %d temp image file(s) left by an earlier stop", leftovers)
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM inspections").fetchone()
        self._seq = int(row[0])
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._written = self._batches = self._blocked = self._errors = 0
        # JPEG bytes this store wrote since start (monotonic; a status figure adds it
        # to its last folder count, so a fresh station does not show 0 for 5 minutes)
        self.image_bytes_saved = 0
        self._last_commit_ms = 0.0
        # accounting (store_health.py): judged vs committed, the stall, dropped images
        self._count_lock = threading.Lock()
        self._judged = 0
        self._queue_max_bytes = int(queue_max_mb * MB)
        self._queued_bytes = 0
        self._no_image: set[uuid.UUID] = set()  # pixels dropped: saved without an image
        self._images_not_saved = 0
        self._min_free_bytes = int(min_free_mb * MB)
        self._images_paused = False  # since a write failed for lack of space
        self._stall = Stall()
        self._abandon = threading.Event()  # close() gave up: stop retrying
        self._stop_seen = False
        try:
            self._writer: StoreWriter = (
                ProcessWriter(self.db_path, synchronous, _lock_fds(data_dir))
                if writer == "process"
                else ThreadWriter(self.db.conn)
            )
        except BaseException:
            self.db.conn.close()
            raise
        #: ``PRAGMA synchronous`` on the connection that commits (2: FULL)
        self.writer_synchronous = self._writer.synchronous
        self._closed: StoreCloseResult | None = None
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------
    def put(self, insp: Inspection) -> None:
        """Enqueue an inspection for writing; returns at once unless the queue is full.

        A full queue means the disk cannot keep up: we wait (and count it)
        rather than drop an inspection. Over ``queue_max_mb`` of queued frame-sized arrays
        (pixels, masks, anomaly maps) the frame's pixels and its anomaly map are dropped
        first: the row is kept, the image is not saved.
        """
        nbytes = pixel_bytes(insp)
        with self._count_lock:
            self._judged += 1
            over = self._queued_bytes + nbytes > self._queue_max_bytes
            drop = bool(self._queue_max_bytes) and nbytes > 0 and over
            if drop:
                insp = without_pixels(insp)
                nbytes = pixel_bytes(insp)  # its masks, still held (and freed when written)
            self._queued_bytes += nbytes
        if drop:
            if insp.verdict.value in self.save_verdicts:
                self._not_saved(
                    1, f"queue over store.queue_max_mb {self._queue_max_bytes / MB:.3g} MB"
                )
            self._no_image.add(insp.inspection_id)
        try:
            self._queue.put_nowait(insp)
        except queue.Full:
            self._blocked += 1
            log.warning(
                "store queue full (%d): the inspection loop waits for the disk", self._queue.maxsize
            )
            self._queue.put(insp)

    def add_listener(self, fn: Callable[[list[Inspection]], None]) -> None:
        """Call ``fn(batch)`` from the writer thread after each durable commit.

        Listeners must be quick (hand work to their own thread): the writer
        waits for them.
        """
        self._listeners.append(fn)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything put so far is committed. Returns ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def counter(self, name: str, seed: Seed | None = None) -> IdCounter:
        """The persisted counter ``name`` (station/counters.py), closed with the store.

        ``seed``: for a counter this database does not hold yet, the last number
        already in use (e.g. :func:`~kanjian.station.counters.last_numbered`).
        """
        c = IdCounter(self.db_path, name, seed=seed, synchronous=self._synchronous)
        self._counters.append(c)
        return c

    def close(self, timeout_s: float = 60.0, stalled_timeout_s: float = 10.0) -> StoreCloseResult:
        """Commit everything queued, stop the writer, give back unused counter
        numbers and close the database.

        Waits up to ``timeout_s`` for the writer; while its commits fail (a
        stall: disk full) it retries for ``stalled_timeout_s`` more, then gives
        up. Returns what was committed and what was not (and why): the caller
        names the loss in its last line.
        """
        if self._closed is not None:
            return self._closed
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        if self._thread.is_alive():
            try:
                self._queue.put(STOP, timeout=timeout_s)
            except queue.Full:  # the writer is stuck; what is queued cannot be committed
                self._abandon.set()
            while self._thread.is_alive():
                limit = self._stall.give_up_at(t0, deadline, stalled_timeout_s)
                now = time.monotonic()
                if now >= limit:
                    log.error("the store writer is stalled (%s): giving up", self._stall.error)
                    self._abandon.set()
                    self._writer.kill()  # a commit it is stuck in is rolled back
                    self._thread.join(5.0)
                    break
                self._thread.join(min(0.1, limit - now))
        self._writer.close()
        for c in self._counters:
            c.close()
        self.db.conn.close()
        with self._count_lock:  # a consistent pair
            n = (self._judged, self._written)
        self._closed = StoreCloseResult.of(*n, self._stall.error, self._images_not_saved)
        return self._closed

    def stats(self) -> StoreStats:
        return StoreStats(
            queued=self._queue.qsize(),
            written=self._written,
            batches=self._batches,
            blocked_puts=self._blocked,
            errors=self._errors,
            last_commit_ms=self._last_commit_ms,
            judged=self._judged,
            stalled=self._stall.at is not None,
            stalled_since=self._stall.since(),
            last_error=self._stall.error,
            images_not_saved=self._images_not_saved,
            queued_bytes=self._queued_bytes,
            writer="process" if isinstance(self._writer, ProcessWriter) else "thread",
            writer_pid=self._writer.pid,
            writer_restarts=self._writer.restarts,
        )
