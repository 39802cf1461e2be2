"""The reference receiver: the first piece of the cluster platform.

Subscribes to the inspections (and events, availability) of many stations by
topic wildcard, stores each inspection once per UUID, and only after the
commit acknowledges the message to the broker (manual PUBACK) and publishes a
confirmation to the station. Every few seconds it looks for seq gaps that
persist and asks the station to send them again. ``kanjian platform receive``
runs it; ``kanjian platform report`` prints per-station counts, gaps and yield.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from kanjian.platform.receiver_db import ReceiverDB
from kanjian.station.sync.config import MqttConfig
from kanjian.station.sync.messages import (
    StationTopics,
    confirm_message,
    parse_station_topic,
    resend_message,
)
from kanjian.station.sync.mqtt_client import apply_receive_maximum, connect_async, make_client

log = logging.getLogger(__name__)

_REQUIRED = {
    "inspection": ("inspection_id", "site", "line", "station", "stream", "seq", "verdict"),
    "event": ("event_id", "event"),
}


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


class Receiver:
    """Receives, stores, confirms.

    Args:
        mqtt: broker settings (client id below).
        db_url: SQLite file path or ``postgresql://`` URL.
        client_id: stable id: the broker queues messages for it while it is down.
        prefix: topic prefix (``kanjian/v1``).
        stations: topic levels ``site/line/station`` to subscribe, wildcards allowed.
        batch: most messages per commit.
        gap_check_s: how often persistent gaps are asked for again.
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
    ) -> None:
        self.mqtt, self.db_url, self.prefix = mqtt, db_url, prefix
        self.client_id, self.batch, self.gap_check_s = client_id, batch, gap_check_s
        self.subscriptions = [
            (f"{prefix}/{stations}/inspections", 1),
            (f"{prefix}/{stations}/events", 1),
            (f"{prefix}/{stations}/availability", 1),
        ]
        self.stats = ReceiverStats()
        self.connected = threading.Event()
        self._queue: queue.Queue[tuple[str, bytes, int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="receiver-writer", daemon=True)
        self._gaps_seen: dict[str, set[tuple[int, int]]] = {}

    def start(self) -> Receiver:
        self._db = ReceiverDB(self.db_url)  # fail here, loudly, if the database is unusable
        c = make_client(self.mqtt, self.client_id, manual_ack=True)
        c.on_connect, c.on_disconnect, c.on_message = (
            self._on_connect,
            self._on_disconnect,
            (self._on_message),
        )
        self._client = c
        self._thread.start()
        connect_async(c, self.mqtt)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("broker refused the receiver: %s", rc)
            return
        apply_receive_maximum(client, self.mqtt, props)
        client.subscribe(self.subscriptions)
        self.connected.set()
        log.info("receiver connected; subscribed to %s", [s for s, _ in self.subscriptions])

    def _on_disconnect(self, *_: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self._queue.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        db = self._db
        next_gap_check = time.monotonic() + self.gap_check_s
        try:
            while not self._stop.is_set():
                items = self._take()
                delay = 0.1
                while items and not self._stop.is_set():
                    try:
                        self._handle(db, items)
                        break
                    except Exception:  # database down or locked: keep the batch, unacked
                        log.exception("receiver could not store a batch; retrying")
                        time.sleep(delay)
                        delay = min(delay * 2, 5.0)
                if time.monotonic() >= next_gap_check:
                    next_gap_check = time.monotonic() + self.gap_check_s
                    self._ask_for_gaps(db)
        finally:
            db.close()

    def _take(self) -> list[tuple[str, bytes, int, int]]:
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

    def _handle(self, db: ReceiverDB, items: list[tuple[str, bytes, int, int]]) -> None:
        inspections: list[dict[str, Any]] = []
        for topic, payload, _mid, _qos in items:
            self.stats.messages += 1
            where = parse_station_topic(topic, self.prefix)
            if where is None:
                continue
            site, line, station, leaf = where
            if leaf == "availability":
                db.record_availability(site, line, station, payload.decode(errors="replace"))
                continue
            m = _parse(payload, "inspection" if leaf == "inspections" else "event")
            if m is None:
                self.stats.invalid += 1
                log.warning("invalid message on %s: %r", topic, payload[:200])
            elif leaf == "inspections":
                inspections.append(m)
            elif leaf == "events":
                for stream in db.record_event(m):
                    self._confirm(db, stream, [], site, line, station)
        if inspections:
            res = db.store(inspections)
            self.stats.stored += res.new
            self.stats.duplicates += res.duplicates
            self.stats.commits += 1
            for stream, seqs in res.seqs.items():
                site, line, station = res.stations[stream]
                self._publish_confirm(stream, seqs, res.through[stream], site, line, station)
        # acknowledge only what is durably stored (or deliberately ignored)
        for _t, _p, mid, qos in items:
            if qos > 0:
                self._client.ack(mid, qos)

    def _confirm(
        self, db: ReceiverDB, stream: str, seqs: list[int], site: str, line: str, station: str
    ) -> None:
        row = db.query("SELECT through FROM streams WHERE stream = ?", [stream])
        if row:
            self._publish_confirm(stream, seqs, int(row[0][0]), site, line, station)

    def _publish_confirm(
        self, stream: str, seqs: list[int], through: int, site: str, line: str, station: str
    ) -> None:
        from kanjian.station.sync.outbox_types import to_ranges

        topics = StationTopics(self.prefix, site, line, station)
        self._client.publish(topics.confirm, confirm_message(stream, to_ranges(seqs), through), 1)
        self.stats.confirms += 1

    def _ask_for_gaps(self, db: ReceiverDB) -> None:
        """Ask again for gaps seen at two checks in a row (one check may just be early)."""
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


def _parse(payload: bytes, kind: str) -> dict[str, Any] | None:
    try:
        m = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(m, dict) or m.get("type") != kind or m.get("version") != 1:
        return None
    if any(m.get(k) in (None, "") for k in _REQUIRED[kind]):
        return None
    if kind == "inspection" and not (isinstance(m["seq"], int) and m["seq"] >= 1):
        return None
    return m
