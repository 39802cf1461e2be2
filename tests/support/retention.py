"""Rows and images for the retention tests, written through a real ResultStore."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from kanjian.camera.frame import Frame
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.retention import Retention
from kanjian.station.retention_config import StoreRetentionConfig
from kanjian.station.store import ResultStore

MODEL = ModelRef("m", "1", "0" * 64)
ALL_SAVED = ("PASS", "REVIEW", "FAIL", "ERROR")


def inspection(i: int, verdict: Verdict, days_ago: float = 0.0, side: int = 64) -> Inspection:
    """An inspection with a noise frame (its JPEG takes real space) and one ``scratch``
    box, captured ``days_ago`` days ago."""
    img = np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)
    at = datetime.now(timezone.utc) - timedelta(days=days_ago)
    dets = Detections(
        xyxy=np.array([[1, 2, 30, 40]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([1], np.int32),
    )
    frame = Frame(img, i, "cam0", at, uri=f"f{i}.jpg")
    return Inspection(frame, verdict, "r", MODEL, dets, ("dent", "scratch"), timings_ms={})


def open_store(data: Path, save: tuple[str, ...] = ALL_SAVED) -> ResultStore:
    return ResultStore(data, save_verdicts=save, min_free_mb=0)


def write(store: ResultStore, items: list[Inspection]) -> None:
    for insp in items:
        store.put(insp)
    assert store.flush(120.0)


def retention(store: ResultStore, sync_on: bool = False, **cfg: object) -> Retention:
    """A Retention on the store's files (its thread not started: the test runs passes)."""
    c = StoreRetentionConfig.model_validate({"min_free_mb": 0, **cfg})
    return Retention(store.data_dir, store.db_path, c, sync_on=sync_on)


def rows(db: Path) -> dict[int, tuple[str, str | None, str | None]]:
    """seq -> (verdict, image_path, image_deleted_at) of every row."""
    with sqlite3.connect(db) as c:
        q = "SELECT seq, verdict, image_path, image_deleted_at FROM inspections"
        return {r[0]: (r[1], r[2], r[3]) for r in c.execute(q)}


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute(sql).fetchone()[0])
