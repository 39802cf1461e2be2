"""What the receiver takes from a station's message, checked and typed for the database.

Two steps, kept apart on purpose:

- :func:`problem` says whether a message can be stored at all (the fields that
  identify it: a UUID, a stream and seq, a known verdict). A message it refuses is
  acknowledged and counted invalid, never stored (the station's copy stays
  unconfirmed, so nothing the station has is lost).
- :func:`inspection_row` turns an accepted message into the typed columns of the
  platform schema (``timestamptz`` times, detections as rows). It never raises on
  an odd optional field: a value PostgreSQL would refuse makes the whole batch fail,
  and a batch that fails is retried forever. Odd values become NULL; the message
  itself is kept whole in ``payload_json``.

Times: ``captured_at`` is never NULL in the typed schema (partitions and time
indexes key on it). A message without a readable one takes ``judged_at``, else the
time it was received; ``payload_json`` keeps what was sent.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kanjian.inference.types import Verdict

#: the verdicts a platform stores (``kanjian_verdict`` in PostgreSQL)
VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
_BIGINT_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1

_REQUIRED = {
    "inspection": ("inspection_id", "site", "line", "station", "stream", "seq", "verdict"),
    "event": ("event_id", "event"),
}


def problem(m: Any, kind: str) -> str | None:
    """Why ``m`` (a decoded JSON message) cannot be stored as a ``kind`` message, or None.

    ``kind``: ``inspection`` or ``event``.
    """
    if not isinstance(m, dict):
        return "not a JSON object"
    if m.get("type") != kind or m.get("version") != 1:
        return f"not a version 1 {kind} message"
    for k in _REQUIRED[kind]:
        if not isinstance(m.get(k), str | int) or m.get(k) == "" or isinstance(m.get(k), bool):
            return f"{k} missing or empty"
    for k in ("inspection_id", "event_id"):
        if k in _REQUIRED[kind] and _uuid(m[k]) is None:
            return f"{k} is not a UUID: {str(m[k])[:60]!r}"
    if kind == "inspection":
        seq = m["seq"]
        if not (isinstance(seq, int) and 1 <= seq <= _BIGINT_MAX):
            return f"seq is not an integer from 1 to 2^63-1: {str(seq)[:30]!r}"
        if m["verdict"] not in VERDICTS:
            return f"verdict {str(m['verdict'])[:30]!r} is not one of {', '.join(VERDICTS)}"
        for k in ("site", "line", "station", "stream"):
            if not isinstance(m[k], str) or "\x00" in m[k]:
                return f"{k} is not text"
    elif not isinstance(m["event"], str) or "\x00" in m["event"]:
        return "event is not text"
    return None


@dataclass(frozen=True)
class DetectionRow:
    """One detection of an inspection, as the ``detections`` table holds it.

    ``n`` is its index in the message (0-based); boxes are ``xyxy`` pixels of the
    source frame; a value the message did not give properly is None.
    """

    n: int
    class_id: int | None
    class_name: str | None
    confidence: float | None
    x1: float | None
    y1: float | None
    x2: float | None
    y2: float | None
    mask_area: int | None


@dataclass(frozen=True)
class InspectionRow:
    """The typed columns of one inspection (``inspections`` table, schema v2)."""

    inspection_id: uuid.UUID
    site: str
    line: str
    station: str
    stream: str
    seq: int
    captured_at: datetime
    judged_at: datetime | None
    verdict: str
    reason: str | None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    num_detections: int
    top_class: str | None
    top_confidence: float | None
    score: float | None
    image_bucket: str | None
    image_key: str | None
    received_at: datetime
    detections: tuple[DetectionRow, ...]


def inspection_row(m: dict[str, Any], received_at: datetime) -> InspectionRow:
    """The typed row of an inspection message that :func:`problem` accepted.

    ``top_class`` / ``top_confidence``: the detection with the highest confidence
    (None without detections; classify models send none, their class is in ``probs``).
    """
    img, model = _obj(m.get("image")), _obj(m.get("model"))
    raw = m.get("detections")
    dets, top = detections_of(m)
    judged = timestamp(m.get("judged_at"))
    iid = _uuid(m["inspection_id"])
    assert iid is not None, "inspection_row needs a message problem() accepted"
    return InspectionRow(
        inspection_id=iid,
        site=str(m["site"]),
        line=str(m["line"]),
        station=str(m["station"]),
        stream=str(m["stream"]),
        seq=int(m["seq"]),
        captured_at=timestamp(m.get("captured_at")) or judged or received_at,
        judged_at=judged,
        verdict=str(m["verdict"]),
        reason=text(m.get("reason")),
        model_name=text(model.get("name")),
        model_version=text(model.get("version")),
        model_sha256=text(model.get("sha256")),
        num_detections=len(raw) if isinstance(raw, list) else 0,
        top_class=top.class_name if top else None,
        top_confidence=top.confidence if top else None,
        score=number(m.get("score")),
        image_bucket=text(img.get("bucket")),
        image_key=text(img.get("key")),
        received_at=received_at,
        detections=dets,
    )


def detections_of(m: dict[str, Any]) -> tuple[tuple[DetectionRow, ...], DetectionRow | None]:
    """The message's detections as rows, and the one with the highest confidence.

    An entry that is not an object still takes its index ``n`` (all its values None),
    so ``n`` is always the position in the message.
    """
    raw = m.get("detections")
    dets = tuple(_detection(i, d) for i, d in enumerate(raw if isinstance(raw, list) else []))
    scored = [d for d in dets if d.confidence is not None]
    top = max(scored, key=lambda d: d.confidence or 0.0) if scored else None
    return dets, top


def _detection(n: int, d: Any) -> DetectionRow:
    d = d if isinstance(d, dict) else {}
    box = d.get("xyxy")
    xyxy = [number(v) for v in box] if isinstance(box, list) and len(box) == 4 else [None] * 4
    conf = number(d.get("confidence"))
    return DetectionRow(
        n=n,
        class_id=integer(d.get("class_id")),
        class_name=text(d.get("class_name")),
        confidence=conf if conf is not None and 0.0 <= conf <= 1.0 else None,
        x1=xyxy[0],
        y1=xyxy[1],
        x2=xyxy[2],
        y2=xyxy[3],
        mask_area=integer(d.get("mask_area")),
    )


def timestamp(v: Any) -> datetime | None:
    """An ISO 8601 time with an offset as an aware datetime; None if it is not one.

    A time without an offset is refused rather than guessed (the protocol's times
    all carry one).
    """
    if not isinstance(v, str) or not 10 <= len(v) <= 64:
        return None
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    try:
        return t.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 shifted past the calendar's ends
        return None


def text(v: Any) -> str | None:
    """``v`` if it is text, without NUL characters (PostgreSQL's text refuses them)."""
    return v.replace("\x00", "") if isinstance(v, str) else None


def number(v: Any) -> float | None:
    """``v`` as a finite float, else None (booleans are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer too large for a double
        return None
    return f if math.isfinite(f) else None


def integer(v: Any) -> int | None:
    """``v`` if it is an integer that fits PostgreSQL's ``integer``, else None."""
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v if -_INT_MAX - 1 <= v <= _INT_MAX else None


def clean_json(v: Any) -> Any:
    """``v`` with NUL characters removed from every string (``jsonb`` refuses ``\\u0000``)."""
    if isinstance(v, str):
        return v.replace("\x00", "")
    if isinstance(v, dict):
        return {clean_json(k): clean_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [clean_json(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None  # json.loads reads NaN/Infinity; jsonb has no such numbers
    return v


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _uuid(v: Any) -> uuid.UUID | None:
    if not isinstance(v, str) or len(v) != 36:
        return None
    try:
        return uuid.UUID(v)
    except ValueError:
        return None
