"""The platform's receiver: stores what stations send and confirms it; N of them can share.

Subscribes to the inspections (and events, availability) of many stations by
topic wildcard, stores each inspection once per UUID, and only after the
commit acknowledges the message to the broker (manual PUBACK) and publishes a
confirmation to the station. Every few seconds it looks for seq gaps that
persist and asks the station to send them again. ``kanjian platform receive``
runs it; ``kanjian platform report`` prints per-station counts, gaps and yield.

**Sharing the load** (``share``, PostgreSQL): N receivers, each with its own client
id, subscribe to the inspections as an MQTT 5 shared subscription
(``$share/<group>/<prefix>/+/+/+/inspections``); the broker hands each message to
one of them. That subscription lives on a second connection whose session ends
with it (expiry 0): Mosquitto 2.0 keeps routing a share's messages to a member
whose session persists while it is gone, and does not hand a dead member's
unacknowledged messages to another (measured; see docs/platform.md), so a
receiver that dies takes only its in-flight messages with it, which the
stations send again (confirm timeout, gap requests); nothing is lost because
only a confirmation ends a station's copy. Events and availability stay on the
receiver's own persistent session, unshared: every receiver stores every event
(idempotent by event id), so an event the broker acknowledged to a station
survives the death of any one receiver. One receiver at a time (a PostgreSQL
advisory lock) asks for gaps.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kanjian.platform.inbound import problem
from kanjian.platform.receiver_db import ReceiverDB
from kanjian.station.sync.config import MqttConfig
from kanjian.station.sync.messages import (
    StationTopics,
    confirm_message,
    parse_station_topic,
    resend_message,
)
from kanjian.station.sync.mqtt_client import apply_receive_maximum, connect_async, make_client
from kanjian.station.sync.outbox_types import to_ranges

log = logging.getLogger(__name__)

#: MQTT 5 reason code of a DISCONNECT sent because another client took the client id
_SESSION_TAKEN_OVER = 142


@dataclass
class ReceiverStats:
    """Counters since start (mutated by the receiver's writer thread)."""

    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    confirms: int = 0
    resend_requests: int = 0
    commits: int = 0
    shared: int = 0  # messages that came through the shared subscription


_SHARE_NAME = re.compile(r"^[^/+#]{1,64}$")


class Receiver:
    """Receives, stores, confirms.

    Args:
        mqtt: broker settings (client id below).
        db_url: SQLite file path or ``postgresql://`` URL.
        client_id: stable id, its own per receiver: the broker keeps this receiver's
            session (events, availability; all messages when not sharing) under it
            while it is down.
        prefix: topic prefix (``kanjian/v1``).
        stations: topic levels ``site/line/station`` to subscribe, wildcards allowed.
        batch: most messages per commit.
        gap_check_s: how often persistent gaps are asked for again.
        share: MQTT 5 shared-subscription group for the inspections (``None``: this
            receiver takes them all on its own session).
    """

    def __init__(
        self,
        mqtt: MqttConfig,
        db_url: str,
        client_id: str = "kanjian-receiver",
        prefix: str = "kanjian/v1",
        stations: str = "+/+/+",
        batch: int = 1000,
        gap_check_s: float = 5.0,
        share: str | None = None,
    ) -> None:
        if share is not None and not _SHARE_NAME.match(share):
            raise ValueError(
                f"share group {share!r}: use 1 to 64 characters without '/', '+' or '#'"
            )
        self.mqtt, self.db_url, self.prefix = mqtt, db_url, prefix
        self.client_id, self.batch, self.gap_check_s = client_id, batch, gap_check_s
        self.share = share
        inspections = f"{prefix}/{stations}/inspections"
        self.subscriptions = [
            *([] if share else [(inspections, 1)]),
            (f"{prefix}/{stations}/events", 1),
            (f"{prefix}/{stations}/availability", 1),
        ]
        self.shared_subscriptions = [(f"$share/{share}/{inspections}", 1)] if share else []
        self.stats = ReceiverStats()
        self.connected = threading.Event()
        # (client that delivered it, topic, payload, mid, qos)
        self._queue: queue.Queue[tuple[Any, str, bytes, int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._client: Any = None
        self._shared: Any = None
        self._thread = threading.Thread(target=self._run, name="receiver-writer", daemon=True)
        self._gaps_seen: dict[str, set[tuple[int, int]]] = {}
        self._gap_lead = False
        self._connected_at: dict[int, float] = {}  # id(client) -> when it last connected
        self._quick_drops: dict[int, int] = {}  # id(client) -> drops in a row soon after

    def start(self) -> Receiver:
        self._db = ReceiverDB(self.db_url)  # fail here, loudly, if the database is unusable
        self._client = self._make(self.client_id, self.subscriptions)
        if self.share:
            self._shared = self._make(f"{self.client_id}-share", self.shared_subscriptions)
        self._thread.start()
        connect_async(self._client, self.mqtt)
        if self._shared is not None:
            # a session that ends with the connection: see the module docstring
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._shared.connect_async(self.mqtt.host, self.mqtt.port, self.mqtt.keepalive_s,
                                       clean_start=True, properties=props)  # fmt: skip
            self._shared.loop_start()
        return self

    def _make(self, client_id: str, subscriptions: list[tuple[str, int]]) -> Any:
        c = make_client(self.mqtt, client_id, manual_ack=True)
        c.on_connect = lambda client, _u, _f, rc, props: self._on_connect(
            client, rc, props, subscriptions
        )
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def stop(self) -> None:
        if self._shared is not None and self._shared.is_connected():
            # leave the share first (the broker then hands new messages to the others) and
            # store what already came, so a rolling restart leaves nothing to re-send
            self._shared.unsubscribe([t for t, _ in self.shared_subscriptions])
            deadline = time.monotonic() + 10.0
            time.sleep(0.2)
            while self._queue.qsize() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._stop.set()
        self._thread.join(30)
        for c in (self._shared, self._client):
            if c is not None:
                c.disconnect()
                c.loop_stop()

    def _on_connect(
        self, client: Any, rc: Any, props: Any, subscriptions: list[tuple[str, int]]
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused the receiver: %s", rc)
            return
        apply_receive_maximum(client, self.mqtt, props)
        self._connected_at[id(client)] = time.monotonic()
        client.subscribe(subscriptions)
        if client is self._client:
            self.connected.set()
        log.info("receiver connected; subscribed to %s", [s for s, _ in subscriptions])

    def _on_disconnect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if client is self._client:
            self.connected.clear()
        # Another client with the same id takes the session: MQTT 5 brokers may say so
        # (reason 142), Mosquitto 2.0 just closes the connection, right after each connect
        up_s = time.monotonic() - self._connected_at.pop(id(client), -1e9)
        drops = self._quick_drops.get(id(client), 0) + 1 if up_s < 5.0 else 0
        self._quick_drops[id(client)] = drops
        if getattr(rc, "value", None) == _SESSION_TAKEN_OVER or drops == 3:
            log.error(
                "the broker keeps closing this receiver's connection (client id %s) right "
                "after it connects: another client probably uses the same client id; "
                "give every receiver its own --client-id",
                client._client_id.decode(errors="replace"),
            )

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        self._queue.put((client, msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        next_gap_check = time.monotonic() + self.gap_check_s
        try:
            while not self._stop.is_set():
                items = self._take()
                delay = 0.1
                while items and not self._stop.is_set():
                    try:
                        self._handle(self._db, items)
                        break
                    except Exception:  # database down or locked: keep the batch, unacked
                        log.exception("receiver could not store a batch; retrying")
                        time.sleep(delay)
                        delay = min(delay * 2, 5.0)
                        self._reopen_if_broken()
                if time.monotonic() >= next_gap_check:
                    next_gap_check = time.monotonic() + self.gap_check_s
                    try:
                        self._ask_for_gaps(self._db)
                    except Exception:
                        log.exception("receiver could not check for gaps")
                        self._reopen_if_broken()
        finally:
            self._db.close()

    def _reopen_if_broken(self) -> None:
        """A PostgreSQL connection that broke (server restarted, fail-over, backend
        terminated) stays broken: open a new one (the next retry uses it)."""
        if not self._db.broken:
            return
        try:
            db = ReceiverDB(self.db_url)
        except Exception as e:  # still down: the next retry tries again
            log.warning("database still unreachable: %s", e)
            return
        self._db.close()
        self._db, self._gap_lead = db, False  # the gap lead's lock went with the old session
        log.info("reconnected to the database")

    def _take(self) -> list[tuple[Any, str, bytes, int, int]]:
        try:
            items = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(items) < self.batch:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _handle(self, db: ReceiverDB, items: list[tuple[Any, str, bytes, int, int]]) -> None:
        inspections: list[dict[str, Any]] = []
        for client, topic, payload, _mid, _qos in items:
            self.stats.messages += 1
            self.stats.shared += client is self._shared
            where = parse_station_topic(topic, self.prefix)
            if where is None:
                continue
            site, line, station, leaf = where
            if leaf == "availability":
                db.record_availability(site, line, station, payload.decode(errors="replace"))
                continue
            kind = "inspection" if leaf == "inspections" else "event"
            m, why = _parse(payload, kind, (site, line, station))
            if m is None:
                self.stats.invalid += 1
                log.warning("invalid message on %s (%s): %r", topic, why, payload[:200])
            elif leaf == "inspections":
                inspections.append(m)
            elif leaf == "events":
                for stream in db.record_event(m, (site, line, station)):
                    self._confirm(db, stream, [], site, line, station)
        if inspections:
            res = db.store(inspections)
            self.stats.stored += res.new
            self.stats.duplicates += res.duplicates
            self.stats.commits += 1
            for stream, seqs in res.seqs.items():
                site, line, station = res.stations[stream]
                self._publish_confirm(stream, seqs, res.through[stream], site, line, station)
        # acknowledge only what is durably stored (or deliberately ignored), to the
        # connection that delivered it
        for client, _t, _p, mid, qos in items:
            if qos > 0:
                client.ack(mid, qos)

    def _confirm(
        self, db: ReceiverDB, stream: str, seqs: list[int], site: str, line: str, station: str
    ) -> None:
        row = db.query("SELECT through FROM streams WHERE stream = ?", [stream])
        if row:
            self._publish_confirm(stream, seqs, int(row[0][0]), site, line, station)

    def _publish_confirm(
        self, stream: str, seqs: list[int], through: int, site: str, line: str, station: str
    ) -> None:
        topics = StationTopics(self.prefix, site, line, station)
        self._client.publish(topics.confirm, confirm_message(stream, to_ranges(seqs), through), 1)
        self.stats.confirms += 1

    def _ask_for_gaps(self, db: ReceiverDB) -> None:
        """Ask again for gaps seen at two checks in a row (one check may just be early)."""
        self._gap_lead = self._gap_lead or db.lead_gap_checks()
        if not self._gap_lead:
            return
        for stream, site, line, station, through, max_seq, _d in db.streams():
            if max_seq <= through:
                self._gaps_seen.pop(stream, None)
                continue
            gaps = set(db.gaps(stream, limit=1000, window=100_000))
            persistent = sorted(gaps & self._gaps_seen.get(stream, set()))
            self._gaps_seen[stream] = gaps
            if persistent:
                topics = StationTopics(self.prefix, site, line, station)
                self._client.publish(
                    topics.command("resend"), resend_message(stream, persistent), 1
                )
                self.stats.resend_requests += 1
                log.info("asked %s/%s/%s again for %s", site, line, station, persistent[:5])


def _parse(
    payload: bytes, kind: str, where: tuple[str, str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The message if it can be stored, else None and why.

    A message that names another station than its topic's is refused: with per-station
    broker credentials the topic is what the broker vouches for (docs/platform.md,
    "Broker credentials and ACL"), the message's own fields are only what it claims.
    """
    try:
        m = json.loads(payload)
    except ValueError:
        return None, "not JSON"
    why = problem(m, kind)
    if why is None:
        claims = tuple(m.get(k) for k in ("site", "line", "station"))
        if any(c is not None and c != w for c, w in zip(claims, where, strict=True)):
            why = f"it names {'/'.join(map(str, claims))}, not the topic's {'/'.join(where)}"
    return (None, why) if why else (m, "")
