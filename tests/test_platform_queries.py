"""The fleet page's questions (``kanjian.platform.fleet_sql``) on a grown platform database.

50 stations over 20 sites send two days of inspections through the receiver's own
writer (``ReceiverDB.store``), plus events and a year of older hourly counts. Each
query's answer is checked against Python over the messages that were sent, and its
plan (``EXPLAIN``, after ``ANALYZE``) must use the index the schema made for it.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from kanjian.platform import fleet_sql
from kanjian.platform.pg_writer import assign_site
from kanjian.platform.receiver_db import ReceiverDB
from tests.peers import postgres as pgpeer

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=timezone.utc)
STATIONS = [(f"site-{i % 20:02d}", f"line-{i % 3}", f"st-{i:02d}") for i in range(50)]
CLASSES = ("crazing", "inclusion", "patches", "scratches")


@dataclass
class Fleet:
    url: str
    messages: list[dict[str, Any]]
    events: list[dict[str, Any]]


def _message(rng: random.Random, k: int, where: tuple[str, str, str], seq: int) -> dict[str, Any]:
    site, line, station = where
    u = rng.random()
    verdict = "FAIL" if u < 0.05 else "REVIEW" if u < 0.065 else "ERROR" if u < 0.07 else "PASS"
    n = rng.randint(1, 3) if verdict in ("FAIL", "REVIEW") else 0
    t = T0 + timedelta(seconds=rng.uniform(0, 48 * 3600))
    return {
        "type": "inspection", "version": 1, "inspection_id": str(uuid.UUID(int=k + 1)),
        "site": site, "line": line, "station": station, "stream": f"{station}-db", "seq": seq,
        "captured_at": t.isoformat(), "judged_at": (t + timedelta(milliseconds=40)).isoformat(),
        "verdict": verdict, "reason": "", "model": None,
        "detections": [{"class_id": c, "class_name": CLASSES[c],
                        "confidence": round(rng.uniform(0.3, 0.99), 4), "xyxy": [1, 2, 30, 40]}
                       for c in (rng.randrange(4) for _ in range(n))],
        "image": None,
    }  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    pg = pgpeer.Postgres(tmp_path_factory.mktemp("pg")).start()
    rng = random.Random(16)
    seqs: Counter[str] = Counter()
    msgs = []
    for k in range(20_000):
        where = STATIONS[k % len(STATIONS)]
        seqs[where[2]] += 1
        msgs.append(_message(rng, k, where, seqs[where[2]]))
    events = [{"type": "event", "version": 1, "event_id": str(uuid.UUID(int=10**9 + k)),
               "event": rng.choice(("camera_lost", "camera_back", "model_activated")),
               "at": (T0 + timedelta(seconds=rng.uniform(0, 48 * 3600))).isoformat(),
               "site": s, "line": ln, "station": st, "data": {"k": k}}
              for k, (s, ln, st) in enumerate(STATIONS * 100)]  # fmt: skip
    db = ReceiverDB(pg.url)
    try:
        for i in range(0, len(msgs), 1000):
            db.store(msgs[i : i + 1000])
        for e in events:
            db.record_event(e)
        for s, ln, st in STATIONS[:45]:  # five stations never said whether they are online
            db.record_availability(s, ln, st, "online")
        with psycopg.connect(pg.url) as conn:
            for site in {s for s, _l, _st in STATIONS if s < "site-10"}:
                assign_site(conn, site, "firm-a")
            # a year of older hours, as a year-old platform has them
            conn.execute(
                "INSERT INTO station_hours (site, line, station, hour, firm, pass, fail) "
                "SELECT s.site, s.line, s.station, %s - h * interval '1 hour', s.firm, 3000, 60 "
                "FROM stations s, generate_series(1, 24 * 365) h",
                [T0],
            )
            conn.execute("ANALYZE")
        yield Fleet(pg.url, msgs, events)
    finally:
        db.close()
        pg.stop()


def _run(url: str, q: fleet_sql.FleetQuery, **params: Any) -> tuple[list[Any], set[str]]:
    """The query's rows, and the indexes its plan uses."""
    with psycopg.connect(url) as c:
        rows = list(c.execute(q.sql, params))
        plan = c.execute("EXPLAIN (FORMAT JSON) " + q.sql, params).fetchone()[0]
    used: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            used.add(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return rows, used


def _t(m: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(m["captured_at"])


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def test_hours_of_a_station_and_of_a_firm(fleet: Fleet) -> None:
    site, line, station = STATIONS[7]
    t0, t1 = T0 + timedelta(hours=5), T0 + timedelta(hours=29)
    rows, used = _run(fleet.url, fleet_sql.HOURS, t0=t0, t1=t1, firm=None, site=site,
                      line=line, station=station)  # fmt: skip
    want: Counter[tuple[datetime, str]] = Counter(
        (_hour(_t(m)), m["verdict"]) for m in fleet.messages
        if (m["site"], m["line"], m["station"]) == STATIONS[7] and t0 <= _t(m) < t1
    )  # fmt: skip
    hours = sorted({h for h, _v in want})
    assert [r[3] for r in rows] == hours and len(hours) == 24
    for r in rows:
        p, f, rv = (want[(r[3], v)] for v in ("PASS", "FAIL", "REVIEW"))
        assert r[4:9] == (p, f, rv, want[(r[3], "ERROR")], 0)
        assert r[9] == pytest.approx(p / (p + f + rv)) and r[10] == pytest.approx(f / (p + f + rv))
    assert fleet_sql.HOURS.index in used
    firm_rows, _u = _run(fleet.url, fleet_sql.HOURS, t0=t0, t1=t1, firm="firm-a", site=None,
                         line=None, station=None)  # fmt: skip
    firm_sites = {s for s, _l, _st in STATIONS if s < "site-10"}
    in_firm = [m for m in fleet.messages if m["site"] in firm_sites and t0 <= _t(m) < t1]
    assert sum(sum(r[4:9]) for r in firm_rows) == len(in_firm)
    assert {r[0] for r in firm_rows} == firm_sites


def test_fail_rate_of_the_fleet(fleet: Fleet) -> None:
    t0, t1 = T0 + timedelta(hours=40), T0 + timedelta(hours=46)
    rows, used = _run(fleet.url, fleet_sql.FAIL_RATE, t0=t0, t1=t1, firm=None)
    inside = [m for m in fleet.messages if t0 <= _t(m) < t1]
    for hour, fail, judged, rate in rows:
        here = [m for m in inside if _hour(_t(m)) == hour]
        n_fail = sum(m["verdict"] == "FAIL" for m in here)
        n_judged = sum(m["verdict"] in ("PASS", "FAIL", "REVIEW") for m in here)
        assert (fail, judged) == (n_fail, n_judged) and rate == pytest.approx(n_fail / n_judged)
    assert len(rows) == 6 and fleet_sql.FAIL_RATE.index in used


def test_pareto_and_flagged_parts_of_a_line(fleet: Fleet) -> None:
    site, line, _st = STATIONS[3]
    t0, t1 = T0, T0 + timedelta(hours=24)
    rows, used = _run(fleet.url, fleet_sql.PARETO, site=site, line=line, t0=t0, t1=t1)
    flagged = [m for m in fleet.messages if (m["site"], m["line"]) == (site, line)
               and m["verdict"] in ("FAIL", "REVIEW") and t0 <= _t(m) < t1]  # fmt: skip
    dets = Counter(d["class_name"] for m in flagged for d in m["detections"])
    parts = Counter(c for m in flagged for c in {d["class_name"] for d in m["detections"]})
    assert rows == sorted(((c, n, parts[c]) for c, n in dets.items()), key=lambda r: (-r[1], r[0]))
    assert len(rows) > 1 and fleet_sql.PARETO.index in used
    latest, used = _run(fleet.url, fleet_sql.FLAGGED, site=site, line=line, limit=5)
    every = sorted((m for m in fleet.messages if (m["site"], m["line"]) == (site, line)
                    and m["verdict"] in ("FAIL", "REVIEW")), key=_t, reverse=True)  # fmt: skip
    assert [str(r[0]) for r in latest] == [m["inspection_id"] for m in every[:5]]
    for r, m in zip(latest, every, strict=False):
        top = max(m["detections"], key=lambda d: d["confidence"])
        assert (r[3], r[4]) == (m["verdict"], top["class_name"])
        assert r[5] == pytest.approx(top["confidence"], abs=1e-6)
    assert fleet_sql.FLAGGED.index in used


def test_latest_per_station_and_station_events(fleet: Fleet) -> None:
    rows, used = _run(fleet.url, fleet_sql.LATEST, firm=None)
    assert [r[1:4] for r in rows] == sorted(STATIONS)
    for r in rows:
        mine = [m for m in fleet.messages if (m["site"], m["line"], m["station"]) == r[1:4]]
        last = max(mine, key=_t)
        assert (str(r[7]), r[8], r[9]) == (last["inspection_id"], _t(last), last["verdict"])
        assert r[0] == ("firm-a" if r[1] < "site-10" else None)
        assert r[4] == ("online" if r[1:4] in STATIONS[:45] else None)
    assert fleet_sql.LATEST.index in used
    site, line, station = STATIONS[11]
    evs, used = _run(fleet.url, fleet_sql.STATION_EVENTS, site=site, line=line,
                     station=station, limit=10)  # fmt: skip
    mine = sorted((e for e in fleet.events if (e["site"], e["line"], e["station"]) == STATIONS[11]),
                  key=lambda e: e["at"], reverse=True)  # fmt: skip
    assert [(str(r[0]), r[1], r[3]) for r in evs] == [
        (e["event_id"], e["event"], e["data"]) for e in mine[:10]]  # fmt: skip
    assert all(r[2] == datetime.fromisoformat(e["at"]) for r, e in zip(evs, mine, strict=False))
    assert fleet_sql.STATION_EVENTS.index in used
