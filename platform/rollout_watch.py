"""The process that moves rollouts on: ``kanjian platform rollout watch``.

Every ``interval_s`` it runs :func:`kanjian.platform.rollout_engine.tick` over the
platform's PostgreSQL and publishes the commands it calls for (QoS 1; a command
counts as sent only on the broker's PUBACK without an error reason, e.g. not
refused by the broker's ACL). It keeps nothing in memory between ticks, so it may
be restarted at any time, and several may run (each rollout's step holds its row).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kanjian.platform.rollout import StationKey
from kanjian.platform.rollout_engine import tick
from kanjian.station.sync.config import MqttConfig
from kanjian.station.sync.messages import StationTopics
from kanjian.station.sync.mqtt_client import MqttTransport

log = logging.getLogger(__name__)


class _Listener:
    """Connection news for the log (the publisher subscribes to nothing)."""

    def __init__(self) -> None:
        self.connected = threading.Event()

    def on_connected(self) -> None:
        self.connected.set()
        log.info("rollout watcher connected to the broker")

    def on_connection_lost(self, reason: str) -> None:
        self.connected.clear()
        log.warning("rollout watcher lost the broker: %s", reason)

    def on_connect_failed(self, reason: str) -> None:
        log.warning("rollout watcher cannot connect: %s", reason)

    def on_message(self, topic: str, payload: bytes) -> None:
        pass


class CommandPublisher:
    """Publishes ``cmd/deploy_model`` to a station and waits for the broker's PUBACK.

    Args:
        mqtt: broker settings (the platform's deploy user where the broker has ACLs).
        client_id: the watcher's MQTT client id.
        prefix: topic prefix (``kanjian/v1``).
        timeout_s: how long to wait for the PUBACK before the send counts as failed.
    """

    def __init__(
        self, mqtt: MqttConfig, client_id: str, prefix: str = "kanjian/v1", timeout_s: float = 10.0
    ) -> None:
        self.prefix, self.timeout_s = prefix, timeout_s
        # nothing to keep for the watcher while it is away: no session
        cfg = mqtt.model_copy(update={"session_expiry_s": 0})
        self.listener = _Listener()
        self.transport = MqttTransport(cfg, client_id)
        self.transport.connect(self.listener)

    def __call__(self, key: StationKey, payload: bytes) -> None:
        topic = StationTopics(self.prefix, *key).command("deploy_model")
        done = threading.Event()
        result: list[bool] = []

        def delivered(ok: bool) -> None:
            result.append(ok)
            done.set()

        self.transport.publish(topic, payload, on_delivered=delivered)
        if not done.wait(self.timeout_s):
            raise RuntimeError(f"the broker did not acknowledge {topic} in {self.timeout_s:g} s")
        if not result[0]:
            raise RuntimeError(f"the broker refused {topic} (not authorised for this user?)")

    def close(self) -> None:
        self.transport.close()


def watch(
    db_url: str, publisher: Any, actor: str, interval_s: float = 5.0,
    stop: threading.Event | None = None, once: bool = False,
) -> None:  # fmt: skip
    """Tick until ``stop`` is set (or once); a lost database connection is opened again."""
    import psycopg

    from kanjian.platform.schema import migrate

    stop = stop or threading.Event()
    conn: Any = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            if conn is None or conn.closed or conn.broken:
                conn = psycopg.connect(db_url, autocommit=True)
                migrate(conn)
            for rid in tick(conn, publisher, actor):
                row = conn.execute(
                    "SELECT state, reason FROM rollouts WHERE rollout_id = %s", [rid]
                ).fetchone()
                log.info("rollout %s: %s%s", rid, row[0], f" ({row[1]})" if row[1] else "")
        except Exception:
            log.exception("rollout watcher: tick failed; trying again")
        if once:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    if conn is not None:
        conn.close()
