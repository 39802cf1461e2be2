"""Rollouts watch operator feedback and shadow agreement, on a real PostgreSQL.

The stations' ``feedback`` and ``shadow_agreement`` events are stored through the
receiver's own writer (:class:`ReceiverDB`), as they arrive from a station; the
engine reads the typed rows it made. Every number is checked against SQL over the
same rows. The whole path from a station's operator screen: ``tests/test_platform_rollout.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from kanjian.platform.pg_feedback import feedback_row
from kanjian.platform.rollout import start_rollout
from tests.support import sync as sup
from tests.test_platform_rollout_engine import ST, A, B, Fleet, _plan, _ref, fleet, pg

__all__ = ["fleet", "pg"]  # the fixtures, used by name

C = _ref("0.9")


def _event(key: tuple[str, str, str], event: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "version": 1, "event_id": str(uuid.uuid4()), "event": event,
            "at": datetime.now(timezone.utc).isoformat(), "site": key[0], "line": key[1],
            "station": key[2], "data": data}  # fmt: skip


def _answer(
    f: Fleet, key: tuple[str, str, str], iid: str, fid: int, kind: str, verdict: str, model: Any
) -> dict[str, Any]:
    row = f.conn.execute("SELECT captured_at FROM inspections WHERE inspection_id = %s::uuid",
                         [iid]).fetchone()  # fmt: skip
    captured = (row[0] if row else datetime.now(timezone.utc)).isoformat()  # as the station has it
    m = _event(key, "feedback", {
        "inspection_id": iid, "feedback_id": fid, "kind": kind, "class_name": None,
        "note": None, "actor": "operator-1", "created_at": datetime.now(timezone.utc).isoformat(),
        "inspection": {"seq": 1, "captured_at": captured,
                       "verdict": verdict, "model": {"name": model.name,
                                                     "version": model.version,
                                                     "sha256": model.model_sha256}}})  # fmt: skip
    sup.schema_validator("event").validate(m)
    f.rdb.record_event(m)
    return m


def _shadow(
    f: Fleet, key: tuple[str, str, str], active: Any, shadow: Any, frames: int, agreed: int
) -> None:
    m = _event(key, "shadow_agreement", {
        "session_id": 1, "started_at": datetime.now(timezone.utc).isoformat(),
        "shadow": {"name": shadow.name, "version": shadow.version, "sha256": shadow.model_sha256},
        "active": {"name": active.name, "version": active.version, "sha256": active.model_sha256},
        "frames": frames, "agreed": agreed, "agreement": agreed / frames if frames else None,
        "feedback": {"frames": 0, "active_wrong": 0, "shadow_wrong": 0}})  # fmt: skip
    sup.schema_validator("event").validate(m)
    f.rdb.record_event(m)


def test_the_wrong_rule_is_the_stations() -> None:
    def wrong(kind: str, verdict: str | None) -> bool:
        row = feedback_row({"inspection_id": str(uuid.uuid4()), "feedback_id": 1, "kind": kind,
                            "inspection": {"verdict": verdict}})  # fmt: skip
        assert row is not None
        return bool(row["wrong"])

    assert wrong("not_defect", "FAIL") and wrong("not_defect", "REVIEW")
    assert wrong("confirm_defect", "PASS") and wrong("wrong_class", "PASS")
    assert wrong("confirm_defect", "ERROR")  # no judgement at all
    assert not wrong("confirm_defect", "FAIL") and not wrong("not_defect", "PASS")
    assert not wrong("not_defect", None)  # an inspection retention removed: not counted
    assert feedback_row({"inspection_id": "nope", "feedback_id": 1, "kind": "not_defect"}) is None
    assert feedback_row({"inspection_id": str(uuid.uuid4()), "feedback_id": 1,
                         "kind": "maybe"}) is None  # fmt: skip


def test_operators_saying_the_canary_is_wrong_roll_it_back(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(window_s=600.0), "alice")
    assert fleet.status(rid)["baseline_wrong"] == 0
    fleet.tick()
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=True)
    ids = fleet.feed(ST[0], "PPPPPPRRRR", B)  # no FAIL at all: the FAIL rate says nothing
    old = fleet.feed(ST[0], "RRRR", A)  # the old model's, on the canary: not counted
    fleet.tick()
    assert fleet.status(rid)["state"] == "canary"
    # right answers, then three not_defect on REVIEW parts; one of them changed back,
    # one delivered twice: the latest answer counts, once
    for n, iid in enumerate(ids[6:], start=1):
        _answer(fleet, ST[0], iid, n, "confirm_defect", "REVIEW", B)
    for iid in old:
        _answer(fleet, ST[0], iid, 1, "not_defect", "REVIEW", A)
    fleet.tick()
    s = fleet.status(rid)
    assert s["state"] == "canary" and (s["canary_wrong"], s["canary_answered"]) == (0, 4)
    twice = _answer(fleet, ST[0], ids[6], 10, "not_defect", "REVIEW", B)
    fleet.rdb.record_event(twice)
    _answer(fleet, ST[0], ids[7], 11, "not_defect", "REVIEW", B)
    _answer(fleet, ST[0], ids[8], 12, "not_defect", "REVIEW", B)
    _answer(fleet, ST[0], ids[8], 13, "confirm_defect", "REVIEW", B)
    assert fleet.tick() == [rid]
    s = fleet.status(rid)
    assert s["state"] == "rolling_back" and "operators said" in s["reason"], s
    oracle = fleet.conn.execute(
        "SELECT count(*) FILTER (WHERE wrong), count(*) FROM (SELECT DISTINCT ON "
        "(inspection_id) wrong FROM feedback WHERE station = 'st-1' AND model_sha256 = %s "
        "ORDER BY inspection_id, feedback_id DESC) f", [B.model_sha256]).fetchone()  # fmt: skip
    assert (s["canary_wrong"], s["canary_answered"]) == oracle == (2, 4)
    assert s["canary_wrong_rate"] == 0.2 and s["canary_fail"] == 0
    failed = next(a for a in s["audit"] if a["action"] == "canary.failed")["detail"]
    assert (failed["canary_wrong"], failed["baseline_wrong_rate"]) == (2, 0.0)
    assert (
        fleet.conn.execute("SELECT count(*) FROM feedback").fetchone()[0] == 4 + 4 + 4
    )  # the copy once


def test_the_baseline_counts_answers_too(fleet: Fleet) -> None:
    # the canary's operators already said 2 of its last 10 parts were judged wrong
    before = [r[0] for r in fleet.conn.execute(
        "SELECT inspection_id::text FROM inspections WHERE station = 'st-1' "
        "AND verdict = 'PASS' ORDER BY captured_at LIMIT 3").fetchall()]  # fmt: skip
    for n, iid in enumerate(before[:2], start=1):
        _answer(fleet, ST[0], iid, n, "confirm_defect", "PASS", A)
    rid = start_rollout(fleet.conn, B, _plan(window_s=0.0), "bob")
    s = fleet.status(rid)
    assert (s["baseline_wrong"], s["baseline_judged"]) == (2, 10)
    fleet.tick()
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=True)
    # an answer on a part of the baseline's window that comes in after the start counts
    # for the baseline (answers come late), not for the canary
    _answer(fleet, ST[0], before[2], 3, "confirm_defect", "PASS", A)
    ids = fleet.feed(ST[0], "PPPPPPPPPF", B)
    for n, iid in enumerate(ids[:3], start=5):  # as often as before: no regression
        _answer(fleet, ST[0], iid, n, "confirm_defect", "PASS", B)
    fleet.tick()
    fleet.tick()
    s = fleet.status(rid)
    assert s["state"] == "rest" and s["canary_wrong_rate"] == s["baseline_wrong_rate"] == 0.3
    assert (s["baseline_wrong"], s["canary_wrong"]) == (3, 3)


def test_the_others_baseline_compares_what_their_operators_said(fleet: Fleet) -> None:
    rid = start_rollout(fleet.conn, B, _plan(baseline_mode="others", window_s=0.0), "erin")
    fleet.tick()
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=True)
    fleet.tick()  # the window opens now: the others' parts from here on are the baseline
    canary = fleet.feed(ST[0], "PPPPPPPPPP", B)
    others = fleet.feed(ST[1], "PPPPPPPPPP", A) + fleet.feed(ST[2], "PPPPPPPPPP", A)
    for n, iid in enumerate(others[:3] + others[10:13], start=1):  # 6 of 20: 0.3
        _answer(fleet, ST[1] if n <= 3 else ST[2], iid, n, "confirm_defect", "PASS", A)
    for n, iid in enumerate(canary[:4], start=1):  # 4 of 10: 0.4, beyond 0.3 + 0.05
        _answer(fleet, ST[0], iid, 100 + n, "confirm_defect", "PASS", B)
    fleet.tick()
    s = fleet.status(rid)
    assert (s["baseline_wrong"], s["baseline_judged"], s["canary_wrong"]) == (6, 20, 4)
    assert s["state"] == "rolling_back" and "+0.100 against the baseline 0.300" in s["reason"]


def test_a_shadow_that_disagrees_stops_the_rollout_before_any_command(fleet: Fleet) -> None:
    # st-3 ran B as a shadow beside A: 80 of 100 verdicts equal; another pair is not it
    _shadow(fleet, ST[2], A, B, 100, 80)
    _shadow(fleet, ST[1], C, B, 1000, 0)  # compared with a model st-2 does not run
    rid = start_rollout(fleet.conn, B, _plan(), "carol")
    assert fleet.tick() == [rid]
    s = fleet.status(rid)
    assert s["state"] == "rolled_back" and fleet.sent == [], s
    assert "agreed with the model before on 0.800 of 100 frames" in s["reason"]
    assert (s["shadow_frames"], s["shadow_agreed"], s["agreement"]) == (100, 80, 0.8)
    assert fleet.actions(rid) == [("rollout.start", None), ("canary.failed", None),
                                  ("rollout.regression", None), ("rollout.rolled_back", None)]  # fmt: skip


def test_agreement_is_the_newest_report_and_not_watched_without_one_or_at_zero(
    fleet: Fleet,
) -> None:
    rid = start_rollout(fleet.conn, B, _plan(stations=(ST[0],)), "dave")
    fleet.tick()
    assert fleet.status(rid)["agreement"] is None  # no shadow compared them: not watched
    fleet.answer(ST[0], fleet.sent[0][1].command_id, ok=True)
    # a canary runs A as shadow beside B now: a report says 0.5, a newer one 0.97,
    # and a late copy of an older one does not replace it
    _shadow(fleet, ST[0], B, A, 10, 5)
    _shadow(fleet, ST[0], B, A, 300, 291)
    row = fleet.conn.execute("SELECT at FROM shadow_reports").fetchone()[0]
    late = _event(ST[0], "shadow_agreement", {
        "session_id": 1, "shadow": {"name": "m", "version": "1.0", "sha256": A.model_sha256},
        "active": {"name": "m", "version": "1.1", "sha256": B.model_sha256},
        "frames": 20, "agreed": 1, "feedback": {"frames": 0, "active_wrong": 0,
                                                "shadow_wrong": 0}})  # fmt: skip
    late["at"] = (row - timedelta(seconds=5)).isoformat()
    fleet.rdb.record_event(late)
    fleet.tick()
    s = fleet.status(rid)
    assert s["state"] == "canary" and (s["shadow_frames"], s["agreement"]) == (300, 0.97)
    # usable reports are kept as their newest row only, not one event row each
    assert fleet.conn.execute("SELECT count(*) FROM events WHERE event = 'shadow_agreement'"
                              ).fetchone()[0] == 0  # fmt: skip
    # fewer frames than min_inspections, or the least agreement set to 0: not judged
    few = start_rollout(fleet.conn, C, _plan(stations=(ST[1],)), "dave")
    _shadow(fleet, ST[1], A, C, 9, 0)
    zero = start_rollout(fleet.conn, C, _plan(stations=(ST[2],), min_agreement=0.0), "dave")
    _shadow(fleet, ST[2], A, C, 500, 0)
    fleet.tick()
    assert [fleet.status(r)["state"] for r in (rid, few, zero)] == ["canary"] * 3
    assert [fleet.status(r)["agreement"] for r in (few, zero)] == [0.0, 0.0]
    # a report whose shadow stopped long ago is no evidence
    fleet.conn.execute("UPDATE shadow_reports SET received_at = now() - interval '31 days' "
                       "WHERE station = 'st-3'")  # fmt: skip
    fleet.tick()
    assert fleet.status(zero)["agreement"] is None


def test_unusable_event_data_is_kept_in_events_only(fleet: Fleet) -> None:
    bad = _event(ST[0], "feedback", {"inspection_id": "not-a-uuid", "kind": "not_defect"})
    fleet.rdb.record_event(bad)
    worse = _event(ST[0], "shadow_agreement", {"frames": 3, "agreed": 9})
    fleet.rdb.record_event(worse)
    got = fleet.conn.execute("SELECT event FROM events WHERE event_id = ANY(%s::uuid[])",
                             [[bad["event_id"], worse["event_id"]]]).fetchall()  # fmt: skip
    assert sorted(r[0] for r in got) == ["feedback", "shadow_agreement"]
    assert fleet.conn.execute("SELECT count(*) FROM feedback").fetchone()[0] == 0
    assert fleet.conn.execute("SELECT count(*) FROM shadow_reports").fetchone()[0] == 0
    assert datetime.now(timezone.utc)  # the receiver is still usable
    fleet.feed(ST[0], "P", A)


def test_a_rollout_started_before_migration_5_keeps_its_plan(pg: Any) -> None:
    import psycopg

    from kanjian.platform.rollout import rollout_status
    from kanjian.platform.schema import applied, migrate

    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(pg.url.rsplit("/", 1)[0] + "/" + name, autocommit=True) as c:
        assert migrate(c, target=4) == [1, 2, 3, 4]
        c.execute("INSERT INTO platform_bundles (archive_sha256, bucket, key, model_sha256, "
                  "name, version, uploaded_by) VALUES (%s, 'b', 'k', %s, 'm', '1', 't')",
                  [A.archive_sha256, A.model_sha256])  # fmt: skip
        c.execute("INSERT INTO rollouts (rollout_id, state, created_by, archive_sha256, "
                  "model_sha256, name, version, bucket, key, canary_count, window_s, "
                  "min_inspections, max_fail_rate_increase, baseline_mode, answer_timeout_s, "
                  "resend_s) VALUES ('r-old', 'canary', 't', %s, %s, 'm', '1', 'b', 'k', 1, 60, "
                  "10, 0.05, 'before', 300, 60)", [A.archive_sha256, A.model_sha256])  # fmt: skip
        assert migrate(c) == [5] and applied(c) == [1, 2, 3, 4, 5]
        [s] = rollout_status(c, "r-old")
        # watched as it was started: FAIL rate only
        assert (s["max_feedback_increase"], s["min_agreement"]) == (1.0, 0.0)
        assert (s["canary_wrong_rate"], s["agreement"]) == (None, None)
