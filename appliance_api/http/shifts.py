"""Shifts: which shift a moment belongs to, from the configured local start times."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
from itertools import pairwise


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


def _local(day: date, hhmm: str, tz: tzinfo | None) -> datetime:
    hh, mm = (int(x) for x in hhmm.split(":"))
    naive = datetime.combine(day, time(hh, mm))
    # no zone given: the system's rules for that very day (a DST change moves the offset)
    return naive.astimezone() if tz is None else naive.replace(tzinfo=tz)


def shift_windows(
    since: datetime, until: datetime, starts: list[str], tz: tzinfo | None = None
) -> list[tuple[str, datetime, datetime]]:
    """Every shift that overlaps ``[since, until)``: ``(start label, start, end)``, oldest first.

    A shift runs from one configured start to the next, across midnight where the
    next start is on the next day (``22:00`` to ``06:00``). Shifts are whole: the
    first may begin before ``since`` and the last end after ``until``.

    Args:
        since, until: tz-aware instants, ``since < until``.
        starts: ``"HH:MM"`` local start times (``api.shift_starts``).
        tz: the zone the start times are in; ``None``: the system's local time.

    Returns:
        ``(label, start, end)`` with ``label`` the ``"HH:MM"`` the shift starts at and
        ``start`` / ``end`` tz-aware in that zone.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be tz-aware")
    first, last = since.astimezone(tz).date(), until.astimezone(tz).date()
    edges: list[tuple[datetime, str]] = []
    day = first - timedelta(days=1)  # the night shift that began the day before
    while day <= last + timedelta(days=1):
        edges.extend((_local(day, s, tz), s) for s in starts)
        day += timedelta(days=1)
    # by the instant: two times in one zone with rules compare as wall-clock times
    edges.sort(key=lambda e: e[0].astimezone(timezone.utc))
    return [
        (label, start, end)
        for (start, label), (end, _) in pairwise(edges)
        if start < until and end > since
    ]
