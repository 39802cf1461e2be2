"""Figures for ``/api/status`` that need memory between requests: recent rate, folder size."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kanjian.inference.types import Inspection


class RecentRate:
    """Inspections per second over the last ``window_s`` seconds (the ``rate`` channel).

    The rate since start stays above zero long after a camera stalled; this one
    falls to 0 within ``window_s``.
    """

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._times: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self._started = clock()

    name = "rate"

    def start(self) -> None:
        """Nothing to start."""

    def close(self) -> None:
        """Nothing to release."""

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        now = self._clock()
        with self._lock:
            self._times.append((now, len(batch)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0][0] < now - self.window_s:
            self._times.popleft()

    def per_second(self) -> float:
        """Committed inspections per second in the window (shorter just after start)."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            n = sum(k for _, k in self._times)
        span = min(self.window_s, now - self._started)
        return n / span if span > 0 else 0.0


class FolderSize:
    """Total size of the files under a folder, recounted on a background thread.

    Walking millions of saved images on every status request would be slow, so
    the folder is walked every ``every_s`` seconds; between walks :meth:`get` adds
    what ``written()`` (the store's running total of bytes saved) grew by since
    the last walk. Files deleted between walks (by an engineer, by retention)
    show at the next walk.
    """

    def __init__(
        self, folder: Path, every_s: float = 300.0, written: Callable[[], int] = lambda: 0
    ) -> None:
        self.folder, self.every_s, self._written = folder, every_s, written
        # (bytes, time.time() of the walk, written() when the walk ended)
        self._value: tuple[int, float, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="folder-size", daemon=True)
        self._thread.start()

    def _count(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.folder):
            for name in files:
                with contextlib.suppress(OSError):  # deleted meanwhile (an engineer)
                    total += os.stat(os.path.join(root, name)).st_size
        return total

    def refresh(self) -> tuple[int, float]:
        """Walk the folder now (on the caller's thread) and keep the result.

        A walk during which files were saved may or may not have seen them, so it
        is repeated (up to 3 times) until no file was saved while it ran.
        """
        for _ in range(3):
            before = self._written()
            total = self._count()
            after = self._written()
            if after == before:
                break
        self._value = (total, time.time(), after)
        return total, self._value[1]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.every_s)

    def get(self) -> tuple[int, float] | None:
        """Bytes under the folder (last walk + saved since) and when the walk was made."""
        value = self._value
        if value is None:
            return None
        total, at, base = value
        return total + self._written() - base, at

    def stop(self) -> None:
        self._stop.set()
