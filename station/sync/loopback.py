"""An in-process :class:`~kanjian.station.sync.transport.Transport`: a broker in memory.

:class:`LoopbackBroker` routes messages between the :class:`LoopbackTransport`
clients attached to it, with MQTT's behaviour where the sync relies on it:
``+``/``#`` subscriptions, retained messages (sent to a new subscriber), a
presence published on connect and, as the last will, when the broker drops a
client; messages published while disconnected wait in the client and go out on
the next connect. It can be taken down and brought back (:meth:`LoopbackBroker.set_up`).
Every callback runs on the broker's one delivery thread, in publish order.

It is the transport for a station and its platform in one process (a demo, a
test of the sync worker without a broker), and the second implementation that
keeps the interface honest. Sessions are clean: a message for a client that is
not connected is lost, as the sync's re-sends expect.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Sequence

from kanjian.station.sync.transport import (
    DeliveryCallback,
    Presence,
    TransportListener,
    TransportStatus,
    topic_matches,
)

log = logging.getLogger(__name__)


class LoopbackBroker:
    """Routes messages between the clients attached to it, on one delivery thread."""

    def __init__(self, name: str = "loopback") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._clients: list[LoopbackTransport] = []
        self._retained: dict[str, bytes] = {}
        self._up = True
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._deliver, name=f"{name}-broker", daemon=True)
        self._thread.start()

    # -- the delivery thread ---------------------------------------------------------
    def _deliver(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a client's callback must not stop the broker
                log.exception("loopback broker: a callback failed")

    def later(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the delivery thread, after everything queued before it."""
        self._jobs.put(job)

    def close(self) -> None:
        """Stop the delivery thread (after what is queued)."""
        self._jobs.put(None)
        self._thread.join(10)

    # -- routing -----------------------------------------------------------------------
    def route(self, topic: str, payload: bytes, retain: bool) -> None:
        """Hand a message to every connected subscriber of ``topic`` (under the lock)."""
        with self._lock:
            if retain:
                self._retained[topic] = payload
            for c in self._clients:
                listener = c.listener
                if c.connected and listener and any(topic_matches(t, topic) for t in c.topics):
                    self.later(functools.partial(listener.on_message, topic, payload))

    def retained(self, topic: str) -> bytes | None:
        with self._lock:
            return self._retained.get(topic)

    @property
    def up(self) -> bool:
        return self._up

    def set_up(self, up: bool) -> None:
        """Take the broker down (every client loses its connection, wills are published)
        or bring it back (every client that wants to be connected connects)."""
        with self._lock:
            if up == self._up:
                return
            self._up = up
            clients = list(self._clients)
        for c in clients:
            if up:
                c.link_up()
            else:
                c.link_down("loopback broker went down", will=True)

    def attach(self, client: LoopbackTransport) -> None:
        with self._lock:
            self._clients.append(client)
            up = self._up
        if up:
            client.link_up()

    def detach(self, client: LoopbackTransport) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)


class LoopbackTransport:
    """One client of a :class:`LoopbackBroker` (implements the sync's ``Transport``)."""

    def __init__(self, broker: LoopbackBroker, client_id: str) -> None:
        self.broker, self.client_id = broker, client_id
        self.topics: list[str] = []
        self.listener: TransportListener | None = None
        self.connected = False
        self._presence: Presence | None = None
        self._outgoing: list[tuple[str, bytes, bool, DeliveryCallback | None]] = []
        self._last_error: str | None = None

    @property
    def peer(self) -> str:
        return f"{self.broker.name}:{self.client_id}"

    def subscribe(self, topics: Sequence[str]) -> None:
        with self.broker._lock:
            self.topics.extend(t for t in topics if t not in self.topics)
            if self.connected:
                self._send_retained(topics)

    def connect(self, listener: TransportListener, presence: Presence | None = None) -> None:
        self.listener, self._presence = listener, presence
        self.broker.attach(self)
        if not self.connected:
            self._last_error = f"cannot reach {self.broker.name}"
            self.broker.later(lambda: listener.on_connect_failed(f"cannot reach {self.peer}"))

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        on_delivered: DeliveryCallback | None = None,
    ) -> None:
        with self.broker._lock:
            if not self.connected:  # waits for the connection, as paho's queue does
                self._outgoing.append((topic, payload, retain, on_delivered))
                return
            self._send(topic, payload, retain, on_delivered)

    def status(self) -> TransportStatus:
        return TransportStatus(self.connected, self.peer, self._last_error)

    def close(self, timeout_s: float = 2.0) -> None:
        with self.broker._lock:
            if self.connected and self._presence is not None:
                self.broker.route(self._presence.topic, self._presence.offline, True)
            self.connected = False
        self.broker.detach(self)

    # -- called by the broker (under its lock) --------------------------------------------
    def _send(
        self, topic: str, payload: bytes, retain: bool, on_delivered: DeliveryCallback | None
    ) -> None:
        self.broker.route(topic, payload, retain)
        if on_delivered is not None:  # the broker has it: delivered
            self.broker.later(lambda: on_delivered(True))

    def _send_retained(self, topics: Sequence[str]) -> None:
        listener = self.listener
        if listener is None:
            return
        for topic, payload in list(self.broker._retained.items()):
            if any(topic_matches(t, topic) for t in topics):
                self.broker.later(functools.partial(listener.on_message, topic, payload))

    def link_up(self) -> None:
        with self.broker._lock:
            if self.connected or self.listener is None:
                return
            self.connected = True
            self._send_retained(self.topics)
            if self._presence is not None:
                self.broker.route(self._presence.topic, self._presence.online, True)
            listener = self.listener
            self.broker.later(listener.on_connected)
            waiting, self._outgoing = self._outgoing, []
            for topic, payload, retain, cb in waiting:
                self._send(topic, payload, retain, cb)

    def link_down(self, reason: str, will: bool) -> None:
        with self.broker._lock:
            if not self.connected:
                return
            self.connected = False
            self._last_error = reason
            if will and self._presence is not None:  # the last will
                self.broker._retained[self._presence.topic] = self._presence.offline
            listener = self.listener
            if listener is not None:
                self.broker.later(lambda: listener.on_connection_lost(reason))
