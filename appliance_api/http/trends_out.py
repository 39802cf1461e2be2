"""The ``/api/trends/*`` answers, built from what :mod:`kanjian.appliance_api.http.trends` read.

Pure functions (no database): each takes a window and its counts and gives the
pydantic model the route returns; the overview reuses them, so one answer and the
five separate ones agree.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from kanjian.appliance_api.http import trends as T
from kanjian.appliance_api.http.trends_models import (
    BucketOut,
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


def iso(w: T.Window, t: datetime) -> str:
    """``t`` as the station's local time, ISO 8601 with offset, whole seconds."""
    return w.local(t).isoformat(timespec="seconds")


def window_out(w: T.Window) -> WindowOut:
    return WindowOut(
        since=iso(w, w.since), until=iso(w, w.until), hours=round((w.until - w.since) / T.HOUR)
    )


def _bucket(w: T.Window, start: datetime, end: datetime, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "start": iso(w, start),
        "end": iso(w, end),
        "counts": counts,
        "total": sum(counts.values()),
        "judged": sum(counts[v] for v in T.JUDGED),
        "yield_pct": T.yield_pct(counts),
    }


def hourly_out(w: T.Window, wc: T.WindowCounts) -> HourlyOut:
    return HourlyOut(
        window=window_out(w),
        hours=[
            BucketOut(**_bucket(w, s, e, c)) for (s, e), c in zip(w.hours(), wc.hours, strict=True)
        ],
        totals=BucketOut(**_bucket(w, w.since, w.until, wc.totals)),
    )


def shifts_out(w: T.Window, wc: T.WindowCounts, starts: list[str]) -> ShiftsOut:
    return ShiftsOut(
        window=window_out(w),
        shift_starts=starts,
        shifts=[
            ShiftOutRow(
                **_bucket(w, max(r.start, w.since), min(r.end, w.until), r.counts),
                label=r.label,
                shift_start=iso(w, r.start),
                shift_end=iso(w, r.end),
                partial=r.partial,
            )
            for r in wc.shifts
        ],
    )


def pchart_out(w: T.Window, wc: T.WindowCounts) -> PChartOut:
    pbar, points = T.p_chart([(sum(c[v] for v in T.JUDGED), c["FAIL"]) for c in wc.hours])
    return PChartOut(
        window=window_out(w),
        p_bar=pbar,
        points=[
            PPointOut(
                start=iso(w, s),
                end=iso(w, e),
                n=p.n,
                fails=p.fails,
                p=p.p,
                lcl=p.lcl,
                ucl=p.ucl,
                out_of_control=p.out,
            )
            for (s, e), p in zip(w.hours(), points, strict=True)
        ],
        out_of_control=sum(p.out for p in points),
    )


def pareto_out(
    w: T.Window,
    by_class: dict[str, dict[str, int]],
    verdicts: tuple[str, ...],
    inspections: int,
) -> ParetoOut:
    """``by_class`` from :func:`trends.class_counts`; ``inspections``: rows of ``verdicts``."""
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
        window=window_out(w),
        verdicts=list(verdicts),
        classes=rows,
        total=total,
        inspections=inspections,
    )


def feedback_out(
    w: T.Window, by_class: dict[str | None, Counter[str]], defects: int
) -> FeedbackTrendOut:
    """``by_class`` from :func:`trends.feedback_counts`; ``defects``: FAIL + REVIEW rows."""
    totals: dict[str, int] = dict.fromkeys(T.CATEGORIES, 0)
    for c in by_class.values():
        for k, n in c.items():
            totals[k] += n
    classes = sorted(by_class.items(), key=lambda kv: (-sum(kv[1].values()), kv[0] or ""))
    return FeedbackTrendOut(
        window=window_out(w),
        totals=FeedbackCountsOut(**totals),
        answered=sum(totals.values()),
        defects=defects,
        classes=[
            FeedbackClassOut(class_name=name, counts=FeedbackCountsOut(**dict(c)))
            for name, c in classes
        ],
    )
