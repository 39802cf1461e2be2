"""A paho-mqtt 2.x client set up the kanjian way: MQTT 5, QoS 1, TLS, persistent session.

paho's ``publish()`` queues in memory even while disconnected and returns
early; only ``on_publish`` (the broker's PUBACK) means the broker has the
message. Callers therefore count PUBACKs, never ``publish()`` return values.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kanjian.station.sync.config import MqttConfig

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
        client.username_pw_set(
            cfg.username, cfg.password.get_secret_value() if cfg.password else None
        )
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
