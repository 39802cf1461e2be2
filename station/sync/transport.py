"""What the sync worker needs from a message transport, and nothing more.

The worker (:mod:`kanjian.station.sync.worker`) talks only to a
:class:`Transport`: it publishes each outbox entry with a callback that means
*delivered* (the peer has taken responsibility for the message: an MQTT
broker's PUBACK), subscribes to the platform's confirmations and commands
(``{p}/confirm``, ``{p}/cmd/#``: resend, deploy_model...), and learns of
connects and losses through a :class:`TransportListener`. MQTT (paho) is the
implementation a station runs (:class:`~kanjian.station.sync.mqtt_client.MqttTransport`);
:class:`~kanjian.station.sync.loopback.LoopbackTransport` is an in-process one.

Topics are MQTT-style: ``/``-separated levels; subscriptions may use ``+`` (one
level) and ``#`` (the rest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

DeliveryCallback = Callable[[bool], None]
"""Called once per published message: ``True`` when the peer has it (delivered),
``False`` when the peer refused it. Runs on the transport's thread: hand over, be quick.
A message whose connection dropped first may never be called back; the worker's
retry timers cover that."""


class TransportListener(Protocol):
    """What a transport reports, on its own thread (implementations only hand over)."""

    def on_connected(self) -> None:
        """Connected (again): subscriptions are made and the presence says online."""
        ...

    def on_connection_lost(self, reason: str) -> None:
        """A live connection was lost; the transport reconnects by itself."""
        ...

    def on_connect_failed(self, reason: str) -> None:
        """An attempt to connect failed (unreachable, refused); it retries by itself."""
        ...

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on a subscribed topic."""
        ...


@dataclass(frozen=True)
class Presence:
    """The retained message that says whether the station is there.

    ``online`` is published on every connect; ``offline`` on a clean close and,
    when the connection dies without one, by the peer (MQTT's last will).
    """

    topic: str
    online: bytes = b"online"
    offline: bytes = b"offline"


@dataclass(frozen=True)
class TransportStatus:
    """Where the transport stands.

    Attributes:
        connected: a connection is up now.
        peer: what it connects to, for people (``host:port``).
        last_error: the last connection problem, if any.
    """

    connected: bool
    peer: str
    last_error: str | None


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` falls under the subscription ``pattern`` (``+``, ``#`` wildcards)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(p) == len(t)


class Transport(Protocol):
    """A connection to the platform's message broker, kept up in the background."""

    @property
    def peer(self) -> str:
        """What it connects to, for people and status (``host:port``)."""
        ...

    def subscribe(self, topics: Sequence[str]) -> None:
        """Receive messages on ``topics`` (wildcards allowed), made again on every connect.

        Call before :meth:`connect` to get messages from the first connect on.
        """
        ...

    def connect(self, listener: TransportListener, presence: Presence | None = None) -> None:
        """Start connecting in the background, and reconnecting after every loss.

        Returns at once; ``listener`` hears how it goes.
        """
        ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        on_delivered: DeliveryCallback | None = None,
    ) -> None:
        """Send ``payload`` at least once; ``on_delivered`` says when the peer has it.

        May be called while disconnected: the message waits for the connection
        (never count it sent before ``on_delivered(True)``).
        """
        ...

    def status(self) -> TransportStatus: ...

    def close(self, timeout_s: float = 2.0) -> None:
        """Say offline (when connected and a presence was given, waiting up to
        ``timeout_s`` for it to be delivered), disconnect, stop the background work."""
        ...
