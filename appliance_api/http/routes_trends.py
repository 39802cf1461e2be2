"""The history and shift pages (``/history``, ``/shift``) and their JSON: ``/api/trends/*``
(read) and an inspection's audit trail (engineer).

The history page lists inspections through ``GET /api/inspections`` and gives
feedback through ``POST /api/inspections/{id}/feedback``; what it needs beyond
those lives here. The numbers come from :mod:`kanjian.appliance_api.http.trends`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse, HTMLResponse

from kanjian.appliance_api.http import trends as T
from kanjian.appliance_api.http import trends_out as O
from kanjian.appliance_api.http.api_models import AuditOut, AuditPage, ErrorOut, VerdictName
from kanjian.appliance_api.http.deps import Engineer, Reader, State
from kanjian.appliance_api.http.trends_models import (
    ClassListOut,
    FeedbackTrendOut,
    HourlyOut,
    ParetoOut,
    PChartOut,
    ShiftsOut,
    TrendsOut,
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


def _defects(conn: sqlite3.Connection, w: T.Window) -> int:
    # FAIL and REVIEW only: their index ranges are a small part of the window's rows
    counts = T.verdict_counts(conn, [(w.since, w.until)], T.DEFECT_VERDICTS)[0]
    return sum(counts.values())


@router.get("/api/trends/hourly", tags=["trends"], responses=_ERR)
def hourly(state: State, _: Reader, since: Since = None, until: Until = None) -> HourlyOut:
    """Verdict counts and yield per local hour of the window, and over all of it."""
    w = _window(since, until)
    with T.snapshot(state.pool.get()) as conn:
        wc = T.window_counts(conn, w, state.cfg.shift_starts)
    return O.hourly_out(w, wc)


@router.get("/api/trends/shifts", tags=["trends"], responses=_ERR)
def shifts(state: State, _: Reader, since: Since = None, until: Until = None) -> ShiftsOut:
    """Verdict counts and yield per shift (``api.shift_starts``, local times) overlapping
    the window; a shift the window cuts counts only its part inside (``partial``)."""
    w = _window(since, until)
    with T.snapshot(state.pool.get()) as conn:
        wc = T.window_counts(conn, w, state.cfg.shift_starts)
    return O.shifts_out(w, wc, state.cfg.shift_starts)


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
        parts = T.verdict_counts(conn, [(w.since, w.until)], verdicts)[0]
    return O.pareto_out(w, by_class, verdicts, sum(parts.values()))


@router.get("/api/trends/pchart", tags=["trends"], responses=_ERR)
def pchart(state: State, _: Reader, since: Since = None, until: Until = None) -> PChartOut:
    """The FAIL rate per local hour with its centre line p̄ and 3-sigma control limits
    ``p̄ ± 3·sqrt(p̄(1−p̄)/n)`` per hour (clipped to [0, 1])."""
    w = _window(since, until)
    with T.snapshot(state.pool.get()) as conn:
        wc = T.window_counts(conn, w, state.cfg.shift_starts)
    return O.pchart_out(w, wc)


@router.get("/api/trends/feedback", tags=["trends"], responses=_ERR)
def feedback(state: State, _: Reader, since: Since = None, until: Until = None) -> FeedbackTrendOut:
    """Operator feedback against the model: false rejects, missed defects, confirmed,
    per class and in total (each inspection's latest answer, by when it was inspected)."""
    w = _window(since, until)
    db = state.pool.get()
    T.refresh_order(db)
    with T.snapshot(db) as conn:
        by_class = T.feedback_counts(conn, w, T.window_seqs(db, w))
        defects = _defects(conn, w)
    return O.feedback_out(w, by_class, defects)


@router.get("/api/trends/overview", tags=["trends"], responses=_ERR)
def overview(state: State, _: Reader, since: Since = None, until: Until = None) -> TrendsOut:
    """All of the shift view at once (what /shift loads): the five answers above for
    one window, from one read of the store (the window's rows are counted once)."""
    w = _window(since, until)
    starts = state.cfg.shift_starts
    db = state.pool.get()
    T.refresh_order(db)
    with T.snapshot(db) as conn:
        wc = T.window_counts(conn, w, starts)
        seqs = T.window_seqs(db, w)
        by_class = T.class_counts(conn, w, seqs, T.DEFECT_VERDICTS)
        answers = T.feedback_counts(conn, w, seqs)
    defects = sum(wc.totals[v] for v in T.DEFECT_VERDICTS)
    return TrendsOut(
        hourly=O.hourly_out(w, wc),
        shifts=O.shifts_out(w, wc, starts),
        pareto=O.pareto_out(w, by_class, T.DEFECT_VERDICTS, defects),
        pchart=O.pchart_out(w, wc),
        feedback=O.feedback_out(w, answers, defects),
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
