"""The result store's honest accounting: judged vs committed, stalls, free space.

A station that cannot write (disk full, I/O error) keeps judging; what it
judged but could not commit is counted, reported while it happens (status,
metrics) and named at shutdown, never lost silently.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.types import Detections, Inspection, Verdict

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: what a queued frame's pixels become when the queue is over its memory bound
_NO_PIXELS = np.zeros((1, 1), np.uint8)


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
        judged: inspections put since start (``judged - written`` are not committed yet).
        stalled: a commit failed and is being retried now (disk full, I/O error).
        stalled_since: when the current stall began (UTC ISO text), or ``None``.
        last_error: the last write error (kept after the stall ended), or ``None``.
        images_not_saved: images dropped since start (disk full, queue over its bound).
        queued_bytes: frame pixels held by the queue, bytes.
        writer: who commits: ``process`` (a child process) or ``thread``.
        writer_pid: the writer process's PID (``None`` for ``thread``).
        writer_restarts: writer processes that died and were replaced since start.
    """

    queued: int
    written: int
    batches: int
    blocked_puts: int
    errors: int
    last_commit_ms: float
    judged: int = 0
    stalled: bool = False
    stalled_since: str | None = None
    last_error: str | None = None
    images_not_saved: int = 0
    queued_bytes: int = 0
    writer: str = "process"
    writer_pid: int | None = None
    writer_restarts: int = 0


class LowDiskSpaceError(RuntimeError):
    """The data folder has less free space than ``store.min_free_mb``: start refused."""


@dataclass(frozen=True)
class StoreCloseResult:
    """What :meth:`ResultStore.close` could commit.

    Attributes:
        judged: inspections put into the store since start.
        committed: rows committed since start (an ERROR row standing in for an
            inspection that could not be written counts as committed).
        not_committed: ``judged - committed``: inspections lost at this stop.
        reason: why they were not committed (the last write error), or ``None``.
        images_not_saved: images the store meant to save but dropped (disk full,
            queue over its memory bound); their rows were written without them.
    """

    judged: int
    committed: int
    not_committed: int
    reason: str | None
    images_not_saved: int = 0

    @classmethod
    def of(
        cls, judged: int, committed: int, error: str | None, images_not_saved: int
    ) -> StoreCloseResult:
        """The result of a close that committed ``committed`` of ``judged`` (logged on loss)."""
        lost = judged - committed
        reason = (error or "the writer did not finish in time") if lost else None
        res = cls(judged, committed, lost, reason, images_not_saved)
        if lost:
            log.error(res.line())
        return res

    @property
    def ok(self) -> bool:
        """Everything judged was committed."""
        return self.not_committed == 0

    def line(self) -> str:
        """The shutdown line's store part: ``store flushed`` or ``STORE NOT FLUSHED: ...``."""
        if self.ok:
            return f"store flushed ({self.committed} rows committed)"
        return (
            f"STORE NOT FLUSHED: {self.not_committed} judged inspections were not committed "
            f"({self.reason or 'the writer did not finish in time'})"
        )


class Stall:
    """The writer's current stall: its commits fail and are retried (writer thread writes)."""

    def __init__(self) -> None:
        self.at: float | None = None  # time.time() the stall began; None: not stalled
        self.mono = 0.0  # the same instant, time.monotonic()
        self.error: str | None = None  # the last write error (kept after the stall)

    def failed(self, e: BaseException) -> None:
        self.error = f"{type(e).__name__}: {e}"
        if self.at is None:
            self.at, self.mono = time.time(), time.monotonic()

    def clear(self) -> None:
        if self.at is not None:
            log.warning("store writes again after a stall (%s)", self.error)
            self.at = None

    def since(self) -> str | None:
        """When the current stall began, UTC ISO text; ``None`` when not stalled."""
        at = self.at
        return None if at is None else datetime.fromtimestamp(at, timezone.utc).isoformat()

    def give_up_at(self, t0: float, deadline: float, grace_s: float) -> float:
        """When a close asked at ``t0`` (monotonic) stops waiting: at ``deadline``, or
        ``grace_s`` after the close or the stall's start, whichever is later, while stalled."""
        return deadline if self.at is None else min(deadline, max(self.mono, t0) + grace_s)


def pixel_bytes(insp: Inspection) -> int:
    """Bytes of frame-sized arrays an inspection holds: the frame's pixels, its masks and
    its anomaly map (a float32 map is 4 bytes a pixel, more than the frame itself)."""
    frame = insp.frame
    # the 1x1 stand-in of dropped pixels is shared, not held by this inspection
    n = frame.image.nbytes if isinstance(frame, Frame) and frame.image is not _NO_PIXELS else 0
    if insp.detections.masks is not None:
        n += insp.detections.masks.nbytes
    if insp.anomaly_map is not None:
        n += insp.anomaly_map.nbytes
    return int(n)


def has_pixels(insp: Inspection) -> bool:
    """Whether the inspection still holds its frame's pixels (a Frame, not dropped by
    :func:`without_pixels` under the store's memory bound)."""
    return isinstance(insp.frame, Frame) and insp.frame.image is not _NO_PIXELS


def without_pixels(insp: Inspection) -> Inspection:
    """The inspection with its frame's pixels replaced by a 1x1 grey image and its anomaly
    map dropped (memory bound). Masks stay: the stored area of each region is theirs."""
    if not isinstance(insp.frame, Frame):
        return dataclasses.replace(insp, anomaly_map=None)
    frame = dataclasses.replace(insp.frame, image=_NO_PIXELS)
    return dataclasses.replace(insp, frame=frame, anomaly_map=None)


def is_space_error(e: BaseException) -> bool:
    """Whether a write failed for lack of space (ENOSPC/EDQUOT, SQLITE_FULL, or the
    "disk I/O error" SQLite reports when its WAL cannot grow)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    msg = str(e).lower()
    return isinstance(e, sqlite3.Error) and ("full" in msg or "disk i/o error" in msg)


def free_bytes(folder: Path) -> int:
    """Free space of the file system holding ``folder``, bytes (for this user)."""
    return shutil.disk_usage(folder).free


def check_free_space(folder: Path, min_free_mb: float) -> None:
    """Refuse a start on a (nearly) full disk: raises :class:`LowDiskSpaceError`
    naming the folder, its free space and the setting. ``min_free_mb`` 0 disables."""
    if min_free_mb <= 0:
        return
    free = free_bytes(folder)
    if free < min_free_mb * MB:
        raise LowDiskSpaceError(
            f"data folder {folder} has {free / MB:.1f} MB free, less than "
            f"store.min_free_mb ({min_free_mb:g} MB): free some space or lower the setting"
        )


def error_stand_in(insp: Inspection, error: Exception) -> Inspection:
    """The ERROR inspection written in place of one the store cannot write: no frame
    pixels, no detections; its reason names the cause and the original id."""
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
    return err
