"""``kanjian dataset import``: VOC, COCO and YOLO sources to one YOLO layout.

Each test writes a small dataset with known boxes, imports it, reads the
written YOLO labels back with our YOLO reader and compares them with the boxes
it started from; broken inputs must each be reported against their file while
the rest of the dataset still imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from kanjian.training.importer import detect_format, import_dataset
from kanjian.training.layout import dataset_sha256, ellipse_polygon, split_records
from kanjian.training.records import ImageRecord, ProblemKind
from kanjian.training.yolo_source import read_yolo

CLASSES = ("dent", "scratch", "stain")
#: (file, width, height, [(class, x1, y1, x2, y2), ...]) in real pixels
SCENE = [
    ("a.jpg", 64, 48, [("dent", 4, 6, 30, 40), ("scratch", 35, 2, 60, 20)]),
    ("b.png", 80, 60, [("stain", 10, 10, 70, 50)]),
    ("c.jpg", 50, 50, [("scratch", 0, 0, 50, 25)]),
    ("d.jpg", 40, 30, []),  # background image
    ("e.jpg", 64, 64, [("dent", 8, 8, 24, 24), ("dent", 30, 30, 60, 62), ("stain", 1, 1, 9, 9)]),
    ("f.jpg", 72, 40, [("stain", 5, 5, 20, 35)]),
]


def _write_image(path: Path, w: int, h: int) -> None:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _voc_xml(name: str, w: int, h: int, boxes: list[tuple[str, float, float, float, float]]) -> str:
    objs = "".join(
        f"<object><name>{c}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for c, x1, y1, x2, y2 in boxes
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def _write_voc(root: Path, scene: list = SCENE) -> Path:  # type: ignore[type-arg]
    for name, w, h, boxes in scene:
        _write_image(root / "images" / name, w, h)
        xml = root / "annotations" / f"{Path(name).stem}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(_voc_xml(name, w, h, boxes))
    return root


def _write_coco(root: Path) -> Path:
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
    images, anns = [], []
    for i, (name, w, h, boxes) in enumerate(SCENE):
        _write_image(root / "images" / name, w, h)
        images.append({"id": i + 10, "file_name": name, "width": w, "height": h})
        for c, x1, y1, x2, y2 in boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 10,
                    "category_id": CLASSES.index(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _read_back(out: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Boxes of the written dataset by image name, read with our YOLO reader."""
    result = read_yolo(out / "data.yaml")
    assert result.problems == ()
    return {
        r.image.name: sorted((b.class_name, tuple(round(v, 2) for v in b.xyxy)) for b in r.boxes)
        for r in result.records
    }


def _expected() -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    return {
        name: sorted((c, (float(x1), float(y1), float(x2), float(y2))) for c, x1, y1, x2, y2 in bs)
        for name, _, _, bs in SCENE
    }


def test_voc_round_trip(tmp_path: Path) -> None:
    src = _write_voc(tmp_path / "voc")
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.34, seed=1)
    assert summary.source_format == "voc"
    assert summary.class_names == CLASSES  # sorted names found
    assert summary.problems == ()
    assert summary.images["train"] + summary.images["val"] == len(SCENE)
    assert summary.images_without_labels == 1
    assert summary.boxes_per_class == {"dent": 3, "scratch": 2, "stain": 3}
    assert _read_back(tmp_path / "out") == _expected()
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES))
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["data_sha256"] == dataset_sha256(tmp_path / "out") == summary.data_sha256


def test_coco_round_trip(tmp_path: Path) -> None:
    src = _write_coco(tmp_path / "coco")
    assert detect_format(src) == "coco"
    summary = import_dataset(src, tmp_path / "out")
    assert summary.class_names == CLASSES
    assert summary.problems == ()
    assert _read_back(tmp_path / "out") == _expected()


def test_yolo_round_trip_is_identity(tmp_path: Path) -> None:
    import_dataset(_write_voc(tmp_path / "voc"), tmp_path / "yolo1", seed=3)
    summary = import_dataset(tmp_path / "yolo1", tmp_path / "yolo2", seed=3)
    assert summary.source_format == "yolo"
    assert summary.problems == ()
    assert _read_back(tmp_path / "yolo2") == _expected()
    # same data, same seed: the same split and byte-identical labels and images
    assert dataset_sha256(tmp_path / "yolo1") == dataset_sha256(tmp_path / "yolo2")


def test_voc_size_mismatch_rescales_and_says_so(tmp_path: Path) -> None:
    """NEU-DET's fault: XML says 200x200 with boxes in that frame, the image is 416x416."""
    _write_image(tmp_path / "voc" / "images" / "x.jpg", 416, 416)
    (tmp_path / "voc" / "annotations").mkdir(parents=True)
    xml = _voc_xml("x.jpg", 200, 200, [("dent", 10, 20, 100, 150)])
    (tmp_path / "voc" / "annotations" / "x.xml").write_text(xml)
    summary = import_dataset(tmp_path / "voc", tmp_path / "out", val_fraction=0.0)
    assert summary.problem_counts == {"size_mismatch": 1}
    assert "200x200" in summary.problems[0] and "416x416" in summary.problems[0]
    assert _read_back(tmp_path / "out") == {"x.jpg": [("dent", (20.8, 41.6, 208.0, 312.0))]}


def test_neu_det_files_import_with_rescaled_boxes(tmp_path: Path, neu_det_dir: Path) -> None:
    stems = ["crazing_1", "patches_10", "scratches_100"]
    src = tmp_path / "neu"
    for s in stems:
        (src / "images").mkdir(parents=True, exist_ok=True)
        (src / "annotations").mkdir(parents=True, exist_ok=True)
        (src / "images" / f"{s}.jpg").symlink_to(neu_det_dir / "images" / f"{s}.jpg")
        (src / "annotations" / f"{s}.xml").symlink_to(neu_det_dir / "annotations" / f"{s}.xml")
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.0)
    assert summary.problem_counts == {"size_mismatch": 3}
    import xml.etree.ElementTree as ET

    back = _read_back(tmp_path / "out")
    for s in stems:
        root = ET.parse(neu_det_dir / "annotations" / f"{s}.xml").getroot()
        want = sorted(
            (
                o.findtext("name"),
                tuple(
                    round(float(o.findtext(f"bndbox/{k}") or "nan") * 416 / 200, 2)
                    for k in ("xmin", "ymin", "xmax", "ymax")
                ),
            )
            for o in root.iter("object")
        )
        assert back[f"{s}.jpg"] == want


def test_broken_inputs_are_reported_per_file_and_the_rest_imports(tmp_path: Path) -> None:
    src = _write_voc(tmp_path / "voc")
    ann = src / "annotations"
    (ann / "broken.xml").write_text("<annotation><filename>a.jpg</filename")  # unreadable XML
    (ann / "ghost.xml").write_text(_voc_xml("ghost.jpg", 10, 10, [("dent", 1, 1, 5, 5)]))
    _write_image(src / "images" / "out.jpg", 40, 40)
    (ann / "out.xml").write_text(
        _voc_xml("out.jpg", 40, 40, [("dent", 30, 30, 60, 50), ("stain", 50, 50, 70, 70)])
    )
    _write_image(src / "images" / "alien.jpg", 40, 40)
    (ann / "alien.xml").write_text(
        _voc_xml("alien.jpg", 40, 40, [("rust", 1, 1, 10, 10), ("dent", 2, 2, 20, 20)])
    )
    (src / "images" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (ann / "corrupt.xml").write_text(_voc_xml("corrupt.jpg", 40, 40, [("dent", 1, 1, 5, 5)]))

    summary = import_dataset(src, tmp_path / "out", class_names=CLASSES)
    by_file: dict[str, set[str]] = {}
    for line in summary.problems:
        file, kind, _ = line.split(": ", 2)
        by_file.setdefault(Path(file.split("#")[0]).name, set()).add(kind)
    assert by_file == {
        "broken.xml": {ProblemKind.UNREADABLE.value},
        "ghost.xml": {ProblemKind.MISSING_IMAGE.value},
        "out.xml": {ProblemKind.BOX_OUTSIDE.value},
        "alien.xml": {ProblemKind.UNKNOWN_CLASS.value},
        "corrupt.jpg": {ProblemKind.UNREADABLE_IMAGE.value},
    }
    back = _read_back(tmp_path / "out")
    assert back["out.jpg"] == [("dent", (30.0, 30.0, 40.0, 40.0))]  # clipped; the other dropped
    assert back["alien.jpg"] == [("dent", (2.0, 2.0, 20.0, 20.0))]
    assert "corrupt.jpg" not in back and "ghost.jpg" not in back
    expected = _expected()
    assert {k: v for k, v in back.items() if k in expected} == expected


def test_coco_broken_inputs(tmp_path: Path) -> None:
    path = _write_coco(tmp_path / "coco")
    raw = json.loads(path.read_text())
    raw["images"].append({"id": 99, "file_name": "missing.jpg", "width": 10, "height": 10})
    raw["annotations"].append({"id": 500, "image_id": 10, "category_id": 42, "bbox": [1, 1, 5, 5]})
    raw["annotations"].append(
        {"id": 501, "image_id": 10, "category_id": 1, "bbox": [100, 100, 5, 5]}
    )
    path.write_text(json.dumps(raw))
    summary = import_dataset(path, tmp_path / "out")
    kinds = sorted(line.split(": ")[1] for line in summary.problems)
    assert kinds == ["box_outside", "missing_image", "unknown_class"]
    assert _read_back(tmp_path / "out") == _expected()

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{not json")
    bad = import_dataset(tmp_path / "bad" / "x.json", tmp_path / "out2", fmt="coco")
    assert bad.problem_counts == {"unreadable": 1}
    assert bad.images == {"train": 0, "val": 0}


def test_yolo_broken_labels(tmp_path: Path) -> None:
    import_dataset(_write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    lbl = tmp_path / "y" / "labels" / "train"
    (lbl / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\nfoo bar\n0 1.5 1.5 0.1 0.1\n")
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    kinds = sorted(line.split(": ")[1] for line in summary.problems)
    assert kinds == ["bad_box", "box_outside", "unknown_class"]
    assert _read_back(tmp_path / "out")["a.jpg"] == [("dent", (25.6, 19.2, 38.4, 28.8))]


def test_split_is_seeded_and_stratified() -> None:
    recs = [ImageRecord(Path(f"/d/{c}_{i}.jpg"), 10, 10, (), None) for c in "ab" for i in range(3)]
    from kanjian.training.records import Box

    recs = [ImageRecord(r.image, 10, 10, (Box(r.image.stem[0], (1, 1, 5, 5)),)) for r in recs] + [
        ImageRecord(Path(f"/d/bg_{i}.jpg"), 10, 10, ()) for i in range(10)
    ]
    train, val = split_records(recs, 0.2, seed=0)
    again = split_records(list(reversed(recs)), 0.2, seed=0)
    assert (train, val) == again
    assert {r.image.stem[0] for r in val if r.boxes} == {"a", "b"}  # each class reaches val
    assert len(val) == 1 + 1 + 2
    seeds = {tuple(r.image.name for r in split_records(recs, 0.2, seed=s)[1]) for s in range(8)}
    assert len(seeds) > 1


def test_segment_and_classify_layouts(tmp_path: Path) -> None:
    src = _write_voc(tmp_path / "voc")
    seg = import_dataset(src, tmp_path / "seg", task="segment", val_fraction=0.0)
    assert any("inscribed ellipse" in n for n in seg.notes)
    line = (tmp_path / "seg" / "labels" / "train" / "b.txt").read_text().split()
    pts = np.array(line[1:], float).reshape(-1, 2) * [80, 60]
    assert np.allclose(pts, np.array(ellipse_polygon((10, 10, 70, 50))), atol=1e-3)

    cls = import_dataset(src, tmp_path / "cls", task="classify", val_fraction=0.0)
    assert cls.images == {"train": 5, "val": 0}  # the background image is left out
    found = {p.name: p.parent.name for p in (tmp_path / "cls" / "train").glob("*/*")}
    assert found == {
        "a.jpg": "dent",
        "b.png": "stain",
        "c.jpg": "scratch",
        "e.jpg": "dent",
        "f.jpg": "stain",
    }


def test_output_must_be_new(tmp_path: Path) -> None:
    src = _write_voc(tmp_path / "voc")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        import_dataset(src, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_dataset_import(tmp_path: Path) -> None:
    src = _write_voc(tmp_path / "voc")
    (src / "annotations" / "broken.xml").write_text("<annotation")
    exe = Path(sys.executable).parent / "kanjian"
    run = subprocess.run(
        [str(exe), "dataset", "import", str(src), str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["problem_counts"] == {"unreadable": 1}
    assert summary["images"]["train"] + summary["images"]["val"] == len(SCENE)
    bad = subprocess.run(
        [str(exe), "dataset", "import", str(tmp_path / "nowhere"), str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "nowhere" in bad.stderr
