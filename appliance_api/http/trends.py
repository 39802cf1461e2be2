"""The shift view's numbers, read from the store: verdict counts per hour and per shift,
the defect Pareto, the FAIL rate's p-chart, and operator feedback against the model.

Every query reads an index range bounded by the asked time window (at most
:data:`MAX_DAYS`), never a table scan, so its cost follows the rows in the window,
not the length of the log (plans checked in ``tests/test_trends_plans.py``):

- verdict counts: one ``COUNT(*)`` per verdict and bucket over the covering index
  ``(verdict, captured_at)``;
- classes (the Pareto): the ``inspection_classes`` rows of one class and verdict
  in the window's seq range. The time window is turned into seq ranges with the
  bound on how far ``captured_at`` runs out of seq order
  (:mod:`kanjian.station.captured_order`): a *core* range whose rows all lie in
  the window (counted from the index alone) and two narrow *bands* at its ends
  whose rows are checked against the window one by one;
- feedback: the ``feedback_latest`` rows (few) in the window's seq range, each
  checked against the window.

All reads of one answer run in one read transaction, so its numbers agree with
each other even while the station writes.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import pairwise

import sqlite_utils

from kanjian.appliance_api.http.list_query import refreshed_order
from kanjian.appliance_api.http.shifts import shift_windows
from kanjian.inference.types import Verdict
from kanjian.station import captured_order
from kanjian.station.records import JUDGED_VERDICTS, utc_iso
from kanjian.station.state.db import SQLITE_MAX_INT

#: the longest window one answer covers (744 hourly buckets)
MAX_DAYS = 31
#: the window when none is asked: the last day, to the end of the current hour
DEFAULT_HOURS = 24
HOUR = timedelta(hours=1)
#: times outside these years are refused (a typo, or a fuzzer's year 1 or 9999)
FIRST_YEAR, LAST_YEAR = 1970, 9000
VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
JUDGED: tuple[str, ...] = tuple(v.value for v in JUDGED_VERDICTS)
DEFECT_VERDICTS: tuple[str, ...] = (Verdict.FAIL.value, Verdict.REVIEW.value)
#: classes listed at most (a class name is a model's; a store holds a few dozen)
MAX_CLASSES = 1000


class WindowError(ValueError):
    """A time window the trends cannot answer (the message says what to send instead)."""


@dataclass(frozen=True)
class Window:
    """A time window of whole local hours, ``[since, until)``.

    Attributes:
        since, until: tz-aware UTC instants (arithmetic on them is exact across a
            DST change, which it is not on times in a zone with rules).
        tz: the zone its hours are whole in and its times are shown in; ``None``:
            the system's local time.
    """

    since: datetime
    until: datetime
    tz: tzinfo | None = None

    @property
    def since_iso(self) -> str:
        return utc_iso(self.since)

    @property
    def until_iso(self) -> str:
        return utc_iso(self.until)

    def local(self, t: datetime) -> datetime:
        """``t`` in the window's zone (the offset in force at that instant)."""
        return t.astimezone(self.tz)

    def hours(self) -> list[tuple[datetime, datetime]]:
        """The window's hourly buckets ``(start, end)`` in UTC, oldest first (exactly
        one hour each)."""
        n = round((self.until - self.since) / HOUR)
        return [(self.since + k * HOUR, self.since + (k + 1) * HOUR) for k in range(n)]


def make_window(
    since: datetime | None,
    until: datetime | None,
    now: datetime | None = None,
    tz: tzinfo | None = None,
) -> Window:
    """The window asked for, widened to whole local hours.

    ``since`` is moved back to the start of its hour, ``until`` on to the end of
    its hour (an ``until`` already on the hour stays). Without ``until``: the end
    of the current hour; without ``since``: :data:`DEFAULT_HOURS` before ``until``.

    Args:
        since, until: tz-aware instants, or ``None``.
        now: the current time (default: now).
        tz: the zone whose hours are whole; ``None``: the system's local time.

    Raises:
        WindowError: a naive time, ``since >= until``, or more than :data:`MAX_DAYS` days.
    """
    for name, t in (("since", since), ("until", until)):
        if t is None:
            continue
        if t.tzinfo is None:
            raise WindowError(
                f"{name} {t.isoformat()} needs a timezone (e.g. Z or +08:00 at the end)"
            )
        if not FIRST_YEAR <= t.year <= LAST_YEAR:  # and the hour arithmetic stays in range
            raise WindowError(f"{name} {t.isoformat()} is not between {FIRST_YEAR} and {LAST_YEAR}")

    def hour_floor(t: datetime) -> datetime:
        # in local time (a zone half an hour off UTC has its hours there), then UTC
        return t.astimezone(tz).replace(minute=0, second=0, microsecond=0).astimezone(timezone.utc)

    end_at = until if until is not None else (now or datetime.now(timezone.utc))
    end = hour_floor(end_at)
    if end < end_at:
        end += HOUR
    start = hour_floor(since) if since is not None else end - DEFAULT_HOURS * HOUR
    w = Window(start, end, tz)
    if start >= end:
        raise WindowError(
            f"since ({w.local(start).isoformat()}) must be before until "
            f"({w.local(end).isoformat()}), both widened to whole hours"
        )
    if end - start > timedelta(days=MAX_DAYS):
        raise WindowError(
            f"the window from {w.local(start).isoformat()} to {w.local(end).isoformat()} "
            f"is longer than {MAX_DAYS} days: ask for {MAX_DAYS} days or fewer (page "
            "through longer periods a month at a time)"
        )
    return w


@contextmanager
def snapshot(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the same rows."""
    conn = db.conn
    conn.execute("BEGIN")  # deferred: the first read takes the WAL snapshot
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


# -- verdict counts --------------------------------------------------------------------

#: one verdict's rows in a time range: a range of the covering (verdict, captured_at) index
COUNT_VERDICT = (
    "SELECT COUNT(*) FROM inspections WHERE verdict = ? AND captured_at >= ? AND captured_at < ?"
)


def verdict_counts(
    conn: sqlite3.Connection,
    buckets: list[tuple[datetime, datetime]],
    verdicts: tuple[str, ...] = VERDICTS,
) -> list[dict[str, int]]:
    """Rows per verdict in each ``[start, end)`` bucket (every verdict asked a key, 0
    when none). Each verdict's count reads only that verdict's part of the index."""
    out = []
    for start, end in buckets:
        lo, hi = utc_iso(start), utc_iso(end)
        out.append(
            {v: int(conn.execute(COUNT_VERDICT, [v, lo, hi]).fetchone()[0]) for v in verdicts}
        )
    return out


def yield_pct(counts: dict[str, int]) -> float | None:
    """PASS as a percentage of judged parts (PASS + FAIL + REVIEW), 2 decimals; ``None``: none."""
    judged = sum(counts[v] for v in JUDGED)
    return None if judged == 0 else round(100.0 * counts[Verdict.PASS.value] / judged, 2)


@dataclass(frozen=True)
class ShiftCounts:
    """One shift's counts within the window.

    Attributes:
        label: the ``"HH:MM"`` it starts at. start, end: the whole shift (UTC).
        partial: the window cuts it: only its part inside the window is counted.
        counts: rows per verdict in ``[max(start, since), min(end, until))``.
    """

    label: str
    start: datetime
    end: datetime
    partial: bool
    counts: dict[str, int]


@dataclass(frozen=True)
class WindowCounts:
    """A window's verdict counts per hour, per shift and in total, from one pass.

    Attributes:
        hours: one per :meth:`Window.hours` bucket.
        shifts: the shifts overlapping the window, oldest first.
        totals: the whole window.
    """

    hours: list[dict[str, int]]
    shifts: list[ShiftCounts]
    totals: dict[str, int]


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for v, n in more.items():
        into[v] = into.get(v, 0) + n


def window_counts(conn: sqlite3.Connection, w: Window, starts: list[str]) -> WindowCounts:
    """Counts per hour, per shift (``api.shift_starts``) and in total, reading each of the
    window's index entries once: the window is cut at every hour and every shift start
    in it, each piece counted, and the pieces summed into hours and shifts (a shift
    starting at 06:30 splits its hour in two pieces)."""
    shifts = [
        (label, s.astimezone(timezone.utc), e.astimezone(timezone.utc))
        for label, s, e in shift_windows(w.since, w.until, starts, w.tz)
    ]
    hours = w.hours()
    edges = sorted(
        {w.since, *(e for _, e in hours), *(s for _, s, _ in shifts if w.since < s < w.until)}
    )
    pieces = list(pairwise(edges))
    counts = verdict_counts(conn, pieces)
    zero = dict.fromkeys(VERDICTS, 0)
    per_hour = [dict(zero) for _ in hours]
    per_shift = [dict(zero) for _ in shifts]
    totals = dict(zero)
    for (start, _), c in zip(pieces, counts, strict=True):
        _add(per_hour[(start - w.since) // HOUR], c)
        _add(per_shift[next(k for k, (_, a, b) in enumerate(shifts) if a <= start < b)], c)
        _add(totals, c)
    return WindowCounts(
        per_hour,
        [
            ShiftCounts(label, a, b, a < w.since or b > w.until, c)
            for (label, a, b), c in zip(shifts, per_shift, strict=True)
        ],
        totals,
    )


# -- p-chart ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PPoint:
    """One hour of the FAIL rate's p-chart.

    Attributes:
        n: judged parts (PASS + FAIL + REVIEW). fails: FAIL among them.
        p: ``fails / n`` (``None`` when ``n == 0``).
        lcl, ucl: ``p̄ ∓ 3·sqrt(p̄(1−p̄)/n)`` clipped to [0, 1] (``None`` when ``n == 0``).
        out: ``p`` above ``ucl`` or below ``lcl``.
    """

    n: int
    fails: int
    p: float | None
    lcl: float | None
    ucl: float | None
    out: bool


def p_chart(points: list[tuple[int, int]]) -> tuple[float | None, list[PPoint]]:
    """The p-chart of ``(n, fails)`` per subgroup: ``(p̄, points)``.

    ``p̄`` is all fails over all judged parts of the window (``None`` when none was
    judged); each subgroup's limits depend on its own ``n`` (wider for fewer parts).
    """
    total = sum(n for n, _ in points)
    if total == 0:
        return None, [PPoint(n, x, None, None, None, False) for n, x in points]
    pbar = sum(x for _, x in points) / total
    out = []
    for n, x in points:
        if n == 0:
            out.append(PPoint(0, x, None, None, None, False))
            continue
        half = 3.0 * math.sqrt(pbar * (1.0 - pbar) / n)
        lcl, ucl = max(0.0, pbar - half), min(1.0, pbar + half)
        p = x / n
        out.append(PPoint(n, x, p, lcl, ucl, p > ucl or p < lcl))
    return pbar, out


# -- the time window as seq ranges -----------------------------------------------------


@dataclass(frozen=True)
class SeqRanges:
    """Where a time window's rows lie in seq order.

    Every row in the window has ``lo < seq < hi``; every row with
    ``core_lo <= seq <= core_hi`` is in the window (``core`` is ``None`` when no
    seq range is sure to be). Rows between ``lo`` and ``hi`` outside the core are
    checked one by one.
    """

    lo: int
    hi: int
    core: tuple[int, int] | None = field(default=None)

    def bands(self) -> list[tuple[int, int]]:
        """The open seq ranges ``(a, b)`` (``a < seq < b``) whose rows need a time check."""
        if self.core is None:
            return [(self.lo, self.hi)]
        a, b = self.core
        return [(self.lo, a), (b, self.hi)]


_FIRST_AT_OR_AFTER = (
    "SELECT seq FROM inspections WHERE captured_at >= ? ORDER BY captured_at LIMIT 1"
)
_LAST_BEFORE = "SELECT seq FROM inspections WHERE captured_at < ? ORDER BY captured_at DESC LIMIT 1"


def seq_ranges(conn: sqlite3.Connection, since: str, until: str, disorder_s: float) -> SeqRanges:
    """The seq ranges of the window ``[since, until)`` (:func:`utc_iso` text).

    With ``D`` = ``disorder_s`` (how far back in time a newer row may lie): a row at
    ``t >= since + D`` has every newer row at ``t >= since``, and a row at
    ``t < until - D`` every older row at ``t < until``; so the seq range between
    those two rows is all inside the window. ``lo`` / ``hi`` are the same probes
    outside the window (as :func:`kanjian.appliance_api.http.list_query.seq_bounds`).
    Four probes of the ``captured_at`` index.
    """
    pad = timedelta(seconds=disorder_s)

    def shift(t: str, by: timedelta) -> str:
        return utc_iso(datetime.fromisoformat(t) + by)

    def probe(sql: str, t: str) -> int | None:
        row = conn.execute(sql, [t]).fetchone()
        return None if row is None else int(row[0])

    lo = probe(_LAST_BEFORE, shift(since, -pad))
    hi = probe(_FIRST_AT_OR_AFTER, shift(until, pad))
    core_lo = probe(_FIRST_AT_OR_AFTER, shift(since, pad))
    core_hi = probe(_LAST_BEFORE, shift(until, -pad))
    core = None
    if core_lo is not None and core_hi is not None and core_lo <= core_hi:
        core = (core_lo, core_hi)
    return SeqRanges(0 if lo is None else lo, SQLITE_MAX_INT if hi is None else hi, core)


def window_seqs(db: sqlite_utils.Database, w: Window) -> SeqRanges:
    """:func:`seq_ranges` of ``w``; call inside :func:`snapshot` (the bound covers every
    row it sees: it is carried over the rows committed since it was last stored)."""
    order = captured_order.extend(db.conn, captured_order.load(db.conn))
    return seq_ranges(db.conn, w.since_iso, w.until_iso, captured_order.bound_s(order))


def refresh_order(db: sqlite_utils.Database) -> None:
    """Store the time-disorder bound carried to the newest row (outside a transaction),
    so that :func:`window_seqs` only reads the rows committed after this."""
    refreshed_order(db)


# -- classes (Pareto) ------------------------------------------------------------------

_NEXT_CLASS = (
    "SELECT class_name FROM inspection_classes WHERE class_name > ? ORDER BY class_name LIMIT 1"
)
#: one class and verdict, rows sure to be in the window: the primary key's range alone
CLASS_CORE = (
    "SELECT COUNT(*) FROM inspection_classes WHERE class_name = ? AND verdict = ? "
    "AND seq >= ? AND seq <= ?"
)
#: one class and verdict in a band: each row's time read through the seq index
CLASS_BAND = (
    "SELECT COUNT(*) FROM inspection_classes c CROSS JOIN inspections i ON i.seq = +c.seq "
    "WHERE c.class_name = ? AND c.verdict = ? AND c.seq > ? AND c.seq < ? "
    "AND +i.captured_at >= ? AND +i.captured_at < ?"
)


def class_names(conn: sqlite3.Connection) -> list[str]:
    """Every class name the store's inspections show, sorted (one index probe each)."""
    out: list[str] = []
    last = ""
    while len(out) < MAX_CLASSES:
        row = conn.execute(_NEXT_CLASS, [last]).fetchone()
        if row is None:
            break
        last = str(row[0])
        out.append(last)
    return out


def class_counts(
    conn: sqlite3.Connection, w: Window, seqs: SeqRanges, verdicts: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    """Inspections in the window per class and verdict: ``{class: {verdict: n}}``, classes
    with at least one. An inspection counts once under each class it shows (its boxes'
    and its top class, as ``GET /api/inspections?class_name=`` filters)."""
    out: dict[str, dict[str, int]] = {}
    for name in class_names(conn):
        per: dict[str, int] = {}
        for v in verdicts:
            n = 0
            if seqs.core is not None:
                n += int(conn.execute(CLASS_CORE, [name, v, *seqs.core]).fetchone()[0])
            for a, b in seqs.bands():
                args = [name, v, a, b, w.since_iso, w.until_iso]
                n += int(conn.execute(CLASS_BAND, args).fetchone()[0])
            per[v] = n
        if any(per.values()):
            out[name] = per
    return out


# -- feedback against the model --------------------------------------------------------

#: each inspection's latest feedback in a seq range, grouped: few rows, each checked
FEEDBACK_ROWS = (
    "SELECT fl.kind, fl.verdict, f.class_name, i.top_class, COUNT(*) "
    "FROM feedback_latest fl "
    "CROSS JOIN inspections i ON i.seq = +fl.seq "
    "CROSS JOIN feedback f ON f.id = fl.feedback_id "
    "WHERE fl.seq > ? AND fl.seq < ? AND +i.captured_at >= ? AND +i.captured_at < ? "
    "GROUP BY 1, 2, 3, 4"
)

#: what an answer says about the model's verdict
CATEGORIES: tuple[str, ...] = (
    "false_reject",
    "missed",
    "confirmed",
    "wrong_class",
    "agreed_pass",
    "other",
)


def category(kind: str, verdict: str) -> str:
    """The comparison an operator's latest answer makes with the model's verdict.

    ``false_reject``: "not a defect" on FAIL / REVIEW; ``missed``: "defect" or "wrong
    class" on a PASS; ``confirmed``: "defect" on FAIL / REVIEW; ``wrong_class``: a
    defect, but another class, on FAIL / REVIEW; ``agreed_pass``: "not a defect" on
    a PASS; ``other``: any answer on ERROR / MISSED (no part was judged).
    """
    defect = verdict in DEFECT_VERDICTS
    if verdict == Verdict.PASS.value:
        return "agreed_pass" if kind == "not_defect" else "missed"
    if not defect:
        return "other"
    return {"not_defect": "false_reject", "confirm_defect": "confirmed"}.get(kind, "wrong_class")


def feedback_counts(
    conn: sqlite3.Connection, w: Window, seqs: SeqRanges
) -> dict[str | None, Counter[str]]:
    """Inspections in the window by the latest answer's category, per class:
    ``{class or None: Counter(category)}``.

    The class is the one the operator named (``wrong_class``), else the model's top
    class (on a PASS it was below the thresholds), else ``None``.
    """
    out: dict[str | None, Counter[str]] = {}
    args = [seqs.lo, seqs.hi, w.since_iso, w.until_iso]
    for kind, verdict, named, top, n in conn.execute(FEEDBACK_ROWS, args):
        cls = named if kind == "wrong_class" and named else top
        out.setdefault(cls, Counter())[category(str(kind), str(verdict))] += int(n)
    return out
