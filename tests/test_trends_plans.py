"""The shift view's queries on a big store: index ranges bounded by the window, no scan.

The store is built by ``benchmarks/big_store.py`` (real migrations, one inspection a
second, FAIL + scratches rare), then every 997th row is moved ten minutes back in time
(frames judged late), so the time windows' seq bands hold rows. Each query of
:mod:`kanjian.appliance_api.http.trends` is checked three ways: its plan
(``EXPLAIN QUERY PLAN``: the named index, no table scan, no correlated subquery),
its numbers against SQL written from the definitions, and its cost: the SQLite
virtual-machine steps a one-hour window takes are a small share of a whole-store
window's (a count, not a clock).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlite_utils

from benchmarks.big_store import build
from kanjian.appliance_api.http import routes_trends, trends
from kanjian.station.records import utc_iso

ROWS = 20_000
LATE_EVERY, LATE_BY = 997, timedelta(minutes=10)
UTC = timezone.utc


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite_utils.Database]:
    big = build(tmp_path_factory.mktemp("big") / "data", ROWS, seed=7)
    conn = sqlite3.connect(str(big.path), isolation_level=None)
    # late frames, before anything measured the store's time disorder
    for seq, at in conn.execute(
        "SELECT seq, captured_at FROM inspections WHERE seq % ? = 0", [LATE_EVERY]
    ).fetchall():
        late = utc_iso(datetime.fromisoformat(at) - LATE_BY)
        conn.execute("UPDATE inspections SET captured_at = ? WHERE seq = ?", [late, seq])
    yield sqlite_utils.Database(conn)
    conn.close()


def _plan(db: sqlite_utils.Database, sql: str) -> list[str]:
    args = [1] * sql.count("?")
    return [str(r[3]) for r in db.execute("EXPLAIN QUERY PLAN " + sql, args)]


PLANS = {
    trends.COUNT_VERDICT: [
        "SEARCH inspections USING COVERING INDEX idx_inspections_verdict_captured_at "
        "(verdict=? AND captured_at>? AND captured_at<?)"
    ],
    trends.CLASS_CORE: [
        "SEARCH inspection_classes USING PRIMARY KEY (class_name=? AND verdict=? AND seq>? AND seq<?)"
    ],
    trends.CLASS_BAND: [
        "SEARCH c USING PRIMARY KEY (class_name=? AND verdict=? AND seq>? AND seq<?)",
        "SEARCH i USING INDEX idx_inspections_seq (seq=?)",
    ],
    # the latest answers (few rows) in the window's seq range; the grouping sorts only them
    trends.FEEDBACK_ROWS: [
        "SEARCH fl USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
        "SEARCH i USING INDEX idx_inspections_seq (seq=?)",
        "SEARCH f USING INTEGER PRIMARY KEY (rowid=?)",
        "USE TEMP B-TREE FOR GROUP BY",
    ],
    trends._NEXT_CLASS: [
        "SEARCH inspection_classes USING COVERING INDEX inspection_classes_seq (class_name>?)"
    ],
    trends._FIRST_AT_OR_AFTER: [
        "SEARCH inspections USING INDEX idx_inspections_captured_at (captured_at>?)"
    ],
    trends._LAST_BEFORE: [
        "SEARCH inspections USING INDEX idx_inspections_captured_at (captured_at<?)"
    ],
    routes_trends.AUDIT_OF: ["SEARCH audit USING INDEX audit_target (target=? AND id<?)"],
}


def test_every_query_reads_an_index_range(db: sqlite_utils.Database) -> None:
    for sql, want in PLANS.items():
        got = _plan(db, sql)
        assert got == want, sql
        assert not any(s.startswith("SCAN") or "CORRELATED" in s for s in got), sql


def _window(db: sqlite_utils.Database, from_hour: int, hours: int) -> trends.Window:
    """``hours`` whole hours from the ``from_hour``-th hour of the store's first day."""
    (first,) = db.execute("SELECT MIN(captured_at) FROM inspections").fetchone()
    day = datetime.fromisoformat(first).replace(minute=0, second=0, microsecond=0)
    since = day + timedelta(hours=from_hour)
    return trends.make_window(since, since + timedelta(hours=hours), tz=UTC)


def _steps(db: sqlite_utils.Database, work: object) -> int:
    """SQLite VM instructions ``work()`` runs (counted in hundreds)."""
    n = 0

    def tick() -> int:
        nonlocal n
        n += 1
        return 0

    db.conn.set_progress_handler(tick, 100)
    try:
        work()  # type: ignore[operator]
    finally:
        db.conn.set_progress_handler(None, 100)
    return n


def _all(db: sqlite_utils.Database, w: trends.Window) -> object:
    trends.refresh_order(db)
    with trends.snapshot(db) as conn:
        seqs = trends.window_seqs(db, w)
        return (
            trends.verdict_counts(conn, w.hours()),
            trends.class_counts(conn, w, seqs, trends.DEFECT_VERDICTS),
            trends.feedback_counts(conn, w, seqs),
        )


def test_the_numbers_are_the_sql(db: sqlite_utils.Database) -> None:
    for first, hours in ((0, 6), (1, 1), (2, 3)):
        w = _window(db, first, hours)
        counts, classes, feedback = _all(db, w)  # type: ignore[misc]
        args = [w.since_iso, w.until_iso]
        for (start, end), got in zip(w.hours(), counts, strict=True):
            want = Counter(
                dict(
                    db.execute(
                        "SELECT verdict, COUNT(*) FROM inspections WHERE captured_at >= ? "
                        "AND captured_at < ? GROUP BY verdict",
                        [utc_iso(start), utc_iso(end)],
                    ).fetchall()
                )
            )
            assert got == {v: want[v] for v in trends.VERDICTS}
        want_cls: dict[str, dict[str, int]] = {}
        for cls, verdict, n in db.execute(
            "SELECT x.cls, i.verdict, COUNT(DISTINCT i.id) FROM inspections i JOIN ("
            "SELECT inspection_id AS id, class_name AS cls FROM detections UNION "
            "SELECT id, top_class FROM inspections WHERE top_class IS NOT NULL) x ON x.id = i.id "
            "WHERE i.captured_at >= ? AND i.captured_at < ? AND i.verdict IN ('FAIL', 'REVIEW') "
            "GROUP BY 1, 2",
            args,
        ):
            want_cls.setdefault(cls, {"FAIL": 0, "REVIEW": 0})[verdict] = n
        assert classes == want_cls
        answered = db.execute(
            "SELECT COUNT(DISTINCT f.inspection_id) FROM feedback f JOIN inspections i "
            "ON i.id = f.inspection_id WHERE i.captured_at >= ? AND i.captured_at < ?",
            args,
        ).fetchone()[0]
        assert sum(sum(c.values()) for c in feedback.values()) == answered


def test_the_late_rows_make_bands(db: sqlite_utils.Database) -> None:
    w = _window(db, 2, 1)
    with trends.snapshot(db):
        seqs = trends.window_seqs(db, w)
    assert seqs.core is not None
    # ten minutes of disorder: each band is about 600 rows (two times ten minutes)
    assert all(b - a > 600 for a, b in seqs.bands())
    # one row a second: the core is the window's rows less ten minutes at each end
    window_rows = (w.until - w.since).total_seconds()
    assert seqs.core[1] - seqs.core[0] == pytest.approx(window_rows - 1_200, abs=5)


def test_the_cost_follows_the_window(db: sqlite_utils.Database) -> None:
    (first, last) = db.execute(
        "SELECT MIN(captured_at), MAX(captured_at) FROM inspections"
    ).fetchone()
    whole = trends.make_window(datetime.fromisoformat(first), datetime.fromisoformat(last), tz=UTC)
    small = _window(db, 2, 1)
    _all(db, whole)  # the time-disorder bound is stored: both measured runs start alike
    big_steps, small_steps = (
        _steps(db, lambda: _all(db, whole)),
        _steps(db, lambda: _all(db, small)),
    )
    # 1 h of ~5.6 h of rows, plus its two bands of 20 min read row by row
    print(f"VM steps x100: 1 h window {small_steps}, whole store {big_steps}")
    assert small_steps < big_steps * 0.4, (small_steps, big_steps)
