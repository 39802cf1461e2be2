"""The status counters and the start-up's reads cost what they count, not the log's length.

Checked by their plans (``EXPLAIN QUERY PLAN``: an index range, no table scan) on
a store built by ``benchmarks/big_store.py``, and by their values.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlite_utils

from benchmarks.big_store import build
from kanjian.appliance_api.http.live import ShiftCounter
from kanjian.station import captured_order

ROWS = 3_000


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite_utils.Database]:
    big = build(tmp_path_factory.mktemp("big") / "data", ROWS, seed=4)
    conn = sqlite3.connect(str(big.path), isolation_level=None)
    yield sqlite_utils.Database(conn)
    conn.close()


def _plan(db: sqlite_utils.Database, sql: str, args: object = ()) -> list[str]:
    return [str(r[3]) for r in db.execute("EXPLAIN QUERY PLAN " + sql, args)]


def test_the_shift_counts_are_index_ranges_and_right(db: sqlite_utils.Database) -> None:
    (last,) = db.execute("SELECT MAX(captured_at) FROM inspections").fetchone()
    shift = ShiftCounter(["06:00"])
    shift.start = datetime.fromisoformat(last) - timedelta(minutes=20)
    shift.load(db)
    since = shift.start.isoformat(timespec="microseconds")
    want = Counter(
        v for (v,) in db.execute("SELECT verdict FROM inspections WHERE captured_at >= ?", [since])
    )
    assert shift.counts == want and sum(want.values()) > 1_000
    plan = _plan(
        db,
        "SELECT COUNT(*) FROM inspections WHERE verdict = ? AND captured_at >= ?",
        ["PASS", since],
    )
    assert plan == [
        "SEARCH inspections USING COVERING INDEX idx_inspections_verdict_captured_at "
        "(verdict=? AND captured_at>?)"
    ]


def test_the_start_up_reads_are_index_probes(db: sqlite_utils.Database) -> None:
    # the store's newest seq (ResultStore start) and the outbox backlog (/api/status)
    assert _plan(db, "SELECT COALESCE(MAX(seq), 0) FROM inspections") == [
        "SEARCH inspections USING COVERING INDEX idx_inspections_seq"
    ]
    backlog = _plan(db, "SELECT COUNT(*) FROM outbox WHERE confirmed_at IS NULL")
    assert len(backlog) == 1 and "USING COVERING INDEX" in backlog[0], backlog
    # the time bound carried over new rows reads those rows only, in seq order
    extend = _plan(db, captured_order._EXTEND, {"prev": "", "up": ROWS - 10})
    assert any("SEARCH inspections USING INDEX idx_inspections_seq (seq>?)" in s for s in extend), (
        extend
    )
    assert not any(s.startswith("SCAN inspections") for s in extend), extend
