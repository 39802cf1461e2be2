"""``inspection_classes`` is written by the store (migration 044), not by triggers.

Whatever the writer, the table must hold what migration 043's triggers defined: for
each inspection, ``(class, verdict, seq)`` for its top class and for every box's
class. The expected set is computed here from ``inspections`` + ``detections`` with
that definition in SQL, so a writer that forgets a row (or adds one) fails.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.big_store import build
from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.records import class_index_rows, shown_classes
from kanjian.station.store import ResultStore

NAMES = ("crazing", "scratches", "patches")
MODEL = ModelRef("m", "1", "0" * 64)

#: migration 043's trigger definition, as one query over the stored rows
BY_DEFINITION = (
    "SELECT top_class, verdict, seq FROM inspections WHERE top_class IS NOT NULL "
    "UNION SELECT d.class_name, i.verdict, i.seq FROM detections d "
    "JOIN inspections i ON i.id = d.inspection_id WHERE d.class_name IS NOT NULL"
)


def _frame(i: int) -> Frame:
    img = np.zeros((16, 16, 3), np.uint8)
    return Frame(img, i, "cam0", datetime.now(timezone.utc), uri=f"f{i}.jpg")


def _detect(i: int, verdict: Verdict, class_ids: list[int]) -> Inspection:
    n = len(class_ids)
    dets = Detections(
        xyxy=np.tile(np.array([[1, 2, 10, 12]], np.float32), (n, 1)),
        confidence=np.linspace(0.9, 0.4, n).astype(np.float32) if n else np.zeros(0, np.float32),
        class_id=np.array(class_ids, np.int32),
    )
    return Inspection(_frame(i), verdict, "r", MODEL, dets, NAMES, timings_ms={"infer": 1.25})


def _classify(i: int, verdict: Verdict) -> Inspection:
    probs = np.array([0.1, 0.2, 0.7], np.float32)  # top class: patches
    return Inspection(
        _frame(i),
        verdict,
        "r",
        MODEL,
        Detections.empty(),
        NAMES,
        timings_ms={"infer": 2.0},
        probs=probs,
        task="classify",
    )


def _sets(db: Path) -> tuple[list[tuple[str, str, int]], set[tuple[str, str, int]]]:
    conn = sqlite3.connect(db)
    try:
        got = conn.execute("SELECT class_name, verdict, seq FROM inspection_classes").fetchall()
        want = set(conn.execute(BY_DEFINITION).fetchall())
    finally:
        conn.close()
    return got, want


def test_the_store_writes_the_classes_the_triggers_defined(tmp_path: Path) -> None:
    batch = [
        _detect(0, Verdict.FAIL, [1, 0, 1]),  # two boxes of one class: one row for it
        _detect(1, Verdict.PASS, []),  # no class
        _classify(2, Verdict.REVIEW),  # a top class, no boxes
        _detect(3, Verdict.REVIEW, [2]),
        _detect(4, Verdict.FAIL, [7]),  # a class id the model has no name for: "7"
        Inspection(
            FrameFailure(5, "cam0", datetime.now(timezone.utc), "camera lost"),
            Verdict.MISSED,
            "no frame",
        ),  # no class
        _detect(6, Verdict.PASS, [0, 2]),
        _classify(7, Verdict.PASS),
    ]
    store = ResultStore(tmp_path, save_verdicts=())
    try:
        for insp in batch:
            store.put(insp)
        assert store.flush()
        for insp in batch[:3]:  # a second round, in its own transactions
            store.put(_detect(100 + insp.frame.frame_id, insp.verdict, [0]))
            assert store.flush()
    finally:
        store.close()
    got, want = _sets(tmp_path / "kanjian.db")
    assert len(got) == len(set(got))
    assert set(got) == want
    names = {c for c, _, _ in want}
    assert {"crazing", "scratches", "patches", "7"} <= names
    # the classify rows are there by their top class alone
    assert ("patches", "REVIEW", 3) in want and ("patches", "PASS", 8) in want


def test_no_trigger_keeps_the_table_since_044(tmp_path: Path) -> None:
    ResultStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "kanjian.db")
    try:
        triggers = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
    finally:
        conn.close()
    assert not {t for t in triggers if t.startswith("inspection_classes")}
    assert "feedback_latest_ins" in triggers  # feedback is rare: its trigger stays


def test_the_big_store_fixture_writes_them_too(tmp_path: Path) -> None:
    big = build(tmp_path / "data", 3000, seed=2)
    got, want = _sets(big.path)
    assert len(got) == len(set(got)) and set(got) == want and len(want) > 300


def test_shown_classes_is_top_class_and_box_classes() -> None:
    assert shown_classes(None, []) == set()
    assert shown_classes("a", []) == {"a"}
    assert shown_classes("a", ["b", "a", None, "b"]) == {"a", "b"}
    assert sorted(class_index_rows("FAIL", 9, "a", ["b", "a"])) == [
        ("a", "FAIL", 9),
        ("b", "FAIL", 9),
    ]
    assert class_index_rows("PASS", 1, None, []) == []
