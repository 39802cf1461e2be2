"""The PLC trigger/result handshake, independent of the wire (Modbus TCP, OPC UA).

The protocol follows the bit handshake of commercial vision sensors
(docs/plc.md has the timing diagrams):

1. The PLC waits for ``READY``, then raises ``TRIGGER``. The rising edge is one
   trigger: the station takes it at once, numbers it (``trigger_count``: the
   station's persisted trigger number, unique across restarts), sets
   ``TRIGGER_ACK`` and ``BUSY``. The PLC drops ``TRIGGER``; the station drops
   ``TRIGGER_ACK``. Raising a level that is already high is no new trigger, so
   a retransmitted write cannot trigger twice.
2. When the result of the oldest unacknowledged trigger is committed to the
   store, ``RESULT_VALID`` rises and the result fields (trigger number,
   verdict code, top class, short inspection id...) describe it.
3. The PLC reads them and raises ``RESULT_ACK``. The station retires that
   result and drops ``RESULT_VALID`` until the PLC drops ``RESULT_ACK``; then
   the next buffered result (if any) is presented.

Results are presented strictly in trigger order and sit in a buffer of
``result_buffer`` slots; a slot is reserved when a trigger is accepted and freed
by the acknowledgement, so a PLC that triggers faster than it reads can never
have an unread result overwritten. A trigger that finds every slot taken is
refused: it gets a MISSED row in the log (the reason names the full buffer),
``TRIGGER_REFUSED`` rises and ``refused_count`` counts it. Every other trigger
gets exactly one result, MISSED included (no frame in time, or the station
refused it while busy), with the verdict code the PLC reads.

Method-style transports (OPC UA ``Trigger()`` / ``Acknowledge(seq)``) use
:meth:`Handshake.trigger` and :meth:`Handshake.acknowledge`, which need no
level dance; ``acknowledge`` takes the trigger number, so repeating it is
harmless.

Besides the presented state (which a fast PLC moves on at once), every trigger's
outcome is *published* once: result listeners (:meth:`Handshake.add_result_listener`)
get one :class:`PlcResult` per trigger, refused ones included, in trigger order,
as soon as its row is committed and every earlier trigger's has been published.
The OPC UA server turns each into one event, so a subscriber sees every result
however quickly the PLC acknowledges them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

from kanjian.inference.types import Inspection, Verdict
from kanjian.station.counters import MemoryNumbers, Numbers

log = logging.getLogger(__name__)


class VerdictCode(IntEnum):
    """The verdict as the PLC reads it (one 16-bit register / UInt16 node)."""

    NONE = 0  #: no result presented
    PASS = 1
    FAIL = 2
    REVIEW = 3
    ERROR = 4  #: a frame came but could not be judged
    MISSED = 5  #: no frame in time, or the trigger was refused

    @classmethod
    def of(cls, verdict: Verdict) -> VerdictCode:
        return cls[verdict.value]


#: top_class when there is no detection / no class
NO_CLASS = -1


@dataclass(frozen=True)
class PlcResult:
    """One inspection result as the PLC sees it.

    Attributes:
        seq: the handshake's trigger number this result answers (1, 2, ...).
        verdict: verdict code.
        top_class: class id of the most confident detection (or the top class of
            a classifier), :data:`NO_CLASS` when none.
        top_class_name: that class's name, "" when none.
        top_confidence: its confidence in [0, 1], 0.0 when none.
        num_detections: boxes found.
        inspection_id: the inspection's UUID as 32 hex digits.
        short_id: its first 8 hex digits (the form screens and registers show).
        reason: why the verdict, for people (MISSED: why no frame).
        accepted: ``False`` when the handshake refused the trigger (no result
            slot free, or shutting down): its MISSED row is logged and published
            to result listeners, but never presented to the PLC.
    """

    seq: int
    verdict: VerdictCode
    top_class: int
    top_class_name: str
    top_confidence: float
    num_detections: int
    inspection_id: str
    short_id: str
    reason: str
    accepted: bool = True

    @classmethod
    def of(cls, seq: int, insp: Inspection, accepted: bool = True) -> PlcResult:
        dets = insp.detections
        top, conf = NO_CLASS, 0.0
        if len(dets):
            i = int(np.argmax(dets.confidence))
            top, conf = int(dets.class_id[i]), float(dets.confidence[i])
        elif insp.probs is not None and insp.verdict not in (Verdict.ERROR, Verdict.MISSED):
            top = int(np.argmax(insp.probs))
            conf = float(insp.probs[top])
        name = ""
        if top != NO_CLASS:
            name = insp.class_names[top] if top < len(insp.class_names) else str(top)
        return cls(
            seq=seq,
            verdict=VerdictCode.of(insp.verdict),
            top_class=top,
            top_class_name=name,
            top_confidence=conf,
            num_detections=len(dets),
            inspection_id=insp.inspection_id.hex,
            short_id=insp.short_id,
            reason=insp.reason,
            accepted=accepted,
        )


@dataclass(frozen=True)
class HandshakeState:
    """A consistent snapshot of everything the PLC can read.

    Attributes:
        ready: a trigger now would be accepted (running, a result slot free, and
            under ``when_busy: refuse`` nothing in progress).
        busy: an accepted trigger has no result yet.
        result_valid: ``result`` is the oldest unacknowledged result.
        trigger_ack: the last rising ``TRIGGER`` edge was taken and ``TRIGGER``
            is still high.
        trigger_refused: the last trigger was refused (result buffer full or
            closed); cleared by the next accepted trigger.
        trigger_count: the number of the last trigger taken (accepted + refused);
            the station's trigger numbers continue across restarts, so on a fresh
            station it is the triggers received, and after a restart it starts at
            the last number before it (after a crash: up to a block higher).
        result_count: results completed since start.
        refused_count: triggers refused by the handshake (no slot) since start.
        missed_count: MISSED results presented (no frame, or refused while busy) since start.
        buffered: slots in use (pending triggers + unacknowledged results).
        result: the presented result when ``result_valid``; the last
            acknowledged one otherwise (``None`` before the first).
        recipe: the recipe / model index in use.
    """

    ready: bool
    busy: bool
    result_valid: bool
    trigger_ack: bool
    trigger_refused: bool
    trigger_count: int
    result_count: int
    refused_count: int
    missed_count: int
    buffered: int
    result: PlcResult | None
    recipe: int


@dataclass(frozen=True)
class TriggerOutcome:
    """What became of one trigger: its number, and a refusal reason if refused."""

    seq: int
    accepted: bool
    reason: str | None = None


class TriggerTarget(Protocol):
    """What the handshake drives: in the station, :class:`StationTarget`."""

    def trigger(self, trigger_id: str) -> Future[Inspection]:
        """Queue one inspection; resolves once its row is committed (MISSED included).

        A station that is stopping refuses it itself: a MISSED row, so the PLC
        still reads a result for it in its slot.
        """
        ...

    def refuse(self, trigger_id: str, reason: str) -> Future[Inspection]:
        """Log a MISSED row for a trigger the handshake refused; resolves after commit."""
        ...

    def accepting(self) -> bool:
        """Whether a trigger now would be queued rather than refused by the station."""
        ...


@dataclass
class _Slot:
    """One trigger until its result is published (and, if accepted, acknowledged)."""

    seq: int
    accepted: bool = True
    result: PlcResult | None = None


Listener = Callable[[HandshakeState], None]
ResultListener = Callable[[PlcResult], None]


class Handshake:
    """The handshake state machine; thread-safe, never blocks on inspection.

    Args:
        target: what runs the inspections (a :class:`StationTarget`).
        result_buffer: slots for accepted, unacknowledged triggers (>= 1).
        trigger_prefix: trigger ids are ``f"{prefix}{seq}"``.
        numbers: where trigger numbers (``seq``) come from: in the station a
            persisted counter (:func:`~kanjian.station.plc.service.start_plc`), so
            ids are unique per station forever; 1, 2, 3 ... in memory when ``None``.
    """

    def __init__(
        self,
        target: TriggerTarget,
        result_buffer: int,
        trigger_prefix: str = "plc-",
        numbers: Numbers | None = None,
    ):
        if result_buffer < 1:
            raise ValueError(f"result_buffer must be >= 1, got {result_buffer}")
        self._target = target
        self._capacity = result_buffer
        self._prefix = trigger_prefix
        self._lock = threading.RLock()
        self._slots: deque[_Slot] = deque()  # accepted, not yet acknowledged: the buffer
        self._unpublished: deque[_Slot] = deque()  # every trigger, until published in order
        self._last: PlcResult | None = None
        self._trigger_level = False
        self._ack_level = False
        self._trigger_ack = False
        self._refused_flag = False
        self._numbers = numbers or MemoryNumbers()
        self._result_count = 0
        self._refused_count = 0
        self._missed_count = 0
        self._recipe = 0
        # called with a new RECIPE value before it is recorded; raising ValueError
        # refuses it (plc.recipes: a number with no model). None: only recorded.
        self.on_recipe: Callable[[int], None] | None = None
        self._closed = False
        self._listeners: list[Listener] = []
        self._result_listeners: list[ResultListener] = []

    # -- observers ------------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(state)`` after every change; it runs on the changing thread, so be quick."""
        with self._lock:
            self._listeners.append(fn)

    def add_result_listener(self, fn: ResultListener) -> None:
        """Call ``fn(result)`` once per trigger, in trigger order, once its row is committed.

        Refused triggers are included (``result.accepted`` is ``False``). ``fn``
        runs under the handshake's lock — that is what keeps the order when
        commits are reported from several threads — so it must only hand the
        result on (append to a queue) and never call back into the handshake.
        """
        with self._lock:
            self._result_listeners.append(fn)

    def _notify(self) -> None:
        state = self.snapshot()
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:  # a broken observer must not break the handshake
                log.exception("PLC state listener failed")

    def snapshot(self) -> HandshakeState:
        with self._lock:
            head = self._slots[0] if self._slots else None
            valid = head is not None and head.result is not None and not self._ack_level
            pending = any(s.result is None for s in self._slots)
            ready = (
                not self._closed and len(self._slots) < self._capacity and self._target.accepting()
            )
            return HandshakeState(
                ready=ready,
                busy=pending,
                result_valid=valid,
                trigger_ack=self._trigger_ack,
                trigger_refused=self._refused_flag,
                trigger_count=self._numbers.last,
                result_count=self._result_count,
                refused_count=self._refused_count,
                missed_count=self._missed_count,
                buffered=len(self._slots),
                result=head.result if valid and head is not None else self._last,
                recipe=self._recipe,
            )

    # -- level interface (Modbus coils) ---------------------------------------------
    def set_trigger(self, level: bool) -> TriggerOutcome | None:
        """The PLC wrote the TRIGGER bit. A rising edge triggers; returns its outcome."""
        with self._lock:
            rising = level and not self._trigger_level
            self._trigger_level = level
            if not level:
                self._trigger_ack = False
        if not rising:
            self._notify()
            return None
        outcome = self.trigger()
        with self._lock:
            self._trigger_ack = self._trigger_level
        self._notify()
        return outcome

    def set_ack(self, level: bool) -> bool:
        """The PLC wrote the RESULT_ACK bit. A rising edge retires the presented result.

        Returns whether a result was retired. While the bit stays high no
        result is presented (``RESULT_VALID`` low), so the PLC sees the edge.
        """
        with self._lock:
            rising = level and not self._ack_level
            retired = False
            if rising and self._slots and self._slots[0].result is not None:
                self._retire_head()
                retired = True
            self._ack_level = level
        self._notify()
        return retired

    # -- method interface (OPC UA, API) -----------------------------------------------
    def trigger(self) -> TriggerOutcome:
        """One trigger: accepted into a result slot, or refused (logged as MISSED)."""
        with self._lock:
            seq = self._numbers.next()
            tid = f"{self._prefix}{seq}"
            reason = None
            if self._closed:
                reason = "trigger refused: the PLC interface is shutting down"
            elif len(self._slots) >= self._capacity:
                reason = (
                    f"trigger refused: PLC result buffer full "
                    f"({self._capacity} results not yet acknowledged)"
                )
            slot = _Slot(seq, accepted=reason is None)
            self._unpublished.append(slot)
            if reason is not None:
                self._refused_count += 1
                self._refused_flag = True
            else:
                self._refused_flag = False
                self._slots.append(slot)
        if reason is not None:
            log.warning("PLC trigger %s: %s", tid, reason)
            refused = self._target.refuse(tid, reason)
            refused.add_done_callback(lambda f: self._complete(slot, f))
            self._notify()
            return TriggerOutcome(seq, False, reason)
        # Not refused here when the station is stopping (target.accepting() is
        # False): the station refuses it itself with a MISSED row, which the PLC
        # then reads in this slot, in order, instead of a bare TRIGGER_REFUSED.
        fut = self._target.trigger(tid)
        fut.add_done_callback(lambda f: self._complete(slot, f))
        self._notify()
        return TriggerOutcome(seq, True)

    def acknowledge(self, seq: int) -> bool:
        """Retire the presented result if it answers trigger ``seq``. Idempotent.

        Returns ``True`` if it was retired now, ``False`` if ``seq`` is not the
        presented result (already acknowledged, or not done yet).
        """
        with self._lock:
            head = self._slots[0] if self._slots else None
            if head is None or head.seq != seq or head.result is None:
                return False
            self._retire_head()
        self._notify()
        return True

    def set_recipe(self, index: int, *, initial: bool = False) -> None:
        """Record the recipe / model index the PLC selected (0..65535).

        With ``on_recipe`` set, it is asked first (it switches the model) and a
        ``ValueError`` from it refuses the value: the register keeps the old one.
        ``initial``: the start value, recorded without asking.

        Raises:
            ValueError: out of range, or refused by ``on_recipe``.
        """
        if not 0 <= index <= 0xFFFF:
            raise ValueError(f"recipe index must be 0..65535, got {index}")
        with self._lock:  # one change at a time, in the order the PLC wrote them
            if self.on_recipe is not None and not initial:
                self.on_recipe(index)
            self._recipe = index
        self._notify()

    def close(self) -> None:
        """Refuse further triggers (results already pending still complete)."""
        with self._lock:
            self._closed = True
        self._notify()

    # -- internals --------------------------------------------------------------------
    def _retire_head(self) -> None:
        slot = self._slots.popleft()
        self._last = slot.result

    def _complete(self, slot: _Slot, fut: Future[Inspection]) -> None:
        # runs on the store's writer thread (after commit), or on the caller's
        # when the future was already done: quick, never blocks
        exc = fut.exception()
        if exc is not None:
            result = PlcResult(
                slot.seq,
                VerdictCode.ERROR,
                NO_CLASS,
                "",
                0.0,
                0,
                "",
                "",
                f"inspection failed: {type(exc).__name__}: {exc}",
                slot.accepted,
            )
        else:
            result = PlcResult.of(slot.seq, fut.result(), slot.accepted)
        with self._lock:
            slot.result = result
            if slot.accepted:  # a refused trigger is counted in refused_count only
                self._result_count += 1
                if result.verdict == VerdictCode.MISSED:
                    self._missed_count += 1
            # publish in trigger order: this result, and any later ones that were
            # committed before it, once every earlier trigger is published
            while self._unpublished and self._unpublished[0].result is not None:
                done = self._unpublished.popleft().result
                assert done is not None
                for fn in self._result_listeners:
                    try:
                        fn(done)
                    except Exception:  # a broken observer must not break the handshake
                        log.exception("PLC result listener failed")
        self._notify()
