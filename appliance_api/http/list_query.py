"""The inspections list's query: ``GET /api/inspections``'s filters as one SQL page.

Each filter combination is driven by the index that reads the fewest rows (newest
first, by seq); time filters and the model become exact seq ranges first
(:func:`seq_bounds`, station/captured_order.py), so a page costs about its own rows
at any depth of the log (``benchmarks/store_scale.py``; plans checked in
``tests/test_query_plans.py``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from kanjian.station import captured_order
from kanjian.station.records import INSPECTION_COLUMNS, columns, utc_iso
from kanjian.station.state.db import write_tx


@dataclass(frozen=True)
class ListFilter:
    """The filters of ``GET /api/inspections`` (times as :func:`utc_iso` text)."""

    verdicts: tuple[str, ...] = ()
    class_name: str | None = None
    since: str | None = None
    until: str | None = None
    feedback: str | None = None  # any / none / a feedback kind
    model_sha256: str | None = None
    before: int | None = None
    #: the seq range (both ends exclusive) the time window and the model lie in, from
    #: :func:`seq_bounds`; every driver reads only that range of its index
    seq_lo: int | None = None
    seq_hi: int | None = None
    #: read the time window through the ``captured_at`` index and sort it (a narrow
    #: window far back), instead of walking seq down from the newest row to it
    by_time: bool = False


def _branch(f: ListFilter, verdict: str | None, limit: int) -> tuple[str, list[Any]]:
    """One verdict's (or no verdict's) page: driven by the index that reads the fewest rows.

    Every filter is either the driving table's index range, read newest first (seq
    DESC, so the page stops after ``limit`` matches), or a join on a primary key /
    unique index per driven row: no correlated subquery, no sort. CROSS JOIN fixes
    the join order (SQLite keeps it), so the plan does not depend on statistics the
    station never gathers. Drivers, in order of preference: the time window when
    ``f.by_time`` (its rows, then a sort); the latest feedback (few rows); the
    inspection's classes (by class, and verdict when one is asked); the verdict
    and / or the model; else every inspection by seq.
    """
    where: list[str] = []
    args: list[Any] = []
    joins: list[str] = []
    join_args: list[Any] = []  # the joins' ON placeholders come before WHERE's
    fb = f.feedback
    kind = fb not in (None, "none")
    # the driver: its index gives the rows newest first (by_time: the window's rows).
    # Joins say ``= +driver.seq``: a plain column equality would let SQLite carry the
    # driver's ``seq < before`` over to the joined table and range-scan it per row.
    drive = "i" if f.by_time else "fl" if kind else "c" if f.class_name is not None else "i"
    src = {"i": "inspections i", "fl": "feedback_latest fl", "c": "inspection_classes c"}[drive]
    if f.by_time:  # else SQLite walks seq, to save the sort
        src += " INDEXED BY idx_inspections_captured_at"
    if drive == "fl":
        if fb != "any":
            where.append("fl.kind = ?")
            args.append(fb)
        if verdict is not None:
            where.append("fl.verdict = ?")
            args.append(verdict)
    elif drive == "c":
        where.append("c.class_name = ?")
        args.append(f.class_name)
        if verdict is not None:
            where.append("c.verdict = ?")
            args.append(verdict)
    hi = min((b for b in (f.before, f.seq_hi) if b is not None), default=None)
    if hi is not None:
        where.append(f"{drive}.seq < ?")
        args.append(hi)
    if f.seq_lo is not None:
        where.append(f"{drive}.seq > ?")
        args.append(f.seq_lo)
    class_join = f"CROSS JOIN inspection_classes c ON c.class_name = ? AND c.seq = +{drive}.seq"
    if drive == "fl" and f.class_name is not None:
        # the class first: an index probe per feedback row, before its inspection is read
        joins.append(class_join)
        join_args.append(f.class_name)
    if drive != "i":
        joins.append(f"CROSS JOIN inspections i ON i.seq = +{drive}.seq")
    # unary + keeps a term off the indexes, so the one index meant drives
    plus = "+" if f.by_time or drive != "i" else ""
    if verdict is not None and drive == "i":
        where.append(f"{plus}i.verdict = ?")
        args.append(verdict)
    if f.model_sha256 is not None:
        where.append(f"{plus}i.model_sha256 = ?")
        args.append(f.model_sha256)
    if kind and drive != "fl":
        joins.append(
            "CROSS JOIN feedback_latest fl ON fl.seq = +i.seq"
            + (" AND fl.kind = ?" if fb != "any" else "")
        )
        join_args.extend([fb] if fb != "any" else [])
    if f.class_name is not None and drive == "i":
        # (class, seq) is unique: one row or none per driven row
        joins.append(class_join)
        join_args.append(f.class_name)
    tplus = "" if f.by_time else "+"
    if f.since is not None:
        where.append(f"{tplus}i.captured_at >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append(f"{tplus}i.captured_at < ?")
        args.append(f.until)
    if fb == "none":
        joins.append(f"LEFT JOIN feedback_latest fl ON fl.seq = +{drive}.seq")
        where.append("fl.seq IS NULL")
    sql = f"SELECT {columns(INSPECTION_COLUMNS, 'i')} FROM {src} " + " ".join(joins)
    if where:
        sql += " WHERE " + " AND ".join(where)
    # by_time: sorts the window's rows (the caller chose it for a narrow window)
    sql += f" ORDER BY {drive}.seq DESC LIMIT ?"
    return sql, [*join_args, *args, limit]


def list_query(f: ListFilter, limit: int) -> tuple[str, list[Any]]:
    """The SQL and arguments of one page of ``GET /api/inspections``, newest first.

    Rows are :data:`INSPECTION_COLUMNS`. Several verdicts: one branch per verdict
    (each read in seq order from its own index range, at most ``limit`` rows), then
    the newest ``limit`` of their union, so a page never sorts more than
    ``len(verdicts) * limit`` rows.
    """
    verdicts = sorted(set(f.verdicts))
    if len(verdicts) <= 1:
        return _branch(f, verdicts[0] if verdicts else None, limit)
    parts, args = [], []
    for v in verdicts:
        sql, a = _branch(f, v, limit)
        parts.append(f"SELECT * FROM ({sql})")
        args.extend(a)
    return " UNION ALL ".join(parts) + " ORDER BY seq DESC LIMIT ?", [*args, limit]


def narrow_window(db: sqlite_utils.Database, f: ListFilter, limit: int) -> bool:
    """Whether ``f``'s time window is better read by time (see :attr:`ListFilter.by_time`).

    A page read in seq order stops after ``limit`` matches, but walks every row of
    its index when matches are rare; a window read by time costs its own rows plus a
    sort. Two index probes find about where the window sits in seq order (times are
    nearly in seq order; the estimate only picks the plan, never the rows): read by
    time when the window holds at most :data:`WINDOW_ROWS` rows, or when walking
    the rows newer than it would cost more (:data:`SORT_COST`).
    """
    if f.since is None and f.until is None:
        return False

    def seq_at(t: str) -> int:
        row = db.execute(
            "SELECT seq FROM inspections WHERE captured_at >= ? ORDER BY captured_at LIMIT 1",
            [t],
        ).fetchone()
        return int(row[0]) if row else newest + 1

    newest = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM inspections").fetchone()[0])
    top = min(b for b in (f.before, f.seq_hi, newest + 1) if b is not None)
    end = newest + 1 if f.until is None else seq_at(f.until)
    window = end - (0 if f.since is None else seq_at(f.since))  # read whatever ``before``
    walk = top - min(end, top)  # rows newer than the window, below ``before``
    return window <= WINDOW_ROWS or window * SORT_COST < walk


def seq_bounds(db: sqlite_utils.Database, f: ListFilter) -> ListFilter:
    """``f`` with the seq range its time window and its model can lie in (exact bounds).

    Time: ``captured_at`` is nearly in seq order, and :mod:`captured_order` bounds how
    far it steps back, so one probe of the ``captured_at`` index each end gives a seq
    no match lies beyond (see there). Model: its first and last seq (two probes of
    ``inspections_model_seq``); a model active for a while is a seq range, so a page
    of a rare class under an old model skips the newer models' rows. The filters
    themselves still apply to every row: the bounds only narrow what is read.
    """
    lo: int | None = None
    hi: int | None = None
    if f.since is not None or f.until is not None:
        pad = timedelta(seconds=captured_order.bound_s(refreshed_order(db)))
        if f.until is not None:
            row = db.execute(
                "SELECT seq FROM inspections WHERE captured_at >= ? ORDER BY captured_at LIMIT 1",
                [utc_iso(datetime.fromisoformat(f.until) + pad)],
            ).fetchone()
            hi = None if row is None else int(row[0])
        if f.since is not None:
            row = db.execute(
                "SELECT seq FROM inspections WHERE captured_at < ? "
                "ORDER BY captured_at DESC LIMIT 1",
                [utc_iso(datetime.fromisoformat(f.since) - pad)],
            ).fetchone()
            lo = None if row is None else int(row[0])
    if f.model_sha256 is not None:
        q = "SELECT {}(seq) FROM inspections WHERE model_sha256 = ?"
        first = db.execute(q.format("MIN"), [f.model_sha256]).fetchone()[0]
        last = db.execute(q.format("MAX"), [f.model_sha256]).fetchone()[0]
        if first is None:  # no row: an empty range
            lo, hi = 0, 1
        else:
            lo = max(lo or 0, int(first) - 1)
            hi = int(last) + 1 if hi is None else min(hi, int(last) + 1)
    return replace(f, seq_lo=lo, seq_hi=hi)


#: new rows :func:`refreshed_order` reads before it stores how far it got
PERSIST_ROWS = 1_000


def refreshed_order(db: sqlite_utils.Database) -> captured_order.CapturedOrder:
    """The time disorder up to the newest row; stored again once it moved on enough.

    Public: the trends (:mod:`trends`) carry the same stored bound forward before
    their read transaction."""
    old = captured_order.load(db.conn)
    new = captured_order.extend(db.conn, old)
    if new.up_to_seq - old.up_to_seq >= PERSIST_ROWS or new.up_to_seq < old.up_to_seq:
        try:
            with write_tx(db):
                captured_order.save(db.conn, old, new)
        except sqlite3.OperationalError:  # busy or read-only: the next reader stores it
            pass
    return new


def plan_page(db: sqlite_utils.Database, f: ListFilter, limit: int) -> ListFilter:
    """``f`` ready for :func:`list_query`: its seq bounds, then whether to read by time."""
    f = seq_bounds(db, f)
    return replace(f, by_time=narrow_window(db, f, limit))


#: a time window of about this many rows or fewer is read by time and sorted
WINDOW_ROWS = 5_000
#: reading and sorting a window's row costs about this many seq-walk steps (measured)
SORT_COST = 10
