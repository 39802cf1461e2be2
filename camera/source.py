"""The one small interface every frame source implements, and its status record."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from numpy.typing import NDArray

from kanjian.camera.frame import Frame, FrameFailure

SourceState = Literal["connected", "reconnecting", "ended", "error"]
"""Where a source stands.

``connected``: delivering (a file source that has files or frames left counts
as connected). ``reconnecting``: a live source lost, or has not yet made, its
connection and is retrying with backoff. ``ended``: the source ran out (file
source without ``loop``) or was closed. ``error``: the source stopped for a
reason it cannot recover from (e.g. a video file cut short); ``read()`` returns
``None`` from then on and ``last_error`` says why.
"""


class SourceError(RuntimeError):
    """A source cannot be opened at all (missing folder, unreadable video file)."""


@dataclass(frozen=True)
class SourceStatus:
    """A snapshot of a source's health, safe to read from any thread.

    Attributes:
        source_id: the configured name of the source.
        state: see :data:`SourceState`.
        frames_read: frames handed out so far.
        failures: :class:`FrameFailure` records handed out so far.
        reconnects: times a live source re-established a lost connection.
        last_frame_at: UTC time of the last frame handed out, if any.
        last_error: the most recent failure reason, if any.
    """

    source_id: str
    state: SourceState
    frames_read: int
    failures: int
    reconnects: int
    last_frame_at: datetime | None
    last_error: str | None


@runtime_checkable
class FrameSource(Protocol):
    """Anything that hands out frames one at a time.

    ``read()`` returns the next :class:`Frame`, a :class:`FrameFailure` when a
    frame was due but could not be had, or ``None`` once the source has ended.
    It never blocks without bound: each source documents its longest wait.
    ``read()`` and ``close()`` are called from one thread (the pump's reader);
    ``status()`` may be called from any thread.
    """

    @property
    def source_id(self) -> str: ...

    def read(self) -> Frame | FrameFailure | None: ...

    def close(self) -> None: ...

    def status(self) -> SourceStatus: ...


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class StatusBook:
    """Counters behind :class:`SourceStatus`, updated by the reader thread.

    Also hands out the run's ``frame_id`` sequence: frames and failures share it,
    so every record a source hands out has a unique, increasing id.
    """

    def __init__(self, source_id: str, state: SourceState = "connected") -> None:
        self.source_id = source_id
        self._lock = threading.Lock()
        self._state: SourceState = state
        self._next_id = 0
        self._frames = 0
        self._failures = 0
        self._reconnects = 0
        self._last_frame_at: datetime | None = None
        self._last_error: str | None = None

    @property
    def state(self) -> SourceState:
        with self._lock:
            return self._state

    def set_state(self, state: SourceState, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = error

    def count_reconnect(self) -> None:
        with self._lock:
            self._reconnects += 1

    def frame(self, image: NDArray[np.uint8], uri: str | None) -> Frame:
        """Make the next :class:`Frame` (``image`` as in :attr:`Frame.image`) and count it."""
        now = utc_now()
        with self._lock:
            frame_id = self._next_id
            self._next_id += 1
            self._frames += 1
            self._last_frame_at = now
        return Frame(
            image=image,
            frame_id=frame_id,
            source_id=self.source_id,
            captured_at=now,
            uri=uri,
        )

    def wait_for_attempt(
        self, next_attempt: float, read_timeout_s: float, name: str, cause: str | None
    ) -> FrameFailure | None:
        """Wait for a reconnect attempt that is due at ``next_attempt`` (monotonic s).

        One ``read()`` never waits longer than ``read_timeout_s``: when the attempt is
        further off, sleep that long and return a missed failure saying when the
        next attempt comes; otherwise sleep until it is due and return ``None``.
        """
        wait = next_attempt - time.monotonic()
        if wait > read_timeout_s:
            time.sleep(read_timeout_s)
            return self.failure(
                f"{name}: reconnecting, next attempt in "
                f"{wait - read_timeout_s:.1f} s; last error: {cause}",
                name,
                missed=True,
            )
        if wait > 0:
            time.sleep(wait)
        return None

    def failure(self, reason: str, uri: str | None, *, missed: bool) -> FrameFailure:
        """Make the next :class:`FrameFailure` and count it."""
        now = utc_now()
        with self._lock:
            frame_id = self._next_id
            self._next_id += 1
            self._failures += 1
            self._last_error = reason
        return FrameFailure(
            frame_id=frame_id,
            source_id=self.source_id,
            captured_at=now,
            reason=reason,
            uri=uri,
            missed=missed,
        )

    def snapshot(self) -> SourceStatus:
        with self._lock:
            return SourceStatus(
                source_id=self.source_id,
                state=self._state,
                frames_read=self._frames,
                failures=self._failures,
                reconnects=self._reconnects,
                last_frame_at=self._last_frame_at,
                last_error=self._last_error,
            )
