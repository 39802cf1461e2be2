"""The shift view's numbers (``/api/trends/*``) against SQL on the same SQLite file.

The station (tests/support/trends_station.py) holds ~800 rows written by the real
store over two and a half days of Shanghai local time, some out of time order,
and is served by ``kanjian serve`` whose local zone is Asia/Shanghai. Every
number an endpoint gives is computed again here by SQL of its own (local hours and
shifts by SQLite's date functions, classes from ``detections`` and ``top_class``,
the latest feedback from ``feedback``), for windows whose edges cut through the
out-of-order rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kanjian.appliance_api.http import trends as T
from kanjian.appliance_api.http.shifts import shift_windows
from tests.support import trends_oracle as O
from tests.support import trends_station as TS

VERDICTS = O.VERDICTS
Z = TS.ZONE


def _at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 3, day, hh, mm, tzinfo=Z)


#: (since, until) asked: the whole span, and windows whose edges fall among late rows
WINDOWS = (
    (TS.FIRST, TS.LAST),
    (_at(2, 13, 20), _at(3, 15, 5)),
    (_at(3, 1), _at(3, 12)),
)


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TS.TrendStation]:
    station = TS.start(tmp_path_factory.mktemp("trends"))
    try:
        yield station
    finally:
        print(station.served.stop())


def _get(st: TS.TrendStation, path: str, **params: Any) -> Any:
    with st.client("operator") as c:
        r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _win(since: datetime, until: datetime) -> dict[str, str]:
    return {"since": since.isoformat(), "until": until.isoformat()}


# -- the window, shifts, the p-chart: units ----------------------------------------------


def test_the_window_is_whole_local_hours_and_bounded() -> None:
    w = T.make_window(_at(2, 10, 17), _at(2, 12, 1), tz=Z)
    assert (w.local(w.since), w.local(w.until)) == (_at(2, 10), _at(2, 13))
    assert len(w.hours()) == 3
    assert T.make_window(_at(2, 10), _at(2, 12), tz=Z).until == _at(2, 12)
    w = T.make_window(_at(2, 12, 10), _at(2, 12, 40), tz=Z)  # inside one hour: that hour
    assert (w.local(w.since), w.local(w.until)) == (_at(2, 12), _at(2, 13))
    now = _at(5, 9, 30)
    w = T.make_window(None, None, now=now, tz=Z)
    assert (w.local(w.since), w.local(w.until)) == (_at(4, 10), _at(5, 10))
    assert T.make_window(_at(1, 0), _at(1, 0) + timedelta(days=31), tz=Z)  # 31 days: fine
    for since, until, says in (
        (_at(1, 0), _at(1, 1) + timedelta(days=31), "longer than 31 days"),
        (datetime(2026, 3, 2, 10), None, "needs a timezone"),
        (_at(2, 12), _at(2, 11), "must be before"),
        (datetime(1, 1, 1, tzinfo=timezone.utc), None, "between"),
    ):
        with pytest.raises(T.WindowError, match=says):
            T.make_window(since, until, tz=Z)


def test_shifts_cross_midnight_in_local_time() -> None:
    got = shift_windows(_at(2, 5), _at(3, 7), TS.SHIFT_STARTS, Z)
    want = [
        ("22:00", _at(1, 22), _at(2, 6)),
        ("06:00", _at(2, 6), _at(2, 14)),
        ("14:00", _at(2, 14), _at(2, 22)),
        ("22:00", _at(2, 22), _at(3, 6)),
        ("06:00", _at(3, 6), _at(3, 14)),
    ]
    assert got == want
    # a DST change (Berlin, 2026-03-29 02:00 -> 03:00): the night shift is 7 h long
    berlin = ZoneInfo("Europe/Berlin")
    since = datetime(2026, 3, 28, 23, tzinfo=berlin)
    label, start, end = shift_windows(since, since + timedelta(hours=1), TS.SHIFT_STARTS, berlin)[0]
    utc = timezone.utc  # (one zone's times subtract as wall-clock times)
    assert (label, end.astimezone(utc) - start.astimezone(utc)) == ("22:00", timedelta(hours=7))
    assert start == datetime(2026, 3, 28, 22, tzinfo=berlin)
    # one start a day: a shift is a day, whatever the hour
    (one,) = shift_windows(_at(2, 9), _at(2, 10), ["07:30"], Z)
    assert one == ("07:30", _at(2, 7, 30), _at(3, 7, 30))


def test_p_chart_limits_are_the_formula() -> None:
    points = [(40, 3), (0, 0), (12, 6), (55, 1), (1, 0), (30, 0)]
    pbar, got = T.p_chart(points)
    want_pbar = (3 + 6 + 1) / (40 + 12 + 55 + 1 + 30)
    assert pbar == pytest.approx(want_pbar, abs=1e-15)
    for (n, x), p in zip(points, got, strict=True):
        if n == 0:
            assert (p.p, p.lcl, p.ucl, p.out) == (None, None, None, False)
            continue
        sigma = math.sqrt(want_pbar * (1 - want_pbar) / n)
        assert p.p == pytest.approx(x / n)
        assert p.ucl == pytest.approx(min(1.0, want_pbar + 3 * sigma))
        assert p.lcl == pytest.approx(max(0.0, want_pbar - 3 * sigma))
        assert p.out == (x / n > p.ucl or x / n < p.lcl)
    assert got[2].out and got[1].p is None  # 6 of 12 is far above the line
    assert T.p_chart([(0, 0)]) == (None, [T.PPoint(0, 0, None, None, None, False)])


def test_an_answer_is_compared_with_the_verdict() -> None:
    table = {
        ("not_defect", "FAIL"): "false_reject",
        ("not_defect", "REVIEW"): "false_reject",
        ("confirm_defect", "PASS"): "missed",
        ("wrong_class", "PASS"): "missed",
        ("confirm_defect", "FAIL"): "confirmed",
        ("confirm_defect", "REVIEW"): "confirmed",
        ("wrong_class", "FAIL"): "wrong_class",
        ("not_defect", "PASS"): "agreed_pass",
        ("confirm_defect", "ERROR"): "other",
        ("not_defect", "MISSED"): "other",
    }
    for (kind, verdict), want in table.items():
        assert T.category(kind, verdict) == want, (kind, verdict)


# -- the endpoints against SQL ----------------------------------------------------------


def test_the_rows_are_out_of_time_order_where_the_windows_cut(st: TS.TrendStation) -> None:
    from kanjian.station import captured_order
    from kanjian.station.store import open_db

    db = open_db(st.db_path)
    try:
        d = captured_order.extend(db.conn, captured_order.load(db.conn)).disorder_s
        assert d >= TS.LATE_BY.total_seconds() - 300  # the late rows: D is about 90 min
        for since, until in WINDOWS[1:]:
            w = T.make_window(since, until, tz=Z)
            with T.snapshot(db):
                seqs = T.window_seqs(db, w)
            # the ends are read row by row, the middle from the index alone: both have rows
            assert seqs.core is not None
            in_bands = sum(b - a - 1 for a, b in seqs.bands())
            assert in_bands > 10 and seqs.core[1] - seqs.core[0] > 10
    finally:
        db.conn.close()


@pytest.mark.parametrize("window", WINDOWS)
def test_hourly_counts_and_yield_are_the_sql(
    st: TS.TrendStation, window: tuple[datetime, datetime]
) -> None:
    since, until = window
    got = _get(st, "/api/trends/hourly", **_win(since, until))
    s, u = O.hour_floor(since), O.hour_ceil(until)
    assert got["window"] == {
        "since": s.isoformat(),
        "until": u.isoformat(),
        "hours": round((u - s) / timedelta(hours=1)),
    }
    want = O.hours(st.db_path, s, u)
    assert len(got["hours"]) == got["window"]["hours"]
    for k, h in enumerate(got["hours"]):
        start = s + timedelta(hours=k)
        assert h["start"] == start.isoformat()
        c = want.get(start.strftime("%Y-%m-%dT%H:00"), Counter())
        assert h["counts"] == {v: c[v] for v in VERDICTS}, h["start"]
        assert h["yield_pct"] == O.yield_pct(c)
    total = O.totals(st.db_path, s, u)
    assert got["totals"]["counts"] == {v: total[v] for v in VERDICTS}
    assert got["totals"]["total"] == sum(total.values()) > 0
    assert got["totals"]["yield_pct"] == O.yield_pct(total)


@pytest.mark.parametrize("window", WINDOWS)
def test_shift_counts_are_the_sql_across_midnight(
    st: TS.TrendStation, window: tuple[datetime, datetime]
) -> None:
    since, until = window
    got = _get(st, "/api/trends/shifts", **_win(since, until))
    s, u = O.hour_floor(since), O.hour_ceil(until)
    want = O.shifts(st.db_path, s, u)
    assert got["shift_starts"] == TS.SHIFT_STARTS
    shifts = got["shifts"]
    # consecutive, each from its label's start to the next start, the first and last cut
    starts = [datetime.fromisoformat(r["shift_start"]) for r in shifts]
    assert starts[0] <= s < datetime.fromisoformat(shifts[0]["shift_end"])
    assert datetime.fromisoformat(shifts[-1]["shift_start"]) < u
    for r, nxt in pairwise(shifts):
        assert r["shift_end"] == nxt["shift_start"]
    midnight = 0
    for r in shifts:
        a, b = datetime.fromisoformat(r["shift_start"]), datetime.fromisoformat(r["shift_end"])
        assert a.strftime("%H:%M") == r["label"] and b - a == timedelta(hours=8)
        midnight += a.date() != b.date()
        assert r["partial"] == (a < s or b > u)
        assert r["start"] == max(a, s).isoformat() and r["end"] == min(b, u).isoformat()
        c = want.pop(a.strftime("%Y-%m-%dT%H:%M"), Counter())
        assert r["counts"] == {v: c[v] for v in VERDICTS}, r["label"]
        assert r["yield_pct"] == O.yield_pct(c)
    assert not want  # every row's shift was listed
    assert midnight >= 1  # a night shift across midnight is one row


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("verdicts", [(), ("FAIL",)])
def test_pareto_is_the_sql_most_first(
    st: TS.TrendStation, window: tuple[datetime, datetime], verdicts: tuple[str, ...]
) -> None:
    since, until = window
    params: dict[str, Any] = _win(since, until)
    if verdicts:
        params["verdict"] = list(verdicts)
    got = _get(st, "/api/trends/pareto", **params)
    asked = verdicts or ("FAIL", "REVIEW")
    assert got["verdicts"] == sorted(asked)
    s, u = O.hour_floor(since), O.hour_ceil(until)
    ranked = O.pareto(st.db_path, s, u, asked)
    assert [r["class_name"] for r in got["classes"]] == [k for k, _ in ranked]
    want = dict(ranked)
    total = sum(sum(c.values()) for c in want.values())
    assert got["total"] == total > 0
    running = 0
    for r in got["classes"]:
        c = want[r["class_name"]]
        assert r["counts"] == {v: c[v] for v in sorted(asked)}
        running += r["count"]
        assert r["count"] == sum(c.values())
        assert r["share_pct"] == round(100 * r["count"] / total, 2)
        assert r["cumulative_pct"] == round(100 * running / total, 2)
    assert got["classes"][-1]["cumulative_pct"] == 100.0
    parts = O.totals(st.db_path, s, u)
    assert got["inspections"] == sum(parts[v] for v in asked)


@pytest.mark.parametrize("window", WINDOWS)
def test_p_chart_is_the_formula_on_sql_counts(
    st: TS.TrendStation, window: tuple[datetime, datetime]
) -> None:
    since, until = window
    got = _get(st, "/api/trends/pchart", **_win(since, until))
    s = O.hour_floor(since)
    hours = O.hours(st.db_path, s, O.hour_ceil(until))
    ns, xs = [], []
    for k in range(len(got["points"])):
        c = hours.get((s + timedelta(hours=k)).strftime("%Y-%m-%dT%H:00"), Counter())
        ns.append(c["PASS"] + c["FAIL"] + c["REVIEW"])
        xs.append(c["FAIL"])
    pbar, want = O.p_chart(ns, xs)
    assert got["p_bar"] == pytest.approx(pbar, rel=1e-12)
    out = 0
    for n, x, p, w in zip(ns, xs, got["points"], want, strict=True):
        assert (p["n"], p["fails"]) == (n, x)
        if w is None:
            assert p["p"] is None and p["ucl"] is None and p["lcl"] is None
            continue
        assert (p["p"], p["lcl"], p["ucl"]) == pytest.approx(w, rel=1e-12, abs=1e-15)
        assert p["out_of_control"] == (not w[1] <= w[0] <= w[2])
        out += p["out_of_control"]
    assert got["out_of_control"] == out
    if window == WINDOWS[0]:  # the run-away hour is out; the gap has hours without parts
        burst = TS.BURST[0].isoformat()
        assert next(p for p in got["points"] if p["start"] == burst)["out_of_control"]
        assert any(p["n"] == 0 for p in got["points"])


@pytest.mark.parametrize("window", WINDOWS)
def test_feedback_against_the_model_is_the_sql(
    st: TS.TrendStation, window: tuple[datetime, datetime]
) -> None:
    since, until = window
    got = _get(st, "/api/trends/feedback", **_win(since, until))
    s, u = O.hour_floor(since), O.hour_ceil(until)
    per = O.feedback(st.db_path, s, u)
    totals = sum(per.values(), Counter())
    keys = O.FEEDBACK_KEYS
    assert got["totals"] == {k: totals[k] for k in keys}
    assert got["answered"] == sum(totals.values())
    assert {r["class_name"]: r["counts"] for r in got["classes"]} == {
        cls: {k: c[k] for k in keys} for cls, c in per.items()
    }
    parts = O.totals(st.db_path, s, u)
    assert got["defects"] == parts["FAIL"] + parts["REVIEW"]
    if window == WINDOWS[0]:  # every kind of answer the station was given shows
        assert all(totals[k] > 0 for k in keys)
        # two answers were changed: only the latest counts
        assert got["answered"] == len({iid for iid, _, _ in st.feedback})


def test_windows_are_refused_with_the_way_out(st: TS.TrendStation) -> None:
    with st.client("operator") as c:
        for params, says in (
            (
                {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
                "31 days or fewer",
            ),
            ({"since": "2026-03-02T10:00:00"}, "needs a timezone"),
            ({"since": "2026-03-03T10:00:00Z", "until": "2026-03-02T10:00:00Z"}, "before until"),
        ):
            for path in ("hourly", "shifts", "pareto", "pchart", "feedback", "overview"):
                r = c.get(f"/api/trends/{path}", params=params)
                assert r.status_code == 422, (path, r.text)
                assert says in r.json()["detail"], (path, r.text)
        # no window asked: the last 24 h to the end of this hour (this store has no row then)
        r = c.get("/api/trends/hourly").json()
        assert r["window"]["hours"] == 24 and r["totals"]["total"] == 0
        assert r["window"]["until"].endswith("+08:00")


def test_classes_are_the_stores(st: TS.TrendStation) -> None:
    got = _get(st, "/api/trends/classes")["classes"]
    want = st.sql(
        "SELECT class_name FROM detections UNION SELECT top_class FROM inspections "
        "WHERE top_class IS NOT NULL ORDER BY 1"
    )
    assert got == [r[0] for r in want]


def test_an_inspections_audit_is_for_engineers(st: TS.TrendStation) -> None:
    # an answer that was changed: two feedback rows, two audit rows
    iid = next(i for i, n in Counter(i for i, _, _ in st.feedback).items() if n == 2)
    with st.client("engineer") as c:
        got = c.get(f"/api/inspections/{iid}/audit").json()
    want = st.sql("SELECT id, action, actor FROM audit WHERE target = ? ORDER BY id DESC", (iid,))
    assert [(a["id"], a["action"], a["actor"]) for a in got["items"]] == [tuple(r) for r in want]
    assert len(want) == 2 and all(a["target"] == iid for a in got["items"])
    with st.client("operator") as c:
        r = c.get(f"/api/inspections/{iid}/audit")
    assert r.status_code == 403 and "role operator may not" in r.json()["detail"]


def test_the_pages_are_served_under_the_csp(st: TS.TrendStation) -> None:
    with st.client("operator") as c:
        for path, script in (("/history", "/static/history.js"), ("/shift", "/static/shift.js")):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert script in r.text and "/static/fonts/fonts.css" in r.text
        lib = c.get("/static/vendor/chartjs/chart.umd.min.js")
        assert lib.status_code == 200 and b"Chart.js v4" in lib.content[:200]
        licence = Path(__file__).parents[1] / "appliance_api/http/static/vendor/chartjs/LICENSE.md"
        assert "MIT License" in licence.read_text()


def test_reads_need_a_token_and_the_pages_do_not(st: TS.TrendStation) -> None:
    import httpx

    iid = st.feedback[0][0]
    with httpx.Client(base_url=st.url, timeout=60) as anon:
        for path in ("hourly", "shifts", "pareto", "pchart", "feedback", "overview", "classes"):
            r = anon.get(f"/api/trends/{path}")
            assert r.status_code == 401 and "role operator or above" in r.json()["detail"], path
        r = anon.get(f"/api/inspections/{iid}/audit")
        assert r.status_code == 401 and "role engineer or above" in r.json()["detail"]
        for page in ("/history", "/shift"):
            assert anon.get(page).status_code == 200  # it asks for a token itself
    schema = _get(st, "/openapi.json")
    for path in ("hourly", "shifts", "pareto", "pchart", "feedback", "classes"):
        op = schema["paths"][f"/api/trends/{path}"]["get"]
        assert op["tags"] == ["trends"] and "200" in op["responses"], path
    assert "/history" in schema["paths"] and "/shift" in schema["paths"]


@pytest.mark.parametrize("window", WINDOWS)
def test_the_overview_is_the_five_answers(
    st: TS.TrendStation, window: tuple[datetime, datetime]
) -> None:
    params = _win(*window)
    got = _get(st, "/api/trends/overview", **params)
    for part in ("hourly", "shifts", "pareto", "pchart", "feedback"):
        assert got[part] == _get(st, f"/api/trends/{part}", **params), part


def test_shift_starts_off_the_hour_split_an_hour(st: TS.TrendStation) -> None:
    from kanjian.station.store import open_db

    starts = ["06:30", "18:30"]
    since, until = WINDOWS[1]
    w = T.make_window(since, until, tz=Z)
    db = open_db(st.db_path)
    try:
        with T.snapshot(db) as conn:
            wc = T.window_counts(conn, w, starts)
    finally:
        db.conn.close()
    # by the definition, row by row in Python
    shifts: dict[datetime, Counter[str]] = {}
    hours: dict[datetime, Counter[str]] = {}
    for at, verdict in st.sql(
        "SELECT captured_at, verdict FROM inspections WHERE captured_at >= ? AND captured_at < ?",
        (w.since_iso, w.until_iso),
    ):
        t = datetime.fromisoformat(at).astimezone(Z)
        day = t.date() if t.strftime("%H:%M") >= "06:30" else t.date() - timedelta(days=1)
        start = datetime.combine(day, datetime.min.time(), Z).replace(hour=6, minute=30)
        if t >= start + timedelta(hours=12):
            start += timedelta(hours=12)
        shifts.setdefault(start, Counter())[verdict] += 1
        hours.setdefault(t.replace(minute=0, second=0, microsecond=0), Counter())[verdict] += 1
    assert [(r.label, r.start.astimezone(Z)) for r in wc.shifts] == [
        (s.strftime("%H:%M"), s) for s in sorted(shifts)
    ]
    for r in wc.shifts:
        c = shifts[r.start.astimezone(Z)]
        assert r.counts == {v: c[v] for v in VERDICTS}
    for (start, _), got in zip(w.hours(), wc.hours, strict=True):
        c = hours.get(start.astimezone(Z), Counter())
        assert got == {v: c[v] for v in VERDICTS}
    assert sum(wc.totals.values()) == sum(sum(c.values()) for c in shifts.values()) > 100
