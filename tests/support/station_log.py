"""A station's log written by the real store, for the dataset-export tests.

``station_dir`` (a fixture, imported by ``tests/conftest.py``) logs five NEU-DET
frames; :func:`log_plan` logs any plan; the readers give the exported labels by
image or by inspection id.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from kanjian.camera.frame import Frame
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.store import ResultStore
from kanjian.training.checks import read_bgr
from kanjian.training.layout import DatasetSummary
from kanjian.training.yolo_source import read_yolo

NAMES = ("crazing", "inclusion", "patches")
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


def dets(boxes: list[tuple[int, float, float, float, float, float]]) -> Detections:
    if not boxes:
        return Detections.empty()
    arr = np.array(boxes, np.float64)
    return Detections(
        xyxy=arr[:, 2:6].astype(np.float32),
        confidence=arr[:, 1].astype(np.float32),
        class_id=arr[:, 0].astype(np.int32),
    )


Plan = list[tuple[str, Verdict, list[tuple[int, float, float, float, float, float]]]]


def log_plan(
    data: Path, neu: Path, plan: Plan, model: ModelRef, names: tuple[str, ...], start: int = 0
) -> list[Inspection]:
    """Log ``plan`` [(image, verdict, [(class id, conf, x1, y1, x2, y2)])] through the real
    store, one minute apart from ``T0 + start`` minutes; every image is saved."""
    store = ResultStore(data, save_verdicts=("PASS", "FAIL", "REVIEW"))
    insps = []
    for i, (name, verdict, boxes) in enumerate(plan, start):
        frame = Frame(
            read_bgr(neu / "images" / name), i, "cam0", T0 + timedelta(minutes=i), uri=name
        )
        insp = Inspection(
            frame=frame, verdict=verdict, model=model, detections=dets(boxes), class_names=names
        )
        store.put(insp)
        insps.append(insp)
    assert store.flush()
    store.close()
    return insps


@pytest.fixture()
def station_dir(tmp_path: Path, neu_det_dir: Path) -> tuple[Path, list[Inspection]]:
    """Five inspections of NEU-DET frames logged by the real store (all images saved)."""
    data = tmp_path / "station"
    plan: Plan = [
        ("crazing_1.jpg", Verdict.FAIL, [(0, 0.9, 10, 10, 200, 200), (1, 0.1, 5, 5, 50, 50)]),
        ("inclusion_1.jpg", Verdict.FAIL, [(1, 0.8, 100, 40, 180, 300)]),
        ("patches_1.jpg", Verdict.FAIL, [(2, 0.7, 0, 0, 416, 416)]),
        ("patches_2.jpg", Verdict.FAIL, [(0, 0.6, 20, 30, 120, 130)]),
        ("scratches_1.jpg", Verdict.PASS, []),
    ]
    return data, log_plan(data, neu_det_dir, plan, ModelRef("neu", "1", "ab" * 32), NAMES)


def add_feedback(data: Path, insp: Inspection, kind: str, class_name: str | None = None) -> None:
    with sqlite3.connect(data / "kanjian.db") as conn:
        conn.execute(
            "INSERT INTO feedback (inspection_id, kind, class_name, actor, created_at) "
            "VALUES (?, ?, ?, 'test', ?)",
            [str(insp.inspection_id), kind, class_name, T0.isoformat()],
        )


def labels_of(out: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    res = read_yolo(out / "data.yaml")
    return {
        r.image.name: sorted((b.class_name, tuple(round(v, 1) for v in b.xyxy)) for b in r.boxes)
        for r in res.records
    }


def labels_by_id(out: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Labels by inspection id (the image file stem)."""
    return {k.split(".")[0]: v for k, v in labels_of(out).items()}


def note_with(summary: DatasetSummary, key: str) -> str:
    return next(n for n in summary.notes if key in n)
