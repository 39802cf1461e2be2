"""Time filters read as seq ranges stay exact when ``captured_at`` runs out of seq order.

The store is ``benchmarks/big_store.py``'s (times one a second, in seq order), then
disordered: some frames judged late (up to two hours back) and a stretch where the
clock stepped back a day. Each page :func:`plan_page` + :func:`list_query` gives
is checked against the filters' definition evaluated in Python over every row,
and the disorder bound against one computed in Python.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

from benchmarks.big_store import MODELS, build
from kanjian.appliance_api.http.list_query import (
    PERSIST_ROWS,
    ListFilter,
    list_query,
    plan_page,
    seq_bounds,
)
from kanjian.station import captured_order
from kanjian.station.records import utc_iso

ROWS = 6_000
LIMIT = 20
STEP_BACK = range(4_000, 4_300)  # seqs written while the clock was a day behind


def _disorder(path: Path) -> None:
    rng = random.Random(3)
    c = sqlite3.connect(str(path), isolation_level=None)
    c.execute("BEGIN")
    for seq, at in c.execute("SELECT seq, captured_at FROM inspections").fetchall():
        t = datetime.fromisoformat(at)
        if seq in STEP_BACK:
            t -= timedelta(days=1)
        elif rng.random() < 0.05:
            t -= timedelta(seconds=rng.uniform(0, 7200))
        c.execute("UPDATE inspections SET captured_at = ? WHERE seq = ?", [utc_iso(t), seq])
    c.execute("COMMIT")
    c.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite_utils.Database]:
    big = build(tmp_path_factory.mktemp("big") / "data", ROWS, seed=2)
    _disorder(big.path)
    conn = sqlite3.connect(str(big.path), isolation_level=None)
    yield sqlite_utils.Database(conn)
    conn.close()


def _times(db: sqlite_utils.Database) -> list[tuple[int, str]]:
    return [(int(s), str(t)) for s, t in db.execute("SELECT seq, captured_at FROM inspections")]


Row = tuple[int, str, str, str, str | None]  # seq, verdict, captured_at, model, feedback


def _rows(db: sqlite_utils.Database) -> list[Row]:
    """Every inspection newest first, with its latest feedback kind."""
    latest = dict(db.execute("SELECT inspection_id, kind FROM feedback ORDER BY id").fetchall())
    q = "SELECT id, seq, verdict, captured_at, model_sha256 FROM inspections ORDER BY seq DESC"
    return [(s, v, at, m, latest.get(iid)) for iid, s, v, at, m in db.execute(q)]


def _expected(rows: list[Row], f: ListFilter) -> list[int]:
    """The newest LIMIT seqs matching ``f``, by the filters' definitions (no class filter)."""
    out = []
    for seq, verdict, at, sha, kind in rows:
        if (
            (not f.verdicts or verdict in f.verdicts)
            and (f.since is None or at >= f.since)
            and (f.until is None or at < f.until)
            and (f.model_sha256 is None or sha == f.model_sha256)
            and (f.before is None or seq < f.before)
            and (f.feedback is None or (f.feedback == "any") == (kind is not None))
        ):
            out.append(seq)
            if len(out) == LIMIT:
                break
    return out


def test_the_bound_is_the_largest_step_back_and_extends_in_parts(
    db: sqlite_utils.Database,
) -> None:
    rows = sorted(_times(db))
    want, top = 0.0, ""
    for _, at in rows:
        if top and at < top:
            step = datetime.fromisoformat(top) - datetime.fromisoformat(at)
            want = max(want, step.total_seconds())
        top = max(top, at)
    assert want > 86_000  # the clock's step back
    empty = captured_order.CapturedOrder(0, None, 0.0)
    whole = captured_order.extend(db.conn, empty)
    assert whole.up_to_seq == ROWS and whole.max_at == top
    assert abs(whole.disorder_s - want) < captured_order.MARGIN_S
    # read in two parts (a reader carrying on where the stored row stopped): the
    # disorder below 3,000 is left out of ``half``, the day's step lies above it
    half = captured_order.CapturedOrder(3_000, max(at for s, at in rows if s <= 3_000), 0.0)
    part = captured_order.extend(db.conn, half)
    assert part.up_to_seq == ROWS and part.max_at == top
    assert abs(part.disorder_s - want) < captured_order.MARGIN_S
    assert captured_order.extend(db.conn, part) == part  # nothing new: nothing read


def test_time_pages_are_the_defined_rows_despite_the_disorder(db: sqlite_utils.Database) -> None:
    times = dict(_times(db))
    marks = [times[s] for s in (1, 500, 2_500, 3_990, 4_100, 4_290, 4_310, 5_000, ROWS)]
    day_back = utc_iso(datetime.fromisoformat(times[4_150]) - timedelta(minutes=1))
    windows = [(s, u) for s, u in itertools.product([None, *marks], repeat=2) if s or u]
    windows.append((day_back, None))
    rows, checked = _rows(db), 0
    for (since, until), v, m, fb, before in itertools.product(
        windows,
        ((), ("FAIL",), ("PASS", "REVIEW")),
        (None, MODELS[2][2]),
        (None, "any"),
        (None, 4_200),
    ):
        f = ListFilter(v, None, since, until, fb, m, before)
        planned = plan_page(db, f, LIMIT)
        sql, args = list_query(planned, LIMIT)
        got = [int(r[1]) for r in db.execute(sql, args)]
        assert got == _expected(rows, f), planned
        checked += 1
    assert checked > 1_000


def test_the_bound_is_stored_for_the_next_reader(db: sqlite_utils.Database) -> None:
    times = dict(_times(db))
    f = seq_bounds(db, ListFilter(since=times[1_000], until=times[1_100]))
    assert f.seq_lo is None or f.seq_lo < 1_000
    assert f.seq_hi is None or f.seq_hi > 1_100
    assert ROWS >= PERSIST_ROWS  # enough new rows to store how far it read
    order = captured_order.load(db.conn)
    assert order.up_to_seq == ROWS and order.disorder_s > 86_000


def test_a_model_is_read_as_its_seq_range(db: sqlite_utils.Database) -> None:
    for _, _, sha in MODELS:
        first, last = db.execute(
            "SELECT MIN(seq), MAX(seq) FROM inspections WHERE model_sha256 = ?", [sha]
        ).fetchone()
        f = seq_bounds(db, ListFilter(model_sha256=sha))
        assert (f.seq_lo, f.seq_hi) == (first - 1, last + 1)
    none = seq_bounds(db, ListFilter(model_sha256="0" * 64))
    sql, args = list_query(none, LIMIT)
    assert list(db.execute(sql, args)) == []
