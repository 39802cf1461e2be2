"""Pydantic models of the history and shift pages' JSON answers (``/api/trends/*``).

Kept apart from ``api_models.py``, which holds the rest of the API's bodies. Times
are ISO 8601 in the station's local time, with their offset (``+08:00``); counts
are inspections (rows of the store).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

_COUNTS = "rows per verdict (PASS, FAIL, REVIEW, ERROR, MISSED; every one a key)"


class WindowOut(BaseModel):
    """The time window answered: the one asked for, widened to whole local hours."""

    since: str = Field(description="first instant counted (local time, ISO 8601 with offset)")
    until: str = Field(description="first instant no longer counted (local time)")
    hours: int = Field(description="whole hours in the window (at most 744, 31 days)")


class BucketOut(BaseModel):
    """Verdict counts of one stretch of time, ``[start, end)``."""

    start: str = Field(description="local time, ISO 8601 with offset")
    end: str
    counts: dict[str, int] = Field(description=_COUNTS)
    total: int = Field(description="all rows, every verdict")
    judged: int = Field(description="PASS + FAIL + REVIEW (ERROR and MISSED judged no part)")
    yield_pct: float | None = Field(
        description="PASS / judged × 100, two decimals; null when nothing was judged"
    )


class HourlyOut(BaseModel):
    """Verdict counts and yield per local hour."""

    window: WindowOut
    hours: list[BucketOut]
    totals: BucketOut = Field(description="the whole window")


class ShiftOutRow(BucketOut):
    """One shift (``api.shift_starts``): from one start time to the next."""

    label: str = Field(description="the HH:MM the shift starts at")
    shift_start: str = Field(description="the whole shift's start (local time)")
    shift_end: str = Field(description="the whole shift's end (local time)")
    partial: bool = Field(
        description="the window cuts this shift: only its part inside the window "
        "(start..end) is counted"
    )


class ShiftsOut(BaseModel):
    """Verdict counts and yield per shift; a shift that crosses midnight is one row."""

    window: WindowOut
    shift_starts: list[str] = Field(description="api.shift_starts, local HH:MM")
    shifts: list[ShiftOutRow]


class ParetoRowOut(BaseModel):
    class_name: str
    counts: dict[str, int] = Field(description="inspections showing the class, per verdict asked")
    count: int = Field(description="sum of counts")
    share_pct: float = Field(description="count / all classes' counts × 100")
    cumulative_pct: float = Field(description="share of this class and every class above it")


class ParetoOut(BaseModel):
    """Classes by how many inspections of the asked verdicts show them, most first.

    An inspection counts once under each class it shows (its boxes' and its top
    class, as the inspections list's ``class_name`` filter), so the counts may add
    up to more than ``inspections``.
    """

    window: WindowOut
    verdicts: list[str]
    classes: list[ParetoRowOut]
    total: int = Field(description="sum of every class's count")
    inspections: int = Field(description="inspections of the asked verdicts in the window")


class PPointOut(BaseModel):
    """One local hour of the p-chart."""

    start: str
    end: str
    n: int = Field(description="judged parts (PASS + FAIL + REVIEW)")
    fails: int = Field(description="FAIL among them")
    p: float | None = Field(description="fails / n; null when n = 0")
    lcl: float | None = Field(description="max(0, p̄ − 3·sqrt(p̄(1−p̄)/n)); null when n = 0")
    ucl: float | None = Field(description="min(1, p̄ + 3·sqrt(p̄(1−p̄)/n)); null when n = 0")
    out_of_control: bool = Field(description="p above ucl or below lcl")


class PChartOut(BaseModel):
    """The FAIL rate per hour as a p-chart (a control chart for a proportion)."""

    window: WindowOut
    p_bar: float | None = Field(
        description="centre line: all FAIL over all judged parts of the window; null when none"
    )
    points: list[PPointOut]
    out_of_control: int = Field(description="hours outside their limits")


class FeedbackCountsOut(BaseModel):
    """Inspections by what the operator's latest answer says about the model's verdict."""

    false_reject: int = Field(0, description="'not a defect' on a FAIL or REVIEW")
    missed: int = Field(0, description="'defect' or 'wrong class' on a PASS (a missed defect)")
    confirmed: int = Field(0, description="'defect' on a FAIL or REVIEW")
    wrong_class: int = Field(
        0, description="'wrong class' on a FAIL or REVIEW: a defect, other class"
    )
    agreed_pass: int = Field(0, description="'not a defect' on a PASS")
    other: int = Field(0, description="any answer on ERROR or MISSED (no part was judged)")


class FeedbackClassOut(BaseModel):
    class_name: str | None = Field(
        description="the class the operator named (wrong class), else the model's top class "
        "(on a PASS: below the thresholds), else null"
    )
    counts: FeedbackCountsOut


class FeedbackTrendOut(BaseModel):
    """Operator feedback against the model over the window (each inspection's latest answer,
    by when the part was inspected)."""

    window: WindowOut
    totals: FeedbackCountsOut
    answered: int = Field(description="inspections in the window with an answer")
    defects: int = Field(description="FAIL + REVIEW in the window")
    classes: list[FeedbackClassOut] = Field(description="per class, most answers first")


class ClassListOut(BaseModel):
    classes: list[str] = Field(description="every class name the store's inspections show, sorted")


class TrendsOut(BaseModel):
    """The whole shift view for one window (``GET /api/trends/overview``)."""

    hourly: HourlyOut
    shifts: ShiftsOut
    pareto: ParetoOut = Field(description="FAIL and REVIEW")
    pchart: PChartOut
    feedback: FeedbackTrendOut
