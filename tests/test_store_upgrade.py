"""Upgrades: a store an older release wrote opens, migrates and loses nothing; a store a
newer release wrote is refused, naming both versions, before anything is written.

The old store is tests/fixtures/store-45b7e25/, written by release 45b7e25's own code
(tests/fixtures/make_release_store.py); each test works on a copy.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kanjian.camera.frame import Frame
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.records import load_inspection
from kanjian.station.schema import MIGRATIONS, StoreTooNewError, kanjian_version
from kanjian.station.store import DB_NAME, ResultStore
from tests.support import api as S
from tests.support.station_config import station_config, write_config

FIXTURE = Path(__file__).parent / "fixtures" / "store-45b7e25"
#: the migrations release 45b7e25 had applied
OLD_MIGRATIONS = [
    "001_inspections",
    "010_api_tokens",
    "011_audit",
    "012_feedback",
    "013_model_registry",
    "014_settings",
    "030_sync",
]
CLASSES = "crazing,inclusion,patches,pitted_surface,rolled-in_scale,scratches"


def _snapshot(db: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table of ``db``: its columns and all its rows (in rowid order)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {}
        for t in tables:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
            quoted = ", ".join(f'"{c}"' for c in cols)
            rows = con.execute(f'SELECT {quoted} FROM "{t}" ORDER BY rowid').fetchall()
            out[t] = (cols, rows)
        return out
    finally:
        con.close()


def _rows(db: Path, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        quoted = ", ".join(f'"{c}"' for c in cols)
        return con.execute(f'SELECT {quoted} FROM "{table}" ORDER BY rowid').fetchall()
    finally:
        con.close()


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the release's data folder (kanjian.db, images/)."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("README.md"))
    return data


def test_fixture_is_what_the_release_left(old_store: Path) -> None:
    # guards the fixture itself: checkpointed, an old schema, no version stamp, a mix of rows
    assert not list(FIXTURE.glob(f"{DB_NAME}-*"))
    snap = _snapshot(old_store / DB_NAME)
    assert [r[0] for r in snap["_migrations"][1]] == OLD_MIGRATIONS
    assert "store_meta" not in snap and "counters" not in snap
    assert len(snap["inspections"][1]) == 20 and len(snap["detections"][1]) > 0
    for table in ("feedback", "api_tokens", "audit", "settings", "models", "sync_events"):
        assert snap[table][1], table


def test_old_store_migrates_and_loses_nothing(old_store: Path, tmp_path: Path) -> None:
    db = old_store / DB_NAME
    before = _snapshot(db)
    images = sorted(p.relative_to(old_store) for p in old_store.glob("images/*/*.jpg"))
    image_bytes = {p: (old_store / p).read_bytes() for p in images}
    assert len(images) == 3

    store = ResultStore(old_store, station_id="line-1")
    try:
        # every row of every old table, column by column for the columns it had
        for table, (cols, rows) in before.items():
            now = _rows(db, table, cols)
            if table in ("_migrations", "sqlite_sequence"):  # the new ones come after
                now = now[: len(rows)]
            assert now == rows, table
        con = store.db.conn
        names = [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY rowid")]
        assert names == [name for name, _ in MIGRATIONS]
        meta = dict(con.execute("SELECT key, value FROM store_meta").fetchall())
        assert meta["version"] == kanjian_version()
        assert meta["schema"] == MIGRATIONS[-1][0]

        # the read model reads the old rows (detections, image path) as the API shows them
        paths = con.execute(
            "SELECT id, image_path FROM inspections WHERE image_path IS NOT NULL"
        ).fetchall()
        assert sorted(Path(p) for _, p in paths) == images
        for iid, rel in paths:
            rec = load_inspection(con, iid)
            assert rec is not None and rec.image_path == rel
            n = con.execute(
                "SELECT COUNT(*) FROM detections WHERE inspection_id = ?", [iid]
            ).fetchone()[0]
            assert len(rec.detections) == n
        for p, data in image_bytes.items():
            assert (old_store / p).read_bytes() == data

        # a new inspection goes on from the old sequence, into the same outbox stream
        stream = con.execute("SELECT value FROM sync_state WHERE key = 'stream_id'").fetchone()
        at = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
        frame = Frame(np.zeros((32, 32, 3), np.uint8), 99, "cam0", at, "plc-99")
        insp = Inspection(
            frame=frame,
            verdict=Verdict.FAIL,
            model=ModelRef("neu-det-yolo", "3", "ab" * 32),
            detections=Detections(
                xyxy=np.array([[1, 2, 10, 12]], np.float32),
                confidence=np.array([0.8], np.float32),
                class_id=np.array([2], np.int32),
            ),
            class_names=tuple(CLASSES.split(",")),
            inspection_id=uuid.uuid4(),
        )
        store.put(insp)
        assert store.flush(60.0)
        row = con.execute(
            "SELECT seq, image_path FROM inspections WHERE id = ?", [str(insp.inspection_id)]
        ).fetchone()
        assert row[0] == 21 and (old_store / row[1]).is_file()
        assert con.execute("SELECT MAX(seq) FROM outbox").fetchone()[0] == 21
        after = con.execute("SELECT value FROM sync_state WHERE key = 'stream_id'").fetchone()
        assert after == stream
    finally:
        store.close()

    # reopening does not stamp again (stamped_at unchanged): the stamp is already there
    stamped = _rows(db, "store_meta", ["key", "value"])
    ResultStore(old_store).close()
    assert _rows(db, "store_meta", ["key", "value"]) == stamped

    # and the migrated store exports as a training set, old frames and new one
    out = S.kanjian(
        "dataset", "export", str(old_store), str(tmp_path / "ds"), "--classes", CLASSES, "--json"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    assert sum(summary["images"].values()) == 4, summary


def test_feedback_ids_are_never_handed_out_again(old_store: Path) -> None:
    # migration 048: an undone answer's id (its row deleted, named in the audit) is not
    # given to the next answer, whether undone before the upgrade or after it
    db = old_store / DB_NAME
    con = sqlite3.connect(db)
    try:
        with con:
            old_top = con.execute("SELECT MAX(id) FROM feedback").fetchone()[0]
            undone = old_top + 5  # an answer undone (its row deleted) before the upgrade
            con.execute(
                "INSERT INTO audit (at, actor, action, target, detail_json) "
                "VALUES ('2026-01-01T00:00:00Z', 'op', 'feedback.undo', 'x', ?)",
                [json.dumps({"undone": {"id": undone}, "standing": None})],
            )
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    store = ResultStore(old_store, station_id="line-1")
    try:
        con = store.db.conn
        target = con.execute("SELECT inspection_id FROM feedback LIMIT 1").fetchone()[0]
        add = (
            "INSERT INTO feedback (inspection_id, kind, actor, created_at) "
            "VALUES (?, 'not_defect', 'op', '2026-01-01T00:00:01Z')"
        )
        with con:
            first = con.execute(add, [target]).lastrowid
        assert first == undone + 1
        with con:  # undo it (the API deletes the row), then answer again
            con.execute("DELETE FROM feedback WHERE id = ?", [first])
            second = con.execute(add, [target]).lastrowid
        assert second == first + 1
        # the rebuilt table keeps feedback_latest up to date (043's trigger is back)
        latest = con.execute(
            "SELECT fl.feedback_id FROM feedback_latest fl JOIN inspections i ON i.seq = fl.seq "
            "WHERE i.id = ?",
            [target],
        ).fetchone()
        assert latest == (second,)
    finally:
        store.close()


def _make_newer(data: Path, version: str = "9.9.0") -> None:
    """What a newer release leaves: a migration this code lacks, and its version stamp."""
    con = sqlite3.connect(data / DB_NAME)
    try:
        with con:
            con.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES ('999_future', '2027-01-01')"
            )
            con.execute("UPDATE store_meta SET value = ? WHERE key = 'version'", [version])
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def test_store_from_a_newer_release_is_refused(
    old_store: Path, tmp_path: Path, detect_model: Any
) -> None:
    ResultStore(old_store).close()  # migrated and stamped by this code
    _make_newer(old_store)
    db = old_store / DB_NAME
    before = db.read_bytes()
    files = sorted(p.relative_to(old_store) for p in old_store.rglob("*"))

    with pytest.raises(StoreTooNewError) as e:
        ResultStore(old_store)
    msg = str(e.value)
    assert "9.9.0" in msg and kanjian_version() in msg and str(db) in msg, msg
    assert "999_future" in msg and "\n" not in msg
    assert e.value.store_version == "9.9.0" and e.value.unknown == ["999_future"]

    config = write_config(
        tmp_path / "station.yaml",
        station_config(
            old_store, bundle=detect_model.onnx, images=S.copy_images(tmp_path / "images", 2)
        ),
    )
    r = S.kanjian("run", "-c", str(config), "--frames", "1")
    err = r.stdout + r.stderr
    assert r.returncode == 2, err
    lines = [ln for ln in r.stderr.splitlines() if "9.9.0" in ln]
    assert len(lines) == 1 and kanjian_version() in lines[0], err  # one line, unwrapped
    assert "Traceback" not in err, err

    # so do the commands that open the store beside a station: tokens, sync status
    for cmd in (("token", "list"), ("sync", "status")):
        c = S.kanjian(*cmd, "-c", str(config))
        lines = [ln for ln in c.stderr.splitlines() if "9.9.0" in ln]
        assert c.returncode == 2 and len(lines) == 1, (cmd, c.stdout + c.stderr)
        assert "Traceback" not in c.stdout + c.stderr

    # the dataset export (a read-only opener) refuses it too
    x = S.kanjian("dataset", "export", str(old_store), str(tmp_path / "ds"), "--classes", CLASSES)
    assert x.returncode == 2 and "9.9.0" in x.stderr, x.stdout + x.stderr
    assert "Traceback" not in x.stdout + x.stderr

    # nothing was written: the database is the same bytes, no file came or went but the
    # data folder's lock (the station takes it before opening anything) and the empty
    # WAL and its index that SQLite leaves after a read-only reader
    assert db.read_bytes() == before
    wal = old_store / f"{DB_NAME}-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    now = sorted(p.relative_to(old_store) for p in old_store.rglob("*"))
    skip = {"kanjian.lock", wal.name, f"{DB_NAME}-shm"}
    assert [p for p in now if p.name not in skip] == files
