"""A paho-mqtt 2.x client set up the kanjian way: MQTT 5, QoS 1, TLS, persistent session,
and :class:`MqttTransport`, the sync's :class:`~kanjian.station.sync.transport.Transport` over it.

paho's ``publish()`` queues in memory even while disconnected and returns
early; only ``on_publish`` (the broker's PUBACK) means the broker has the
message. Callers therefore count PUBACKs, never ``publish()`` return values.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kanjian.station.sync.config import MqttConfig
from kanjian.station.sync.transport import (
    DeliveryCallback,
    Presence,
    TransportListener,
    TransportStatus,
)

log = logging.getLogger(__name__)


def make_client(
    cfg: MqttConfig,
    client_id: str,
    *,
    manual_ack: bool = False,
    will: tuple[str, bytes] | None = None,
) -> mqtt.Client:
    """A configured, not yet connected client (call :func:`connect_async` next).

    Args:
        cfg: broker address, credentials, TLS, timings.
        client_id: stable id; the broker keeps the session (subscriptions,
            queued QoS 1 messages) under it while the client is away.
        manual_ack: acknowledge received messages only when the caller says so
            (a receiver acknowledges after its database commit).
        will: ``(topic, payload)`` published retained by the broker if the
            connection dies without a goodbye.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.secret())
    if cfg.tls:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(cfg.reconnect_min_s, max(cfg.reconnect_min_s, cfg.reconnect_max_s))
    client.max_inflight_messages_set(cfg.max_inflight)
    # paho's own queue is bounded by the caller's window; 0 = no extra limit here
    client.max_queued_messages_set(0)
    return client


def connect_async(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Start connecting in the background with a persistent MQTT 5 session.

    ``clean_start=False`` with a session expiry keeps the client's
    subscriptions and queued messages on the broker across short outages.
    """
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = cfg.session_expiry_s
    client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props)
    client.loop_start()


def apply_receive_maximum(client: mqtt.Client, cfg: MqttConfig, props: Any) -> int:
    """Cap in-flight messages at the broker's MQTT 5 Receive Maximum (from CONNACK).

    A client that exceeds it is disconnected by the broker. Returns the cap used.
    """
    cap = cfg.max_inflight
    rm = getattr(props, "ReceiveMaximum", None) if props is not None else None
    if isinstance(rm, int) and rm > 0:
        cap = min(cap, rm)
    # paho 2.x refuses max_inflight_messages_set() once connected and does not
    # read Receive Maximum itself; on_connect runs before it re-sends its queue,
    # so setting the limit here is in time.
    client._max_inflight_messages = cap
    return cap


def _ignore(_ok: bool) -> None:
    """The delivery callback of a message nobody waits for (presence)."""


class MqttTransport:
    """The sync's transport over MQTT 5 (paho): QoS 1, persistent session, presence as
    a retained ``availability`` message and the last will.

    ``on_delivered`` is the broker's PUBACK. paho calls back on its network
    thread, possibly before ``publish()`` has returned the message id, so an
    acknowledgement that arrives first is kept until the id is registered
    (holding a lock across paho's ``publish()`` could deadlock with its thread).

    Args:
        cfg: broker address, credentials, TLS, timings.
        client_id: stable id; the broker keeps the session under it.
    """

    def __init__(self, cfg: MqttConfig, client_id: str) -> None:
        self.cfg, self.client_id = cfg, client_id
        self._client: mqtt.Client | None = None
        self._listener: TransportListener | None = None
        self._presence: Presence | None = None
        self._topics: list[str] = []
        self._lock = threading.Lock()
        self._waiting: dict[int, DeliveryCallback] = {}  # mid -> callback
        self._early: dict[int, bool] = {}  # PUBACKs that beat publish() returning
        self._connected = False
        self._last_error: str | None = None

    @property
    def peer(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def subscribe(self, topics: Sequence[str]) -> None:
        with self._lock:
            self._topics.extend(t for t in topics if t not in self._topics)
            client = self._client if self._connected else None
        if client is not None:
            client.subscribe([(t, 1) for t in topics])

    def connect(self, listener: TransportListener, presence: Presence | None = None) -> None:
        self._listener, self._presence = listener, presence
        will = (presence.topic, presence.offline) if presence is not None else None
        client = make_client(self.cfg, self.client_id, will=will)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish, client.on_message = self._on_publish, self._on_message
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        connect_async(client, self.cfg)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        on_delivered: DeliveryCallback | None = None,
    ) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("MqttTransport.publish before connect")
        info = client.publish(topic, payload, qos=1, retain=retain)
        callback = on_delivered or _ignore
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._waiting[info.mid] = callback
        if early is not None:
            callback(early)

    def status(self) -> TransportStatus:
        return TransportStatus(self._connected, self.peer, self._last_error)

    def close(self, timeout_s: float = 2.0) -> None:
        client = self._client
        if client is None:
            return
        try:
            if self._connected and self._presence is not None:
                p = self._presence
                info = client.publish(p.topic, p.offline, qos=1, retain=True)
                info.wait_for_publish(timeout_s)
            client.disconnect()
        except Exception:
            log.exception("MQTT close")
        finally:
            self._connected = False
            client.loop_stop()

    # -- paho's thread ---------------------------------------------------------------
    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self._last_error = f"broker refused connection: {rc}"
            log.warning("MQTT connect refused: %s", rc)
            if self._listener is not None:
                self._listener.on_connect_failed(self._last_error)
            return
        apply_receive_maximum(client, self.cfg, props)
        # subscribe on every connect: a restarted broker may have lost the session
        with self._lock:
            topics = list(self._topics)
        if topics:
            client.subscribe([(t, 1) for t in topics])
        if self._presence is not None:
            self.publish(self._presence.topic, self._presence.online, retain=True)
        self._connected = True
        if self._listener is not None:
            self._listener.on_connected()

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._last_error = f"cannot reach the broker at {self.peer}"
        if self._listener is not None:
            self._listener.on_connect_failed(self._last_error)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        was, self._connected = self._connected, False
        if was:  # (a refused connect keeps its own, better, reason)
            self._last_error = f"disconnected: {rc}"
            if self._listener is not None:
                self._listener.on_connection_lost(self._last_error)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        ok = not rc.is_failure
        with self._lock:
            callback = self._waiting.pop(mid, None)
            if callback is None:
                self._early[mid] = ok
        if callback is not None:
            callback(ok)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if self._listener is not None:
            self._listener.on_message(msg.topic, bytes(msg.payload))
