"""FramePump: a background reader thread between a source and the inspection loop.

The inspection loop must never wait on the camera without bound, and a live
camera must be read continuously or its buffers go stale. The pump reads the
source on its own thread and hands frames over under one of two policies
(:data:`~kanjian.camera.config.FramePolicy`):

- ``lossless``: a bounded FIFO; when it is full the reader waits, so nothing is
  ever dropped (file replay; hardware-triggered cameras that send one frame
  per trigger).
- ``latest``: one slot; a new frame replaces an unread one, which is counted
  as dropped (free-running live inspection: judge the newest picture).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from dataclasses import dataclass

from kanjian.camera.config import FramePolicy
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.camera.source import FrameSource, SourceStatus, utc_now

# How often a reader blocked on a full lossless queue looks for close().
_POLL_S = 0.1


@dataclass(frozen=True)
class PumpStats:
    """Counters of a :class:`FramePump`, a snapshot safe to read from any thread.

    Attributes:
        policy: the pump's policy.
        delivered: records (frames or failures) handed out by ``get``/``grab_fresh``.
        dropped: records the ``latest`` policy replaced before anyone read them
            (always 0 under ``lossless``).
        stale_skipped: records ``grab_fresh`` passed over: read begun before the
            trigger (arrived before its window, for a hardware-triggered
            camera), or missed failures it waited through.
        queued: records waiting now.
        ended: the source has ended (or the pump was closed).
        source: the source's own status.
    """

    policy: FramePolicy
    delivered: int
    dropped: int
    stale_skipped: int
    queued: int
    ended: bool
    source: SourceStatus


@dataclass(frozen=True)
class _Item:
    record: Frame | FrameFailure
    read_started: float  # time.monotonic() when the source's read() began
    read_done: float  # time.monotonic() when it returned: the frame's arrival


class FramePump:
    """Reads ``source`` on a background thread and hands records over by ``policy``.

    The pump owns the source: :meth:`close` stops the thread, joins it and then
    closes the source (so the source is only ever touched by one thread).

    Records made by the pump itself (a ``get`` or ``grab_fresh`` that timed out)
    are ``FrameFailure(missed=True)`` with ``frame_id == -1``: no source frame
    stands behind them.

    Args:
        source: any :class:`~kanjian.camera.source.FrameSource`.
        policy: ``"lossless"`` or ``"latest"``.
        queue_size: FIFO length under ``lossless`` (ignored by ``latest``, which keeps one).
    """

    def __init__(self, source: FrameSource, policy: FramePolicy, queue_size: int = 8) -> None:
        if policy not in ("lossless", "latest"):
            raise ValueError(f"policy must be 'lossless' or 'latest', got {policy!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._source = source
        self._policy: FramePolicy = policy
        self._capacity = queue_size if policy == "lossless" else 1
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._closing = False
        self._closed = False
        self._delivered = 0
        self._dropped = 0
        self._stale = 0
        # The source's missed failures since its last frame (the current outage): the
        # first says since when, the latest why. Kept here, not per wait, because a
        # trigger's window may see no failure at all (the source is between attempts, or
        # its failure was read before the trigger) and its MISSED row must still say why.
        self._outage_first: FrameFailure | None = None
        self._outage_last: FrameFailure | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"frame-pump-{source.source_id}", daemon=True
        )
        self._thread.start()

    @property
    def source_id(self) -> str:
        return self._source.source_id

    @property
    def policy(self) -> FramePolicy:
        return self._policy

    # -- reader thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                started = time.monotonic()
                record = self._source.read()
                if record is None:
                    break
                self._put(_Item(record, started, time.monotonic()))
        except Exception as exc:  # a bug in a source must not vanish with its thread
            failure = FrameFailure(
                frame_id=-1,
                source_id=self._source.source_id,
                captured_at=utc_now(),
                reason=f"source {self._source.source_id} raised {type(exc).__name__}: {exc}",
            )
            now = time.monotonic()
            self._put(_Item(failure, now, now))
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _put(self, item: _Item) -> None:
        with self._cond:
            record = item.record
            if isinstance(record, Frame):
                self._outage_first = self._outage_last = None
            elif record.missed:
                self._outage_first = self._outage_first or record
                self._outage_last = record
            if self._policy == "latest":
                if self._queue:
                    self._queue.popleft()
                    self._dropped += 1
            else:
                while len(self._queue) >= self._capacity and not self._closing:
                    self._cond.wait(_POLL_S)
                if self._closing:
                    return
            self._queue.append(item)
            self._cond.notify_all()

    # -- consumer side --------------------------------------------------------------

    def _camera_note(self) -> str:
        """``"; camera: <last error> since <UTC time>"`` while the source is out, else ``""``.

        The pump's own record of the outage first (every source kind reports one as
        missed failures); failing that, the source's status, for an outage it has
        declared but not yet handed a failure for. Call holding ``_cond``.
        """
        first, last = self._outage_first, self._outage_last
        if first is not None and last is not None:
            since = first.captured_at.isoformat(timespec="seconds").replace("+00:00", "Z")
            return f"; camera: {last.reason} since {since}"
        status = self._source.status()
        if status.state in ("reconnecting", "error") and status.last_error:
            return f"; camera: {status.last_error}"
        return ""

    def _timeout_failure(self, reason: str, trigger_id: str | None = None) -> FrameFailure:
        return FrameFailure(
            frame_id=-1,
            source_id=self._source.source_id,
            captured_at=utc_now(),
            reason=reason + self._camera_note(),
            trigger_id=trigger_id,
            missed=True,
        )

    def get(self, timeout_s: float) -> Frame | FrameFailure | None:
        """The next record, in order (``lossless``) or the newest one (``latest``).

        Returns:
            a :class:`Frame` or the source's :class:`FrameFailure`; a missed
            ``FrameFailure`` (``frame_id == -1``) if nothing came within
            ``timeout_s`` seconds; ``None`` once the source has ended (or the
            pump is closed) and everything before that was handed out. A
            missed record made here names the source's outage, if one is on
            (``; camera: <last error> since <time>``).
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._queue:
                    item = self._queue.popleft()
                    self._delivered += 1
                    self._cond.notify_all()  # room for a waiting lossless reader
                    return item.record
                if self._ended or self._closed:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._timeout_failure(
                        f"no frame from {self._source.source_id} within {timeout_s:g} s"
                    )
                self._cond.wait(remaining)

    def grab_fresh(
        self, trigger_id: str, timeout_s: float, *, arrived_after: float | None = None
    ) -> Frame | FrameFailure:
        """The first frame whose read began after this call, tagged with ``trigger_id``.

        For software triggers (a PLC says "part in place"): anything read before
        the call shows the line before the trigger, so it is skipped (counted in
        ``stale_skipped``). A fresh failure that is not ``missed`` (a frame came
        but could not be decoded) is returned at once, tagged. Missed failures
        (the source is reconnecting) are waited through until ``timeout_s``.

        A camera fired by the same hardware pulse as the trigger is different:
        it waits for the pulse, so its read began long before the trigger, and
        its frame may even arrive before the trigger reaches the station. With
        ``arrived_after`` (a ``time.monotonic()`` instant: the trigger's arrival
        less the camera's lead) the first record that *arrived* at or after it
        is taken; only records that arrived earlier are stale.

        It takes from the same queue as :meth:`get`, also under ``lossless``:
        records read before the trigger are discarded. A triggered pipeline
        calls only ``grab_fresh``; with a free-running camera, ``latest`` keeps
        the reader current, so the fresh frame comes about one frame interval
        after the trigger.

        Returns:
            the fresh :class:`Frame` with ``trigger_id`` set, or a
            :class:`FrameFailure` with ``trigger_id`` set: the source's own
            (not missed), or ``missed=True`` if no frame came in ``timeout_s``
            seconds or the source ended; its reason names the trigger and,
            while the source is out, its last error and since when
            (``; camera: <last error> since <time>``), on every such record of
            the outage, not only on one whose wait saw a failure.
        """
        called = time.monotonic()
        deadline = called + timeout_s
        with self._cond:
            while True:
                while self._queue:
                    item = self._queue.popleft()
                    self._cond.notify_all()
                    if (
                        item.read_started < called
                        if arrived_after is None
                        else item.read_done < arrived_after
                    ):
                        self._stale += 1
                        continue
                    record = item.record
                    if isinstance(record, FrameFailure) and record.missed:
                        self._stale += 1  # (the outage it reports is kept by _put)
                        continue
                    self._delivered += 1
                    return dataclasses.replace(record, trigger_id=trigger_id)
                why = None
                if self._ended or self._closed:
                    why = "the source has ended"
                elif time.monotonic() >= deadline:
                    why = f"no fresh frame within {timeout_s:g} s"
                if why is not None:
                    reason = f"trigger {trigger_id} on {self._source.source_id}: {why}"
                    self._delivered += 1
                    return self._timeout_failure(reason, trigger_id)
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def stats(self) -> PumpStats:
        with self._cond:
            return PumpStats(
                policy=self._policy,
                delivered=self._delivered,
                dropped=self._dropped,
                stale_skipped=self._stale,
                queued=len(self._queue),
                ended=self._ended or self._closed,
                source=self._source.status(),
            )

    def close(self) -> None:
        """Stop the reader, join it, close the source. Idempotent.

        Waits for a ``read()`` in progress to return; sources bound that wait
        (see each source's docstring).
        """
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._source.close()
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()

    def __enter__(self) -> FramePump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
