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


# --- review fixes: orphan labels, unique stems, malformed COCO, CVAT layouts, exit code,
# --- VOC difficult, EXIF orientation, a data.yaml that survives a move


def _problems_by_file(lines: tuple[str, ...]) -> dict[str, set[str]]:
    """``{file name (before any #): {kind, ...}}`` from summary problem lines."""
    out: dict[str, set[str]] = {}
    for line in lines:
        file, kind, _ = line.split(": ", 2)
        out.setdefault(Path(file.split("#")[0]).name, set()).add(kind)
    return out


def _yolo_line(cls: str, x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> str:
    return (
        f"{CLASSES.index(cls)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
        f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
    )


def _boxes(record: ImageRecord) -> list[tuple[str, tuple[float, ...]]]:
    return sorted((b.class_name, tuple(round(v, 2) for v in b.xyxy)) for b in record.boxes)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kanjian"
    return subprocess.run(
        [str(exe), "dataset", "import", *args], capture_output=True, text=True, timeout=120
    )


def test_yolo_label_without_image_is_missing_image(tmp_path: Path) -> None:
    import_dataset(_write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    (tmp_path / "y" / "images" / "train" / "c.jpg").unlink()  # its label stays
    ghost = tmp_path / "y" / "labels" / "val" / "ghost.txt"  # a split with no images/ at all
    ghost.parent.mkdir(parents=True)
    ghost.write_text("0 0.5 0.5 0.2 0.2\n")
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    data["val"] = "images/val"
    (tmp_path / "y" / "data.yaml").write_text(yaml.safe_dump(data))
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    assert summary.problem_counts == {"missing_image": 2}
    assert _problems_by_file(summary.problems) == {
        "c.txt": {"missing_image"},
        "ghost.txt": {"missing_image"},
    }
    assert any("labels/train/c.txt" in p and "images/train" in p for p in summary.problems)
    back = _read_back(tmp_path / "out")
    assert "c.jpg" not in back
    assert back == {k: v for k, v in _expected().items() if k != "c.jpg"}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"names: [dent, scratch\ntrain: images/train\n", "cannot read it"),  # broken YAML
        (b"train: images/train\nval: images/val\n", "no 'names:'"),
        (b"\xff\xfe\x00garbage\x00", "cannot read it"),  # not text
        (b"- just\n- a list\n", "not a YAML mapping"),
        (b"names: [dent]\n", "no 'train:'"),
    ],
)
def test_yolo_bad_data_yaml_is_one_clear_problem(tmp_path: Path, content: bytes, why: str) -> None:
    import_dataset(_write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    data_yaml = tmp_path / "y" / "data.yaml"
    data_yaml.write_bytes(content)
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    assert summary.images == {"train": 0, "val": 0}
    assert len(summary.problems) == 1
    assert summary.problems[0].startswith(f"{data_yaml}: unreadable: bad data.yaml: {why}")
    assert "\n" not in summary.problems[0]


def test_corrupt_images_are_reported_in_yolo_and_coco(tmp_path: Path) -> None:
    import_dataset(_write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    (tmp_path / "y" / "images" / "train" / "a.jpg").write_bytes(b"not an image")
    png = tmp_path / "y" / "images" / "train" / "b.png"
    png.write_bytes(png.read_bytes()[:20])  # signature and a cut-off header
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    assert _problems_by_file(summary.problems) == {
        "a.jpg": {"unreadable_image"},
        "b.png": {"unreadable_image"},
    }
    assert set(_read_back(tmp_path / "out")) == {"c.jpg", "d.jpg", "e.jpg", "f.jpg"}

    path = _write_coco(tmp_path / "coco")
    (tmp_path / "coco" / "images" / "e.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = import_dataset(path, tmp_path / "out2")
    assert _problems_by_file(summary.problems) == {"e.jpg": {"unreadable_image"}}
    assert _read_back(tmp_path / "out2") == {k: v for k, v in _expected().items() if k != "e.jpg"}


def test_output_names_are_unique_by_stem_ignoring_case(tmp_path: Path) -> None:
    """a.jpg and a.png must not share labels/train/a.txt; a renamed a.png must not
    take the name of the real a_1.jpg; A.jpg and a.jpg are one file on FAT/NTFS."""
    # distinct sizes, so each written image tells which source it is
    scene = [
        ("a.jpg", 64, 48, [("dent", 4, 6, 30, 40)]),
        ("a.png", 80, 60, [("stain", 10, 10, 70, 50)]),
        ("a_1.jpg", 50, 50, [("scratch", 0, 0, 50, 25)]),
        ("A.jpg", 40, 30, [("dent", 1, 2, 11, 12)]),
    ]
    root = tmp_path / "coco"
    images, anns = [], []
    for i, (name, w, h, boxes) in enumerate(scene):
        _write_image(root / "images" / name, w, h)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for c, x1, y1, x2, y2 in boxes:
            bbox = [x1, y1, x2 - x1, y2 - y1]
            anns.append(
                {"id": len(anns), "image_id": i, "category_id": CLASSES.index(c), "bbox": bbox}
            )
    cats = [{"id": i, "name": c} for i, c in enumerate(CLASSES)]
    (root / "x.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    summary = import_dataset(root / "x.json", tmp_path / "out", val_fraction=0.0)
    assert summary.problems == ()
    written = sorted((tmp_path / "out" / "images" / "train").iterdir())
    labels = sorted((tmp_path / "out" / "labels" / "train").iterdir())
    assert len(written) == len(labels) == 4
    assert len({p.stem.casefold() for p in written}) == 4
    # the first of a stem by path ("A" < "a") keeps its name, and so does the real a_1
    assert {p.name for p in written} >= {"A.jpg", "a_1.jpg"}
    want = {
        (w, h): sorted((c, (x1, y1, x2, y2)) for c, x1, y1, x2, y2 in bs) for _, w, h, bs in scene
    }
    back = read_yolo(tmp_path / "out" / "data.yaml")
    assert back.problems == ()
    got = {(r.width, r.height): _boxes(r) for r in back.records}
    assert got == want


def test_coco_malformed_rows_fail_one_by_one(tmp_path: Path) -> None:
    path = _write_coco(tmp_path / "coco")
    raw = json.loads(path.read_text())
    _write_image(tmp_path / "coco" / "images" / "w.jpg", 20, 20)
    raw["images"] += [
        {"id": 90, "file_name": "w.jpg", "width": "wide", "height": 20},  # non-numeric width
        {"id": 91, "file_name": "w.jpg", "width": [20], "height": 20},  # a list as width
        7,  # not an object
        {"id": None, "file_name": "w.jpg"},  # no usable id
        {"id": 10, "file_name": "b.png"},  # id used twice
    ]
    raw["annotations"] += [
        {"id": 600, "image_id": 10, "category_id": None, "bbox": [1, 1, 5, 5]},
        {"id": 601, "image_id": [10], "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 602, "image_id": 10, "category_id": 1, "bbox": [1, None, 5, 5]},
        {"id": 603, "image_id": 10, "category_id": 1, "bbox": "1 1 5 5"},
        "not an annotation",
        {"id": 604, "image_id": 10, "category_id": 2, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        {"id": 605, "image_id": 11, "category_id": 3, "bbox": [0, 0, 9, 9], "iscrowd": 1},
    ]
    raw["categories"].append({"id": "x", "name": None})
    path.write_text(json.dumps(raw))
    summary = import_dataset(path, tmp_path / "out")
    assert summary.problem_counts == {"bad_box": 5, "bad_entry": 5, "duplicate": 1}
    assert any("'wide'" in p for p in summary.problems)
    assert any("category_id None" in p for p in summary.problems)
    assert summary.notes == (
        "coco: 2 crowd annotations (iscrowd: 1) skipped, as Ultralytics' converter does",
    )
    assert _read_back(tmp_path / "out") == _expected()  # the good rows, untouched


def test_cli_survives_malformed_coco(tmp_path: Path) -> None:
    """The old reader raised TypeError on a null category_id: a traceback, not a summary."""
    path = _write_coco(tmp_path / "coco")
    raw = json.loads(path.read_text())
    raw["annotations"][0]["category_id"] = None
    raw["images"][1]["width"] = "eighty"
    path.write_text(json.dumps(raw))
    run = _run_cli(str(path), str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads(run.stdout)["problem_counts"] == {"bad_box": 1, "bad_entry": 1}


def test_cvat_yolo_1_1_export(tmp_path: Path) -> None:
    """CVAT "YOLO 1.1": obj.names, obj.data, train.txt, obj_train_data/ (image + .txt)."""
    root = tmp_path / "cvat"
    data = root / "obj_train_data"
    for name, w, h, boxes in SCENE:
        _write_image(data / name, w, h)
        (data / f"{Path(name).stem}.txt").write_text(
            "".join(_yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
        )
    (root / "obj.names").write_text("".join(f"{c}\n" for c in CLASSES))
    (root / "obj.data").write_text(
        "classes = 3\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n"
    )
    (root / "train.txt").write_text("".join(f"data/obj_train_data/{n}\n" for n, *_ in SCENE))
    (data / "lost.txt").write_text(_yolo_line("dent", 1, 1, 5, 5, 10, 10))  # no lost.jpg
    assert detect_format(root) == "yolo"
    summary = import_dataset(root, tmp_path / "out")
    assert summary.source_format == "yolo"
    assert summary.class_names == CLASSES
    assert _problems_by_file(summary.problems) == {"lost.txt": {"missing_image"}}
    assert _read_back(tmp_path / "out") == _expected()


def test_cvat_yolo_export_without_images_takes_images_option(tmp_path: Path) -> None:
    """CVAT exports labels only unless "save images" is ticked: --images supplies them."""
    root = tmp_path / "cvat"
    (root / "obj_train_data").mkdir(parents=True)
    (root / "obj.names").write_text("".join(f"{c}\n" for c in CLASSES))
    for name, w, h, boxes in SCENE:
        _write_image(tmp_path / "pics" / name, w, h)
        (root / "obj_train_data" / f"{Path(name).stem}.txt").write_text(
            "".join(_yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
        )
    summary = import_dataset(root, tmp_path / "out", images=tmp_path / "pics")
    assert summary.problems == ()
    assert _read_back(tmp_path / "out") == _expected()


def test_cvat_yolo_without_images_matches_labels_by_subset_and_stem(tmp_path: Path) -> None:
    """Same-stem labels in two obj_<subset>_data/ folders each go to their subset's image.

    The old reader kept one label per stem: ``valid/a.jpg`` got the train labels and
    ``obj_valid_data/a.txt`` was reported as ``missing_image``; an orphan's message
    named the obj_*_data folder, not the --images folder where the image was looked for.
    """
    root, pics = tmp_path / "cvat", tmp_path / "pics"
    root.mkdir()
    (root / "obj.names").write_text("".join(f"{c}\n" for c in CLASSES))
    scene = {  # subset -> (image name, w, h, boxes)
        "train": [SCENE[0], SCENE[1]],  # a.jpg, b.png
        "valid": [("a.jpg", 50, 50, [("scratch", 0, 0, 50, 25)]), ("lost.jpg", 10, 10, [])],
    }
    for subset, items in scene.items():
        for name, w, h, boxes in items:
            if name != "lost.jpg":  # its image is not in --images
                _write_image(pics / subset / name, w, h)
            label = root / f"obj_{subset}_data" / f"{Path(name).stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(
                "".join(_yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
            )

    extra = root / "obj_train_data" / "more" / "b.txt"  # b's stem again in the same subset
    extra.parent.mkdir()
    extra.write_text(_yolo_line("dent", 1, 1, 5, 5, 10, 10))

    result = read_yolo(root, images=pics)
    got = {r.image.relative_to(pics).as_posix(): (r.annotation, _boxes(r)) for r in result.records}
    assert got == {
        f"{subset}/{name}": (
            root / f"obj_{subset}_data" / f"{Path(name).stem}.txt",
            sorted((c, (float(x1), float(y1), float(x2), float(y2))) for c, x1, y1, x2, y2 in bs),
        )
        for subset, items in scene.items()
        for name, _, _, bs in items
        if name != "lost.jpg"
    }
    assert [(p.kind, p.file) for p in result.problems] == [
        (ProblemKind.DUPLICATE, str(extra)),
        (ProblemKind.MISSING_IMAGE, str(root / "obj_valid_data" / "lost.txt")),
    ]
    assert f"no image lost.* in {pics / 'valid'} " in result.problems[1].message


def test_cvat_yolo_without_images_flat_folder_reports_ambiguous_stem(tmp_path: Path) -> None:
    """One flat image, labels of its stem in two subsets: a duplicate, not a missing image."""
    root, pics = tmp_path / "cvat", tmp_path / "pics"
    root.mkdir()
    (root / "obj.names").write_text("".join(f"{c}\n" for c in CLASSES))
    _write_image(pics / "a.jpg", 64, 48)
    for subset, cls in (("train", "dent"), ("valid", "stain")):
        (root / f"obj_{subset}_data").mkdir(parents=True)
        (root / f"obj_{subset}_data" / "a.txt").write_text(_yolo_line(cls, 4, 6, 30, 40, 64, 48))
    result = read_yolo(root, images=pics)
    assert [_boxes(r) for r in result.records] == [[("dent", (4.0, 6.0, 30.0, 40.0))]]
    assert [(p.kind, p.file) for p in result.problems] == [
        (ProblemKind.DUPLICATE, str(pics / "a.jpg"))
    ]
    assert str(root / "obj_valid_data" / "a.txt") in result.problems[0].message


def _coco_dict(scene: list, first_id: int) -> dict[str, list[dict[str, object]]]:  # type: ignore[type-arg]
    images, anns = [], []
    for i, (name, w, h, boxes) in enumerate(scene, first_id):
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for c, x1, y1, x2, y2 in boxes:
            anns.append(
                {
                    "id": 100 * i + len(anns),
                    "image_id": i,
                    "category_id": CLASSES.index(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": i + 1, "name": c, "supercategory": ""} for i, c in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def test_cvat_coco_export(tmp_path: Path) -> None:
    """CVAT "COCO 1.0": annotations/instances_default.json beside images/."""
    root = tmp_path / "cvat-coco"
    for name, w, h, _ in SCENE:
        _write_image(root / "images" / name, w, h)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(_coco_dict(SCENE, 1)))
    assert detect_format(root) == "coco"
    summary = import_dataset(root, tmp_path / "out")
    assert summary.source_format == "coco"
    assert summary.class_names == CLASSES
    assert summary.problems == ()
    assert _read_back(tmp_path / "out") == _expected()


def test_standard_coco_layout_with_splits(tmp_path: Path) -> None:
    """annotations/instances_<split>.json with images/<split>/; captions_* is not read."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, part, first in (("train", SCENE[:4], 1), ("val", SCENE[4:], 50)):
        for name, w, h, _ in part:
            _write_image(root / "images" / split / name, w, h)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(_coco_dict(part, first))
        )
    (root / "annotations" / "captions_train.json").write_text(json.dumps({"annotations": []}))
    summary = import_dataset(root, tmp_path / "out")
    assert summary.source_format == "coco"
    assert summary.class_names == CLASSES
    assert summary.problems == ()
    assert _read_back(tmp_path / "out") == _expected()


def test_cli_exit_code_is_2_when_nothing_was_imported(tmp_path: Path) -> None:
    src = tmp_path / "voc"
    (src / "annotations").mkdir(parents=True)
    (src / "annotations" / "x.xml").write_text("<annotation")
    (src / "annotations" / "y.xml").write_text(_voc_xml("y.jpg", 10, 10, []))  # no y.jpg
    run = _run_cli(str(src), str(tmp_path / "out"))
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no images imported from ")
    assert "(2 problems; first: " in lines[0]
    assert "problems: 2" in run.stdout  # the summary is still printed

    # a broken data.yaml: one line naming the file, not a traceback
    import_dataset(_write_voc(tmp_path / "v2"), tmp_path / "y", val_fraction=0.0)
    (tmp_path / "y" / "data.yaml").write_text("names: [a\n")
    run = _run_cli(str(tmp_path / "y"), str(tmp_path / "out2"), "--json")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path / 'y' / 'data.yaml'}: unreadable" in lines[0]
    assert json.loads(run.stdout)["problem_counts"] == {"unreadable": 1}


def test_voc_difficult_objects_are_kept_unless_dropped(tmp_path: Path) -> None:
    src = _write_voc(tmp_path / "voc", SCENE[:3])
    xml = src / "annotations" / "a.xml"
    text = xml.read_text().replace(
        "<name>scratch</name>", "<name>scratch</name><difficult>1</difficult>"
    )
    xml.write_text(text.replace("<name>dent</name>", "<name>dent</name><difficult>0</difficult>"))
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.0, drop_difficult=True)
    assert summary.problems == ()
    assert summary.notes == ("voc: 1 difficult objects skipped (--drop-difficult)",)
    assert _read_back(tmp_path / "out")["a.jpg"] == [("dent", (4.0, 6.0, 30.0, 40.0))]

    kept = import_dataset(src, tmp_path / "kept", val_fraction=0.0)
    assert kept.notes == ()
    assert _read_back(tmp_path / "kept")["a.jpg"] == _expected()["a.jpg"]

    run = _run_cli(str(src), str(tmp_path / "cli"), "--drop-difficult", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["boxes_per_class"]["scratch"] == 1


def test_exif_rotated_photo_is_not_rescaled(tmp_path: Path) -> None:
    """A phone photo stored 64x48 with EXIF orientation 6 shows (and trains, via
    cv2.imread) as 48x64; the annotation tool labelled it in that frame."""
    from PIL import Image

    src = tmp_path / "voc"
    (src / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (64, 48), (90, 90, 90)).save(src / "images" / "p.jpg", exif=exif.tobytes())
    assert cv2.imread(str(src / "images" / "p.jpg")).shape[:2] == (64, 48)  # (H, W) upright
    (src / "annotations").mkdir()
    (src / "annotations" / "p.xml").write_text(_voc_xml("p.jpg", 48, 64, [("dent", 6, 8, 30, 56)]))
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.0)
    assert summary.problems == ()  # the old reader saw 64x48 and "rescaled" the box
    label = (tmp_path / "out" / "labels" / "train" / "p.txt").read_text().split()
    assert [float(v) for v in label[1:]] == pytest.approx([18 / 48, 32 / 64, 24 / 48, 48 / 64])


def test_moved_dataset_still_loads_in_ultralytics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.yaml has no absolute path: a dataset copied to another machine still loads."""
    import shutil

    import_dataset(_write_voc(tmp_path / "voc"), tmp_path / "here" / "ds", val_fraction=0.34)
    moved = tmp_path / "elsewhere" / "ds"
    shutil.move(tmp_path / "here" / "ds", moved)
    (tmp_path / "here").rmdir()
    monkeypatch.chdir(tmp_path)

    from kanjian.training._env import ultralytics_module

    ultralytics_module()  # offline env and local fonts before Ultralytics loads
    from ultralytics.data.utils import check_det_dataset

    for data_arg in (moved / "data.yaml", Path("elsewhere/ds/data.yaml")):
        data = check_det_dataset(str(data_arg), autodownload=False)
        assert Path(data["train"]) == (moved / "images" / "train").resolve()
        assert Path(data["val"]) == (moved / "images" / "val").resolve()
        assert data["names"] == dict(enumerate(CLASSES))

    from kanjian.training.package import data_summary_for
    from kanjian.training.pipeline import val_images

    val = val_images(moved / "data.yaml", "detect")
    assert val and all(p.parent == moved / "images" / "val" for p in val)
    summary, sha = data_summary_for(moved / "data.yaml")
    assert summary["source_format"] == "voc" and sha == dataset_sha256(moved)
