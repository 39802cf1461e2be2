"""The fleet page API's answers (JSON), as pydantic models: they are its OpenAPI schema.

Times are UTC, ISO 8601. Counts follow the station's shift page (``counts`` per
verdict, ``judged`` = PASS + FAIL + REVIEW, ``yield_pct`` = PASS / judged × 100).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

_COUNTS = "rows per verdict: PASS, FAIL, REVIEW, ERROR, MISSED"


class ScopeOut(BaseModel):
    kind: Literal["cluster", "firm", "sites"]
    firm: str | None = Field(description="the firm (kind firm)")
    sites: list[str] = Field(description="the sites (kind sites)")


class WhoamiOut(BaseModel):
    """Who is asking (no token: ``authenticated`` false and nothing else)."""

    authenticated: bool
    name: str | None = None
    role: Literal["viewer", "engineer", "admin"] | None = None
    scope: ScopeOut | None = None


class WindowOut(BaseModel):
    """The window answered: the one asked for, widened to whole UTC hours."""

    since: datetime = Field(description="first hour counted (UTC)")
    until: datetime = Field(description="first hour no longer counted (UTC)")
    hours: int


class InspectionRef(BaseModel):
    inspection_id: str
    captured_at: datetime
    verdict: str


class ModelOut(BaseModel):
    name: str | None
    version: str | None


class CameraOut(BaseModel):
    """The camera as the station's latest camera event left it."""

    state: str = Field(
        description="connected (camera_back), what camera_lost said (e.g. reconnecting), "
        "or unknown: no camera event stored (a camera that never failed sends none)"
    )
    since: datetime | None = Field(description="the event's time")


class BacklogOut(BaseModel):
    """What the station last said about its sync backlog.

    Stations do not report their backlog continuously: they send ``sync_backlog_high``
    when it passes ``sync.backlog_high`` and ``sync_backlog_normal`` when it is back
    to half of that. Without either event the state is unknown.
    """

    state: Literal["high", "normal", "unknown"]
    entries: int | None = Field(description="unconfirmed entries at that event")
    oldest_age_s: float | None = Field(description="age of the oldest then, s")
    since: datetime | None


class StationOut(BaseModel):
    firm: str | None = Field(description="from the sites registry; null: not registered")
    site: str
    line: str
    station: str
    availability: Literal["online", "offline", "unknown"] = Field(
        description="the retained availability topic (offline is the station's last will)"
    )
    availability_at: datetime | None = Field(description="when the platform got it")
    last_confirmed_at: datetime | None = Field(
        description="when a receiver last stored (and so confirmed) inspections of it"
    )
    last_inspection: InspectionRef | None
    model: ModelOut | None = Field(description="of the latest inspection")
    camera: CameraOut
    backlog: BacklogOut


class CountsOut(BaseModel):
    """Counts of one group of ``station_hours`` rows (or of all of them)."""

    site: str | None = None
    line: str | None = None
    station: str | None = None
    hour: datetime | None = None
    counts: dict[str, int] = Field(description=_COUNTS)
    total: int
    judged: int = Field(description="PASS + FAIL + REVIEW")
    yield_pct: float | None = Field(description="PASS / judged × 100; null when none judged")


class YieldOut(BaseModel):
    window: WindowOut
    by: Literal["site", "line", "station", "hour"]
    rows: list[CountsOut]
    totals: CountsOut


class PPointOut(BaseModel):
    """One UTC hour of the FAIL rate's p-chart (the station's shift page's formula)."""

    hour: datetime
    n: int = Field(description="judged parts (PASS + FAIL + REVIEW)")
    fails: int
    p: float | None = Field(description="fails / n")
    lcl: float | None = Field(description="max(0, p̄ − 3·sqrt(p̄(1−p̄)/n))")
    ucl: float | None = Field(description="min(1, p̄ + 3·sqrt(p̄(1−p̄)/n))")
    out_of_control: bool


class FailRateOut(BaseModel):
    window: WindowOut
    p_bar: float | None = Field(description="all FAIL over all judged parts of the window")
    points: list[PPointOut] = Field(description="hours with rows only")
    out_of_control: int


class ParetoRowOut(BaseModel):
    class_name: str | None
    detections: int
    parts: int = Field(description="FAIL and REVIEW parts showing the class")
    share_pct: float = Field(description="detections / all detections × 100")
    cumulative_pct: float


class ParetoOut(BaseModel):
    window: WindowOut
    site: str
    line: str
    classes: list[ParetoRowOut]
    total: int = Field(description="all detections of FAIL and REVIEW parts")


class EventOut(BaseModel):
    event_id: str
    site: str
    line: str
    station: str
    event: str
    at: datetime
    data: dict[str, Any] | None


class PictureOut(BaseModel):
    inspection_id: str
    captured_at: datetime
    verdict: str
    top_class: str | None
    top_confidence: float | None
    model: ModelOut
    url: str | None = Field(description="a presigned GET link, or null (see refused)")
    refused: str | None = Field(description="why there is no link")
    expires_s: int = Field(description="how long the link works, s")
