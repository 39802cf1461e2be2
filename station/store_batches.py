"""The result store's writer thread: batches taken, rows made, commits awaited.

:class:`BatchWriter` is the half of :class:`~kanjian.station.store.ResultStore` that
runs on its ``store-writer`` thread (store.py holds the producer's half: ``put``,
``flush``, ``close``). It overlaps the two costs of a batch: while the writer
(store_writers.py; a child process by default) commits batch N, this thread takes
batch N+1 off the queue, saves its JPEGs and makes its rows (store_rows.py), and
sends it the moment N is durable. A failed batch, and everything behind it, goes
the careful way (:meth:`BatchWriter._commit_with_retry`): retried while the
failure is transient (full disk, lock, I/O, a writer process that died), folded
together while stalled, a row that cannot be written replaced by an ERROR row.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from kanjian.camera.frame import Frame
from kanjian.inference.types import Inspection
from kanjian.station.store_health import (
    Stall,
    error_stand_in,
    free_bytes,
    is_space_error,
    pixel_bytes,
)
from kanjian.station.store_rows import Prepared, prepare, save_jpeg
from kanjian.station.store_writers import StoreWriter, WriterDied

log = logging.getLogger("kanjian.station.store")

#: put on the queue by ``close()``: the writer ends after what it holds
STOP = object()


@dataclass
class _Taken:
    """Items the writer thread took off the queue: the inspections, and how many
    ``task_done`` calls they owe (the stop marker counts)."""

    items: list[Inspection] = field(default_factory=list)
    n: int = 0

    def absorb(self, other: _Taken) -> None:
        self.items += other.items
        self.n += other.n


class BatchWriter:
    """The writer thread's side of the store (a base of ``ResultStore``, which sets
    these attributes up in its ``__init__`` and starts :meth:`_run` on a thread)."""

    data_dir: Path
    db: sqlite_utils.Database
    station_id: str
    save_verdicts: set[str]
    jpeg_quality: int
    batch_max_rows: int
    batch_max_delay_s: float
    image_bytes_saved: int
    _queue: queue.Queue[Any]
    _writer: StoreWriter
    _listeners: list[Callable[[list[Inspection]], None]]
    _seq: int
    _written: int
    _batches: int
    _errors: int
    _last_commit_ms: float
    _count_lock: threading.Lock
    _queued_bytes: int
    _no_image: set[uuid.UUID]
    _images_not_saved: int
    _min_free_bytes: int
    _images_paused: bool
    _stall: Stall
    _abandon: threading.Event
    _stop_seen: bool
    _idle: threading.Condition

    def _run(self) -> None:
        # Group commit, pipelined: while the writer commits one batch, this thread takes
        # what is queued now (up to batch_max_rows) and makes its rows, then sends it as
        # soon as the first is durable. Under load batches grow by themselves; when idle
        # a row is committed at once (``batch_max_delay_ms`` > 0 lingers for more).
        flying: tuple[_Taken, Prepared] | None = None
        while True:
            nxt = self._take_batch(wait=flying is None)
            if flying is not None:
                flying = self._land(flying, nxt)
            elif nxt is not None:
                flying = self._begin(nxt)
            elif self._stop_seen or self._abandon.is_set():
                return

    def _land(
        self, flight: tuple[_Taken, Prepared], nxt: _Taken | None
    ) -> tuple[_Taken, Prepared] | None:
        """See ``flight`` committed (or not) while making ``nxt``'s rows; returns the
        flight now with the writer. A method of its own so that nothing of a batch
        outlives it in the loop's variables (an idle station would hold the last
        backlog's pixels until the next part came)."""
        taken, sent = flight
        ready = None
        if nxt is not None and nxt.items and not self._abandon.is_set():
            ready = self._try_prepare(nxt.items, sent.seq0 + len(sent.batch))
        error = self._wait(sent)
        flying = None
        if error is None:
            self._advance(sent)
            if nxt is not None and ready is not None and ready.seq0 == self._seq:
                # sent before this batch's listeners run (it may commit before they
                # are done; listeners still hear of batches in seq order)
                self._writer.send(ready.wire)
                flying, nxt, ready = (nxt, ready), None, None
            self._notify(sent.batch)
            if ready is not None:
                ready.unlink()
            if nxt is not None:
                flying = self._begin(nxt)
        else:
            # the careful way for the failed batch and all behind it: one at a
            # time, retried, folded together while stalled (_commit_with_retry)
            sent.unlink()  # not committed (nor ever will be): its JPEGs go
            if ready is not None:
                ready.unlink()
            if nxt is not None:
                taken.absorb(nxt)
            if not self._abandon.is_set():
                self._commit_with_retry(taken.items, gather=taken, first=error)
        # the error's traceback runs through _wait's frame, whose caller is this frame:
        # held here, the two would keep each other (and the batch) until a full GC
        del error
        self._release(taken)
        return flying

    def _take_batch(self, wait: bool) -> _Taken | None:
        """What is queued now, up to ``batch_max_rows`` (``wait``: for the first item up
        to 0.5 s, then ``batch_max_delay_ms`` for more); ``None`` when nothing came."""
        if self._stop_seen:
            return None
        try:
            first = self._queue.get(timeout=0.5) if wait else self._queue.get_nowait()
        except queue.Empty:
            return None
        t = _Taken()
        self._take(first, t)
        deadline = time.monotonic() + (self.batch_max_delay_s if wait else 0.0)
        while not self._stop_seen and len(t.items) < self.batch_max_rows:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            self._take(item, t)
        return t

    def _take(self, item: Any, t: _Taken) -> None:
        """One item taken from the queue: an inspection joins ``t``; the stop marker
        ends the writer after what it holds."""
        t.n += 1
        if item is STOP:
            self._stop_seen = True
        else:
            t.items.append(item)

    def _gather_all(self, t: _Taken) -> None:
        """Add everything queued now to ``t`` (during a stall): when space returns the
        whole backlog commits in one transaction, not in batch-sized steps."""
        while not self._stop_seen:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._take(item, t)

    def _begin(self, t: _Taken) -> tuple[_Taken, Prepared] | None:
        """Make ``t``'s rows and send them to the writer; ``None`` when ``t`` was dealt
        with here: nothing to commit, given up, or its rows could not be made (then
        committed the careful way, synchronously)."""
        if not t.items or self._abandon.is_set():
            self._release(t)
            return None
        ready = self._try_prepare(t.items, self._seq)
        if ready is None:
            self._commit_with_retry(t.items, gather=t)
            self._release(t)
            return None
        self._writer.send(ready.wire)
        return t, ready

    def _try_prepare(self, batch: list[Inspection], seq0: int) -> Prepared | None:
        """The batch's images and rows, or ``None`` if making them failed (disk full,
        a value the encoder refuses): :meth:`_commit_with_retry` then deals with it."""
        self._maybe_resume_images()
        try:
            p = prepare(batch, seq0, self.station_id, self._save_image)
            p.wire = self._writer.encode(p.tables)
            return p
        except Exception as e:
            log.debug("rows of %d inspection(s) not made ahead (%s)", len(batch), str(e))
            return None

    def _wait(self, p: Prepared) -> Exception | None:
        """The writer's answer for ``p``: ``None`` once committed, else the error.

        A writer process that ended before it answered: whether ``p`` committed is
        settled first, by this process's own read (the dead child's transaction is
        committed or gone for good), so a batch sent again never holds rows already in;
        then a new writer is started (if none starts, the next send says so again).
        """
        try:
            self._last_commit_ms = self._writer.wait()
            return None
        except WriterDied as e:
            landed = self._landed(p)
            if not self._abandon.is_set():
                log.error("%s: starting a new one", str(e))
                try:
                    self._writer.restart()
                except Exception as again:
                    log.error("the store writer did not start again (%s)", str(again))
            return None if landed else e
        except Exception as e:
            return e

    def _landed(self, p: Prepared) -> bool:
        """Whether ``p`` is in the database: its first row under its own seq (seq is
        unique and only this store numbers rows, so a twin id committed earlier, at a
        lower seq, cannot pass for it). Asks again until the read answers: guessing
        either way loses rows or writes them twice. Given up (close), it says no."""
        delay = 0.1
        while True:
            try:
                row = self.db.execute(
                    "SELECT 1 FROM inspections WHERE seq = ? AND id = ?", [p.seq0 + 1, p.first_id]
                ).fetchone()
                return row is not None
            except sqlite3.Error as e:
                if self._abandon.is_set():
                    return False
                log.error("cannot read whether a batch was committed (%s); again in %.1fs",
                          str(e), delay)  # fmt: skip
                self._abandon.wait(delay)
                delay = min(delay * 2, 5.0)

    def _advance(self, p: Prepared) -> None:
        """``p`` is committed: count it."""
        self._seq = p.seq0 + len(p.batch)
        self.image_bytes_saved += p.saved_bytes
        self._written += len(p.batch)
        self._not_saved(len(p.skipped), "the disk was full")
        self._batches += 1
        self._stall.clear()

    def _notify(self, batch: list[Inspection]) -> None:
        for listener in self._listeners:
            try:
                listener(batch)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("store listener %r failed", listener)

    def _release(self, t: _Taken) -> None:
        """``t`` is done with (committed, replaced by ERROR rows, or given up): free its
        queued bytes, mark its queue items done and wake :meth:`flush`."""
        freed = 0
        for insp in t.items:
            # the queued object is the one put() counted (pixels dropped or not)
            self._no_image.discard(insp.inspection_id)
            freed += pixel_bytes(insp)
        with self._count_lock:
            self._queued_bytes -= freed
        for _ in range(t.n):
            self._queue.task_done()
        with self._idle:
            self._idle.notify_all()

    def _commit_with_retry(
        self, batch: list[Inspection], gather: _Taken | None = None, first: Exception | None = None
    ) -> None:
        """Commit ``batch`` (``gather``: the items it came from), whatever it takes:
        transient failures (disk full, locked, I/O) are retried, folding in what is
        queued meanwhile; a row that cannot be written is replaced by an ERROR row.
        ``first``: the error its first attempt already met (pipelined in :meth:`_run`)."""
        delay = 0.1
        while True:
            try:
                if first is not None:
                    e, first = first, None
                    raise e
                self._commit(batch)
                return
            except (sqlite3.OperationalError, OSError) as e:
                # Disk full, locked, I/O error: keep the batch and try again; never drop it.
                # (Logged as str(e): a handler may keep its records, and the exception's
                # traceback holds this batch, pixels and all.)
                if self._abandon.is_set():
                    # close() gave up (and killed the writer): counted as not committed,
                    # under the error that stalled it, not the kill's
                    return
                self._errors += 1
                self._stall.failed(e)
                if is_space_error(e) and not self._images_paused:
                    # rows first: retry at once without images (best effort), which
                    # also frees what this batch's images took
                    log.error("store write failed (%s): saving rows without images", str(e))
                    self._images_paused = True
                    continue
                log.error("store write failed (%s); retrying in %.1fs", str(e), delay)
                self._abandon.wait(delay)
                delay = min(delay * 2, 5.0)
                if gather is not None:
                    self._gather_all(gather)
            except Exception as e:
                if self._seq_behind(e):
                    continue  # numbered again from the database's own last seq
                # Not transient (a constraint, a value SQLite or the JPEG encoder refuses):
                # retrying would block every row behind it, and an exception here would
                # end the writer thread. Find the row at fault, write the others.
                if len(batch) > 1:
                    for one in batch:
                        self._commit_with_retry([one])
                    return
                self._commit_instead(batch[0], e)
                return

    def _seq_behind(self, e: Exception) -> bool:
        """After a seq clash: whether the database holds rows past this store's last
        seq (a batch committed unseen); then the store goes on from there (logged)
        rather than clash, and stand in ERROR rows, for every inspection after it."""
        if not (isinstance(e, sqlite3.IntegrityError) and "inspections.seq" in str(e)):
            return False
        try:
            last = int(
                self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM inspections").fetchone()[0]
            )
        except sqlite3.Error:
            return False
        if last <= self._seq:
            return False
        log.error(
            "the store's seq was %d, the database's %d: numbering from there", self._seq, last
        )
        self._seq = last
        return True

    def _commit_instead(self, insp: Inspection, error: Exception) -> None:
        """Write an ERROR row in place of an inspection that cannot be written.

        Its listeners (the trigger's future, the PLC, the screen) then get an
        answer instead of waiting forever; the row names the cause and the
        original inspection id.
        """
        self._errors += 1
        log.error("inspection %s cannot be stored (%s: %s); an ERROR row takes its place",
                  insp.inspection_id, type(error).__name__, str(error))  # fmt: skip
        err = error_stand_in(insp, error)
        try:
            self._commit([err])
        except Exception:  # nothing more can be done for this one; the writer goes on
            log.exception("the ERROR row for inspection %s could not be written either",
                          insp.inspection_id)  # fmt: skip

    def _maybe_resume_images(self) -> None:
        # after a write failed for lack of space, images wait for min_free_mb free
        paused = self._images_paused and self._stall.at is None
        if paused and free_bytes(self.data_dir) >= max(self._min_free_bytes, 1):
            self._images_paused = False
            log.warning("free space is back: images are saved again")

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
        return save_jpeg(insp, self.data_dir, self.jpeg_quality, written)

    def _commit(self, batch: list[Inspection]) -> None:
        """Make ``batch``'s rows, have the writer commit them, wait: the one-at-a-time
        way (:meth:`_run` overlaps making and committing)."""
        self._maybe_resume_images()
        p = prepare(batch, self._seq, self.station_id, self._save_image)
        self._writer.send(self._writer.encode(p.tables))
        error = self._wait(p)
        if error is not None:
            p.unlink()  # a row never names them: free their space
            try:
                raise error
            finally:
                # this frame must not hold the exception: the cycle (exception ->
                # traceback -> _wait's frame -> this frame -> exception) would keep
                # ``batch`` (a stall's whole backlog, pixels and all) until a full GC
                del error
        self._advance(p)
        self._notify(batch)

    def _not_saved(self, n: int, why: str) -> None:
        # counted per image, logged once per thousand: a full disk drops thousands
        with self._count_lock:  # the loop's put and the writer both count
            before, self._images_not_saved = self._images_not_saved, self._images_not_saved + n
        if n and (before == 0 or before // 1000 != self._images_not_saved // 1000):
            log.warning("%d image(s) not saved so far (now: %s)", self._images_not_saved, why)
