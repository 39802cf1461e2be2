"""The SQLite store on real database files: rows, batches, outbox, images, durability."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.store import DB_NAME, ResultStore

NAMES = ("crazing", "scratches")
MODEL = ModelRef("m", "1", "0" * 64)
WriterKind = Literal["process", "thread"]


def _insp(i: int, verdict: Verdict = Verdict.PASS, n_det: int = 0) -> Inspection:
    img = np.full((48, 64, 3), i % 256, np.uint8)
    frame = Frame(img, i, "cam0", datetime.now(timezone.utc), uri=f"f{i}.jpg")
    dets = Detections(
        xyxy=np.tile(np.array([[1, 2, 30, 40]], np.float32), (n_det, 1)),
        confidence=np.linspace(0.9, 0.5, n_det).astype(np.float32),
        class_id=np.arange(n_det, dtype=np.int32) % 2,
    )
    return Inspection(frame, verdict, "r", MODEL, dets, NAMES, timings_ms={"infer": 1.0})


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_rows_detections_outbox_in_order(tmp_path: Path, writer: WriterKind) -> None:
    store = ResultStore(tmp_path, batch_max_rows=7, writer=writer)
    sent = [_insp(i, Verdict.FAIL if i % 3 == 0 else Verdict.PASS, i % 4) for i in range(100)]
    for s in sent:
        store.put(s)
    assert store.flush()
    # synchronous is per connection: the one that commits says FULL (2), the default
    assert store.writer_synchronous == 2
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    rows = db.execute(
        "SELECT id, seq, verdict, num_detections FROM inspections ORDER BY seq"
    ).fetchall()
    assert [r[0] for r in rows] == [str(s.inspection_id) for s in sent]
    assert [r[1] for r in rows] == list(range(1, 101))
    assert [r[3] for r in rows] == [i % 4 for i in range(100)]
    n_det = db.execute("SELECT COUNT(*) FROM detections").fetchone()[0]
    assert n_det == sum(i % 4 for i in range(100))
    outbox = db.execute("SELECT seq, inspection_id FROM outbox ORDER BY seq").fetchall()
    assert outbox == [(r[1], r[0]) for r in rows]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # FAIL frames are saved as JPEGs named by UUID; PASS frames are not
    paths = db.execute("SELECT verdict, image_path FROM inspections").fetchall()
    for verdict, p in paths:
        if verdict == "FAIL":
            assert p.endswith(".jpg") and (tmp_path / p).is_file()
        else:
            assert p is None


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_row_that_cannot_be_written_becomes_an_error_row_and_blocks_nothing(
    tmp_path: Path, writer: WriterKind
) -> None:
    store = ResultStore(tmp_path, batch_max_rows=50, save_verdicts=("FAIL",), writer=writer)
    seen: list[str] = []
    store.add_listener(lambda batch: seen.extend(str(i.inspection_id) for i in batch))
    ok = [_insp(i) for i in range(6)]
    twin = dataclasses.replace(_insp(10), inspection_id=ok[1].inspection_id)  # same UUID
    # a file name that is not UTF-8 (os.listdir hands such bytes over as surrogates)
    odd = Frame(ok[0].frame.image, 11, "cam0", datetime.now(timezone.utc), uri="part-\udcff.jpg")
    unsavable = Inspection(odd, Verdict.FAIL, "r", MODEL, Detections.empty(), NAMES)
    for insp in [*ok[:3], twin, *ok[3:5], unsavable, ok[5]]:  # one batch
        store.put(insp)
    assert store.flush()  # the writer is alive and everything was answered
    assert store.stats().errors == 2
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    rows = db.execute("SELECT id, verdict, reason FROM inspections ORDER BY seq").fetchall()
    db.close()
    assert [r[0] for r in rows if r[1] == "PASS"] == [str(i.inspection_id) for i in ok]
    errors = [r for r in rows if r[1] == "ERROR"]
    assert len(errors) == 2 and len(rows) == 8
    dup = next(r for r in errors if str(ok[1].inspection_id) in r[2])
    assert dup[0] != str(ok[1].inspection_id) and "IntegrityError" in dup[2]
    [bad] = [r for r in errors if r[0] == str(unsavable.inspection_id)]  # keeps its own id
    assert "UnicodeEncodeError" in bad[2]
    assert sorted(seen) == sorted(r[0] for r in rows)  # every listener heard of every row


def test_error_rows_and_seq_continues_after_reopen(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    fail = FrameFailure(
        0, "cam0", datetime.now(timezone.utc), "bad.jpg: not an image", uri="bad.jpg"
    )
    store.put(Inspection(fail, Verdict.ERROR, fail.reason))
    store.close()
    store = ResultStore(tmp_path)
    store.put(_insp(1))
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    rows = db.execute(
        "SELECT seq, verdict, reason, model_name FROM inspections ORDER BY seq"
    ).fetchall()
    assert rows == [(1, "ERROR", "bad.jpg: not an image", None), (2, "PASS", "r", "m")]


def test_committed_rows_survive_kill(tmp_path: Path) -> None:
    """A process killed with SIGKILL right after flush() keeps every committed row."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import _insp
        from kanjian.station.store import ResultStore
        s = ResultStore(__import__('pathlib').Path({str(tmp_path)!r}))
        for i in range(500):
            s.put(_insp(i))
        assert s.flush()
        print("flushed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "flushed" in r.stdout, r.stderr
    assert r.returncode == -9
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT COUNT(*), MAX(seq) FROM inspections").fetchone() == (500, 500)
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 500
