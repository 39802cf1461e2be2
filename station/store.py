"""The station's result store: SQLite (WAL, ``synchronous=FULL``) written by one thread.

The inspection loop calls :meth:`ResultStore.put`, which only enqueues; a
writer thread commits batches (inspection rows, their detections and their
outbox entries in one transaction) and writes the JPEGs of the verdicts that
are kept. A row is acknowledged — shown as stored, synced — only after its
batch committed.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import sqlite_utils

from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.heads import store_fields as task_store_fields
from kanjian.inference.types import Detections, Inspection, Verdict
from kanjian.station.counters import IdCounter, Seed
from kanjian.station.records import StoredInspection, utc_iso
from kanjian.station.schema import check_not_newer, migrate

log = logging.getLogger(__name__)

DB_NAME = "kanjian.db"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class StoreStats:
    """Counters of the writer, for ``/status`` and benchmarks.

    Attributes:
        queued: inspections waiting for the writer now.
        written: rows committed since start.
        batches: transactions committed since start.
        blocked_puts: times :meth:`ResultStore.put` had to wait for a full queue.
        errors: failed batches (retried) since start.
        last_commit_ms: duration of the last transaction in milliseconds.
    """

    queued: int
    written: int
    batches: int
    blocked_puts: int
    errors: int
    last_commit_ms: float


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
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA foreign_keys=ON")
    migrate(db)
    return db


def image_relpath(insp: Inspection) -> str:
    """Where an inspection's image is saved, relative to the data folder (by UTC capture date)."""
    day = utc_iso(insp.frame.captured_at)[:10]
    return f"{IMAGES_DIR}/{day}/{insp.inspection_id}.jpg"


#: the temp files :meth:`ResultStore._save_image` writes before the rename: ``<uuid>.tmp``
_TMP_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp")


def remove_leftover_tmp(images_dir: Path) -> int:
    """Delete the temp images a killed writer left (``images/<day>/<uuid>.tmp``); how many.

    An image is written to ``<uuid>.tmp`` and renamed to ``<uuid>.jpg``; a kill
    between the two leaves the temp file, which no row names. Only files of
    exactly that name pattern, one folder deep, are removed.
    """
    removed = 0
    if not images_dir.is_dir():
        return 0
    for path in images_dir.glob("*/*.tmp"):
        if _TMP_NAME.fullmatch(path.name) and not path.is_symlink() and path.is_file():
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


_STOP = object()


def _insert_many(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """INSERT rows that all have the first row's keys, in one ``executemany``."""
    cols = list(rows[0])
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    conn.executemany(sql, [tuple(r[c] for c in cols) for r in rows])


class ResultStore:
    """SQLite store with a background batch writer.

    Args:
        data_dir: folder for ``kanjian.db`` and ``images/``.
        station_id: written into every row.
        save_verdicts: verdict names whose frames are saved as JPEG.
        on_commit: called from the writer thread with the committed inspections,
            after their transaction is durable (sinks that must not see
            uncommitted rows hook in here).
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
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------
    def put(self, insp: Inspection) -> None:
        """Enqueue an inspection for writing; returns at once unless the queue is full.

        A full queue means the disk cannot keep up: we wait (and count it)
        rather than drop an inspection.
        """
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

    def close(self, timeout_s: float = 60.0) -> None:
        """Commit everything queued, stop the writer, give back unused counter
        numbers and close the database."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        for c in self._counters:
            c.close()
        self.db.conn.close()

    def stats(self) -> StoreStats:
        return StoreStats(
            queued=self._queue.qsize(),
            written=self._written,
            batches=self._batches,
            blocked_puts=self._blocked,
            errors=self._errors,
            last_commit_ms=self._last_commit_ms,
        )

    # -- writer thread ---------------------------------------------------------
    def _run(self) -> None:
        # Group commit: take what is queued now (up to batch_max_rows), commit it,
        # repeat. Under load batches grow by themselves while a commit runs; when
        # idle a row is committed at once. ``batch_max_delay_ms`` > 0 lingers to
        # gather more rows per transaction at the cost of latency.
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[Inspection] = []
            n_items = 1
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)
            deadline = time.monotonic() + self.batch_max_delay_s
            while not stopping and len(batch) < self.batch_max_rows:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                n_items += 1
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                self._commit_with_retry(batch)
            for _ in range(n_items):
                self._queue.task_done()
            with self._idle:
                self._idle.notify_all()

    def _commit_with_retry(self, batch: list[Inspection]) -> None:
        delay = 0.1
        while True:
            try:
                self._commit(batch)
                return
            except (sqlite3.OperationalError, OSError) as e:
                # Disk full, locked, I/O error: keep the batch and try again; never drop it.
                self._errors += 1
                log.error("store write failed (%s); retrying in %.1fs", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
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
        frame = insp.frame

        def clean(text: str | None) -> str | None:
            # e.g. a file name with bytes that are not UTF-8 (os.listdir's surrogates)
            return None if text is None else text.encode("utf-8", "replace").decode("utf-8")

        stand_in = FrameFailure(
            frame_id=frame.frame_id,
            source_id=clean(frame.source_id) or "?",
            captured_at=frame.captured_at,
            reason="",
            trigger_id=clean(frame.trigger_id),
            uri=clean(frame.uri),
        )
        dup = isinstance(error, sqlite3.IntegrityError) and "inspections.id" in str(error)
        err = dataclasses.replace(
            insp,
            frame=stand_in,
            verdict=Verdict.ERROR,
            reason=f"the store could not write inspection {insp.inspection_id}: "
            f"{type(error).__name__}: {error}"[:1000],
            detections=Detections.empty(),
            probs=None,
            anomaly_map=None,
            inspection_id=uuid.uuid4() if dup else insp.inspection_id,
        )
        try:
            self._commit([err])
        except Exception:  # nothing more can be done for this one; the writer goes on
            log.exception("the ERROR row for inspection %s could not be written either",
                          insp.inspection_id)  # fmt: skip

    def _save_image(self, insp: Inspection) -> str | None:
        if insp.verdict.value not in self.save_verdicts or not isinstance(insp.frame, Frame):
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
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)
        self.image_bytes_saved += len(buf)  # only the writer thread writes images
        return rel

    def _commit(self, batch: list[Inspection]) -> None:
        t0 = time.perf_counter()
        images = [self._save_image(i) for i in batch]
        rows, dets, outbox = [], [], []
        seq = self._seq
        now = utc_iso()
        for insp, img in zip(batch, images, strict=False):
            seq += 1
            rec = StoredInspection.from_inspection(
                insp, station_id=self.station_id, seq=seq, image_path=img
            )
            # the task's own columns (a registered head may add some); the read model's
            # columns come last and win (probs_json is one of them: same value)
            rows.append({**task_store_fields(insp), **rec.row()})
            dets.extend(rec.detection_rows())
            outbox.append({"seq": seq, "inspection_id": rec.id, "created_at": now, "attempts": 0})
        # One transaction: inspections + detections + outbox, or nothing. IMMEDIATE
        # takes the write lock up front: a deferred BEGIN that reads first fails at
        # once with SQLITE_BUSY when another connection (sync worker, API) commits
        # in between, instead of waiting for the busy timeout.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # Plain executemany: sqlite-utils' insert_all spent as long converting
            # values as SQLite spent storing them (py-spy, benchmarks/store.py).
            conn = self.db.conn
            _insert_many(conn, "inspections", rows)
            if dets:
                _insert_many(conn, "detections", dets)
            _insert_many(conn, "outbox", outbox)
            conn.execute("COMMIT")
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
            raise
        self._seq = seq
        self._written += len(batch)
        self._batches += 1
        self._last_commit_ms = (time.perf_counter() - t0) * 1e3
        for listener in self._listeners:
            try:
                listener(batch)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("store listener %r failed", listener)
