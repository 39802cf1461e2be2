"""Operator feedback leaves the station once, in order, and only when it can no longer
be undone; sent events do not pile up.

On a real store (``ResultStore``, its SQLite file): answers are written as the API
writes them (a ``feedback`` row; an undo deletes it), :func:`queue_feedback` turns them
into ``sync_events`` rows with its watermark, and every event is checked against
``schemas/event.v1.json``. The path through a served station, Mosquitto and the
platform: ``tests/test_platform_rollout.py``.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kanjian.station.records import utc_iso
from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.sync.feedback_feed import WATERMARK, queue_feedback
from kanjian.station.sync.outbox import Outbox
from tests.support import sync as sup

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=timezone.utc)


def _answer(db: Path, iid: str, kind: str, at: datetime) -> int:
    con = sqlite3.connect(db, timeout=10)
    try:
        with con:
            cur = con.execute(
                "INSERT INTO feedback (inspection_id, kind, class_name, note, actor, token_id, "
                "created_at) VALUES (?, ?, NULL, 'seen at the screen', 'op', 't1', ?)",
                [iid, kind, utc_iso(at)],
            )
        return int(cur.lastrowid or 0)
    finally:
        con.close()


def _events(ob: Outbox) -> list[dict[str, object]]:
    rows = ob.conn.execute(
        "SELECT payload_json FROM sync_events WHERE event = 'feedback' ORDER BY id"
    ).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_answers_leave_in_order_once_past_the_undo_window(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, save_verdicts=("FAIL",))
    made = []
    for i in range(8):
        insp = sup.synthetic(i)  # 0 and 7 FAIL
        store.put(insp)
        made.append(insp)
    assert store.flush()
    db = tmp_path / DB_NAME
    first = _answer(db, str(made[0].inspection_id), "not_defect", T0)
    undone = _answer(db, str(made[1].inspection_id), "confirm_defect", T0 + timedelta(seconds=1))
    young = _answer(db, str(made[2].inspection_id), "confirm_defect", T0 + timedelta(seconds=30))
    # a later id with an older time (its time was taken before an earlier one committed)
    later = _answer(db, str(made[7].inspection_id), "not_defect", T0 + timedelta(seconds=2))
    ob = Outbox(db)
    try:
        # 10 s undo window: at T0 + 5 s nothing may leave yet
        assert queue_feedback(ob, "s", "l", "st", 10.0, T0 + timedelta(seconds=5)) == 0
        con = sqlite3.connect(db)
        with con:  # undone within the window, as the API does it
            con.execute("DELETE FROM feedback WHERE id = ?", [undone])
        con.close()
        assert queue_feedback(ob, "s", "l", "st", 10.0, T0 + timedelta(seconds=20)) == 1
        # the young answer holds back the later id behind it, though that one is old enough
        assert [e["data"]["feedback_id"] for e in _events(ob)] == [first]  # type: ignore[index]
        assert ob.get_state(WATERMARK) == str(first)
        assert queue_feedback(ob, "s", "l", "st", 10.0, T0 + timedelta(seconds=41)) == 2
        assert queue_feedback(ob, "s", "l", "st", 10.0, T0 + timedelta(seconds=99)) == 0
        events = _events(ob)
        assert [e["data"]["feedback_id"] for e in events] == [first, young, later]  # type: ignore[index]
        schema = sup.schema_validator("event")
        for e in events:
            schema.validate(e)
        d = events[0]["data"]
        assert d == {  # what the platform needs without the inspection row
            "inspection_id": str(made[0].inspection_id), "feedback_id": first,
            "kind": "not_defect", "class_name": None, "note": "seen at the screen",
            "actor": "op", "created_at": utc_iso(T0),
            "inspection": {"seq": 1, "captured_at": utc_iso(made[0].frame.captured_at),
                           "verdict": "FAIL", "model": {"name": sup.MODEL.name,
                                                        "version": sup.MODEL.version,
                                                        "sha256": sup.MODEL.sha256}},
        }  # fmt: skip
        assert (events[0]["site"], events[0]["line"], events[0]["station"]) == ("s", "l", "st")
        # a restart (a new outbox connection) goes on from the watermark: nothing twice
        ob.close()
        ob = Outbox(db)
        assert queue_feedback(ob, "s", "l", "st", 10.0, T0 + timedelta(days=1)) == 0
    finally:
        ob.close()
        store.close()


def test_sent_events_older_than_the_bound_are_removed(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, save_verdicts=())
    store.put(sup.synthetic(1))
    assert store.flush()
    ob = Outbox(tmp_path / DB_NAME)
    try:
        old, new = utc_iso(T0 - timedelta(days=40)), utc_iso(T0)
        ob.add_events([("e-old", "camera_lost", "{}", old), ("e-unsent", "camera_lost", "{}", old),
                       ("e-new", "camera_lost", "{}", new)])  # fmt: skip
        ob.conn.execute("UPDATE sync_events SET sent_at = ? WHERE event_id = 'e-old'", [old])
        ob.conn.execute("UPDATE sync_events SET sent_at = ? WHERE event_id = 'e-new'", [utc_iso()])
        ob.apply_retention(24.0 * 30, 1_000_000, 1_000_000)
        left = [r[0] for r in ob.conn.execute("SELECT event_id FROM sync_events ORDER BY id")]
        assert left == ["e-unsent", "e-new"]  # never one the broker has not taken
    finally:
        ob.close()
        store.close()


def test_shadow_reports_are_spaced_said_on_change_and_a_failing_probe_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kanjian.station.sync import watch

    clock = [1000.0]
    monkeypatch.setattr(watch.time, "monotonic", lambda: clock[0])
    said: list[tuple[str, dict[str, Any]]] = []
    calls: list[float] = []
    now: dict[str, Any] = {"data": None, "raise": False}

    def probe() -> dict[str, Any] | None:
        calls.append(clock[0])
        if now["raise"]:
            raise RuntimeError("the shadow's database is locked")
        return dict(now["data"]) if now["data"] else None

    def report(frames: int, agreed: int, active: str = "a" * 64) -> dict[str, Any]:
        return {"session_id": 3, "active": {"sha256": active}, "frames": frames,
                "agreed": agreed, "feedback": {"frames": 0, "active_wrong": 0,
                                               "shadow_wrong": 0}}  # fmt: skip

    w = watch.StationWatch(lambda e, d: said.append((e, d)), None, None, 10, shadow=probe,
                           shadow_every_s=60.0)  # fmt: skip
    w.probe()  # no shadow: nothing to say
    now["data"] = report(10, 9)
    w.probe()  # within 60 s of the last look: not asked
    assert len(calls) == 1 and said == []
    clock[0] += 60
    w.probe()
    clock[0] += 60
    w.probe()  # the same numbers: said once
    assert [e for e, _ in said] == ["shadow_agreement"] and said[0][1]["frames"] == 10
    now["data"] = report(20, 18)
    clock[0] += 60
    w.probe(connected=False)  # the broker is away: not measured (the next one supersedes)
    assert len(calls) == 3
    w.probe()
    now["raise"] = True
    clock[0] += 60
    w.probe()  # logged, not raised: the sync's loop goes on
    now["raise"] = False
    now["data"] = report(20, 18, active="b" * 64)  # the same counts against another model
    clock[0] += 60
    w.probe()
    assert [(d["frames"], d["active"]["sha256"][0]) for _, d in said] == [(10, "a"), (20, "a"),
                                                                         (20, "b")]  # fmt: skip
