"""The history and shift pages (``/history``, ``/shift``) and their JSON: ``/api/trends/*``
(read) and an inspection's audit trail (engineer).

The history page lists inspections through ``GET /api/inspections`` and gives
feedback through ``POST /api/inspections/{id}/feedback``; what it needs beyond
those lives here. The numbers come from :mod:`kanjian.appliance_api.http.trends`.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse, HTMLResponse

from kanjian.appliance_api.http import trends as T
from kanjian.appliance_api.http.api_models import AuditOut, AuditPage, ErrorOut, VerdictName
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.appliance_api.http.trends_models import (
    BucketOut,
    ClassListOut,
    FeedbackClassOut,
    FeedbackCountsOut,
    FeedbackTrendOut,
    HourlyOut,
    ParetoOut,
    ParetoRowOut,
    PChartOut,
    PPointOut,
    ShiftOutRow,
    ShiftsOut,
    WindowOut,
)
from kanjian.station.state.db import SQLITE_MAX_INT

router = APIRouter()
STATIC_DIR = Path(__file__).resolve().parent / "static"
_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad one"},
    403: {"model": ErrorOut, "description": "the token's role is too weak"},
    422: {"model": ErrorOut, "description": "a bad window: no zone, empty, or over 31 days"},
}

Since = Annotated[
    datetime | None,
    Query(
        description="from (ISO 8601 with zone); moved back to its hour's start. "
        "Default: 24 h before until"
    ),
]
Until = Annotated[
    datetime | None,
    Query(
        description="to (ISO 8601 with zone); moved on to its hour's end. Default: the "
        "end of the current hour. At most 31 days after since"
    ),
]


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


_HTML: dict[int | str, dict[str, Any]] = {200: {"content": {"text/html": {}}}}


@router.get("/history", tags=["screen"], response_class=HTMLResponse, responses=_HTML)
def history_page() -> FileResponse:
    """The history page (HTML; it logs in like ``/``): every inspection, filtered by time,
    verdict, class and feedback, paged; one opened large with its overlay. Operators
    read; engineers also answer (feedback) and see feedback history, model and audit."""
    return _page("history.html")


@router.get("/shift", tags=["screen"], response_class=HTMLResponse, responses=_HTML)
def shift_page() -> FileResponse:
    """The shift view (HTML): yield per hour and per shift, defect Pareto, FAIL-rate
    p-chart, operator feedback against the model."""
    return _page("shift.html")


def _window(since: datetime | None, until: datetime | None) -> T.Window:
    try:
        return T.make_window(since, until)
    except T.WindowError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None


def _iso(w: T.Window, t: datetime) -> str:
    return w.local(t).isoformat(timespec="seconds")


def _window_out(w: T.Window) -> WindowOut:
    return WindowOut(
        since=_iso(w, w.since), until=_iso(w, w.until), hours=round((w.until - w.since) / T.HOUR)
    )


def _bucket(w: T.Window, start: datetime, end: datetime, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "start": _iso(w, start),
        "end": _iso(w, end),
        "counts": counts,
        "total": sum(counts.values()),
        "judged": sum(counts[v] for v in T.JUDGED),
        "yield_pct": T.yield_pct(counts),
    }


def _sum(rows: list[dict[str, int]]) -> dict[str, int]:
    return {v: sum(r[v] for r in rows) for v in T.VERDICTS}


@router.get("/api/trends/hourly", tags=["trends"], responses=_ERR)
def hourly(state: State, _: Reader, since: Since = None, until: Until = None) -> HourlyOut:
    """Verdict counts and yield per local hour of the window, and over all of it."""
    w = _window(since, until)
    hours = w.hours()
    with T.snapshot(state.pool.get()) as conn:
        counts = T.verdict_counts(conn, hours)
    return HourlyOut(
        window=_window_out(w),
        hours=[BucketOut(**_bucket(w, s, e, c)) for (s, e), c in zip(hours, counts, strict=True)],
        totals=BucketOut(**_bucket(w, w.since, w.until, _sum(counts))),
    )


@router.get("/api/trends/shifts", tags=["trends"], responses=_ERR)
def shifts(state: State, _: Reader, since: Since = None, until: Until = None) -> ShiftsOut:
    """Verdict counts and yield per shift (``api.shift_starts``, local times) overlapping
    the window; a shift the window cuts counts only its part inside (``partial``)."""
    w = _window(since, until)
    starts = state.cfg.shift_starts
    with T.snapshot(state.pool.get()) as conn:
        rows = T.shift_counts(conn, w, starts)
    return ShiftsOut(
        window=_window_out(w),
        shift_starts=starts,
        shifts=[
            ShiftOutRow(
                **_bucket(w, max(r.start, w.since), min(r.end, w.until), r.counts),
                label=r.label,
                shift_start=_iso(w, r.start),
                shift_end=_iso(w, r.end),
                partial=r.partial,
            )
            for r in rows
        ],
    )


@router.get("/api/trends/pareto", tags=["trends"], responses=_ERR)
def pareto(
    state: State,
    _: Reader,
    since: Since = None,
    until: Until = None,
    verdict: Annotated[
        list[VerdictName] | None, Query(description="verdicts counted (default FAIL and REVIEW)")
    ] = None,
) -> ParetoOut:
    """Defect classes, most frequent first, with their share and cumulative share."""
    w = _window(since, until)
    verdicts = tuple(sorted(set(verdict or T.DEFECT_VERDICTS)))
    db = state.pool.get()
    T.refresh_order(db)
    with T.snapshot(db) as conn:
        by_class = T.class_counts(conn, w, T.window_seqs(db, w), verdicts)
        parts = T.verdict_counts(conn, [(w.since, w.until)])[0]
    total = sum(sum(c.values()) for c in by_class.values())
    rows, running = [], 0
    for name, counts in sorted(by_class.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        n = sum(counts.values())
        running += n
        rows.append(
            ParetoRowOut(
                class_name=name,
                counts=counts,
                count=n,
                share_pct=round(100.0 * n / total, 2),
                cumulative_pct=round(100.0 * running / total, 2),
            )
        )
    return ParetoOut(
        window=_window_out(w),
        verdicts=list(verdicts),
        classes=rows,
        total=total,
        inspections=sum(parts[v] for v in verdicts),
    )


@router.get("/api/trends/pchart", tags=["trends"], responses=_ERR)
def pchart(state: State, _: Reader, since: Since = None, until: Until = None) -> PChartOut:
    """The FAIL rate per local hour with its centre line p̄ and 3-sigma control limits
    ``p̄ ± 3·sqrt(p̄(1−p̄)/n)`` per hour (clipped to [0, 1])."""
    w = _window(since, until)
    hours = w.hours()
    with T.snapshot(state.pool.get()) as conn:
        counts = T.verdict_counts(conn, hours)
    pbar, points = T.p_chart([(sum(c[v] for v in T.JUDGED), c["FAIL"]) for c in counts])
    return PChartOut(
        window=_window_out(w),
        p_bar=pbar,
        points=[
            PPointOut(
                start=_iso(w, s),
                end=_iso(w, e),
                n=p.n,
                fails=p.fails,
                p=p.p,
                lcl=p.lcl,
                ucl=p.ucl,
                out_of_control=p.out,
            )
            for (s, e), p in zip(hours, points, strict=True)
        ],
        out_of_control=sum(p.out for p in points),
    )


@router.get("/api/trends/feedback", tags=["trends"], responses=_ERR)
def feedback(state: State, _: Reader, since: Since = None, until: Until = None) -> FeedbackTrendOut:
    """Operator feedback against the model: false rejects, missed defects, confirmed,
    per class and in total (each inspection's latest answer, by when it was inspected)."""
    w = _window(since, until)
    db = state.pool.get()
    T.refresh_order(db)
    with T.snapshot(db) as conn:
        by_class = T.feedback_counts(conn, w, T.window_seqs(db, w))
        parts = T.verdict_counts(conn, [(w.since, w.until)])[0]
    totals: dict[str, int] = dict.fromkeys(T.CATEGORIES, 0)
    for c in by_class.values():
        for k, n in c.items():
            totals[k] += n
    classes = sorted(by_class.items(), key=lambda kv: (-sum(kv[1].values()), kv[0] or ""))
    return FeedbackTrendOut(
        window=_window_out(w),
        totals=FeedbackCountsOut(**totals),
        answered=sum(totals.values()),
        judged=sum(parts[v] for v in T.JUDGED),
        defects=sum(parts[v] for v in T.DEFECT_VERDICTS),
        classes=[
            FeedbackClassOut(class_name=name, counts=FeedbackCountsOut(**dict(c)))
            for name, c in classes
        ],
    )


@router.get("/api/trends/classes", tags=["trends"], responses=_ERR)
def classes(state: State, _: Reader) -> ClassListOut:
    """Every class name the store's inspections show (for the pages' class filter)."""
    with T.snapshot(state.pool.get()) as conn:
        return ClassListOut(classes=T.class_names(conn))


#: an inspection's audit rows, newest first: a range of the (target, id) index (047)
AUDIT_OF = (
    "SELECT id, at, actor, token_id, role, action, target, detail_json, remote_addr "
    "FROM audit WHERE target = ? AND id < ? ORDER BY id DESC LIMIT ?"
)


@router.get(
    "/api/inspections/{inspection_id}/audit",
    tags=["inspections"],
    responses={k: v for k, v in _ERR.items() if k != 422},
)
def inspection_audit(
    state: State,
    _: Engineer,
    inspection_id: uuid.UUID,
    before: Annotated[int | None, Query(ge=1, le=SQLITE_MAX_INT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """What was done to one inspection (feedback given, changed, undone), newest first.
    Engineer: it names who did it and from where."""
    rows = state.pool.get().execute(AUDIT_OF, [str(inspection_id), before or SQLITE_MAX_INT, limit])
    items = []
    for r in rows:
        rec = dict(zip([c[0] for c in rows.description], r, strict=True))
        rec["detail"] = json.loads(rec.pop("detail_json") or "{}")
        items.append(AuditOut(**rec))
    return AuditPage(items=items, next_before=items[-1].id if len(items) == limit else None)
