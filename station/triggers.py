"""Triggered inspection: every trigger gets exactly one inspection, and an answer.

A trigger (from the PLC, the API or a test) is queued with a future. The loop
grabs the first frame captured after the trigger, judges it and resolves the
future once the row is durably committed, so whoever triggered never sees a
result the store could still lose. A trigger that cannot be served — no
frame in time, or refused while busy — still gives a MISSED row.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kanjian.camera.frame import FrameFailure
from kanjian.inference.types import Inspection


@dataclass(frozen=True)
class Trigger:
    """One request to inspect.

    Attributes:
        trigger_id: caller's id (PLC counter, API request id), unique per run.
        received_at: UTC time the station received it.
        result: resolved with the committed :class:`Inspection`.
        received_mono: ``time.monotonic()`` at receipt (frame matching).
    """

    trigger_id: str
    received_at: datetime
    result: Future[Inspection] = field(default_factory=Future, compare=False)
    received_mono: float = field(default_factory=time.monotonic, compare=False)


@dataclass
class TriggerCounters:
    """Counts for ``/status`` and the PLC: accepted, refused, served."""

    received: int = 0
    refused: int = 0
    served: int = 0


class TriggerQueue:
    """Bounded queue of triggers with the busy policy of the config."""

    def __init__(self, size: int, when_busy: str) -> None:
        self._q: queue.Queue[Trigger] = queue.Queue(maxsize=size)
        self.when_busy = when_busy
        self.busy = threading.Event()
        self.counters = TriggerCounters()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, trigger_id: str | None = None) -> tuple[Trigger, str | None]:
        """Queue a trigger. Returns it, and a refusal reason when it was not queued.

        A refused trigger is still the caller's to log (the station writes a
        MISSED row for it); nothing is dropped silently.
        """
        with self._lock:
            self.counters.received += 1
            tid = trigger_id or f"t{next(self._ids)}"
        trig = Trigger(tid, datetime.now(timezone.utc))
        refusal = None
        if self.when_busy == "refuse" and (self.busy.is_set() or not self._q.empty()):
            refusal = "trigger refused: station busy with the previous trigger"
        else:
            try:
                self._q.put_nowait(trig)
            except queue.Full:
                refusal = f"trigger refused: {self._q.maxsize} triggers already waiting"
        if refusal:
            with self._lock:
                self.counters.refused += 1
        return trig, refusal

    def get(self, timeout_s: float) -> Trigger | None:
        try:
            return self._q.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def depth(self) -> int:
        return self._q.qsize()


def refused_failure(trig: Trigger, reason: str, source_id: str) -> FrameFailure:
    """The stand-in frame of a refused trigger (becomes a MISSED row)."""
    return FrameFailure(
        frame_id=-1,
        source_id=source_id,
        captured_at=trig.received_at,
        reason=reason,
        trigger_id=trig.trigger_id,
        missed=True,
    )
