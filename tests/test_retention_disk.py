"""store.retention against a real small disk (tmpfs, or a loop ext4) and a busy writer:
the free-space floor is restored in verdict order, then from the oldest rows; retention
running while the store writes loses nothing it should keep."""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kanjian.inference.types import Verdict
from kanjian.station.retention import Retention
from kanjian.station.retention_config import StoreRetentionConfig
from kanjian.station.store import DB_NAME
from kanjian.station.store_health import free_bytes
from tests.support.retention import inspection, open_store, retention, rows, write
from tests.support.small_disk import small_disk

MB = 1024 * 1024


def _fill_to(disk: Path, free_left: int) -> Path:
    """A filler file that leaves about ``free_left`` bytes free (less if the disk is fuller)."""
    filler = disk / "filler.bin"
    n = max(free_bytes(disk) - free_left, 0)
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * n)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def test_free_floor_deletes_images_in_order_then_rows(tmp_path: Path) -> None:
    with small_disk(tmp_path, 24) as disk:
        data = disk / "data"
        store = open_store(data)
        verdicts = [Verdict.FAIL, Verdict.PASS]
        write(store, [inspection(i, verdicts[i % 2], side=160) for i in range(40)])
        before = rows(data / DB_NAME)
        pass_seqs = sorted(s for s, r in before.items() if r[0] == "PASS")
        with sqlite3.connect(data / DB_NAME) as c:  # the WAL's pages in the file, as in a long run
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _fill_to(disk, 1 * MB)
        floor_mb = (free_bytes(disk) + 256 * 1024) / MB  # a quarter MB short: some PASS go
        ret = retention(store, min_free_mb=floor_mb, rows={"max_age_days": 0})
        try:
            res = ret.run_pass()
            assert free_bytes(disk) >= floor_mb * MB
            after = rows(data / DB_NAME)
            gone = sorted(s for s, r in after.items() if r[1] is None)
            assert gone and gone == pass_seqs[: len(gone)] and len(gone) < len(pass_seqs)
            assert len(after) == 40 and res.rows_deleted == 0
            # a floor that images alone cannot meet: every image goes, but no row of the
            # last rows.floor_keeps_hours (default 24 h; these were all captured now)
            high = (free_bytes(disk) + 4 * MB) / MB
            ret_keep = retention(store, min_free_mb=high, rows={"max_age_days": 0}, chunk_rows=10)
            try:
                res_keep = ret_keep.run_pass()
            finally:
                ret_keep.close()
            kept = rows(data / DB_NAME)
            assert all(r[1] is None for r in kept.values()) and res_keep.images_deleted > 0
            assert len(kept) == 40 and res_keep.rows_deleted == 0
            # ... and with no keep window, then the oldest rows go
            ret2 = retention(store, min_free_mb=high, chunk_rows=10,
                             rows={"max_age_days": 0, "floor_keeps_hours": 0})  # fmt: skip
            try:
                res2 = ret2.run_pass()
            finally:
                ret2.close()
            left = rows(data / DB_NAME)
            assert all(r[1] is None for r in left.values())
            assert res2.rows_deleted > 0 and sorted(left) == list(range(41 - len(left), 41))
        finally:
            ret.close()
            store.close()


def _wait(cond: Callable[[], bool], what: str, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_retention_while_the_writer_writes_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data, save=("FAIL",))
    cfg = StoreRetentionConfig.model_validate(
        {"min_free_mb": 0, "interval_s": 1, "chunk_rows": 50, "rows": {"max_age_days": 30}}
    )
    ret = Retention(store.data_dir, store.db_path, cfg, sync_on=False)
    old, new = range(0, 1000), range(1000, 2000)
    stop = threading.Event()

    def kick() -> None:  # passes back to back while the writer works
        while not stop.is_set():
            ret.kick()
            time.sleep(0.01)

    kicker = threading.Thread(target=kick)
    try:
        ret.start()
        kicker.start()
        for i in range(2000):  # the old rows first: they take seqs 1-1000
            store.put(inspection(i, Verdict.FAIL, days_ago=60 if i in old else 0, side=16))
        assert store.flush(120.0)
        _wait(lambda: min(rows(data / DB_NAME)) > len(old), "the old rows to go")
    finally:
        stop.set()
        if kicker.is_alive():
            kicker.join()
        ret.close()
        store.close()
    assert sorted(rows(data / DB_NAME)) == [i + 1 for i in new]
    assert ret.totals.rows_deleted == len(old) and ret.errors == 0
    with sqlite3.connect(data / DB_NAME) as c:
        assert c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == len(new)
