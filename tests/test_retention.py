"""store.retention on real SQLite files and real image folders: the size bound in verdict
order, the age bounds, what undelivered rows do, the archive, and the file's shrinking."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from kanjian.inference.types import Verdict
from kanjian.station import retention_ops as ops
from kanjian.station.datalock import DataLock
from kanjian.station.retention_config import StoreRetentionConfig
from kanjian.station.state.audit import Actor
from kanjian.station.state.db import ConnectionPool
from kanjian.station.store import DB_NAME
from tests.support.api import KANJIAN
from tests.support.retention import count, inspection, open_store, retention, rows, write
from tests.support.station_config import parse, station_config
from tests.support.sync import schema_validator

MB = 1024 * 1024


def _image_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "images").rglob("*.jpg"))


def test_size_bound_deletes_pass_then_review_then_fail_oldest_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    order = [Verdict.PASS, Verdict.FAIL, Verdict.REVIEW]
    write(store, [inspection(i, order[i % 3]) for i in range(30)])
    before = rows(data / DB_NAME)
    size = {s: (data / p).stat().st_size for s, (_, p, _) in before.items() if p}
    by = {v: [s for s, r in sorted(before.items()) if r[0] == v.value] for v in order}
    pass_bytes = sum(size[s] for s in by[Verdict.PASS])
    review_half = sum(size[s] for s in by[Verdict.REVIEW][:5])
    bound = _image_bytes(data) - pass_bytes - review_half
    with sqlite3.connect(data / DB_NAME) as c:  # the first PASS image waits for its upload
        c.execute("UPDATE outbox SET image_state = 'pending' WHERE seq = ?", [by[Verdict.PASS][0]])
    ret = retention(store, images={"max_total_mb": bound / MB}, rows={"max_age_days": 0})
    try:
        res = ret.run_pass()
    finally:
        ret.close()
        store.close()
    after = rows(data / DB_NAME)
    assert len(after) == 30  # rows stay: only images go
    assert _image_bytes(data) <= bound
    gone = {s for s, r in after.items() if r[1] is None}
    assert set(by[Verdict.PASS]) <= gone  # every PASS image before any REVIEW one
    assert not gone & set(by[Verdict.FAIL])  # FAIL kept longest
    review_gone = sorted(gone & set(by[Verdict.REVIEW]))
    assert review_gone == by[Verdict.REVIEW][: len(review_gone)]  # the oldest first
    assert 5 <= len(review_gone) <= 6
    assert all(after[s][2] is not None for s in gone)  # the row says it was deleted
    assert all(not (data / before[s][1]).exists() for s in gone if before[s][1])
    assert res.images_deleted == len(gone)
    q = f"SELECT image_state FROM outbox WHERE seq = {by[Verdict.PASS][0]}"
    assert [r[0] for r in sqlite3.connect(data / DB_NAME).execute(q)] == ["dropped"]
    assert res.image_bytes_freed == sum(size[s] for s in gone)


def test_image_age_bound(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    write(store, [inspection(i, Verdict.FAIL, days_ago=40 if i < 5 else 1) for i in range(10)])
    ret = retention(store, images={"max_age_days": 30, "max_total_mb": 0}, rows={"max_age_days": 0})
    try:
        assert ret.run_pass().images_deleted == 5
    finally:
        ret.close()
        store.close()
    after = rows(data / DB_NAME)
    assert [s for s, r in sorted(after.items()) if r[1] is None] == [1, 2, 3, 4, 5]


def _feedback(db: Path, seqs: list[int]) -> None:
    with sqlite3.connect(db) as c:
        for s in seqs:
            c.execute(
                "INSERT INTO feedback (inspection_id, kind, actor, created_at) "
                "SELECT id, 'not_defect', 't', '2026-01-01' FROM inspections WHERE seq = ?",
                [s],
            )


def test_rows_by_age_go_with_everything_keyed_by_them_sync_off(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / DB_NAME
    store = open_store(data)
    write(store, [inspection(i, Verdict.FAIL, days_ago=400 if i < 6 else 0) for i in range(10)])
    _feedback(db, [2, 8])
    ret = retention(store, rows={"max_age_days": 365})
    try:
        res = ret.run_pass()
    finally:
        ret.close()
        store.close()
    assert sorted(rows(db)) == [7, 8, 9, 10]
    assert res.rows_deleted == 6 and res.images_deleted == 6
    assert res.unsynced_deleted == 6  # sync off: never sent, counted
    assert len(list((data / "images").rglob("*.jpg"))) == 4
    for table, n in (("detections", 4), ("outbox", 4), ("feedback", 1), ("feedback_latest", 1)):
        assert count(db, f"SELECT COUNT(*) FROM {table}") == n, table
    assert count(db, "SELECT MIN(seq) FROM inspection_classes") == 7
    assert count(db, "SELECT COUNT(*) FROM sync_events") == 0  # no platform to tell


def test_undelivered_rows_are_held_then_dropped_and_reported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / DB_NAME
    store = open_store(data)
    write(store, [inspection(i, Verdict.PASS, days_ago=400 if i < 6 else 0) for i in range(8)])
    with sqlite3.connect(db) as c:  # the platform confirmed 1-3
        c.execute("UPDATE outbox SET confirmed_at = '2026-01-01' WHERE seq <= 3")
    ret = retention(store, sync_on=True, rows={"max_age_days": 365})
    pool = ConnectionPool(db)
    try:
        res = ret.run_pass()
        assert sorted(rows(db)) == [4, 5, 6, 7, 8]  # 4-6 are old but undelivered
        assert (res.rows_deleted, res.rows_held, res.undelivered_dropped) == (3, 3, 0)
        assert count(db, "SELECT COUNT(*) FROM sync_events") == 0
        ret.pool = pool
        new = {"min_free_mb": 0, "rows": {"max_age_days": 365, "delete_undelivered": True}}
        ret.set(StoreRetentionConfig.model_validate(new), Actor("test"))
        res = ret.run_pass()
    finally:
        ret.close()
        store.close()
        pool.close_all()
    assert sorted(rows(db)) == [7, 8]
    assert (res.rows_deleted, res.undelivered_dropped) == (3, 3)
    assert count(db, "SELECT value FROM sync_state WHERE key = 'dropped_messages'") == 3
    with sqlite3.connect(db) as c:
        ev = c.execute("SELECT event, payload_json FROM sync_events").fetchall()
    assert [e[0] for e in ev] == ["sync_dropped"]
    msg = json.loads(ev[0][1])
    assert msg["data"]["messages"] == 3 and msg["data"]["ranges"] == [[4, 6]]
    schema_validator("event").validate(msg)  # what the platform's receiver accepts


def test_archive_is_bounded_oldest_files_first(tmp_path: Path) -> None:
    arch = tmp_path / "archive"
    arch.mkdir()
    for i, first in enumerate((1, 101, 201, 301)):
        (arch / f"rows-{first:012d}-{first + 99:012d}.jsonl.gz").write_bytes(b"x" * (1000 + i))
    assert ops.bound_archive(arch, 2500) == 2
    assert sorted(p.name[5:17] for p in arch.iterdir()) == ["000000000201", "000000000301"]


def test_archive_holds_exactly_the_deleted_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    write(store, [inspection(i, Verdict.FAIL, days_ago=400 if i < 7 else 0) for i in range(9)])
    ids = {s: r for s, r in _ids(data / DB_NAME).items() if s <= 7}
    ret = retention(store, rows={"max_age_days": 365, "archive": True}, chunk_rows=10)
    try:
        assert ret.run_pass().rows_archived == 7
    finally:
        ret.close()
        store.close()
    files = sorted((data / "archive").glob("*.jsonl.gz"))
    got = [json.loads(x) for f in files for x in gzip.decompress(f.read_bytes()).splitlines()]
    assert {g["seq"]: g["id"] for g in got} == ids
    assert all(len(g["detections"]) == 1 and g["detections"][0]["class_name"] == "scratch"
               for g in got)  # fmt: skip
    assert sorted(rows(data / DB_NAME)) == [8, 9]


def _ids(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT seq, id FROM inspections"))


def test_the_database_file_shrinks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / DB_NAME
    store = open_store(data, save=())
    write(store, [inspection(i, Verdict.PASS, days_ago=400 if i < 3000 else 0, side=8)
                  for i in range(3200)])  # fmt: skip
    store.close()
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    big = db.stat().st_size
    store = open_store(data, save=())
    ret = retention(store, rows={"max_age_days": 365}, chunk_rows=500)
    try:
        assert ret.status().incremental_vacuum
        res = ret.run_pass()
        assert res.rows_deleted == 3000 and res.pages_vacuumed > 0
    finally:
        ret.close()
        store.close()
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.stat().st_size < big / 3


def test_a_small_older_database_is_made_shrinkable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / DB_NAME) as c:  # as a release before auto_vacuum made it
        c.execute("PRAGMA auto_vacuum=NONE")
        c.execute("CREATE TABLE early (x)")
    store = open_store(data)
    assert count(data / DB_NAME, "PRAGMA auto_vacuum") == 0
    ret = retention(store)
    try:
        assert ret.status().incremental_vacuum
    finally:
        ret.close()
        store.close()
    assert count(data / DB_NAME, "PRAGMA auto_vacuum") == 2


def test_kanjian_store_vacuum_makes_an_older_store_shrinkable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / DB_NAME) as c:  # as a release before auto_vacuum made it
        c.execute("PRAGMA auto_vacuum=NONE")
        c.execute("CREATE TABLE early (x)")
    open_store(data).close()
    cmd = [KANJIAN, "store", "vacuum", "--data-dir", str(data)]
    lock = DataLock.acquire(data)  # a station running on the folder: refused
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        lock.release()
    assert r.returncode == 2 and "stop the station first" in r.stderr, r.stderr
    assert count(data / DB_NAME, "PRAGMA auto_vacuum") == 0
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert count(data / DB_NAME, "PRAGMA auto_vacuum") == 2


def test_config_floor_must_be_above_the_stores_and_keys_are_checked(tmp_path: Path) -> None:
    cfg = station_config(tmp_path / "data", store={"retention": {"min_free_mb": 100}})
    with pytest.raises(Exception, match=r"store.retention.min_free_mb \(100\).*store.min_free_mb"):
        parse(cfg)
    cfg = station_config(tmp_path / "data", store={"retention": {"rows": {"max_age": 3}}})
    with pytest.raises(Exception, match="max_age"):
        parse(cfg)
    defaults = parse(station_config(tmp_path / "data", store={"retention": None})).store.retention
    assert defaults.min_free_mb == 2048 and defaults.images.max_total_mb == 10240
    assert defaults.rows.max_age_days == 90 and not defaults.rows.delete_undelivered
    assert defaults.images.full_order() == ["PASS", "REVIEW", "ERROR", "FAIL"]


def test_a_pass_carries_the_capture_disorder_forward(tmp_path: Path) -> None:
    # the API's time filters read captured_at's disorder up to the newest row; each
    # pass carries it forward so a time-filtered query after a quiet spell reads few rows
    from kanjian.station import captured_order

    data = tmp_path / "data"
    store = open_store(data)
    write(store, [inspection(i, Verdict.PASS) for i in range(12)])
    ret = retention(store, rows={"max_age_days": 0})
    try:
        with sqlite3.connect(data / DB_NAME) as c:
            before = captured_order.load(c)
            newest = c.execute("SELECT MAX(seq) FROM inspections").fetchone()[0]
        ret.run_pass()
        with sqlite3.connect(data / DB_NAME) as c:
            after = captured_order.load(c)
    finally:
        ret.close()
        store.close()
    assert before.up_to_seq < newest == 12
    assert after.up_to_seq == newest
    assert after.max_at is not None
