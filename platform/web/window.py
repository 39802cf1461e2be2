"""The time window of the fleet page's questions: whole UTC hours, bounded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fastapi import HTTPException, status

#: the longest window a question may span (station_hours rows: stations × hours)
MAX_HOURS = 92 * 24
DEFAULT_HOURS = 24


@dataclass(frozen=True)
class Window:
    """``[since, until)``, both whole UTC hours."""

    since: datetime
    until: datetime

    @property
    def hours(self) -> int:
        return int((self.until - self.since).total_seconds() // 3600)


def _floor(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def window(since: datetime | None, until: datetime | None, now: datetime | None = None) -> Window:
    """The asked window widened to whole UTC hours; by default the last 24 hours (up to
    the end of the current hour). 422 for a time without an offset, an empty window or
    one longer than :data:`MAX_HOURS`."""
    for name, t in (("since", since), ("until", until)):
        if t is not None and t.tzinfo is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"{name} needs a UTC offset (e.g. 2026-05-04T08:00:00+08:00 or ...Z)",
            )
    end = until or (now or datetime.now(timezone.utc))
    u = _floor(end)
    if u < end:
        u += timedelta(hours=1)
    s = _floor(since) if since is not None else u - timedelta(hours=DEFAULT_HOURS)
    w = Window(s, u)
    if w.hours <= 0:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    if w.hours > MAX_HOURS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window spans {w.hours} hours; at most {MAX_HOURS} (92 days)",
        )
    return w
