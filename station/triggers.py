"""Triggered inspection: every trigger gets exactly one inspection, and an answer.

A trigger (from the PLC, the API or a test) is queued with a future. The loop
grabs the first frame captured after the trigger, judges it and resolves the
future once the row is durably committed, so whoever triggered never sees a
result the store could still lose. A trigger that cannot be served — no
frame in time, refused while busy, or the station stopping — still gives a
MISSED row: a trigger that arrives once the station is stopping is refused, and
the triggers still queued when it stops are taken out (:meth:`TriggerQueue.drain`)
and answered MISSED before the store closes.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kanjian.camera.frame import FrameFailure
from kanjian.inference.types import Inspection
from kanjian.station.counters import MemoryNumbers, Numbers, last_numbered
from kanjian.station.store import ResultStore


@dataclass(frozen=True)
class Trigger:
    """One request to inspect.

    Attributes:
        trigger_id: caller's id (``plc-<n>``, ``api-<n>``, ``t<n>``: numbers from
            persisted counters, unique per station across restarts; or the caller's own).
        received_at: UTC time the station received it.
        result: resolved with the committed :class:`Inspection`.
        received_mono: ``time.monotonic()`` at receipt (frame matching).
    """

    trigger_id: str
    received_at: datetime
    result: Future[Inspection] = field(default_factory=Future, compare=False)
    received_mono: float = field(default_factory=time.monotonic, compare=False)


#: reason of the MISSED row of a trigger refused because the station is stopping
STOPPING_REFUSAL = "trigger refused: station stopping"
#: reason of the MISSED row of a trigger that was queued when the station stopped
STOPPING_UNJUDGED = "station stopping: trigger not judged"


@dataclass
class TriggerCounters:
    """Counts for ``/status`` and the PLC.

    Attributes:
        received: every trigger submitted.
        refused: refused at once (busy, queue full, station stopping).
        served: judged by the loop (a MISSED row when no frame came in time).
        unjudged: queued, then answered MISSED because the station stopped first.
    """

    received: int = 0
    refused: int = 0
    served: int = 0
    unjudged: int = 0


#: the persisted counter (station/counters.py) of the ids :meth:`TriggerQueue.new_id` makes
QUEUE_COUNTER = "trigger"
#: the prefixes :meth:`TriggerQueue.new_id` is given (``t``: a trigger without an id)
QUEUE_PREFIXES = ("t", "api-")


def queue_numbers(store: ResultStore) -> Numbers:
    """The station's numbers for :class:`TriggerQueue` ids, persisted in ``store``
    (above the ids of its rows from before the counter existed)."""
    return store.counter(QUEUE_COUNTER, last_numbered(QUEUE_PREFIXES))


class TriggerQueue:
    """Bounded queue of triggers with the busy policy of the config.

    Args:
        size: triggers that may wait.
        when_busy: ``queue`` or ``refuse``.
        numbers: where :meth:`new_id` takes its numbers (:func:`queue_numbers`:
            unique per station forever); in memory from 1 when ``None``.
    """

    def __init__(self, size: int, when_busy: str, numbers: Numbers | None = None) -> None:
        self._q: queue.Queue[Trigger] = queue.Queue(maxsize=size)
        self.when_busy = when_busy
        self.busy = threading.Event()
        self.counters = TriggerCounters()
        self._numbers = numbers or MemoryNumbers()
        # held while a trigger is checked and queued and while the queue is
        # drained, so a drain misses no trigger that was being queued meanwhile
        self._lock = threading.Lock()
        self._arrived = threading.Event()  # a trigger was queued since get() last looked
        self._closed = False

    def submit(
        self, trigger_id: str | None = None, stopping: bool = False
    ) -> tuple[Trigger, str | None]:
        """Queue a trigger. Returns it, and a refusal reason when it was not queued.

        Args:
            trigger_id: the caller's id; ``t<n>`` (:meth:`new_id`) when ``None``.
            stopping: the station is stopping: refuse it (:data:`STOPPING_REFUSAL`),
                as after :meth:`close`.

        A refused trigger is still the caller's to log (the station writes a
        MISSED row for it); nothing is dropped silently.
        """
        with self._lock:
            self.counters.received += 1
            tid = trigger_id or self.new_id("t")
            trig = Trigger(tid, datetime.now(timezone.utc))
            refusal = None
            if stopping or self._closed:
                refusal = STOPPING_REFUSAL
            elif self.when_busy == "refuse" and (self.busy.is_set() or not self._q.empty()):
                refusal = "trigger refused: station busy with the previous trigger"
            else:
                try:
                    self._q.put_nowait(trig)
                    self._arrived.set()
                except queue.Full:
                    refusal = f"trigger refused: {self._q.maxsize} triggers already waiting"
            if refusal:
                self.counters.refused += 1
        return trig, refusal

    def new_id(self, prefix: str) -> str:
        """A trigger id ``f"{prefix}{n}"`` no other trigger of this station had (with
        :func:`queue_numbers`: nor will, across restarts). Thread-safe."""
        return f"{prefix}{self._numbers.next()}"

    def drain(self) -> list[Trigger]:
        """Take out every queued trigger, oldest first (they will not be judged).

        The caller answers each (a MISSED row, :data:`STOPPING_UNJUDGED`).
        """
        with self._lock:
            left: list[Trigger] = []
            while True:
                try:
                    left.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self.counters.unjudged += len(left)
        return left

    def close(self) -> None:
        """Refuse every later trigger (:data:`STOPPING_REFUSAL`); :meth:`drain` the rest."""
        with self._lock:
            self._closed = True

    def count_refused(self) -> None:
        """Count a trigger refused before it reached this queue (the PLC's buffer was full)."""
        with self._lock:
            self.counters.received += 1
            self.counters.refused += 1

    def get(self, timeout_s: float) -> Trigger | None:
        """The next trigger, with ``busy`` set in the same step (the caller clears it).

        Taking it and setting ``busy`` happen under the lock :meth:`submit` checks
        under: a trigger arriving just as the previous one is taken is refused
        under ``when_busy: refuse``, never queued through the gap between the two.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                try:
                    trig = self._q.get_nowait()
                except queue.Empty:
                    self._arrived.clear()
                else:
                    self.busy.set()
                    return trig
            left = deadline - time.monotonic()
            if left <= 0 or not self._arrived.wait(left):
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


class TriggerAnswers:
    """The outward channel that answers triggers: each trigger's future gets its committed row.

    The station adds it first, so whoever triggered (the PLC handshake, the API)
    has its answer before the other channels see the batch. Callers get a future
    rather than being channels themselves because each waits for one inspection,
    its own, and a trigger that reaches a closed station is answered with an
    exception, which no committed batch can carry.
    """

    name = "triggers"

    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, Future[Inspection]] = {}
        self._lock = threading.Lock()

    def expect(self, inspection_id: uuid.UUID, result: Future[Inspection]) -> None:
        """Resolve ``result`` when the row of ``inspection_id`` is committed (call before ``put``)."""
        with self._lock:
            self._pending[inspection_id] = result

    def start(self) -> None:
        """Nothing to start."""

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        with self._lock:
            futures = [(self._pending.pop(i.inspection_id, None), i) for i in batch]
        for fut, insp in futures:
            if fut is not None and not fut.done():
                fut.set_result(insp)  # runs the callers' done-callbacks here (quick ones)

    def close(self) -> None:
        """Nothing to release: every trigger's row was committed before the store closed."""
