"""``benchmarks/store_gil.py``: every writer design stores the same rows, and the
benchmark refuses a design that stores different ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import store_gil
from benchmarks.store import make_inspections


def test_every_writer_design_commits_the_same_rows() -> None:
    got = store_gil.run(inspections=260, rounds=1)  # raises if two designs' rows differ
    assert set(got) == set(store_gil.CONTENDERS)
    assert all(len(v) == 1 and v[0] > 0 for v in got.values())


def test_a_design_that_stores_other_rows_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def one_short(inspections: list[Any], folder: Path) -> float:
        return store_gil._floor_multi(inspections[:-1], folder)  # drops the last one

    floor = store_gil.CONTENDERS["floor, executemany"]
    monkeypatch.setattr(store_gil, "CONTENDERS", {"floor": floor, "one short": one_short})
    with pytest.raises(RuntimeError, match="stored different rows"):
        store_gil.run(inspections=40, rounds=1)


def test_the_digest_ignores_the_writers_clock_only(tmp_path: Path) -> None:
    import sqlite3

    from kanjian.station.store import DB_NAME

    rows = make_inspections(12)
    store_gil._floor_multi(rows, tmp_path / "a")
    store_gil._floor_multi(rows, tmp_path / "b")
    a, b = tmp_path / "a" / DB_NAME, tmp_path / "b" / DB_NAME
    with sqlite3.connect(b) as conn:
        conn.execute("UPDATE inspections SET judged_at = '2000-01-01T00:00:00.000000+00:00'")
        conn.execute("UPDATE outbox SET created_at = '2000-01-01T00:00:00.000000+00:00'")
    assert store_gil.stored_digest(a) == store_gil.stored_digest(b)
    with sqlite3.connect(b) as conn:
        conn.execute("UPDATE inspections SET verdict = 'FAIL' WHERE seq = 7")
    assert store_gil.stored_digest(a) != store_gil.stored_digest(b)
