"""``kanjian model compare A B --data DIR`` on two real bundles and a real labelled folder.

A = the detect test model's bundle, B = the station's demo bundle (same six NEU-DET
classes), on a folder made by our own importer from NEU-DET images the test model
never saw, plus three "good parts" (their annotations stripped of every object: the
labels say good, whatever the models see). Every number of the JSON is recomputed
here independently: mAP and per-class AP by Ultralytics' validator arithmetic,
verdicts from predictions at each bundle's conf (not the command's filtering of its
conf-0.001 predictions), the matrix and the defect calls recounted from those, and
same-class box pairs by the golden-set matcher. The command runs as a runtime-only
install would (no torch, no Ultralytics importable).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kanjian.station.config import DEMO_MODEL
from tests.support.map_oracle import ultralytics_map
from tests.support.testmodels import CLASS_NAMES

REPO = Path(__file__).resolve().parents[1]
KANJIAN = Path(sys.executable).with_name("kanjian")
NO_EXTRAS = REPO / "tests" / "support" / "no_extras"
GOOD = ("crazing_250", "patches_250", "scratches_250")


def _kanjian(*args: str, runtime_only: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    if runtime_only:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NO_EXTRAS), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [str(KANJIAN), *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def labelled(neu_det_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO dataset written by ``import_dataset`` from a VOC folder: 4 defective images
    per class (the highest numbers) and the three GOOD ones with no object."""
    from kanjian.training.importer import import_dataset

    tmp = tmp_path_factory.mktemp("compare")
    src = tmp / "voc"
    for sub in ("images", "annotations"):
        (src / sub).mkdir(parents=True)
    for cls in CLASS_NAMES:
        stems = sorted(
            (p.stem for p in (neu_det_dir / "annotations").glob(f"{cls}_*.xml")),
            key=lambda s: -int(s.rsplit("_", 1)[1]),
        )[:4]
        for s in stems:
            (src / "images" / f"{s}.jpg").symlink_to(neu_det_dir / "images" / f"{s}.jpg")
            (src / "annotations" / f"{s}.xml").symlink_to(neu_det_dir / "annotations" / f"{s}.xml")
    for s in GOOD:
        (src / "images" / f"{s}.jpg").symlink_to(neu_det_dir / "images" / f"{s}.jpg")
        xml = (neu_det_dir / "annotations" / f"{s}.xml").read_text(encoding="utf-8")
        (src / "annotations" / f"{s}.xml").write_text(
            re.sub(r"<object>.*?</object>", "", xml, flags=re.DOTALL), encoding="utf-8"
        )
    import_dataset(src, tmp / "data", val_fraction=0.5, seed=0, class_names=CLASS_NAMES)
    return tmp / "data"


def _truth(data: Path) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """The val images with their label boxes in pixels, read here from the .txt files."""
    out = []
    for image in sorted((data / "images" / "val").iterdir()):
        h, w = cv2.imread(str(image)).shape[:2]
        label = data / "labels" / "val" / f"{image.stem}.txt"
        rows = np.array(
            [[float(v) for v in line.split()] for line in label.read_text().splitlines() if line],
            np.float64,
        ).reshape(-1, 5)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        out.append((image, xyxy.astype(np.float32), rows[:, 0].astype(np.int64)))
    return out


def _independent(bundle: Path, truth: list[tuple[Path, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    from kanjian.inference.model import load_model

    model = load_model(bundle, ("cpu",))
    images, verdicts, station = [], [], []
    for path, gxyxy, gcls in truth:
        frame = cv2.imread(str(path))
        d = model.predict(frame, conf=0.001).detections
        images.append((d.xyxy, d.confidence, d.class_id, gxyxy, gcls))
        at_conf = model.predict(frame)  # the bundle's own thresholds, as a station runs it
        verdicts.append(model.judge(at_conf, model.default_rules()).verdict.value)
        station.append(at_conf.detections)
    classes, ap = ultralytics_map(images)
    return {"classes": classes, "ap": ap, "verdicts": verdicts, "detections": station}


def _check_model(got: dict[str, Any], want: dict[str, Any], defective: list[bool]) -> None:
    assert got["map"]["map50"] == pytest.approx(want["ap"][:, 0].mean(), abs=1e-9)
    assert got["map"]["map50_95"] == pytest.approx(want["ap"].mean(), abs=1e-9)
    ap50 = {c["class_id"]: c["ap50"] for c in got["map"]["classes"]}
    for c, row in zip(want["classes"], want["ap"], strict=True):
        assert ap50[int(c)] == pytest.approx(row[0], abs=1e-9)
    assert got["verdicts"] == {
        v: want["verdicts"].count(v) for v in ("PASS", "FAIL", "REVIEW", "ERROR")
    }
    call = [v in ("FAIL", "REVIEW") for v in want["verdicts"]]
    s = got["vs_labels"]
    assert s["tp"] == sum(c and t for c, t in zip(call, defective, strict=True))
    assert s["fp"] == sum(c and not t for c, t in zip(call, defective, strict=True))
    assert s["fn"] == sum(not c and t for c, t in zip(call, defective, strict=True))
    assert s["tn"] == sum(not c and not t for c, t in zip(call, defective, strict=True))
    assert got["boxes"] == sum(len(d) for d in want["detections"])


def test_compare_two_bundles_on_a_labelled_folder(
    detect_bundle: Path, labelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp.json"
    run = _kanjian(
        "model", "compare", str(detect_bundle), str(DEMO_MODEL), "--data", str(labelled),
        "--json", str(out), runtime_only=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(out.read_text())
    truth = _truth(labelled)
    defective = [len(c) > 0 for _, _, c in truth]
    assert got["images"] == len(truth) >= 12 and got["good"] == sum(not d for d in defective) >= 1
    assert got["class_names"] == list(CLASS_NAMES)
    want_a, want_b = _independent(detect_bundle, truth), _independent(DEMO_MODEL, truth)
    _check_model(got["a"], want_a, defective)
    _check_model(got["b"], want_b, defective)
    assert got["a"]["boxes"] > 0 and got["b"]["boxes"] > 0  # both models see something
    assert got["a"]["map"]["map50"] != got["b"]["map"]["map50"]  # two different models
    # the matrix, recounted: rows A, columns B
    pairs = Counter(zip(want_a["verdicts"], want_b["verdicts"], strict=True))
    labels = got["verdicts"]["labels"]
    assert got["verdicts"]["matrix"] == [[pairs[(r, c)] for c in labels] for r in labels]
    assert [(p["a_verdict"], p["b_verdict"]) for p in got["per_image"]] == list(
        zip(want_a["verdicts"], want_b["verdicts"], strict=True)
    )
    # same-class pairs at IoU 0.5: the golden-set matcher's count, image by image
    from kanjian.inference.matching import match_detections

    matched = sum(
        match_detections(da, db, 0.5, max_conf_diff=1.0).matched
        for da, db in zip(want_a["detections"], want_b["detections"], strict=True)
    )
    det = got["detections"]
    assert det["matched"] == matched
    assert (det["a_boxes"], det["b_boxes"]) == (got["a"]["boxes"], got["b"]["boxes"])
    # what a person reads: the same numbers, rounded
    text = run.stdout
    assert f"{got['a']['map']['map50']:.3f}" in text and f"{got['b']['map']['map50']:.3f}" in text
    assert f"({got['verdicts']['agreed']}/{got['verdicts']['n']})" in text
    assert "Traceback" not in run.stderr

    # the same images as a plain images/ + labels/ folder, B as an archive: same numbers
    plain = tmp_path / "plain"
    shutil.copytree(labelled / "images" / "val", plain / "images")
    shutil.copytree(labelled / "labels" / "val", plain / "labels")
    archive = tmp_path / "demo.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(DEMO_MODEL, arcname="demo")
    out2 = tmp_path / "plain.json"
    run = _kanjian(
        "model", "compare", str(detect_bundle), str(archive), "--data", str(plain),
        "--json", str(out2),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    again = json.loads(out2.read_text())
    for key in ("verdicts", "detections"):
        assert again[key] == got[key]
    for key in ("map", "verdicts", "vs_labels", "boxes"):
        assert again["a"][key] == got["a"][key] and again["b"][key] == got["b"][key]
    assert again["source"] == "images/ + labels/"


def test_compare_says_what_is_wrong(detect_model: Any, labelled: Path, tmp_path: Path) -> None:
    onnx = str(detect_model.onnx)
    run = _kanjian("model", "compare", onnx, onnx, "--data", str(tmp_path / "nowhere"))
    assert run.returncode == 2 and "nowhere: no such folder or file" in run.stderr, run.stderr
    bare = tmp_path / "bare"
    shutil.copytree(labelled / "images", bare / "images")
    run = _kanjian("model", "compare", onnx, onnx, "--data", str(bare))
    assert run.returncode == 2, run.stderr
    assert "has a label file" in run.stderr and "nothing to score" in run.stderr
    run = _kanjian("model", "compare", onnx, onnx, "--data", str(labelled), "--split", "test")
    assert run.returncode == 2 and "no 'test:' split; it has train, val" in run.stderr
    # the data's classes in another order
    other = tmp_path / "other"
    shutil.copytree(labelled, other)
    swapped = [CLASS_NAMES[1], CLASS_NAMES[0], *CLASS_NAMES[2:]]
    (other / "data.yaml").write_text(
        "train: images/train\nval: images/val\nnames:\n" + "".join(f"  - {n}\n" for n in swapped)
    )
    run = _kanjian("model", "compare", onnx, onnx, "--data", str(other))
    assert run.returncode == 2, run.stderr
    assert "class names differ: the data (data.yaml, split val)" in run.stderr
    assert "in another order" in run.stderr
    # B with a class the others lack: an ONNX whose metadata renames one
    import onnx as onnx_lib

    m = onnx_lib.load(onnx)
    for prop in m.metadata_props:
        if prop.key == "names":
            prop.value = prop.value.replace("'scratches'", "'dent'")
    renamed = tmp_path / "renamed.onnx"
    onnx_lib.save(m, str(renamed))
    run = _kanjian("model", "compare", onnx, str(renamed), "--data", str(labelled))
    assert run.returncode == 2, run.stderr
    assert f"class names differ: B ({renamed})" in run.stderr.replace("\n", "")
    assert "has dent; lacks scratches" in run.stderr.replace("\n", "")
    run = _kanjian("model", "compare", onnx, str(tmp_path / "no.zip"), "--data", str(labelled))
    assert run.returncode == 2 and "no.zip: no such file or folder" in run.stderr
    assert "Traceback" not in run.stderr


def test_compare_reads_a_station_export_without_split(
    station_dir: tuple[Path, Any], detect_bundle: Path, tmp_path: Path
) -> None:
    """``kanjian dataset export --no-split`` (a review set: data.yaml lists ``images`` for
    both splits) is read as it was written: every image, with the exporter's labels."""
    from kanjian.training.compare_data import read_labelled
    from tests.support.station_log import labels_of

    data, _ = station_dir
    review = tmp_path / "review"
    run = _kanjian(
        "dataset", "export", str(data), str(review), "--no-split",
        "--classes", ",".join(CLASS_NAMES),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    got = read_labelled(review)
    want = labels_of(review)
    assert sorted(i.image.name for i in got.images) == sorted(want) and len(want) == 5
    for item in got.images:
        boxes = sorted(
            (CLASS_NAMES[k], tuple(round(float(v), 1) for v in xyxy))
            for xyxy, k in zip(item.xyxy, item.class_id, strict=True)
        )
        assert boxes == want[item.image.name], item.image.name
    out = tmp_path / "cmp.json"
    run = _kanjian(
        "model", "compare", str(detect_bundle), str(DEMO_MODEL), "--data", str(review),
        "--json", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert (result["images"], result["good"]) == (5, sum(not v for v in want.values()))
    assert result["source"] == "data.yaml, split val"
