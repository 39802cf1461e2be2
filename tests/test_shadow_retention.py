"""Retention deletes a shadow model's results with their inspections, by seq, in the same
transaction (real store, real retention pass, rows written by the shadow's own writer)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kanjian.inference.types import Verdict
from kanjian.station import retention_ops as ops
from kanjian.station.shadow.protocol import ShadowResult
from kanjian.station.shadow.results import result_args, write_results
from kanjian.station.state.db import ConnectionPool, write_tx
from kanjian.station.store import DB_NAME
from tests.support.retention import inspection, open_store, retention, rows, write

SHAS = ("a" * 64, "b" * 64)


def _shadow_rows(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as c:
        q = "SELECT model_sha256, seq FROM shadow_results ORDER BY model_sha256, seq"
        return [(str(r[0]), int(r[1])) for r in c.execute(q)]


def _judge_all(db: Path) -> None:
    """A result of each of two shadow models for every inspection, through the writer."""
    pool = ConnectionPool(db)
    try:
        conn = pool.get()
        ids = [str(r[0]) for r in conn.execute("SELECT id FROM inspections ORDER BY seq")]
        args = []
        for sha in SHAS:
            for iid in ids:
                r = ShadowResult(iid, "PASS", "ok", None, None, None, (), None, 3.0)
                args.append(result_args(sha, r, "2026-01-01T00:00:00.000000+00:00"))
        with write_tx(conn):
            write_results(conn, args)
    finally:
        pool.close_all()


def test_a_retention_pass_deletes_the_shadow_rows_of_the_rows_it_deletes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / DB_NAME
    store = open_store(data)
    write(store, [inspection(i, Verdict.FAIL, days_ago=400 if i < 6 else 0) for i in range(10)])
    _judge_all(db)
    assert len(_shadow_rows(db)) == 20
    ret = retention(store, rows={"max_age_days": 365})
    try:
        res = ret.run_pass()
    finally:
        ret.close()
        store.close()
    kept = sorted(rows(db))
    assert res.rows_deleted == 6 and kept == [7, 8, 9, 10]
    assert _shadow_rows(db) == [(sha, s) for sha in SHAS for s in kept]


def test_the_shadow_rows_go_in_the_inspections_transaction(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / DB_NAME
    store = open_store(data)
    write(store, [inspection(i, Verdict.PASS) for i in range(6)])
    store.close()
    _judge_all(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # the inspections' own delete fails after the shadow rows' delete ran: nothing goes
        conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON inspections "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        old = ops.oldest_rows(conn, 0, 3)
        with pytest.raises(sqlite3.IntegrityError, match="refused by the test"):
            ops.delete_rows(conn, old)
        assert len(_shadow_rows(db)) == 12 and len(rows(db)) == 6
        conn.execute("DROP TRIGGER refuse")
        ops.delete_rows(conn, old)
    finally:
        conn.close()
    assert sorted(rows(db)) == [4, 5, 6]
    assert _shadow_rows(db) == [(sha, s) for sha in SHAS for s in (4, 5, 6)]
