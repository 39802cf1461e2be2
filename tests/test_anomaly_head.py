"""The ``anomaly`` task head on a real ONNX model made here (tests/support/anomaly_model.py):
outputs equal their NumPy twin, a pasted defect is found where it was pasted, the
calibration decides PASS / REVIEW / FAIL, the station keeps one row per frame with its
score, ``kanjian inspect --json`` prints it, and the heat map is drawn."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from kanjian.appliance_api.http.annotate import annotate_inspection
from kanjian.camera.frame import Frame
from kanjian.inference import bundle as b
from kanjian.inference.anomaly_map import split_outputs
from kanjian.inference.calibration import AnomalyCalibration, normalise
from kanjian.inference.heads import head_for
from kanjian.inference.model import OnnxModel, load_model
from kanjian.inference.types import Verdict
from kanjian.inference.verdict import ClassRule, VerdictRules, explain_reason
from kanjian.inference.zones import Zone
from kanjian.station.inspector import Inspector
from kanjian.station.store import DB_NAME
from tests.support.anomaly_model import (
    IMGSZ,
    paste_patch,
    reference,
    template,
    write_anomaly_bundle,
)
from tests.support.station_config import station_config, write_config

DEMO = Path(__file__).resolve().parents[1] / "station" / "demo" / "images"
KANJIAN = str(Path(sys.executable).parent / "kanjian")
#: the pasted defect, source pixels x1, y1, x2, y2 (exclusive)
PATCH = (220, 120, 280, 170)
CAL = AnomalyCalibration(
    review_threshold=0.1, image_threshold=0.2, pixel_threshold=0.2, min_region_px=4
)


@pytest.fixture(scope="module")
def good() -> NDArray[np.uint8]:
    """A demo image cut to 300 x 416 (rows, columns): the input pads it top and bottom."""
    img = cv2.imread(str(sorted(DEMO.glob("*.jpg"))[0]), cv2.IMREAD_COLOR)
    assert img is not None
    return np.ascontiguousarray(img[:300, :416])


@pytest.fixture(scope="module")
def mu(good: NDArray[np.uint8]) -> NDArray[np.float32]:
    return template(good)


@pytest.fixture(scope="module")
def bundle(mu: NDArray[np.float32], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_anomaly_bundle(tmp_path_factory.mktemp("anomaly") / "bundle", mu, CAL)


def _noisy(image: NDArray[np.uint8], seed: int) -> NDArray[np.uint8]:
    """``image`` with +-3 grey levels of noise: a good part under a real camera."""
    noise = np.random.default_rng(seed).integers(-3, 4, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _box_iou(a: NDArray[np.float32] | tuple[int, ...], b_: tuple[int, ...]) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b_)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def _frame(image: NDArray[np.uint8], i: int = 0) -> Frame:
    return Frame(image, i, "t", datetime.now(timezone.utc))


def test_outputs_and_decode_equal_the_numpy_twin(
    bundle: Path, good: NDArray[np.uint8], mu: NDArray[np.float32]
) -> None:
    model = load_model(bundle, ("cpu",))
    assert model.info.task == "anomaly" and model.info.imgsz == IMGSZ
    assert model.manifest is not None and model.manifest.calibration == CAL
    head = head_for("anomaly")
    for image in (good, _noisy(good, 1), paste_patch(good, PATCH)):
        tensor, geom = head.preprocess(image, IMGSZ)
        assert geom is not None
        raw = split_outputs(model.run(tensor))
        want_score, want_map = reference(tensor, mu)
        assert raw.amap.shape == (IMGSZ[0] // 2, IMGSZ[1] // 2)
        np.testing.assert_allclose(raw.amap, want_map, atol=1e-5)
        assert raw.score == pytest.approx(want_score, abs=1e-5)
        pred = model.predict(image)
        # the normalised score: review 0.1 -> 0.25, fail 0.2 -> 0.5, top 0.4 -> 1
        want = float(np.interp(want_score, [0, 0.1, 0.2, 0.4], [0, 0.25, 0.5, 1]))
        assert pred.score == pytest.approx(want, abs=1e-4)
        # the map on the frame: the twin's map bilinear to the input, padding cut, to the frame
        assert pred.anomaly_map is not None and pred.anomaly_map.shape == image.shape[:2]
        full = cv2.resize(want_map, (IMGSZ[1], IMGSZ[0]), interpolation=cv2.INTER_LINEAR)
        crop = full[geom.pad_top : geom.pad_top + geom.new_h, geom.pad_left :][:, : geom.new_w]
        on_frame = cv2.resize(crop, (image.shape[1], image.shape[0]))
        np.testing.assert_allclose(pred.anomaly_map, normalise(on_frame, CAL), atol=1e-4)


def test_a_pasted_defect_is_found_at_its_place(bundle: Path, good: NDArray[np.uint8]) -> None:
    model = load_model(bundle, ("cpu",))
    ins = Inspector(model)
    clean = ins.inspect(_frame(_noisy(good, 2)))
    assert clean.verdict is Verdict.PASS and len(clean.detections) == 0, clean.reason
    assert clean.score is not None and clean.score < 0.25
    insp = ins.inspect(_frame(paste_patch(_noisy(good, 3), PATCH)))
    assert insp.verdict is Verdict.FAIL, insp.reason
    d = insp.detections
    assert len(d) >= 1 and d.masks is not None
    assert _box_iou(d.xyxy[0], PATCH) > 0.5, (d.xyxy[0], PATCH)
    assert set(d.class_id.tolist()) == {0} and insp.class_names == ("anomaly",)
    # the region's mask covers the patch's inside; its confidence is its map's top value
    x1, y1, x2, y2 = PATCH
    assert d.masks[0][y1 + 4 : y2 - 4, x1 + 4 : x2 - 4].all()
    amap = insp.anomaly_map
    assert amap is not None
    assert float(d.confidence[0]) == pytest.approx(float(amap[d.masks[0]].max()))
    # the reason names the region; the screen reads it back
    code, params = explain_reason(insp.verdict, insp.reason, (416, 300))
    assert code == "anomaly_fail" and params["box"] == [int(v) for v in d.xyxy[0]]
    assert params["score"] == round(insp.score or 0.0, 2)


def test_the_calibration_decides_pass_review_fail(bundle: Path, good: NDArray[np.uint8]) -> None:
    image = paste_patch(good, PATCH, value=200)
    tensor, _ = head_for("anomaly").preprocess(image, IMGSZ)
    raw, _ = reference(tensor, template(good))
    manifest = b.read_manifest(bundle)
    cases = [  # (review, image) thresholds as shares of this frame's raw score
        ((0.5, 0.8), Verdict.FAIL),
        ((0.8, 1.2), Verdict.REVIEW),
        ((1.1, 1.5), Verdict.PASS),
    ]
    for (rv, im), want in cases:
        cal = AnomalyCalibration(
            review_threshold=rv * raw, image_threshold=im * raw, pixel_threshold=im * raw
        )
        m = OnnxModel(
            bundle / b.MODEL_NAME, ("cpu",), 1, manifest.model_copy(update={"calibration": cal})
        )
        insp = Inspector(m).inspect(_frame(image))
        assert insp.verdict is want, (rv, im, insp.reason)
        expect = float(np.interp(raw, cal.knots, [0, 0.25, 0.5, 1]))
        assert insp.score == pytest.approx(expect, abs=1e-4)
        assert explain_reason(insp.verdict, insp.reason)[0] == f"anomaly_{want.value.lower()}"
    # the rules still rule: stricter confidences, an ignored class, zones
    m = load_model(bundle, ("cpu",))
    failing = paste_patch(good, PATCH)
    assert Inspector(m).inspect(_frame(failing)).verdict is Verdict.FAIL
    dim = _frame(paste_patch(good, PATCH, value=160))  # raw ~0.25: score ~0.6
    score = Inspector(m).inspect(dim).score
    assert score is not None and 0.5 < score < 0.9
    strict = VerdictRules(
        classes={"anomaly": ClassRule(fail_confidence=0.9, review_confidence=0.4)}
    )
    assert Inspector(m, strict).inspect(dim).verdict is Verdict.REVIEW
    ignored = VerdictRules(classes={"anomaly": ClassRule(ignore=True)})
    assert Inspector(m, ignored).inspect(_frame(failing)).verdict is Verdict.PASS
    x1, y1, x2, y2 = PATCH
    square = [(x1 - 5, y1 - 5), (x2 + 5, y1 - 5), (x2 + 5, y2 + 5), (x1 - 5, y2 + 5)]
    away = VerdictRules(zones=(Zone(name="z", kind="ignore", points=tuple(square)),))
    insp = Inspector(m, away).inspect(_frame(failing))
    assert insp.verdict is Verdict.PASS, insp.reason  # its only region is ignored
    assert (
        Inspector(m, VerdictRules(roi_xyxy=(0, 0, 100, 100))).inspect(_frame(failing)).verdict
        is Verdict.PASS
    )


def _kanjian(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "COLUMNS": "200"}
    return subprocess.run(
        [KANJIAN, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def test_the_station_keeps_one_row_per_frame_with_its_score_and_inspect_prints_it(
    bundle: Path, good: NDArray[np.uint8], tmp_path: Path
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = [folder / "a_good.png", folder / "b_defect.png", folder / "c_good.png"]
    for p, img in zip(paths, [good, paste_patch(good, PATCH), _noisy(good, 4)], strict=True):
        cv2.imwrite(str(p), img)
    cfg = write_config(
        tmp_path / "s.yaml",
        station_config(Path("data"), bundle=bundle, camera={"kind": "folder",
                       "path": str(folder), "loop": True}),
    )  # fmt: skip
    r = _kanjian("run", "-c", str(cfg), "--frames", "7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the oracle: the same model judging the same files in this process
    ins = Inspector(load_model(bundle, ("cpu",)))
    want = [ins.inspect(_frame(cv2.imread(str(p), cv2.IMREAD_COLOR))) for p in paths]
    db = sqlite3.connect(tmp_path / "data" / DB_NAME)
    rows = db.execute(
        "SELECT id, uri, verdict, score, num_detections FROM inspections ORDER BY seq"
    ).fetchall()
    assert len(rows) == 7
    for k, (iid, uri, verdict, score, n) in enumerate(rows):
        w = want[k % 3]
        assert uri == str(paths[k % 3]) and verdict == w.verdict.value
        assert score == pytest.approx(w.score, abs=1e-5)
        assert n == len(w.detections)
        dets = db.execute(
            "SELECT class_name, confidence, x1, y1, x2, y2 FROM detections "
            "WHERE inspection_id = ? ORDER BY idx",
            (iid,),
        ).fetchall()
        assert [d[0] for d in dets] == ["anomaly"] * n
        for d, box in zip(dets, w.detections.xyxy, strict=True):
            assert d[2:] == pytest.approx([float(v) for v in box])
    assert {r[2] for r in rows} == {"PASS", "FAIL"}
    db.close()
    r = _kanjian("inspect", "--json", "--model", str(bundle), *map(str, paths[:2]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["verdict"] for x in lines] == [w.verdict.value for w in want[:2]]
    for x, w in zip(lines, want[:2], strict=True):
        assert x["score"] == pytest.approx(w.score, abs=1e-4)
        assert len(x["detections"]) == len(w.detections)


def test_the_heat_map_is_drawn_on_the_regions_only(bundle: Path, good: NDArray[np.uint8]) -> None:
    image = paste_patch(good, PATCH)
    insp = Inspector(load_model(bundle, ("cpu",))).inspect(_frame(image))
    assert insp.detections.masks is not None and insp.anomaly_map is not None
    out = head_for("anomaly").draw(image, insp)
    changed = (out != image).any(axis=2)
    region = insp.detections.masks.any(axis=0)
    x1, y1, x2, y2 = (int(v) for v in insp.detections.xyxy[0])
    # coloured inside the region; outside it only the box outline and its label
    assert changed[region].mean() > 0.95
    near_box = np.zeros_like(changed)
    near_box[max(0, y1 - 40) : y2 + 4, max(0, x1 - 4) : x2 + 160] = True
    assert not (changed & ~near_box).any()
    # the colour is the JET map of the normalised map, half blended
    y, x = (y1 + y2) // 2, (x1 + x2) // 2
    level = np.uint8(np.clip(insp.anomaly_map[y, x] * 255.0, 0, 255))
    jet = cv2.applyColorMap(np.full((1, 1), level, np.uint8), cv2.COLORMAP_JET)[0, 0]
    want = (jet.astype(np.float64) + image[y, x].astype(np.float64)) / 2
    assert np.abs(out[y, x].astype(np.float64) - want).max() <= 1.0
    # and on the annotated picture the station serves
    pic = annotate_inspection(insp)
    assert pic is not None and (pic[y, x] != image[y, x]).any()


def test_calibration_order_and_bad_outputs_are_named() -> None:
    with pytest.raises(ValueError, match="floor < review_threshold < image_threshold < top"):
        AnomalyCalibration(review_threshold=0.3, image_threshold=0.2, pixel_threshold=0.2)
    # uncalibrated: raw outputs are normalised scores already, clipped
    assert normalise(np.array([-1.0, 0.3, 2.0], np.float32), None).tolist() == pytest.approx(
        [0.0, 0.3, 1.0]
    )
    assert CAL.knots == (0.0, 0.1, 0.2, 0.4)
    with pytest.raises(ValueError, match=r"score \(1,\) and anomaly_map \(1, 1, h, w\).*\(1, 5\)"):
        split_outputs([np.zeros((1, 5), np.float32), np.zeros((1, 1, 4, 4), np.float32)])
    # a manifest without calibration is written without the key (older stations read it)
    m = b.BundleManifest(
        name="m", version="1", task="anomaly", class_names=["anomaly"], imgsz=(8, 8),
        onnx_sha256="0" * 64,
    )  # fmt: skip
    assert "calibration" not in json.loads(m.dump_json())
    with_cal = m.model_copy(update={"calibration": CAL})
    assert b.BundleManifest.model_validate_json(with_cal.dump_json()).calibration == CAL
