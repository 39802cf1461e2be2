"""The platform protocol: topic names, the JSON messages, the object keys.

Every message is versioned JSON (``"type"`` and ``"version"``); the JSON
Schemas in ``schemas/`` describe each one and the tests validate real messages
against them. Topics (``{p}`` = ``kanjian/v1/{site}/{line}/{station}``)::

    {p}/inspections     station → platform   one message per inspection (QoS 1)
    {p}/availability    station → platform   "online" / "offline", retained, last will
    {p}/events          station → platform   model activated, provider fallback, camera lost/back...
    {p}/confirm         platform → station   seq ranges the platform has stored
    {p}/cmd/resend      platform → station   seq ranges the platform misses
    {p}/cmd/deploy_model platform → station  activate a model bundle from object storage

See ``docs/sync.md``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kanjian.inference.types import Verdict
from kanjian.station.records import utc_iso
from kanjian.station.sync.outbox_types import OutboxEntry

PROTOCOL_VERSION = 1

#: verdicts an image may be uploaded for (MISSED has no image)
IMAGE_VERDICTS = tuple(v.value for v in Verdict if v is not Verdict.MISSED)


@dataclass(frozen=True)
class StationTopics:
    """The topics of one station (no wildcards)."""

    prefix: str
    site: str
    line: str
    station: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.line}/{self.station}"

    @property
    def inspections(self) -> str:
        return f"{self.base}/inspections"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def confirm(self) -> str:
        return f"{self.base}/confirm"

    @property
    def cmd(self) -> str:
        """Subscription for every command to this station."""
        return f"{self.base}/cmd/#"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"


def parse_station_topic(topic: str, prefix: str) -> tuple[str, str, str, str] | None:
    """``{prefix}/{site}/{line}/{station}/{leaf...}`` -> (site, line, station, leaf)."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/", 3)
    if len(parts) != 4:
        return None
    return parts[0], parts[1], parts[2], parts[3]


def image_key(
    prefix: str,
    site: str,
    station: str,
    inspection_id: str,
    captured_at: str,
    verdict: str,
    image_path: str | None,
    upload_verdicts: tuple[str, ...],
    pass_sample: float,
) -> str | None:
    """The object key an inspection's image is uploaded to, or ``None`` if it is not.

    ``{prefix}{site}/{station}/{YYYY-MM-DD}/{uuid}.jpg``; the date is the UTC
    capture date. Only images saved locally (``image_path``) can be uploaded. PASS
    images not in ``upload_verdicts`` are sampled by UUID: the same inspection is
    always in or out of the sample, whichever process asks.
    """
    if image_path is None or verdict not in IMAGE_VERDICTS:
        return None
    if verdict not in upload_verdicts:
        if verdict != Verdict.PASS or pass_sample <= 0:
            return None
        if int(uuid.UUID(inspection_id).hex[:8], 16) / 2**32 >= pass_sample:
            return None
    return f"{prefix}{site}/{station}/{captured_at[:10]}/{inspection_id}.jpg"


def inspection_message(
    entry: OutboxEntry,
    *,
    site: str,
    line: str,
    station: str,
    stream: str,
    bucket: str | None,
    key: str | None,
) -> bytes:
    """The ``inspection`` message (schema ``schemas/inspection.v1.json``) as UTF-8 JSON."""
    rec = entry.inspection
    model = None
    if rec.model_name is not None:
        model = {"name": rec.model_name, "version": rec.model_version, "sha256": rec.model_sha256}
    msg: dict[str, Any] = {
        "type": "inspection",
        "version": PROTOCOL_VERSION,
        "inspection_id": rec.id,
        "site": site,
        "line": line,
        "station": station,
        "stream": stream,
        "seq": rec.seq,
        "attempt": entry.attempts + 1,
        "captured_at": rec.captured_at,
        "judged_at": rec.judged_at,
        "sent_at": utc_iso(),
        "source_id": rec.source_id,
        "frame_id": rec.frame_id,
        "trigger_id": rec.trigger_id,
        "uri": rec.uri,
        "verdict": rec.verdict.value,
        "reason": rec.reason or "",
        "model": model,
        "width": rec.width,
        "height": rec.height,
        "detections": [
            {
                "class_id": d.class_id,
                "class_name": d.class_name,
                "confidence": round(d.confidence, 6),
                "xyxy": [round(v, 2) for v in d.xyxy],
                **({"mask_area": d.mask_area} if d.mask_area is not None else {}),
            }
            for d in rec.detections
        ],
        "probs": None if rec.probs is None else list(rec.probs),
        # anomaly models only: absent otherwise, so those messages stay exactly what a
        # receiver built for the schema before this optional field was added accepts
        **({} if rec.score is None else {"score": round(rec.score, 6)}),
        "timings_ms": dict(rec.timings_ms),
        "image": None if key is None else {"bucket": bucket, "key": key},
    }
    return json.dumps(msg, separators=(",", ":")).encode()


EventName = Literal[
    "model_activated",
    "model_rejected",
    "provider_fallback",
    "camera_lost",
    "camera_back",
    "sync_backlog_high",
    "sync_backlog_normal",
    "sync_dropped",
    "command_rejected",
    "feedback",
    "shadow_agreement",
]


def event_message(
    event: EventName, data: dict[str, Any], *, site: str, line: str, station: str
) -> tuple[str, str, str]:
    """``(event_id, payload_json, at)`` of an ``event`` message (``schemas/event.v1.json``)."""
    event_id = str(uuid.uuid4())
    at = utc_iso()
    msg = {
        "type": "event",
        "version": PROTOCOL_VERSION,
        "event_id": event_id,
        "event": event,
        "at": at,
        "site": site,
        "line": line,
        "station": station,
        "data": data,
    }
    return event_id, json.dumps(msg, separators=(",", ":"), default=str), at


def confirm_message(stream: str, ranges: list[tuple[int, int]], through: int) -> bytes:
    """The ``confirm`` message a receiver publishes after storing (``schemas/confirm.v1.json``)."""
    return json.dumps(
        {
            "type": "confirm",
            "version": PROTOCOL_VERSION,
            "stream": stream,
            "ranges": [list(r) for r in ranges],
            "through": through,
            "at": utc_iso(),
        },
        separators=(",", ":"),
    ).encode()


def resend_message(stream: str, ranges: list[tuple[int, int]]) -> bytes:
    """The ``resend`` command a receiver publishes for gaps (``schemas/resend.v1.json``)."""
    return json.dumps(
        {
            "type": "resend",
            "version": PROTOCOL_VERSION,
            "stream": stream,
            "ranges": [list(r) for r in ranges],
            "at": utc_iso(),
        },
        separators=(",", ":"),
    ).encode()


# -- incoming (validated; anything else is refused with a reason) -------------------------

_IN = ConfigDict(extra="ignore", frozen=True)


def _check_ranges(v: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for a, b in v:
        if a < 1 or b < a:
            raise ValueError(f"bad range [{a}, {b}]: need 1 <= first <= last")
    return v


class ConfirmIn(BaseModel):
    """A confirmation from the platform."""

    model_config = _IN
    type: Literal["confirm"]
    version: Literal[1]
    stream: str
    ranges: list[tuple[int, int]] = Field(default_factory=list, max_length=100_000)
    through: int = Field(0, ge=0)

    _r = field_validator("ranges")(_check_ranges)


class ResendIn(BaseModel):
    """The platform misses these seqs."""

    model_config = _IN
    type: Literal["resend"]
    version: Literal[1]
    stream: str
    ranges: list[tuple[int, int]] = Field(..., min_length=1, max_length=100_000)

    _r = field_validator("ranges")(_check_ranges)


class DeployModelIn(BaseModel):
    """``cmd/deploy_model``: activate the bundle archive at ``bucket``/``key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["deploy_model"]
    version: Literal[1]
    command_id: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    bucket: str | None = Field(None, min_length=3, max_length=63)
    key: str = Field(..., min_length=1, max_length=1024)
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="of the archive's bytes")
    issued_at: str | None = None
    issued_by: str | None = None


def deploy_message(
    command_id: str, key: str, sha256: str, bucket: str | None = None, issued_by: str = "platform"
) -> bytes:
    """A ``deploy_model`` command (``schemas/deploy_model.v1.json``)."""
    return json.dumps(
        {
            "type": "deploy_model",
            "version": PROTOCOL_VERSION,
            "command_id": command_id,
            "bucket": bucket,
            "key": key,
            "sha256": sha256,
            "issued_at": utc_iso(),
            "issued_by": issued_by,
        }
    ).encode()
