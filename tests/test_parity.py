"""The reference is the oracle: the station's results equal Ultralytics' own predict().

Models are real ONNX files exported by our training code (conftest fixtures),
run once through ``ultralytics.YOLO(onnx).predict()`` and once through
kanjian — the station (``kanjian run`` → SQLite), the CLI and the Python API.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.inference.matching import mask_iou, match_detections
from kanjian.inference.model import load_model
from kanjian.inference.types import Detections
from tests.support import scores
from tests.support.station_config import station_config, write_config

pytestmark = pytest.mark.slow

IOU = 0.7
N_IMAGES = 50
#: the comparison must not be vacuous: the conf is chosen from what kanjian measures on
#: these images so that at least this many keep a detection (an image with none must
#: be empty on both sides, which is compared too)
MIN_WITH = N_IMAGES // 5


def _conf(model: Any, images: list[Path]) -> float:
    return scores.conf_with_detections(scores.detection_scores(model.onnx, tuple(images)), MIN_WITH)


def _ultra(onnx: Path, task: str) -> Any:
    from ultralytics import YOLO

    return YOLO(str(onnx), task=task)


def _ref_dets(result: Any) -> Detections:
    b = result.boxes
    return Detections(
        xyxy=b.xyxy.numpy().astype(np.float32),
        confidence=b.conf.numpy().astype(np.float32),
        class_id=b.cls.numpy().astype(np.int32),
    )


def _images(model: Any, n: int, neu_det_dir: Path) -> list[Path]:
    imgs = list(model.val_images)
    if len(imgs) < n:  # top up with other NEU-DET images the model was not tuned on
        names = {p.name for p in imgs}
        extra = sorted((neu_det_dir / "images").glob("*.jpg"))
        imgs += [p for p in extra if p.name not in names][: n - len(imgs)]
    assert len(imgs) >= n
    return imgs[:n]


def _kanjian(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kanjian"
    return subprocess.run(
        [str(exe), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"},
    )


def test_station_detect_equals_ultralytics(
    detect_model: Any, neu_det_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    images = _images(detect_model, N_IMAGES, neu_det_dir)
    conf = _conf(detect_model, images)
    for p in images:
        (folder / p.name).symlink_to(p)
    cfg = write_config(
        tmp_path / "station.yaml",
        station_config(
            tmp_path / "data",
            bundle=detect_model.onnx,
            images=folder,
            model={"conf": conf, "iou": IOU},
        ),
    )
    r = _kanjian("run", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(tmp_path / "data" / "kanjian.db")
    rows = db.execute("SELECT id, uri, verdict FROM inspections ORDER BY seq").fetchall()
    assert len(rows) == N_IMAGES  # exactly one row per image
    yolo = _ultra(detect_model.onnx, "detect")
    total, n_with = 0, 0
    for insp_id, uri, _verdict in rows:
        dets = db.execute(
            "SELECT x1, y1, x2, y2, confidence, class_id FROM detections "
            "WHERE inspection_id = ? ORDER BY idx",
            [insp_id],
        ).fetchall()
        a = np.array(dets, np.float32).reshape(-1, 6)
        ours = Detections(a[:, :4].copy(), a[:, 4].copy(), a[:, 5].astype(np.int32))
        ref = _ref_dets(
            yolo.predict(uri, conf=conf, iou=IOU, imgsz=detect_model.imgsz, verbose=False)[0]
        )
        rep = match_detections(ref, ours, min_iou=0.99, max_conf_diff=1e-3)
        assert rep.equal, (uri, rep)
        total += len(ref)
        n_with += len(ref) > 0
    assert n_with >= MIN_WITH, (conf, total, n_with)


def test_api_segment_equals_ultralytics(segment_model: Any, neu_det_dir: Path) -> None:
    from ultralytics.utils.ops import scale_masks

    yolo = _ultra(segment_model.onnx, "segment")
    ours_model = load_model(segment_model.onnx)
    images = _images(segment_model, N_IMAGES, neu_det_dir)
    conf = _conf(segment_model, images)
    n_with, ious = 0, []
    for p in images:
        img = cv2.imread(str(p))
        ref_r = yolo.predict(str(p), conf=conf, iou=IOU, imgsz=segment_model.imgsz, verbose=False)
        ref = _ref_dets(ref_r[0])
        ours = ours_model.predict(img, conf=conf, iou=IOU).detections
        rep = match_detections(ref, ours, min_iou=0.99, max_conf_diff=1e-3)
        assert rep.equal, (p, rep)
        n_with += len(ref) > 0
        if len(ref) == 0:
            continue
        ref_masks = scale_masks(ref_r[0].masks.data[None].float(), img.shape[:2])[0].numpy() > 0.5
        assert ours.masks is not None and ours.masks.shape == (len(ref), *img.shape[:2])
        # same order: both are sorted by confidence after NMS
        for k in range(len(ref)):
            ious.append(mask_iou(ref_masks[k], ours.masks[k]))
    assert n_with >= MIN_WITH, (conf, n_with)
    assert min(ious) >= 0.95, min(ious)


def test_cli_classify_equals_ultralytics(
    classify_model: Any, neu_det_dir: Path, tmp_path: Path
) -> None:
    images = _images(classify_model, N_IMAGES, neu_det_dir)
    r = _kanjian(
        "inspect", "--model", str(classify_model.onnx), "--json", *map(str, images), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == len(images)
    yolo = _ultra(classify_model.onnx, "classify")
    refs = []
    for p, ours in zip(images, lines, strict=True):
        ref = yolo.predict(str(p), imgsz=classify_model.imgsz, verbose=False)[0].probs.data.numpy()
        got = np.asarray(ours["probs"], np.float32)
        assert int(np.argmax(got)) == int(np.argmax(ref)), p
        np.testing.assert_allclose(got, ref, atol=1e-3)
        refs.append(ref)
    # each image's own probabilities were compared: the reference's differ between images
    # by far more than the tolerance (what a model says, not how well it learnt)
    assert np.ptp(np.stack(refs), axis=0).max() > 1e-2
