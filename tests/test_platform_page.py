"""The fleet page's API against what the stations sent and against SQL of its own.

One platform (tests/support/fleet_platform.py): PostgreSQL, Mosquitto, SeaweedFS S3,
the platform's receiver, and ``kanjian platform serve``; 19 stations of three firms
(and one unregistered site) over 30 hours, sent through the broker. Each answer is
checked against an oracle that is not the page's code: the station list against the
messages, events and retained availability that were published; yield, FAIL rate and
Pareto against ``GROUP BY`` over ``inspections`` and ``detections`` (not the receiver's
``station_hours`` roll-up the page reads); the p-chart against the textbook formula;
pictures by fetching each presigned link from S3 and comparing the bytes uploaded.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import fleet_data as FD
from tests.support import trends_oracle as O
from tests.support.fleet_platform import FleetPlatform

VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")
ACME = set(FD.FIRMS["acme"])
ALL_SITES = {s for ss in FD.FIRMS.values() for s in ss} | {FD.UNREGISTERED}


def window(fp: FleetPlatform) -> tuple[datetime, datetime]:
    """The last 24 whole UTC hours of the data (the page's default, made explicit)."""
    until = fp.data.now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - timedelta(hours=24), until


def params(fp: FleetPlatform, **more: Any) -> dict[str, Any]:
    since, until = window(fp)
    return {"since": since.isoformat(), "until": until.isoformat(), **more}


def sql_counts(fp: FleetPlatform, sites: set[str]) -> Counter[tuple[Any, ...]]:
    """Rows per (site, line, station, UTC hour, verdict) in the window, by SQL on inspections."""
    since, until = window(fp)
    rows = fp.sql(
        "SELECT site, line, station, date_trunc('hour', captured_at), verdict::text, count(*) "
        "FROM inspections WHERE captured_at >= %s AND captured_at < %s AND site = ANY(%s) "
        "GROUP BY 1, 2, 3, 4, 5",
        [since, until, sorted(sites)],
    )
    return Counter({tuple(r[:5]): int(r[5]) for r in rows})


def grouped(counts: Counter[tuple[Any, ...]], by: str) -> dict[tuple[Any, ...], dict[str, int]]:
    cut = {"site": lambda k: k[:1], "line": lambda k: k[:2], "station": lambda k: k[:3],
           "hour": lambda k: (k[3],)}[by]  # fmt: skip
    out: dict[tuple[Any, ...], dict[str, int]] = {}
    for k, n in counts.items():
        g = out.setdefault(cut(k), dict.fromkeys(VERDICTS, 0))
        g[k[4]] += n
    return out


def _key(row: dict[str, Any], by: str) -> tuple[Any, ...]:
    if by == "hour":
        return (datetime.fromisoformat(row["hour"]),)
    return tuple(
        row[c] for c in ("site", "line", "station")[: ("site", "line", "station").index(by) + 1]
    )


@pytest.mark.parametrize("token,sites", [("viewer-acme", ACME), ("admin", ALL_SITES),
                                         ("viewer-sites", {"sz-02", "nb-01"})])  # fmt: skip
@pytest.mark.parametrize("by", ["site", "line", "station", "hour"])
def test_yield_per_site_line_station_and_hour_is_sql(
    fleet_platform: FleetPlatform, token: str, sites: set[str], by: str
) -> None:
    fp = fleet_platform
    got = fp.json("/api/yield", token, **params(fp, by=by))
    want = grouped(sql_counts(fp, sites), by)
    assert {_key(r, by): r["counts"] for r in got["rows"]} == want
    assert [_key(r, by) for r in got["rows"]] == sorted(want)
    for r in got["rows"]:
        c = r["counts"]
        judged = c["PASS"] + c["FAIL"] + c["REVIEW"]
        assert r["judged"] == judged and r["total"] == sum(c.values())
        assert r["yield_pct"] == pytest.approx(100 * c["PASS"] / judged)
    assert got["totals"]["total"] == sum(sum(g.values()) for g in want.values())
    assert got["window"]["hours"] == 24


def test_yield_of_one_site_and_one_station(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    counts = sql_counts(fp, ACME)
    one = fp.json("/api/yield", **params(fp, by="hour", site="sz-01"))
    want = grouped(Counter({k: n for k, n in counts.items() if k[0] == "sz-01"}), "hour")
    assert {_key(r, "hour"): r["counts"] for r in one["rows"]} == want
    st = fp.json("/api/yield", **params(fp, by="station", site="sz-01", line="L1", station="L1-b"))
    assert [(r["site"], r["line"], r["station"]) for r in st["rows"]] == [("sz-01", "L1", "L1-b")]


@pytest.mark.parametrize("where", [{}, {"site": "sz-01", "line": "L1", "station": "L1-b"}])
def test_fail_rate_has_the_p_chart_limits(
    fleet_platform: FleetPlatform, where: dict[str, str]
) -> None:
    fp = fleet_platform
    got = fp.json("/api/fail-rate", **params(fp, **where))
    counts = Counter({k: n for k, n in sql_counts(fp, ACME).items()
                      if all(k[i] == where[c] for i, c in enumerate(("site", "line", "station"))
                             if c in where)})  # fmt: skip
    hours = grouped(counts, "hour")
    ns = [h["PASS"] + h["FAIL"] + h["REVIEW"] for _k, h in sorted(hours.items())]
    xs = [h["FAIL"] for _k, h in sorted(hours.items())]
    pbar, points = O.p_chart(ns, xs)
    assert got["p_bar"] == pytest.approx(pbar)
    assert [datetime.fromisoformat(p["hour"]) for p in got["points"]] == [
        k[0] for k in sorted(hours)
    ]
    for p, n, x, want in zip(got["points"], ns, xs, points, strict=True):
        assert (p["n"], p["fails"]) == (n, x)
        assert want is not None
        assert (p["p"], p["lcl"], p["ucl"]) == pytest.approx(want)
        assert p["out_of_control"] == (want[0] > want[2] or want[0] < want[1])
    assert got["out_of_control"] == sum(p["out_of_control"] for p in got["points"])


def test_pareto_per_line_is_the_detections_sent(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    since, until = window(fp)
    for site in sorted(ACME):
        for line in FD.LINES:
            got = fp.json("/api/pareto", **params(fp, site=site, line=line))
            flagged = [m for m in fp.data.messages if (m["site"], m["line"]) == (site, line)
                       and m["verdict"] in ("FAIL", "REVIEW")
                       and since <= datetime.fromisoformat(m["captured_at"]) < until]  # fmt: skip
            dets = Counter(d["class_name"] for m in flagged for d in m["detections"])
            parts = Counter(c for m in flagged for c in {d["class_name"] for d in m["detections"]})
            want = sorted(((c, n, parts[c]) for c, n in dets.items()), key=lambda r: (-r[1], r[0]))
            assert [(c["class_name"], c["detections"], c["parts"]) for c in got["classes"]] == want
            assert got["total"] == sum(dets.values()) > 0
            assert got["classes"][-1]["cumulative_pct"] == pytest.approx(100.0)


def _latest(items: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    mine = [m for m in items if all(m[k] == v for k, v in where.items())]
    return max(mine, key=lambda m: m.get("captured_at") or m["at"]) if mine else None


def test_the_station_list_is_what_the_stations_said(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    got = fp.json("/api/stations", "admin")
    assert [(s["site"], s["line"], s["station"]) for s in got] == sorted(
        s.key for s in fp.data.stations)  # fmt: skip
    confirmed = {tuple(r[:3]): r[3] for r in fp.sql(
        "SELECT site, line, station, last_received_at FROM stations")}  # fmt: skip
    firm_of = {s: f for f, ss in FD.FIRMS.items() for s in ss}
    for s in got:
        key = dict(site=s["site"], line=s["line"], station=s["station"])
        spec = fp.data.of((s["site"], s["line"], s["station"]))
        assert s["firm"] == firm_of.get(s["site"])
        assert s["availability"] == (spec.availability or "unknown")
        last = _latest(fp.data.messages, **key)
        assert last is not None and s["last_inspection"]["inspection_id"] == last["inspection_id"]
        assert s["model"] == {"name": last["model"]["name"], "version": last["model"]["version"]}
        cam = _latest([e for e in fp.data.events if e["event"].startswith("camera_")], **key)
        want_cam = ("unknown" if cam is None else "connected" if cam["event"] == "camera_back"
                    else cam["data"]["state"])  # fmt: skip
        assert s["camera"]["state"] == want_cam
        back = _latest([e for e in fp.data.events if e["event"].startswith("sync_backlog")], **key)
        if back is None:
            assert s["backlog"]["state"] == "unknown" and s["backlog"]["entries"] is None
        else:
            assert s["backlog"]["state"] == back["event"].removeprefix("sync_backlog_")
            assert s["backlog"]["entries"] == back["data"]["backlog"]
        assert datetime.fromisoformat(s["last_confirmed_at"]) == confirmed[tuple(key.values())]
    # each state occurs, so none of the checks above held for one kind of station only
    assert {s["availability"] for s in got} == {"online", "offline", "unknown"}
    assert {s["camera"]["state"] for s in got} == {"unknown", "connected", "reconnecting"}
    assert {s["backlog"]["state"] for s in got} == {"unknown", "high", "normal"}


def test_events_newest_first(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    mine = sorted((e for e in fp.data.events if e["site"] in ACME),
                  key=lambda e: (e["at"], e["event_id"]), reverse=True)  # fmt: skip
    got = fp.json("/api/events", limit=500)
    assert [e["event_id"] for e in got] == [e["event_id"] for e in mine]
    one = fp.json("/api/stations/sz-01/L1/L1-b/events")
    want = [e for e in mine if (e["site"], e["line"], e["station"]) == ("sz-01", "L1", "L1-b")]
    assert [(e["event_id"], e["event"], e["data"]) for e in one] == [
        (e["event_id"], e["event"], e["data"]) for e in want]  # fmt: skip
    assert len(fp.json("/api/events", limit=3)) == 3


def test_fail_pictures_are_links_to_the_uploaded_pictures(fleet_platform: FleetPlatform) -> None:
    fp = fleet_platform
    for spec in [s for s in fp.data.stations if s.site in ACME]:
        site, line, station = spec.key
        got = fp.json(f"/api/stations/{site}/{line}/{station}/pictures")
        sent = sorted((m for m in fp.data.messages if (m["site"], m["line"], m["station"])
                       == spec.key and m["verdict"] == "FAIL" and m["image"]),
                      key=lambda m: m["captured_at"], reverse=True)  # fmt: skip
        assert [p["inspection_id"] for p in got] == [m["inspection_id"] for m in sent]
        assert len(got) == FD.PICTURES_PER_STATION
        for p, m in zip(got, sent, strict=True):
            assert p["url"] and p["refused"] is None and p["expires_s"] == 600
            r = httpx.get(p["url"], timeout=10)  # the browser's request: no credential
            assert r.status_code == 200 and r.content == fp.data.images[m["image"]["key"]]
            top = max(m["detections"], key=lambda d: d["confidence"])
            assert (p["top_class"], p["top_confidence"]) == (
                top["class_name"],
                pytest.approx(top["confidence"], abs=1e-6),
            )


def test_a_row_naming_another_stations_picture_gets_no_link(fleet_platform: FleetPlatform) -> None:
    """The forged row (a borealis station naming an acme picture's key) is listed, unsigned."""
    fp = fleet_platform
    assert fp.data.forged is not None
    (site, line, station), iid = fp.data.forged
    got = fp.json(f"/api/stations/{site}/{line}/{station}/pictures", "viewer-borealis")
    forged = next(p for p in got if p["inspection_id"] == iid)
    assert forged["url"] is None and "key scheme" in forged["refused"]
    assert all(p["url"] and f"/{site}/{station}/" in p["url"] for p in got if p is not forged)
