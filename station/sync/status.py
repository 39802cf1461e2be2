"""What the sync reports: backlog, last delivery, connection — for CLI, /status and /metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kanjian.station.sync.outbox import Outbox
from kanjian.station.sync.outbox_types import BacklogStats

STATE_STALE_S = 15.0  # the worker writes its state every 5 s: three missed writes, it is gone


def age_s(iso: str | None, now: datetime | None = None) -> float | None:
    """Seconds since an ISO 8601 time, or ``None``."""
    if iso is None:
        return None
    t = datetime.fromisoformat(iso)
    return max(0.0, ((now or datetime.now(timezone.utc)) - t).total_seconds())


@dataclass(frozen=True)
class SyncStatus:
    """A snapshot of the platform sync.

    Attributes:
        enabled: the sync worker runs (``sync.enabled``).
        running: the worker thread is alive (``False`` when read from the database only).
        connected: MQTT connection up now (from the database: as last written by the
            worker, and only if it wrote within ``STATE_STALE_S``: a killed worker
            leaves ``connected`` behind).
        broker: ``host:port``.
        stream: this database's stream id (seq numbers are unique within it).
        backlog: entries the platform has not confirmed yet (not dropped).
        unacked: of those, entries the broker never acknowledged.
        oldest_backlog_age_s: age of the oldest backlog entry in seconds, or ``None``.
        images_pending: images waiting for upload to object storage.
        oldest_image_age_s: age of the oldest of those in seconds, or ``None``.
        last_ack_at: the last PUBACK (last successful delivery to the broker), ISO UTC.
        last_confirm_at: the last confirmation from the platform, ISO UTC.
        last_seq: newest outbox seq.
        published, acked, confirmed, resent: counters since the worker started
            (messages handed to MQTT, PUBACKs, entries confirmed, re-sends).
        dropped_messages, dropped_images: dropped by retention, all time (persistent).
        images_uploaded: uploads since start.
        s3_state: ``off``, ``ok`` or ``failing``.
        last_error: the last connection or upload problem, for people.
        state_age_s: from the database: seconds since the worker last wrote its
            state (``None``: never); ``None`` for a live worker's own status.
    """

    enabled: bool
    running: bool
    connected: bool
    broker: str
    stream: str
    backlog: int
    unacked: int
    oldest_backlog_age_s: float | None
    images_pending: int
    oldest_image_age_s: float | None
    last_ack_at: str | None
    last_confirm_at: str | None
    last_seq: int
    published: int = 0
    acked: int = 0
    confirmed: int = 0
    resent: int = 0
    dropped_messages: int = 0
    dropped_images: int = 0
    images_uploaded: int = 0
    s3_state: str = "off"
    last_error: str | None = None
    state_age_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Prometheus-style gauges and counters (name -> value), ``kanjian_sync_*``."""
        out = {
            "kanjian_sync_enabled": float(self.enabled),
            "kanjian_sync_connected": float(self.connected),
            "kanjian_sync_backlog": float(self.backlog),
            "kanjian_sync_unacked": float(self.unacked),
            "kanjian_sync_oldest_backlog_age_seconds": self.oldest_backlog_age_s or 0.0,
            "kanjian_sync_images_pending": float(self.images_pending),
            "kanjian_sync_oldest_image_age_seconds": self.oldest_image_age_s or 0.0,
            "kanjian_sync_published_total": float(self.published),
            "kanjian_sync_acked_total": float(self.acked),
            "kanjian_sync_confirmed_total": float(self.confirmed),
            "kanjian_sync_resent_total": float(self.resent),
            "kanjian_sync_dropped_messages_total": float(self.dropped_messages),
            "kanjian_sync_dropped_images_total": float(self.dropped_images),
            "kanjian_sync_images_uploaded_total": float(self.images_uploaded),
            "kanjian_sync_s3_ok": float(self.s3_state == "ok"),
        }
        # unix times, left out until they happen (an age of 0 would look healthy);
        # alert on e.g. time() - kanjian_sync_last_confirm_timestamp_seconds > 300
        for name, iso in (("ack", self.last_ack_at), ("confirm", self.last_confirm_at)):
            if iso is not None:
                out[f"kanjian_sync_last_{name}_timestamp_seconds"] = datetime.fromisoformat(
                    iso
                ).timestamp()
        return out


def status_from_db(db_path: Path, enabled: bool, broker: str) -> SyncStatus:
    """Read the sync's state from the database (another process may run the worker).

    ``connected`` and ``last_*`` are what the worker last wrote (every few seconds);
    ``connected`` counts only if that was less than ``STATE_STALE_S`` ago.
    """
    ob = Outbox(db_path)
    try:
        b: BacklogStats = ob.backlog_stats()
        st = {
            k: ob.get_state(k)
            for k in (
                "connected",
                "updated_at",
                "last_ack_at",
                "last_confirm_at",
                "dropped_messages",
                "dropped_images",
                "s3_state",
                "last_error",
            )
        }
        stream = ob.stream_id
    finally:
        ob.close()
    state_age = age_s(st["updated_at"])
    return SyncStatus(
        enabled=enabled,
        running=False,
        connected=st["connected"] == "1" and state_age is not None and state_age < STATE_STALE_S,
        broker=broker,
        stream=stream,
        backlog=b.backlog,
        unacked=b.unacked,
        oldest_backlog_age_s=age_s(b.oldest_created_at),
        images_pending=b.images_pending,
        oldest_image_age_s=age_s(b.oldest_image_created_at),
        last_ack_at=st["last_ack_at"],
        last_confirm_at=st["last_confirm_at"],
        last_seq=b.last_seq,
        dropped_messages=int(st["dropped_messages"] or 0),
        dropped_images=int(st["dropped_images"] or 0),
        s3_state=st["s3_state"] or "off",
        last_error=st["last_error"],
        state_age_s=state_age,
    )
