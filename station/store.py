"""The station's result store: SQLite (WAL, ``synchronous=FULL``) written by one thread.

The inspection loop calls :meth:`ResultStore.put`, which only enqueues; a
writer thread commits batches (inspection rows, their detections and their
outbox entries in one transaction) and writes the JPEGs of the verdicts that
are kept. A row is acknowledged — shown as stored, synced — only after its
batch committed.

On a full disk rows come first, images are best effort (retried without, off until
``min_free_mb`` is free); a stalled writer folds all queued rows into the batch it
retries (one transaction when space returns); queued pixels are bounded by
``queue_max_mb``; :meth:`ResultStore.close` counts what was never committed.
"""

from __future__ import annotations

import functools
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import sqlite_utils

from kanjian.camera.frame import Frame
from kanjian.inference.heads import store_fields as task_store_fields
from kanjian.inference.heads import task_columns
from kanjian.inference.types import Inspection, Verdict
from kanjian.station.counters import IdCounter, Seed
from kanjian.station.images import IMAGES_DIR, image_relpath, remove_leftover_tmp
from kanjian.station.records import (
    CLASS_INDEX_INSERT,
    DETECTION_COLUMNS,
    INSPECTION_COLUMNS,
    class_index_rows,
    stored_rows,
    utc_iso,
)
from kanjian.station.schema import check_not_newer, migrate
from kanjian.station.store_health import (
    MB,
    Stall,
    StoreCloseResult,
    StoreStats,
    error_stand_in,
    free_bytes,
    is_space_error,
    pixel_bytes,
    without_pixels,
)

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


_STOP = object()
#: the ``outbox`` values the store writes per inspection, in this order
OUTBOX_COLUMNS: tuple[str, ...] = ("seq", "inspection_id", "created_at", "attempts")
_READ_MODEL_COLUMNS = frozenset(INSPECTION_COLUMNS)


@functools.lru_cache(maxsize=32)
def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


class ResultStore:
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
        self._taken = 0  # items the writer took from the queue and has not task_done'd
        self._stop_seen = False
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
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:  # the writer is stuck; what is queued cannot be committed
                self._abandon.set()
            while self._thread.is_alive():
                limit = self._stall.give_up_at(t0, deadline, stalled_timeout_s)
                now = time.monotonic()
                if now >= limit:
                    log.error("the store writer is stalled (%s): giving up", self._stall.error)
                    self._abandon.set()
                    self._thread.join(5.0)
                    break
                self._thread.join(min(0.1, limit - now))
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
        )

    def _not_saved(self, n: int, why: str) -> None:
        # counted per image, logged once per thousand: a full disk drops thousands
        with self._count_lock:  # the loop's put and the writer both count
            before, self._images_not_saved = self._images_not_saved, self._images_not_saved + n
        if n and (before == 0 or before // 1000 != self._images_not_saved // 1000):
            log.warning("%d image(s) not saved so far (now: %s)", self._images_not_saved, why)

    # -- writer thread ---------------------------------------------------------
    def _run(self) -> None:
        # Group commit: take what is queued now (up to batch_max_rows), commit it,
        # repeat. Under load batches grow by themselves while a commit runs; when
        # idle a row is committed at once. ``batch_max_delay_ms`` > 0 lingers to
        # gather more rows per transaction at the cost of latency.
        while not self._stop_seen:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._abandon.is_set():
                    break  # close() gave up and its stop marker never got in
                continue
            batch: list[Inspection] = []
            self._taken = 0
            self._take(first, batch)
            deadline = time.monotonic() + self.batch_max_delay_s
            while not self._stop_seen and len(batch) < self.batch_max_rows:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                self._take(item, batch)
            if batch and not self._abandon.is_set():
                self._commit_with_retry(batch, gather=True)
            freed = 0
            for insp in batch:
                if insp.inspection_id in self._no_image:
                    self._no_image.discard(insp.inspection_id)
                else:
                    freed += pixel_bytes(insp)
            with self._count_lock:
                self._queued_bytes -= freed
            for _ in range(self._taken):
                self._queue.task_done()
            with self._idle:
                self._idle.notify_all()

    def _gather_all(self, batch: list[Inspection]) -> None:
        """Add everything queued now to ``batch`` (during a stall): when space
        returns the whole backlog commits in one transaction, not in batch-sized steps."""
        while not self._stop_seen:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._take(item, batch)

    def _take(self, item: Any, batch: list[Inspection]) -> None:
        """One item taken from the queue: an inspection joins ``batch``; the stop marker
        ends the writer after this batch."""
        self._taken += 1
        if item is _STOP:
            self._stop_seen = True
        else:
            batch.append(item)

    def _commit_with_retry(self, batch: list[Inspection], gather: bool = False) -> None:
        delay = 0.1
        while True:
            try:
                self._commit(batch)
                self._stall.clear()
                return
            except (sqlite3.OperationalError, OSError) as e:
                # Disk full, locked, I/O error: keep the batch and try again; never drop it.
                self._errors += 1
                self._stall.failed(e)
                if self._abandon.is_set():
                    return  # close() gave up: counted as not committed
                if is_space_error(e) and not self._images_paused:
                    # rows first: retry at once without images (best effort), which
                    # also frees what this batch's images took
                    log.error("store write failed (%s): saving rows without images", e)
                    self._images_paused = True
                    continue
                log.error("store write failed (%s); retrying in %.1fs", e, delay)
                self._abandon.wait(delay)
                delay = min(delay * 2, 5.0)
                if gather:
                    self._gather_all(batch)
            except Exception as e:
                # Not transient (a constraint, a value SQLite or the JPEG encoder refuses):
                # retrying would block every row behind it, and an exception here would
                # end the writer thread. Find the row at fault, write the others.
                if len(batch) > 1:
                    for one in batch:
                        self._commit_with_retry([one])
                    return
                self._commit_instead(batch[0], e)
                return

    def _commit_instead(self, insp: Inspection, error: Exception) -> None:
        """Write an ERROR row in place of an inspection that cannot be written.

        Its listeners (the trigger's future, the PLC, the screen) then get an
        answer instead of waiting forever; the row names the cause and the
        original inspection id.
        """
        self._errors += 1
        log.error("inspection %s cannot be stored (%s: %s); an ERROR row takes its place",
                  insp.inspection_id, type(error).__name__, error)  # fmt: skip
        err = error_stand_in(insp, error)
        try:
            self._commit([err])
        except Exception:  # nothing more can be done for this one; the writer goes on
            log.exception("the ERROR row for inspection %s could not be written either",
                          insp.inspection_id)  # fmt: skip

    def _save_image(
        self, insp: Inspection, written: list[Path], skipped: list[Inspection]
    ) -> str | None:
        """Save the frame as JPEG if its verdict is kept; the files go into ``written``
        (so a failed transaction can remove them). ``None`` when not saved."""
        if not isinstance(insp.frame, Frame) or insp.verdict.value not in self.save_verdicts:
            return None
        if insp.inspection_id in self._no_image:  # no pixels: counted in put()
            return None
        if self._images_paused:
            skipped.append(insp)  # counted once the row is committed
            return None
        rel = image_relpath(insp)
        path = self.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(
            ".jpg", insp.frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        )
        if not ok:
            raise OSError(f"JPEG encoding failed for {insp.inspection_id}")
        tmp = path.with_suffix(".tmp")
        written.append(tmp)
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)
        written.append(path)
        return rel

    def _commit(self, batch: list[Inspection]) -> None:
        t0 = time.perf_counter()
        # after a write failed for lack of space, images wait for min_free_mb free
        paused = self._images_paused and self._stall.at is None
        if paused and free_bytes(self.data_dir) >= max(self._min_free_bytes, 1):
            self._images_paused = False
            log.warning("free space is back: images are saved again")
        written: list[Path] = []
        try:
            self._commit_rows(batch, written, t0)
        except BaseException:
            for p in written:  # a row never names them: free their space
                p.unlink(missing_ok=True)
            raise

    def _commit_rows(self, batch: list[Inspection], written: list[Path], t0: float) -> None:
        skipped: list[Inspection] = []
        images = [self._save_image(i, written, skipped) for i in batch]
        # the task heads' own columns (a registered head may add some); those the read
        # model has too (probs_json, score) take the read model's value
        extra = [c for c in task_columns() if c not in _READ_MODEL_COLUMNS]
        rows: list[tuple[Any, ...]] = []
        dets: list[tuple[Any, ...]] = []
        classes: list[tuple[str, str, int]] = []
        outbox: list[tuple[Any, ...]] = []
        seq = self._seq
        now = utc_iso()
        for insp, img in zip(batch, images, strict=False):
            seq += 1
            row, drows = stored_rows(insp, station_id=self.station_id, seq=seq, image_path=img)
            if extra:
                fields = task_store_fields(insp)
                row += tuple(fields[c] for c in extra)
            rows.append(row)
            if drows:
                dets += drows
            # row[15]: top_class, row[9]: verdict (INSPECTION_COLUMNS)
            if row[15] is not None or drows:
                classes += class_index_rows(row[9], seq, row[15], [r[3] for r in drows])
            outbox.append((seq, row[0], now, 0))
        # sized before the commit: once committed, store.retention may delete them at once
        saved = sum(p.stat().st_size for p in written if p.suffix == ".jpg")
        # One transaction: inspections + detections + classes + outbox, or nothing.
        # IMMEDIATE takes the write lock up front: a deferred BEGIN that reads first
        # fails at once with SQLITE_BUSY when another connection commits in between.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # plain executemany of tuples: cheaper than sqlite-utils (benchmarks/store.py)
            conn = self.db.conn
            conn.executemany(_insert_sql("inspections", (*INSPECTION_COLUMNS, *extra)), rows)
            if dets:
                conn.executemany(_insert_sql("detections", DETECTION_COLUMNS), dets)
            if classes:
                conn.executemany(CLASS_INDEX_INSERT, classes)
            conn.executemany(_insert_sql("outbox", OUTBOX_COLUMNS), outbox)
            conn.execute("COMMIT")
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
            raise
        self._seq = seq
        self.image_bytes_saved += saved
        self._written += len(batch)
        self._not_saved(len(skipped), "the disk was full")
        self._batches += 1
        self._last_commit_ms = (time.perf_counter() - t0) * 1e3
        for listener in self._listeners:
            try:
                listener(batch)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("store listener %r failed", listener)
