"""Shifts: which shift a moment belongs to, from the configured local start times."""

from __future__ import annotations

from datetime import datetime, time, timedelta


def _starts_on(day: datetime, starts: list[str]) -> list[datetime]:
    out = []
    for s in starts:
        hh, mm = (int(x) for x in s.split(":"))
        out.append(datetime.combine(day.date(), time(hh, mm), tzinfo=day.tzinfo))
    return sorted(out)


def shift_bounds(now: datetime, starts: list[str]) -> tuple[datetime, datetime]:
    """``(start, end)`` of the shift containing ``now``.

    Args:
        now: tz-aware local time (the line's wall clock).
        starts: ``"HH:MM"`` local start times, e.g. ``["06:00", "14:00", "22:00"]``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be tz-aware")
    candidates = [
        *_starts_on(now - timedelta(days=1), starts),
        *_starts_on(now, starts),
        *_starts_on(now + timedelta(days=1), starts),
    ]
    start = max(c for c in candidates if c <= now)
    end = min(c for c in candidates if c > now)
    return start, end


def local_now() -> datetime:
    """The station's local wall-clock time, tz-aware."""
    return datetime.now().astimezone()
