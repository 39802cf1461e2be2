"""What operators and the shadow say, sent to the platform as events.

Two feeds beside the inspections, for the platform's staged rollouts (which watch the
canaries' operator feedback and, where a shadow runs, its agreement) and its fleet view:

- ``feedback``: every operator answer (``feedback`` rows), once it can no longer be
  undone (``api.feedback_undo_s``, plus a second of margin): an undone tap never
  leaves the station. Read in id order from a watermark in ``sync_state`` and
  written as ``sync_events`` rows in the same transaction as the watermark, so each
  answer is queued once, crash or not; the event queue then publishes them like any
  event (QoS 1, again after a reconnect, until the broker acknowledges). Each carries
  what the platform needs to judge it without the inspection: the inspection's
  verdict, model and capture time.
- ``shadow_agreement``: while a shadow model runs, its promotion gate's numbers
  (verdicts compared and equal, the operator-feedback tally) against the active
  model, when they changed, at most every ``sync.shadow_report_s``. Cumulative: the
  platform keeps the latest per station and model pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kanjian.station.records import utc_iso
from kanjian.station.sync.messages import event_message
from kanjian.station.sync.outbox import Outbox

if TYPE_CHECKING:
    from kanjian.station.pipeline import Station

#: the ``sync_state`` key of the highest feedback id queued
WATERMARK = "feedback_synced_id"
#: answers queued per call at most (the next call goes on)
BATCH = 200


def queue_feedback(
    ob: Outbox, site: str, line: str, station: str, delay_s: float, now: datetime | None = None
) -> int:
    """Queue ``feedback`` events for answers at least ``delay_s`` old; returns how many.

    Answers are taken in id order and the first one still too young stops the batch,
    so the watermark never passes an answer that could still be undone (an answer's
    ``created_at`` is taken before its id, so a later id may be older: it waits its turn).
    The rows are read inside the write transaction that queues them: an undo checks its
    time limit under the same lock, so it either committed before (the row is gone) or
    comes after and is refused as too late.
    """
    cutoff = utc_iso((now or datetime.now(timezone.utc)) - timedelta(seconds=delay_s))
    # most calls find nothing: a plain read (the primary key from the watermark) first,
    # so the store's writer is not made to wait for an empty write transaction each second
    since = int(ob.get_state(WATERMARK) or 0)
    first = ob.conn.execute("SELECT created_at FROM feedback WHERE id > ? ORDER BY id LIMIT 1",
                            [since]).fetchone()  # fmt: skip
    if first is None or first[0] > cutoff:
        return 0
    with ob.transaction():  # read under the write lock: an undo cannot commit meanwhile
        return _queue(ob, site, line, station, cutoff)


def _queue(ob: Outbox, site: str, line: str, station: str, cutoff: str) -> int:
    since = int(ob.get_state(WATERMARK) or 0)
    rows = ob.conn.execute(
        "SELECT f.id, f.inspection_id, f.kind, f.class_name, f.note, f.actor, f.created_at, "
        "i.seq, i.captured_at, i.verdict, i.model_name, i.model_version, i.model_sha256 "
        "FROM feedback f LEFT JOIN inspections i ON i.id = f.inspection_id "
        "WHERE f.id > ? ORDER BY f.id LIMIT ?",
        [since, BATCH],
    ).fetchall()
    events: list[tuple[str, str, str, str]] = []
    last = since
    for fid, iid, kind, cls, note, actor, created, seq, captured, verdict, mn, mv, ms in rows:
        if created > cutoff:
            break
        insp = None
        if seq is not None:  # None: retention removed the inspection meanwhile
            model = None if ms is None else {"name": mn, "version": mv, "sha256": ms}
            insp = {"seq": seq, "captured_at": captured, "verdict": verdict, "model": model}
        data = {"inspection_id": iid, "feedback_id": fid, "kind": kind, "class_name": cls,
                "note": None if note is None else str(note)[:500], "actor": actor,
                "created_at": created, "inspection": insp}  # fmt: skip
        eid, payload, at = event_message("feedback", data, site=site, line=line, station=station)
        events.append((eid, "feedback", payload, at))
        last = int(fid)
    if last != since:
        ob.add_events_with_state(events, {WATERMARK: str(last)})
    return len(events)


def shadow_probe(station: Station) -> Callable[[], dict[str, Any] | None]:
    """A probe of the running shadow's gate numbers (the ``shadow_agreement`` data), or None
    while no shadow runs."""
    from kanjian.station.shadow.service import ShadowService

    def probe() -> dict[str, Any] | None:
        svc = station.channels.get(ShadowService)
        st = None if svc is None else svc.status()
        if svc is None or st is None:
            return None
        # the gate measures against the active model (the registry's is the inspector's)
        ref = station.inspector.model.ref
        gate = svc.gate()
        if gate is None or station.inspector.model.ref.sha256 != ref.sha256:
            return None  # none, or the active model changed meanwhile: the next probe
        return {
            "session_id": st.session_id,
            "started_at": st.started_at,
            "shadow": {"name": st.name, "version": st.version, "sha256": st.sha256},
            "active": {"name": ref.name, "version": ref.version, "sha256": ref.sha256},
            "frames": gate.frames,
            "agreed": gate.agreed,
            "agreement": gate.agreement,
            "feedback": asdict(gate.feedback),
        }

    return probe
