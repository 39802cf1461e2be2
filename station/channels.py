"""Outward channels: everything that consumes committed inspections, behind one interface.

A :class:`Channel` is told about each batch of inspections once the store has
committed it (so nothing downstream ever sees a row the store could still
lose): the trigger answers (each trigger's future), the PLC, the platform sync,
and the API's live view, metrics and recent rate. The station holds them in one
:class:`Channels` fan-out, the store's only commit listener.

Delivery: on the store's writer thread, batch by batch in commit order, to the
channels in the order they were added. A channel that raises is logged and
skipped for that batch; the other channels still get it and the writer goes
on. ``on_commit`` must be quick (hand work to its own thread): the writer waits
for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from kanjian.inference.types import Inspection

log = logging.getLogger(__name__)


@runtime_checkable
class Channel(Protocol):
    """One consumer of committed inspections."""

    @property
    def name(self) -> str:
        """Short name for logs and lookups (``triggers``, ``plc``, ``sync``, ``live``...)."""
        ...

    def start(self) -> None:
        """Begin (servers, threads); called once when the channel joins the station."""
        ...

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        """Inspections whose rows are durable, in commit order (store's writer thread)."""
        ...

    def close(self) -> None:
        """Stop; called once, after the store's last commit. Must not raise."""
        ...


@runtime_checkable
class TriggerIntake(Protocol):
    """A channel that also brings triggers in (the PLC servers).

    The station stops its intake (:meth:`stop_triggers`) before the camera and
    the store close, so every trigger it accepted still gets its row; the
    channel itself is closed after the store's last commit like every other.
    """

    def stop_triggers(self) -> None: ...


T = TypeVar("T")


class Channels:
    """The station's outward channels: one fan-out, called by the store after each commit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # replaced, never mutated: on_commit iterates a snapshot without the lock
        self._channels: tuple[Channel, ...] = ()
        self._closed = False

    def add(self, channel: Channel) -> Channel:
        """Start ``channel`` and deliver every later commit to it (after those added before).

        Raises what ``channel.start()`` raises; it is then not added.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"channel {channel.name}: the station's channels are closed")
            if any(c.name == channel.name for c in self._channels):
                raise ValueError(f"a channel named {channel.name!r} is already attached")
        channel.start()
        with self._lock:
            self._channels = (*self._channels, channel)
        log.debug("channel %s attached", channel.name)
        return channel

    def on_commit(self, batch: Sequence[Inspection]) -> None:
        """Hand ``batch`` to every channel in order; one that raises is logged and skipped."""
        for channel in self._channels:
            try:
                channel.on_commit(batch)
            except Exception:  # one channel's bug must not stop the writer or the others
                log.exception("channel %s failed on a batch of %d", channel.name, len(batch))

    def stop_triggers(self) -> None:
        """Stop every channel's trigger intake (:class:`TriggerIntake`), newest first."""
        for channel in reversed(self._channels):
            if isinstance(channel, TriggerIntake):
                try:
                    channel.stop_triggers()
                except Exception:
                    log.exception("channel %s: stopping its triggers failed", channel.name)

    def close(self) -> None:
        """Close every channel, newest first (after the store's last commit). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channels = self._channels
        for channel in reversed(channels):
            try:
                channel.close()
            except Exception:
                log.exception("channel %s failed to close", channel.name)

    def named(self, name: str) -> Channel | None:
        """The channel called ``name``, if attached."""
        return next((c for c in self._channels if c.name == name), None)

    def get(self, kind: type[T]) -> T | None:
        """The first attached channel that is a ``kind`` (e.g. the sync service), if any."""
        return next((c for c in self._channels if isinstance(c, kind)), None)

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._channels)

    def __len__(self) -> int:
        return len(self._channels)
