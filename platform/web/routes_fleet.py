"""The fleet's routes: who is asking, the station list, yield, FAIL rate, Pareto, events.

Every route takes a :data:`~kanjian.platform.web.deps.Viewer` and asks its SQL within
the token's scope (:mod:`kanjian.platform.web.queries`). A filter naming a site, line
or station outside the scope answers 404 exactly as a name nobody uses does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from kanjian.appliance_api.http.trends import p_chart
from kanjian.platform.web import queries as Q
from kanjian.platform.web.deps import Creds, Db, Principal, Viewer, authenticate, not_found
from kanjian.platform.web.models import (
    CountsOut,
    EventOut,
    FailRateOut,
    ParetoOut,
    ParetoRowOut,
    PPointOut,
    ScopeOut,
    StationOut,
    WhoamiOut,
    WindowOut,
    YieldOut,
)
from kanjian.platform.web.stations import station_out
from kanjian.platform.web.window import Window, window

router = APIRouter(prefix="/api", tags=["fleet"])

_VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")

Since = Annotated[
    datetime | None, Query(description="ISO 8601 with offset; default: 24 hours before until")
]
Until = Annotated[datetime | None, Query(description="ISO 8601 with offset; default: now")]
SiteQ = Annotated[str | None, Query(max_length=64, description="one site (in scope)")]
LineQ = Annotated[str | None, Query(max_length=64, description="one line (with site)")]
StationQ = Annotated[str | None, Query(max_length=64, description="one station (with line)")]
Limit = Annotated[int, Query(ge=1, le=500)]


def check_exists(
    conn: Any, who: Principal, site: str | None, line: str | None, station: str | None
) -> None:
    """404 unless the named site / line / station has a station in the token's scope."""
    if site is None and line is None and station is None:
        return
    if site is None or (station is not None and line is None):
        raise not_found("such filter: give site, site + line, or site + line + station")
    sql, args = Q.scoped(Q.EXISTS, who.scope, "s.site", site=site, line=line, station=station)
    if not conn.execute(sql, args).fetchone()[0]:
        raise not_found("/".join(x for x in (site, line, station) if x is not None))


def _window_out(w: Window) -> WindowOut:
    return WindowOut(since=w.since, until=w.until, hours=w.hours)


def _counts(keys: dict[str, Any], n: list[int]) -> CountsOut:
    counts = dict(zip(_VERDICTS, (int(x) for x in n), strict=True))
    judged = counts["PASS"] + counts["FAIL"] + counts["REVIEW"]
    return CountsOut(
        **keys,
        counts=counts,
        total=sum(counts.values()),
        judged=judged,
        yield_pct=None if judged == 0 else 100.0 * counts["PASS"] / judged,
    )


def hour_counts(
    conn: Any, who: Principal, by: Q.GroupBy, w: Window, **filters: str | None
) -> list[CountsOut]:
    """``station_hours`` of the scope in ``w`` grouped ``by``."""
    cols = Q.GROUPS[by]
    sql, args = Q.scoped(Q.counts_sql(by), who.scope, "site", t0=w.since, t1=w.until, **filters)
    return [
        _counts(dict(zip(cols, r[: len(cols)], strict=True)), list(r[len(cols) :]))
        for r in conn.execute(sql, args)
    ]


@router.get("/whoami", response_model=WhoamiOut)
def whoami(request: Request, creds: Creds, conn: Db) -> WhoamiOut:
    """The token's name, role and scope (without a token: ``authenticated`` false; a
    bad token: 401)."""
    who = authenticate(request, creds, conn)
    if who is None:
        return WhoamiOut(authenticated=False)
    s = who.scope
    return WhoamiOut(
        authenticated=True,
        name=who.name,
        role=who.role.value,
        scope=ScopeOut(kind=s.kind, firm=s.firm, sites=list(s.sites)),
    )


@router.get("/stations", response_model=list[StationOut])
def stations(who: Viewer, conn: Db) -> list[StationOut]:
    """Every station in scope: online or offline, camera, model, backlog, last
    confirmation and latest inspection."""
    sql, args = Q.scoped(Q.STATIONS, who.scope, "s.site")
    return [station_out(r) for r in conn.execute(sql, args)]


@router.get("/yield", response_model=YieldOut)
def yield_(
    who: Viewer,
    conn: Db,
    by: Annotated[Q.GroupBy, Query(description="rows per site, line, station or UTC hour")] = (
        "station"
    ),
    since: Since = None,
    until: Until = None,
    site: SiteQ = None,
    line: LineQ = None,
    station: StationQ = None,
) -> YieldOut:
    """Verdict counts and yield per site, line, station or hour (``station_hours``)."""
    w = window(since, until)
    check_exists(conn, who, site, line, station)
    rows = hour_counts(conn, who, by, w, site=site, line=line, station=station)
    total = [sum(r.counts[v] for r in rows) for v in _VERDICTS]
    return YieldOut(window=_window_out(w), by=by, rows=rows, totals=_counts({}, total))


@router.get("/fail-rate", response_model=FailRateOut)
def fail_rate(
    who: Viewer,
    conn: Db,
    since: Since = None,
    until: Until = None,
    site: SiteQ = None,
    line: LineQ = None,
    station: StationQ = None,
) -> FailRateOut:
    """The FAIL rate per UTC hour with p-chart control limits (the station's shift page's
    formula: p̄ over the window, limits per hour from its own n)."""
    w = window(since, until)
    check_exists(conn, who, site, line, station)
    rows = hour_counts(conn, who, "hour", w, site=site, line=line, station=station)
    p_bar, points = p_chart([(r.judged, r.counts["FAIL"]) for r in rows])
    out = [
        PPointOut(hour=r.hour, n=pt.n, fails=pt.fails, p=pt.p, lcl=pt.lcl, ucl=pt.ucl,
                  out_of_control=pt.out)
        for r, pt in zip(rows, points, strict=True)
    ]  # fmt: skip
    return FailRateOut(
        window=_window_out(w),
        p_bar=p_bar,
        points=out,
        out_of_control=sum(p.out_of_control for p in out),
    )


@router.get("/pareto", response_model=ParetoOut)
def pareto(
    who: Viewer,
    conn: Db,
    site: Annotated[str, Query(max_length=64)],
    line: Annotated[str, Query(max_length=64)],
    since: Since = None,
    until: Until = None,
) -> ParetoOut:
    """A line's defects: detections on its FAIL and REVIEW parts by class, most first."""
    w = window(since, until)
    check_exists(conn, who, site, line, None)
    sql, args = Q.scoped(Q.PARETO, who.scope, "i.site", site=site, line=line, t0=w.since,
                         t1=w.until)  # fmt: skip
    rows = [(r[0], int(r[1]), int(r[2])) for r in conn.execute(sql, args)]
    total = sum(n for _c, n, _p in rows)
    classes, running = [], 0
    for name, n, parts in rows:
        running += n
        classes.append(ParetoRowOut(class_name=name, detections=n, parts=parts,
                                    share_pct=100.0 * n / total,
                                    cumulative_pct=100.0 * running / total))  # fmt: skip
    return ParetoOut(window=_window_out(w), site=site, line=line, classes=classes, total=total)


def events_out(rows: Any) -> list[EventOut]:
    return [
        EventOut(event_id=str(r[0]), site=r[1], line=r[2], station=r[3], event=r[4], at=r[5],
                 data=r[6])
        for r in rows
    ]  # fmt: skip


@router.get("/events", response_model=list[EventOut])
def events(
    who: Viewer,
    conn: Db,
    site: SiteQ = None,
    line: LineQ = None,
    station: StationQ = None,
    limit: Limit = 50,
) -> list[EventOut]:
    """The latest events of the stations in scope (or of one site, line or station),
    newest first."""
    check_exists(conn, who, site, line, station)
    sql, args = Q.scoped(Q.EVENTS, who.scope, "e.site", site=site, line=line, station=station,
                         limit=limit)  # fmt: skip
    return events_out(conn.execute(sql, args))
