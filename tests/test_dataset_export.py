"""``kanjian dataset export``: a real station store (written by ResultStore) back to YOLO."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from kanjian.camera.frame import Frame
from kanjian.inference.types import Detections, Inspection, ModelRef, Verdict
from kanjian.station.store import ResultStore
from kanjian.training.station_export import ExportFilter, export_station_log
from kanjian.training.yolo_source import read_yolo

NAMES = ("crazing", "inclusion", "patches")
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


def _dets(boxes: list[tuple[int, float, float, float, float, float]]) -> Detections:
    if not boxes:
        return Detections.empty()
    arr = np.array(boxes, np.float64)
    return Detections(
        xyxy=arr[:, 2:6].astype(np.float32),
        confidence=arr[:, 1].astype(np.float32),
        class_id=arr[:, 0].astype(np.int32),
    )


@pytest.fixture()
def station_dir(tmp_path: Path, neu_det_dir: Path) -> tuple[Path, list[Inspection]]:
    """Five inspections of NEU-DET frames logged by the real store (all images saved)."""
    data = tmp_path / "station"
    store = ResultStore(data, save_verdicts=("PASS", "FAIL", "REVIEW"))
    model = ModelRef("neu", "1", "ab" * 32)
    plan = [  # (image, verdict, [(class, conf, x1, y1, x2, y2)])
        ("crazing_1.jpg", Verdict.FAIL, [(0, 0.9, 10, 10, 200, 200), (1, 0.1, 5, 5, 50, 50)]),
        ("inclusion_1.jpg", Verdict.FAIL, [(1, 0.8, 100, 40, 180, 300)]),
        ("patches_1.jpg", Verdict.FAIL, [(2, 0.7, 0, 0, 416, 416)]),
        ("patches_2.jpg", Verdict.FAIL, [(0, 0.6, 20, 30, 120, 130)]),
        ("scratches_1.jpg", Verdict.PASS, []),
    ]
    insps = []
    for i, (name, verdict, boxes) in enumerate(plan):
        image = cv2.imread(str(neu_det_dir / "images" / name), cv2.IMREAD_COLOR)
        assert image is not None
        frame = Frame(image, i, "cam0", T0 + timedelta(minutes=i), uri=name)
        insp = Inspection(
            frame=frame, verdict=verdict, model=model, detections=_dets(boxes), class_names=NAMES
        )
        store.put(insp)
        insps.append(insp)
    assert store.flush()
    store.close()
    return data, insps


def _feedback(data: Path, insp: Inspection, kind: str, class_name: str | None = None) -> None:
    with sqlite3.connect(data / "kanjian.db") as conn:
        conn.execute(
            "INSERT INTO feedback (inspection_id, kind, class_name, actor, created_at) "
            "VALUES (?, ?, ?, 'test', ?)",
            [str(insp.inspection_id), kind, class_name, T0.isoformat()],
        )


def _labels(out: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    res = read_yolo(out / "data.yaml")
    return {
        r.image.name: sorted((b.class_name, tuple(round(v, 1) for v in b.xyxy)) for b in r.boxes)
        for r in res.records
    }


def test_export_applies_feedback_and_confidence(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    _feedback(data, insps[1], "wrong_class", "crazing")  # inclusion -> crazing
    _feedback(data, insps[2], "confirm_defect")
    _feedback(data, insps[3], "wrong_class", "inclusion")
    _feedback(data, insps[3], "not_defect")  # the latest feedback wins
    summary = export_station_log(data, tmp_path / "out", class_names=NAMES, val_fraction=0.0)
    labels = {k.split(".")[0]: v for k, v in _labels(tmp_path / "out").items()}
    ids = [str(i.inspection_id) for i in insps]
    assert labels == {
        ids[0]: [("crazing", (10.0, 10.0, 200.0, 200.0))],  # the 0.1 box is below 0.25
        ids[1]: [("crazing", (100.0, 40.0, 180.0, 300.0))],
        ids[2]: [("patches", (0.0, 0.0, 416.0, 416.0))],
        ids[3]: [],
        ids[4]: [],
    }
    assert summary.images_without_labels == 2
    assert summary.boxes_per_class == {"crazing": 2, "inclusion": 0, "patches": 1}
    assert any("feedback_not_defect 1" in n and "no_feedback 2" in n for n in summary.notes)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["notes"] == list(summary.notes)


def test_export_filters(station_dir: tuple[Path, list[Inspection]], tmp_path: Path) -> None:
    data, insps = station_dir
    _feedback(data, insps[0], "confirm_defect")
    reviewed = export_station_log(
        data, tmp_path / "a", flt=ExportFilter(reviewed_only=True), class_names=NAMES
    )
    assert sum(reviewed.images.values()) == 1
    window = export_station_log(
        data,
        tmp_path / "b",
        flt=ExportFilter(since=(T0 + timedelta(minutes=1)).isoformat(),
                         until=(T0 + timedelta(minutes=3)).isoformat(), verdicts=("FAIL",)),
        class_names=NAMES,
    )  # fmt: skip
    assert sum(window.images.values()) == 2
    low = export_station_log(
        data, tmp_path / "c", flt=ExportFilter(min_confidence=0.05), class_names=NAMES
    )
    assert low.boxes_per_class["inclusion"] == 2  # the 0.1 box now counts


def test_export_reports_a_lost_image(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    lost = next(data.rglob(f"{insps[2].inspection_id}.jpg"))
    lost.unlink()
    summary = export_station_log(data, tmp_path / "out", class_names=NAMES)
    assert summary.problem_counts == {"missing_image": 1}
    assert str(insps[2].inspection_id) in summary.problems[0]
    assert sum(summary.images.values()) == 4


def test_cli_dataset_export(station_dir: tuple[Path, list[Inspection]], tmp_path: Path) -> None:
    data, _ = station_dir
    exe = Path(sys.executable).parent / "kanjian"
    run = subprocess.run(
        [str(exe), "dataset", "export", str(data), str(tmp_path / "out"), "--json",
         "--classes", ",".join(NAMES)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["source_format"] == "station"
    missing = subprocess.run(
        [str(exe), "dataset", "export", str(tmp_path / "nowhere"), str(tmp_path / "o2")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "station database not found" in missing.stderr
