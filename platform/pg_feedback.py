"""The typed rows of ``feedback`` and ``shadow_agreement`` events (migration 5).

Called by :func:`kanjian.platform.pg_writer.insert_event` on the event's cursor, in
its transaction. Both writes are idempotent: an answer is one row per
``(inspection_id, feedback_id)``, a shadow report replaces an older one of the same
station and model pair only. Data that does not fit (a station of another version, a
bug) is left in ``events`` only, with a warning: the event row keeps it whole.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from kanjian.inference.agreement import FEEDBACK_KINDS
from kanjian.platform.inbound import _obj, integer, text, timestamp
from kanjian.station.shadow.gate import is_wrong

log = logging.getLogger(__name__)

_VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")


def _sha(v: Any) -> str | None:
    s = text(v)
    return s if s is not None and len(s) == 64 and all(c in "0123456789abcdef" for c in s) else None


def _count(v: Any) -> int | None:
    n = integer(v)
    return n if n is not None and n >= 0 else None


_FEEDBACK_SQL = (
    "INSERT INTO feedback (inspection_id, feedback_id, firm, site, line, station, kind, "
    "class_name, note, actor, created_at, verdict, model_sha256, captured_at, wrong, "
    "received_at) VALUES (%s::uuid, %s, (SELECT firm FROM sites WHERE site = %s), %s, "
    "%s, %s, %s, %s, %s, %s, %s, %s::kanjian_verdict, %s, %s, %s, %s) "
    "ON CONFLICT DO NOTHING"
)
# a late copy of an older report never replaces a newer one
_SHADOW_SQL = (
    "INSERT INTO shadow_reports (site, line, station, active_sha256, shadow_sha256, firm, "
    "session_id, shadow_name, shadow_version, frames, agreed, feedback_frames, "
    "active_wrong, shadow_wrong, at, received_at) VALUES (%s, %s, %s, %s, %s, "
    "(SELECT firm FROM sites WHERE site = %s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (site, line, station, active_sha256, shadow_sha256) DO UPDATE SET "
    "session_id = excluded.session_id, shadow_name = excluded.shadow_name, "
    "shadow_version = excluded.shadow_version, frames = excluded.frames, "
    "agreed = excluded.agreed, feedback_frames = excluded.feedback_frames, "
    "active_wrong = excluded.active_wrong, shadow_wrong = excluded.shadow_wrong, "
    "at = excluded.at, received_at = excluded.received_at "
    "WHERE shadow_reports.at <= excluded.at"
)


def insert_typed(
    cur: Any, event: str, data: dict[str, Any], where: tuple[str, str, str], at: datetime,
    received_at: datetime,
) -> bool:  # fmt: skip
    """The typed row of one event, if it is a ``feedback`` or ``shadow_agreement`` with
    usable data; returns whether it wrote one."""
    if event not in ("feedback", "shadow_agreement"):
        return False
    r = feedback_row(data) if event == "feedback" else shadow_row(data)
    if r is None:
        log.warning("%s event from %s with unusable data: kept in events only", event,
                    "/".join(where))  # fmt: skip
        return False
    if event == "feedback":
        cur.execute(_FEEDBACK_SQL, [
            r["inspection_id"], r["feedback_id"], where[0], *where, r["kind"], r["class_name"],
            r["note"], r["actor"], r["created_at"], r["verdict"], r["model_sha256"],
            r["captured_at"], r["wrong"], received_at])  # fmt: skip
    else:
        cur.execute(_SHADOW_SQL, [
            *where, r["active"], r["shadow"], where[0], r["session_id"], r["name"], r["version"],
            r["frames"], r["agreed"], r["fb_frames"], r["active_wrong"], r["shadow_wrong"], at,
            received_at])  # fmt: skip
    return True


def feedback_row(d: dict[str, Any]) -> dict[str, Any] | None:
    """The ``feedback`` columns of a ``feedback`` event's data, or None if unusable."""
    import uuid

    try:
        iid = str(uuid.UUID(str(d.get("inspection_id"))))
    except ValueError:
        return None
    fid, kind = integer(d.get("feedback_id")), text(d.get("kind"))
    if fid is None or fid < 1 or kind not in FEEDBACK_KINDS:
        return None
    insp = _obj(d.get("inspection"))
    verdict = text(insp.get("verdict"))
    verdict = verdict if verdict in _VERDICTS else None
    model = _obj(insp.get("model"))
    return {
        "inspection_id": iid, "feedback_id": fid, "kind": kind,
        "class_name": text(d.get("class_name")), "note": text(d.get("note")),
        "actor": text(d.get("actor")), "created_at": timestamp(d.get("created_at")),
        "verdict": verdict, "model_sha256": _sha(model.get("sha256")),
        "captured_at": timestamp(insp.get("captured_at")),
        # unknown verdict: not counted as the model's mistake
        "wrong": verdict is not None and verdict != "MISSED" and is_wrong(verdict, kind),
    }  # fmt: skip


def shadow_row(d: dict[str, Any]) -> dict[str, Any] | None:
    """The ``shadow_reports`` values of a ``shadow_agreement`` event's data, or None."""
    shadow, active, fb = _obj(d.get("shadow")), _obj(d.get("active")), _obj(d.get("feedback"))
    frames, agreed = _count(d.get("frames")), _count(d.get("agreed"))
    if frames is None or agreed is None or agreed > frames:
        return None
    row: dict[str, Any] = {
        "active": _sha(active.get("sha256")), "shadow": _sha(shadow.get("sha256")),
        "session_id": integer(d.get("session_id")), "name": text(shadow.get("name")),
        "version": text(shadow.get("version")), "frames": frames,
        "agreed": agreed, "fb_frames": _count(fb.get("frames")) or 0,
        "active_wrong": _count(fb.get("active_wrong")) or 0,
        "shadow_wrong": _count(fb.get("shadow_wrong")) or 0,
    }  # fmt: skip
    return None if row["active"] is None or row["shadow"] is None else row
