"""The sync worker: drains the outbox through a transport until the platform confirms each entry.

One thread, one SQLite connection, one :class:`~kanjian.station.sync.transport.Transport`
(MQTT in a station: :class:`~kanjian.station.sync.mqtt_client.MqttTransport`),
whose own thread only hands deliveries, connection changes and messages over
through deques. The worker never touches the inspection loop: it reads what
the store has committed, so a dead broker only grows the backlog.

An entry is *sent* when the transport says it was delivered (MQTT: the
broker's PUBACK) and *done* when the platform confirms it stored it
(``{p}/confirm``). Unconfirmed entries are re-sent after ``confirm_timeout_s``
(doubling per attempt), at once after a reconnect (the broker may have lost what it
acknowledged), and on the platform's request (``{p}/cmd/resend``). See ``docs/sync.md``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kanjian.station.records import utc_iso
from kanjian.station.runtime import lower_priority
from kanjian.station.sync.config import SyncConfig
from kanjian.station.sync.feedback_feed import queue_feedback
from kanjian.station.sync.messages import (
    ConfirmIn,
    EventName,
    ResendIn,
    StationTopics,
    event_message,
    image_key,
    inspection_message,
)
from kanjian.station.sync.mqtt_client import MqttTransport
from kanjian.station.sync.objectstore import ImageUploader
from kanjian.station.sync.outbox import Outbox
from kanjian.station.sync.outbox_types import (
    BacklogStats,
    OutboxEntry,
    PendingWrites,
)
from kanjian.station.sync.status import SyncStatus, age_s
from kanjian.station.sync.transport import Presence, Transport
from kanjian.station.sync.watch import StationWatch, apply_retention, dropped_again

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Where the station stands (topic levels and object keys)."""

    site: str
    line: str
    station: str


class SyncWorker:
    """Drains the outbox of ``db_path`` to the broker in ``cfg``.

    Args:
        db_path: the store's database (the worker opens its own connection).
        data_dir: the store's folder (saved images are relative to it).
        cfg: the ``sync:`` section.
        ident: site, line, station.
        camera_state: optional probe of the camera state (``connected``, ``reconnecting``...);
            changes become ``camera_lost`` / ``camera_back`` events.
        model_ref: optional probe of the active model (dict name/version/sha256);
            changes become ``model_activated`` events.
        fallback, shadow: optional probes of the provider fallback and of the running
            shadow (event data or ``None``; see :class:`StationWatch`).
        feedback_delay_s: operator answers this old are sent as ``feedback`` events
            (:mod:`~kanjian.station.sync.feedback_feed`); None: not sent.
        on_command: optional handler of ``{p}/cmd/<name>`` payloads other than ``resend``.
        transport: what carries the messages (default: MQTT to ``cfg.mqtt``).
    """

    def __init__(
        self,
        db_path: Path,
        data_dir: Path,
        cfg: SyncConfig,
        ident: Identity,
        camera_state: Callable[[], str] | None = None,
        model_ref: Callable[[], dict[str, str]] | None = None,
        on_command: Callable[[str, bytes], None] | None = None,
        transport: Transport | None = None,
        fallback: Callable[[], dict[str, Any] | None] | None = None,
        shadow: Callable[[], dict[str, Any] | None] | None = None,
        feedback_delay_s: float | None = None,
    ) -> None:
        self.db_path, self.data_dir, self.cfg, self.ident = db_path, data_dir, cfg, ident
        self.topics = StationTopics(cfg.mqtt.topic_prefix, ident.site, ident.line, ident.station)
        self.camera_state, self.model_ref, self.on_command = camera_state, model_ref, on_command
        self.client_id = cfg.mqtt.client_id or f"kanjian-{ident.site}-{ident.line}-{ident.station}"
        self.transport = transport or MqttTransport(cfg.mqtt, self.client_id)
        self.watch = StationWatch(self.emit, camera_state, model_ref, cfg.backlog_high,
                                  fallback, shadow, cfg.shadow_report_s)  # fmt: skip
        self.feedback_delay_s = feedback_delay_s
        self.model_lock = self.watch.model_lock  # held while the active model changes on purpose
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # deliveries from the transport's thread: (seq or event id, publish token, ok);
        # token -1 marks an event
        self._acks: collections.deque[tuple[int, int, bool]] = collections.deque()
        self._incoming: collections.deque[tuple[str, bytes]] = collections.deque()
        self._events: collections.deque[tuple[str, str, str, str]] = collections.deque()
        self._connected = False
        self._connect_changed = False
        self._inflight: dict[int, tuple[int, float]] = {}  # seq -> (publish token, published at)
        self._tokens_issued = 0
        # sync_events.id published, not delivered; then delivered, sent_at not yet written.
        # An id leaves both only once its row says sent: an event re-read as unsent in
        # between would be published again (twice per event on a healthy connection).
        self._events_inflight: set[int] = set()
        self._events_delivered: set[int] = set()
        self._cursor = 0  # highest seq handed to MQTT by this process
        self._counts = collections.Counter[str]()
        self._last: dict[str, str | None] = {"ack": None, "confirm": None, "error": None}
        self._backlog: BacklogStats | None = None
        self._stream = ""
        self.uploader: ImageUploader | None = None
        self._thread = threading.Thread(target=self._run, name="sync-worker", daemon=True)
        self._started = threading.Event()
        self._drain_s = cfg.close_drain_s
        self._tokens, self._tokens_at = 0.0, time.monotonic()
        self._start_error: BaseException | None = None

    @property
    def broker(self) -> str:
        return self.transport.peer

    # -- public, any thread ----------------------------------------------------------
    def start(self) -> SyncWorker:
        """Start the thread; raises what stopped it from starting (e.g. an unusable database)."""
        self._thread.start()
        self._started.wait(60)
        if self._start_error is not None:
            raise self._start_error
        return self

    def wake(self, *_: Any) -> None:
        """Something was committed or arrived: look now (store listener; cheap)."""
        self._wake.set()

    def emit(self, event: EventName | str, data: dict[str, Any]) -> None:
        """Queue an event; the worker writes it to ``sync_events`` and publishes it."""
        i = self.ident
        eid, payload, at = event_message(event, data, site=i.site, line=i.line, station=i.station)  # type: ignore[arg-type]
        self._events.append((eid, event, payload, at))
        self._wake.set()

    def note_model(self, ref: dict[str, str]) -> None:
        """The active model is now ``ref`` and its event is already emitted (hold model_lock)."""
        self.watch.known_model = ref

    def stop(self, drain_s: float | None = None) -> None:
        """Drain for up to ``drain_s`` (default ``close_drain_s``), say offline, disconnect."""
        self._drain_s = self.cfg.close_drain_s if drain_s is None else drain_s
        self._stopping.set()
        self._wake.set()
        self._thread.join(self._drain_s + 15)

    def status(self) -> SyncStatus:
        b = self._backlog
        return SyncStatus(
            enabled=True,
            running=self._thread.is_alive(),
            connected=self._connected,
            broker=self.broker,
            stream=self._stream,
            backlog=b.backlog if b else 0,
            unacked=b.unacked if b else 0,
            oldest_backlog_age_s=age_s(b.oldest_created_at) if b else None,
            images_pending=b.images_pending if b else 0,
            oldest_image_age_s=age_s(b.oldest_image_created_at) if b else None,
            last_ack_at=self._last["ack"],
            last_confirm_at=self._last["confirm"],
            last_seq=b.last_seq if b else 0,
            published=self._counts["published"],
            acked=self._counts["acked"],
            confirmed=self._counts["confirmed"],
            resent=self._counts["resent"],
            dropped_messages=self._counts["dropped_messages_total"],
            dropped_images=self._counts["dropped_images_total"],
            images_uploaded=self.uploader.uploaded if self.uploader else 0,
            s3_state=self.uploader.state if self.uploader else "off",
            last_error=self._last["error"],
        )

    # -- transport listener (the transport's thread: hand over, never touch SQLite) -----
    def on_connected(self) -> None:
        self._connected, self._connect_changed = True, True
        self._wake.set()

    def on_connect_failed(self, reason: str) -> None:
        self._last["error"] = reason

    def on_connection_lost(self, reason: str) -> None:
        log.warning("connection to %s lost (%s); the backlog grows until it is back",
                    self.broker, reason)  # fmt: skip
        self._last["error"] = reason
        self._connected, self._connect_changed = False, True
        self._wake.set()

    def on_message(self, topic: str, payload: bytes) -> None:
        self._incoming.append((topic, payload))
        self._wake.set()

    def _delivered(self, key: int, token: int) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            self._acks.append((key, token, ok))
            self._wake.set()

        return done

    # -- worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        lower_priority(self.cfg.nice)
        try:
            ob = Outbox(self.db_path)
        except BaseException as e:
            self._start_error = e
            self._started.set()
            raise
        self._stream = ob.stream_id
        self._counts["dropped_messages_total"] = int(ob.get_state("dropped_messages") or 0)
        self._counts["dropped_images_total"] = int(ob.get_state("dropped_images") or 0)
        self._last["ack"] = ob.get_state("last_ack_at")
        self._last["confirm"] = ob.get_state("last_confirm_at")
        self._backlog = ob.backlog_stats()
        if self.cfg.s3.enabled:
            self.uploader = ImageUploader(
                self.db_path,
                self.data_dir,
                self.cfg.s3,
                self.ident.site,
                self.ident.station,
                nice=self.cfg.nice,
            ).start()
        self.transport.subscribe([self.topics.confirm, self.topics.cmd])
        self.transport.connect(self, Presence(self.topics.availability))
        self._started.set()
        periodic = {"status": 0.0, "retention": 0.0, "probe": 0.0, "state": 0.0}
        drain_deadline: float | None = None
        last_step = 0.0
        try:
            while True:
                self._wake.wait(0.25)
                self._wake.clear()
                # at most ~50 write transactions a second: the store's writer needs the lock too
                pause = last_step + 0.02 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                last_step = time.monotonic()
                try:
                    self._step(ob, periodic)
                except Exception as e:  # never let one bad pass end the sync
                    log.exception("sync pass failed")
                    self._last["error"] = f"{type(e).__name__}: {e}"
                    time.sleep(0.5)
                if self._stopping.is_set():
                    if drain_deadline is None:
                        drain_deadline = time.monotonic() + self._drain_s
                    b = ob.backlog_stats()
                    self._backlog = b
                    if (b.backlog == 0 and not self._events) or time.monotonic() > drain_deadline:
                        break
                    time.sleep(0.02)
        finally:
            self._shutdown(ob)

    def _shutdown(self, ob: Outbox) -> None:
        try:
            self.transport.close(2.0)  # says offline first while connected
        except Exception:
            log.exception("sync shutdown")
        finally:
            self._connected = False  # what `kanjian sync status` reads once we are gone
            try:
                self._persist_state(ob)
            except Exception:
                log.exception("sync shutdown: state not written")
            if self.uploader is not None:
                self.uploader.stop()
            ob.close()

    def _step(self, ob: Outbox, periodic: dict[str, float]) -> None:
        now = time.monotonic()
        w = PendingWrites()
        if self._connect_changed:
            self._connect_changed = False
            ob.set_state({"connected": "1" if self._connected else "0"})
            if self._connected:
                n = ob.make_all_due()
                log.info("MQTT connected to %s; re-sending %d unconfirmed", self.broker, n)
        self._take_acks(w)
        self._take_incoming(w, ob)
        while self._events:
            w.events_new.append(self._events.popleft())
        if now - periodic["probe"] >= 1.0:
            periodic["probe"] = now
            self.watch.probe(self._connected)
            if self.feedback_delay_s is not None:
                i = self.ident
                queue_feedback(ob, i.site, i.line, i.station, self.feedback_delay_s)
        if self._connected:
            w.retry_at = time.time() + self.cfg.confirm_timeout_s
            self._publish_events(ob)
            self._publish_entries(ob, w)
        if w:  # one write transaction per step
            self._apply(ob, w)
        if now - periodic["status"] >= 1.0:
            periodic["status"] = now
            self._backlog = ob.backlog_stats()
            self.watch.check_backlog(self._backlog)
            if not self.cfg.s3.enabled:
                ob.skip_images()
            elif self.uploader is not None:
                self.uploader.wake()
        if now - periodic["state"] >= 5.0:
            periodic["state"] = now
            self._persist_state(ob)
        if now - periodic["retention"] >= self.cfg.retention.check_interval_s:
            periodic["retention"] = now
            self._retention(ob)

    def _apply(self, ob: Outbox, w: PendingWrites) -> None:
        confirmed, resend = ob.apply(w, self.cfg.confirm_timeout_s, self.cfg.confirm_timeout_max_s)
        self._events_delivered.difference_update(w.events_sent)  # their rows now say sent
        if w.acked:
            self._counts["acked"] += len(w.acked)
            self._last["ack"] = utc_iso()
        if w.confirms:
            self._counts["confirmed"] += confirmed
            self._last["confirm"] = utc_iso()
        if resend:
            log.info("platform asked again for %d entries", resend)

    def _take_acks(self, w: PendingWrites) -> None:
        while self._acks:
            key, token, ok = self._acks.popleft()
            if token < 0:  # an event
                self._events_inflight.discard(key)
                if ok:
                    self._events_delivered.add(key)
                # a refused one is published again on the next pass
                continue
            entry = self._inflight.get(key)
            if entry is None or entry[0] != token:
                continue  # an entry dropped from the window (or published again since)
            del self._inflight[key]
            if ok:
                w.acked.append(key)
            # a refused delivery leaves the entry due at its retry time
        # every delivered event not yet marked (again, if the last write failed)
        w.events_sent = sorted(self._events_delivered)
        # an entry never delivered on a live connection: let the retry scan have it
        stale = time.monotonic() - 4 * self.cfg.confirm_timeout_s
        if self._connected and self._inflight:
            for seq, (_, t) in list(self._inflight.items()):
                if t < stale:
                    del self._inflight[seq]

    def _take_incoming(self, w: PendingWrites, ob: Outbox) -> None:
        while self._incoming:
            topic, payload = self._incoming.popleft()
            try:
                if topic == self.topics.confirm:
                    c = ConfirmIn.model_validate_json(payload)
                    if c.stream == self._stream:  # else: another database's (station reset)
                        w.confirms.append((c.ranges, c.through))
                elif topic == self.topics.command("resend"):
                    r = ResendIn.model_validate_json(payload)
                    if r.stream == self._stream:
                        w.resends.append(r.ranges)
                        again = dropped_again(ob, self._stream, r.ranges)
                        if again is not None:
                            self.emit("sync_dropped", again)
                elif topic.startswith(self.topics.command("")):
                    name = topic[len(self.topics.command("")) :]
                    if self.on_command is None:
                        self.emit("command_rejected", {"command": name, "reason": "not handled"})
                    else:
                        self.on_command(name, payload)
            except ValidationError as e:
                log.warning("ignored invalid message on %s: %s", topic, e.errors()[:3])
                if "/cmd/" in topic:
                    self.emit("command_rejected", {"topic": topic, "reason": str(e)[:500]})

    def _publish_events(self, ob: Outbox) -> None:
        """Publish each unsent event once; the transport re-sends it after a reconnect
        if the peer had not acknowledged it (paho keeps the session's unacknowledged
        messages and sends them again, flagged DUP), so the worker does not."""
        for eid, payload in ob.unsent_events(50):
            if eid not in self._events_inflight and eid not in self._events_delivered:
                self._events_inflight.add(eid)
                self.transport.publish(self.topics.events, payload.encode(),
                                       on_delivered=self._delivered(eid, -1))  # fmt: skip

    def _image_keys(self, ob: Outbox, recs: list[OutboxEntry]) -> dict[int, str | None]:
        """Per seq, the object key its message names: the outbox's plan, the uploader's too.

        An entry not planned yet is planned here (and stored) before its message
        goes out, so a message never names a key the uploader would not use (the
        config may change between a send and a re-send; entries made while object
        storage was off stay without images).
        """
        s3, i = self.cfg.s3, self.ident
        keys: dict[int, str | None] = {}
        plans: list[tuple[int, str | None]] = []
        for rec in recs:
            if rec.image_state is None and s3.enabled:
                ins = rec.inspection
                key = image_key(s3.prefix, i.site, i.station, ins.id, ins.captured_at,
                                ins.verdict, ins.image_path, tuple(s3.upload_verdicts),
                                s3.pass_sample)  # fmt: skip
                plans.append((rec.seq, key))
                keys[rec.seq] = key
            else:  # pending/done: the planned key; none/off/missing/dropped: no image
                keys[rec.seq] = rec.image_key if rec.image_state in ("pending", "done") else None
        if plans:
            ob.set_image_plans(plans)
            if self.uploader is not None:
                self.uploader.wake()
        return keys

    def _publish(self, ob: Outbox, recs: list[OutboxEntry], w: PendingWrites) -> None:
        s3, i = self.cfg.s3, self.ident
        now = time.monotonic()
        keys = self._image_keys(ob, recs)
        for rec in recs:
            key = keys[rec.seq]
            payload = inspection_message(rec, site=i.site, line=i.line, station=i.station,
                                         stream=self._stream, bucket=s3.bucket if key else None,
                                         key=key)  # fmt: skip
            self._tokens_issued += 1
            token = self._tokens_issued
            self._inflight[rec.seq] = (token, now)  # before publish: the ack may come first
            self.transport.publish(self.topics.inspections, payload,
                                   on_delivered=self._delivered(rec.seq, token))  # fmt: skip
            self._cursor = max(self._cursor, rec.seq)
            self._counts["resent" if rec.attempts else "published"] += 1
            w.published.append(rec.seq)

    def _publish_entries(self, ob: Outbox, w: PendingWrites) -> None:
        room = self.cfg.window - len(self._inflight)
        rate = self.cfg.max_rate
        if rate > 0:  # token bucket, at most one second's worth at once
            now = time.monotonic()
            self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            room = min(room, int(self._tokens))
            self._tokens -= max(0, room)
        if room <= 0:
            return
        # (acknowledged this pass but not yet marked: not due, whatever the row says)
        skip = self._inflight.keys() | set(w.acked)
        due = [
            r
            for r in ob.fetch_due(time.time(), self._cursor, min(room, self.cfg.read_batch))
            if r.seq not in skip
        ]
        self._publish(ob, due, w)
        room -= len(due)
        if room > 0:
            want = min(room, self.cfg.read_batch)
            fresh = ob.fetch_fresh(self._cursor, want)
            self._publish(ob, [r for r in fresh if r.seq not in self._inflight], w)
            if len(fresh) == want:
                self._wake.set()  # more where these came from

    def _retention(self, ob: Outbox) -> None:
        i = self.ident
        res = apply_retention(ob, self.cfg.retention, self._stream, i.site, i.line, i.station)
        if res.messages or res.images:
            self._counts["dropped_messages_total"] = res.total_messages
            self._counts["dropped_images_total"] = res.total_images
            log.error("retention dropped %d unconfirmed messages and %d images",
                      res.messages, res.images)  # fmt: skip
            self._wake.set()  # publish the event now

    def _persist_state(self, ob: Outbox) -> None:
        vals = {"connected": "1" if self._connected else "0", "updated_at": utc_iso()}
        for k in ("ack", "confirm", "error"):
            v = self._last[k]
            if v is not None:
                vals[f"last_{k}" + ("_at" if k != "error" else "")] = v
        vals["s3_state"] = self.uploader.state if self.uploader else "off"
        ob.set_state(vals)
