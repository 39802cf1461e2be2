"""The platform's PostgreSQL schema: migrations from a database release 1 really wrote.

Real peers: a PostgreSQL server made by ``initdb``; the database is written by release
1's own receiver code (``tests/support/receiver_v1.py``, frozen) from messages the
station's own code made, plus the odd ones release 1 accepted. The oracle is the
release-1 rows themselves, read with SQL before migrating and parsed in Python.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kanjian.platform.pg_writer import assign_site
from kanjian.platform.receiver_db import ReceiverDB
from kanjian.platform.schema import LATEST, MIGRATIONS, SchemaError, applied, migrate
from kanjian.station.store import DB_NAME, ResultStore
from kanjian.station.sync.messages import inspection_message
from kanjian.station.sync.outbox import Outbox
from tests.peers import postgres as pgpeer
from tests.support import receiver_v1
from tests.support import sync as sup


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgpeer.Postgres]:
    server = pgpeer.Postgres(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


def fresh_db(pg: pgpeer.Postgres, name: str) -> str:
    """An empty database on the server; its URL."""
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def station_messages(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Messages made by the station's own code (every 7th FAIL with two boxes and an
    image key), and variants with what release 1 accepted but never parsed."""
    data = tmp_path_factory.mktemp("station")
    store = ResultStore(data)
    for i in range(60):
        store.put(sup.synthetic(i))
    assert store.flush()
    store.close()
    ob = Outbox(data / DB_NAME)
    msgs = [json.loads(inspection_message(
                e, site="plant-a", line="l1" if e.seq % 2 else "l2", station="st", stream=ob.stream_id,
                bucket="kanjian" if e.inspection.verdict.value == "FAIL" else None,
                key=f"plant-a/st/2026-01-01/{e.inspection.id}.jpg"
                if e.inspection.verdict.value == "FAIL" else None))
            for e in ob.fetch_fresh(0, 1000)]  # fmt: skip
    ob.close()
    odd = [copy.deepcopy(msgs[k]) for k in range(8)]
    odd[0]["captured_at"] = "garbage"  # -> judged_at
    odd[1].pop("captured_at"), odd[1].pop("judged_at")  # -> received_at
    odd[2]["captured_at"] = "2026-03-01T08:00:00+08:00"  # another offset: same instant, UTC
    odd[3]["score"] = "high"
    odd[4]["score"] = 0.731204
    odd[5]["detections"] = [{"class_id": "x", "class_name": 5, "confidence": 2.0, "xyxy": [1, 2]},
                            "not a detection",
                            {"class_id": 3, "class_name": "ok", "confidence": 0.5,
                             "xyxy": [1, 2, 3, 4], "mask_area": 12}]  # fmt: skip
    odd[6].update(verdict="MISSED", model=None, detections=[])
    odd[7].update(verdict="REVIEW", captured_at="2026-02-30T00:00:00+00:00")  # no such day
    for k, m in enumerate(odd):
        m.update(inspection_id=str(uuid.UUID(int=k + 1)), seq=1000 + k)
    return msgs + odd


def _events(stream: str) -> list[dict[str, Any]]:
    def ev(name: str, at: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"type": "event", "version": 1, "event_id": str(uuid.uuid4()), "event": name,
                "at": at, "site": "plant-a", "line": "l1", "station": "st", "data": data}  # fmt: skip

    return [
        ev("camera_lost", "2026-01-01T00:00:01.000000+00:00", {"state": "reconnecting"}),
        ev("model_activated", "not a time", {"name": "m", "source": "station"}),
        ev("sync_dropped", "2026-01-01T00:00:02+00:00", {"stream": stream, "ranges": [[61, 70]]}),
    ]


def _t(v: str | None) -> datetime | None:
    """The oracle's reading of a release-1 time text (None if unreadable or naive)."""
    try:
        t = datetime.fromisoformat(v) if v else None
    except ValueError:
        return None
    return t if t is None or t.tzinfo is not None else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _dets(m: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The detections rows the oracle expects from a message."""
    out = []
    for n, d in enumerate(m.get("detections") or []):
        d = d if isinstance(d, dict) else {}
        box = (
            d.get("xyxy") if isinstance(d.get("xyxy"), list) and len(d["xyxy"]) == 4 else [None] * 4
        )
        conf = _num(d.get("confidence"))
        out.append((n, d.get("class_id") if isinstance(d.get("class_id"), int) else None,
                    d.get("class_name") if isinstance(d.get("class_name"), str) else None,
                    conf if conf is not None and 0 <= conf <= 1 else None,
                    *[_num(v) for v in box], d.get("mask_area")))  # fmt: skip
    return out


def _approx(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(round(v, 4) if isinstance(v, float) else v for v in row)


def _write_release1(url: str, msgs: list[dict[str, Any]]) -> str:
    """Write ``msgs`` (in two batches, one message twice), events and availability with
    release 1's receiver; return the stream."""
    old = receiver_v1.ReceiverDB(url)
    half = len(msgs) // 2
    old.store(msgs[:half])
    old.store([*msgs[half:], msgs[0]])
    stream = str(msgs[0]["stream"])
    for e in _events(stream):
        old.record_event(e)
    old.record_availability("plant-a", "l1", "st", "online")
    old.close()
    return stream


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return list(c.execute(sql))


def test_release1_database_migrates_field_by_field(
    pg: pgpeer.Postgres, station_messages: list[dict[str, Any]]
) -> None:
    url = fresh_db(pg, "release1")
    _write_release1(url, station_messages)
    cols = ("inspection_id, site, line, station, stream, seq, captured_at, judged_at, verdict, "
            "reason, model_name, model_version, model_sha256, num_detections, image_bucket, "
            "image_key, received_at, payload_json, score")  # fmt: skip
    before = _rows(url, f"SELECT {cols} FROM inspections")
    ev_before = _rows(
        url, "SELECT event_id, site, event, at, payload_json, received_at FROM events"
    )
    streams_before = _rows(url, "SELECT stream, through, max_seq, received, duplicates, "
                                "first_seen, last_seen FROM streams")  # fmt: skip
    lost_before = _rows(url, "SELECT stream, first_seq, last_seq, reported_at FROM lost")
    st_before = _rows(url, "SELECT site, line, station, availability, updated_at FROM stations")
    assert len(before) == len(station_messages) and len(ev_before) == 3

    db = ReceiverDB(url)  # opening it migrates
    db.close()
    assert _rows(url, "SELECT version, name FROM platform_migrations ORDER BY 1") == [
        (m.version, m.name) for m in MIGRATIONS]  # fmt: skip
    after = {r[0]: r for r in _rows(url, f"SELECT {cols}, top_class, top_confidence, firm "
                                         "FROM inspections")}  # fmt: skip
    dets = {}
    for iid, *rest in _rows(url, "SELECT inspection_id, n, class_id, class_name, confidence, "
                                 "x1, y1, x2, y2, mask_area FROM detections ORDER BY 1, 2"):  # fmt: skip
        dets.setdefault(iid, []).append(_approx(tuple(rest)))
    hours: Counter[tuple[str, str, str, datetime, str]] = Counter()
    for r in before:
        iid, site, line, station, stream, seq, cap, judged, verdict = r[:9]
        got = after[uuid.UUID(iid)]
        m = json.loads(r[17])
        captured = _t(cap) or _t(judged) or _t(r[16])
        assert captured is not None
        assert got[1:6] == (site, line, station, stream, seq), iid
        assert (got[6], got[7], got[16]) == (captured, _t(judged), _t(r[16])), iid
        assert got[8] == verdict and got[9:16] == r[9:16] and got[17:19] == r[17:19], iid
        want_dets = [_approx(d) for d in _dets(m)]
        assert dets.get(uuid.UUID(iid), []) == want_dets, iid
        scored = [d for d in _dets(m) if d[3] is not None]
        top = max(scored, key=lambda d: d[3]) if scored else None
        assert got[19] == (top[2] if top else None) and got[21] is None, iid
        assert (got[20] is None) == (top is None)
        hours[(site, line, station, captured.replace(minute=0, second=0, microsecond=0),
               verdict)] += 1  # fmt: skip
    assert len(after) == len(before)
    assert any(r[6] == "garbage" for r in before) and any(r[18] == 0.731204 for r in before)
    want_hours = {(s, ln, st, h): [hours[(s, ln, st, h, v)] for v in
                  ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")] for s, ln, st, h, _v in hours}  # fmt: skip
    got_hours = {r[:4]: list(r[4:]) for r in _rows(
        url, "SELECT site, line, station, hour, pass, fail, review, error, missed FROM station_hours")}  # fmt: skip
    assert got_hours == want_hours
    ev_after = {r[0]: r for r in _rows(url, "SELECT event_id, site, event, at, payload_json, "
                                            "received_at, data FROM events")}  # fmt: skip
    for eid, site, event, at, payload, received in ev_before:
        got = ev_after[uuid.UUID(eid)]
        assert got[1:6] == (site, event, _t(at) or _t(received), payload, _t(received))
        assert got[6] == json.loads(payload)["data"]
    assert _rows(url, "SELECT stream, through, max_seq, received, duplicates, first_seen, "
                      "last_seen FROM streams") == [
        (*r[:5], _t(r[5]), _t(r[6])) for r in streams_before]  # fmt: skip
    assert _rows(url, "SELECT stream, first_seq, last_seq, reported_at FROM lost") == [
        (*r[:3], _t(r[3])) for r in lost_before]  # fmt: skip
    last = max(_t(r[16]) or datetime.min for r in before)
    got_st = {r[:3]: r[3:] for r in _rows(url, "SELECT site, line, station, availability, "
                                               "updated_at, last_received_at FROM stations")}  # fmt: skip
    assert got_st[("plant-a", "l1", "st")] == ("online", _t(st_before[0][4]), last)
    assert got_st[("plant-a", "l2", "st")] == (None, None, last)


def test_inserts_after_migrating_stay_idempotent(
    pg: pgpeer.Postgres, station_messages: list[dict[str, Any]]
) -> None:
    url = fresh_db(pg, "idempotent")
    stream = _write_release1(url, station_messages[:30])
    db = ReceiverDB(url)
    try:
        again = db.store(station_messages[:30])  # what release 1 already stored
        assert (again.new, again.duplicates) == (0, 30)
        rest = station_messages[30:]
        res = db.store([*rest, rest[0], *rest[:5]])  # a UUID thrice in one batch
        assert (res.new, res.duplicates) == (len(rest), 6)
        assert res.through[stream] == 70  # 1..60 stored, 61..70 reported lost
        for e in _events(stream):  # events: once per id, however often they come
            db.record_event(e, ("plant-a", "l1", "st"))
            db.record_event(e, ("plant-a", "l1", "st"))
        ids = [str(r[0]) for r in db.query("SELECT inspection_id FROM inspections")]
        assert sorted(ids) == sorted({m["inspection_id"] for m in station_messages})
        # the roll-up and the detections equal what the rows say (SQL on both sides)
        assert db.query(
            "SELECT site, line, station, hour, pass, fail, review, error, missed "
            "FROM station_hours ORDER BY 1, 2, 3, 4"
        ) == db.query(
            "SELECT site, line, station, date_trunc('hour', captured_at, 'UTC'), "
            "count(*) FILTER (WHERE verdict = 'PASS'), count(*) FILTER (WHERE verdict = 'FAIL'), "
            "count(*) FILTER (WHERE verdict = 'REVIEW'), count(*) FILTER (WHERE verdict = 'ERROR'), "
            "count(*) FILTER (WHERE verdict = 'MISSED') FROM inspections GROUP BY 1, 2, 3, 4 "
            "ORDER BY 1, 2, 3, 4"
        )  # fmt: skip
        assert db.query("SELECT count(*) FROM detections") == db.query(
            "SELECT coalesce(sum(num_detections), 0) FROM inspections"
        )
        assert db.query("SELECT count(*) FROM events") == [(6,)]  # 3 from release 1, 3 new
        # a site registered to a firm labels the rows there and the rows to come
        with psycopg.connect(url) as conn:
            changed = assign_site(conn, "plant-a", "firm-1")
        assert changed["inspections"] == len(ids) and changed["events"] == 6
        extra = copy.deepcopy(station_messages[0])
        extra.update(inspection_id=str(uuid.uuid4()), seq=71)
        assert db.store([extra]).new == 1
        assert db.query("SELECT DISTINCT firm FROM inspections") == [("firm-1",)]
        assert db.query("SELECT DISTINCT firm FROM station_hours") == [("firm-1",)]
    finally:
        db.close()


def test_migrations_refuse_what_they_cannot_type(pg: pgpeer.Postgres) -> None:
    url = fresh_db(pg, "odd")
    old = receiver_v1.ReceiverDB(url)  # release 1 took any non-empty id
    old.store([{"inspection_id": "station-7-frame-1", "site": "s", "line": "l", "station": "st",
                "stream": "x", "seq": 1, "verdict": "PASS"}])  # fmt: skip
    old.close()
    with pytest.raises(
        SchemaError, match=r"1 rows of inspections have ids that are not UUIDs .*station-7"
    ):
        ReceiverDB(url)
    with psycopg.connect(url) as conn:
        assert applied(conn) == [1]  # migration 2 rolled back whole: nothing half-typed
        assert conn.execute("SELECT data_type FROM information_schema.columns WHERE "
                            "table_name = 'inspections' AND column_name = 'captured_at'"
                            ).fetchone() == ("text",)  # fmt: skip
        conn.execute("DELETE FROM inspections")
        conn.commit()
        # then it goes (and the later ones after it), once
        assert migrate(conn) == [m.version for m in MIGRATIONS[1:]] and migrate(conn) == []
        conn.execute("INSERT INTO platform_migrations (version, name) VALUES (%s, 'future')",
                     [LATEST + 1])  # fmt: skip
        conn.commit()
    with pytest.raises(SchemaError, match="newer than this kanjian"):
        ReceiverDB(url)


def test_migrate_and_site_commands(pg: pgpeer.Postgres, tmp_path: Path) -> None:
    import subprocess
    import sys

    url = fresh_db(pg, "cli")
    import os

    cli = [sys.executable, "-m", "kanjian.appliance_api.cli.main", "platform"]
    env = {**os.environ, "COLUMNS": "300"}  # rich wraps at the terminal width
    done = subprocess.run([*cli, "migrate", "--db", url], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"schema version {LATEST}" in done.stdout and (
        f"applied now: {', '.join(str(m.version) for m in MIGRATIONS)}" in done.stdout
    )
    again = subprocess.run([*cli, "migrate", "--db", url], capture_output=True, text=True,
                           timeout=120, env=env)  # fmt: skip
    assert "applied now: nothing" in again.stdout
    site = subprocess.run([*cli, "site", "plant-a", "--firm", "firm-1", "--db", url],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert site.returncode == 0, site.stderr
    assert _rows(url, "SELECT site, firm FROM sites") == [("plant-a", "firm-1")]
    bad = subprocess.run([*cli, "site", "plant a", "--firm", "f", "--db", url],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert bad.returncode == 2 and "site 'plant a'" in bad.stderr
    sqlite = subprocess.run([*cli, "migrate", "--db", str(tmp_path / "p.db")],
                            capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert sqlite.returncode == 2 and "not a postgresql:// URL" in sqlite.stderr
