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
from tests.support.dataset import (
    CLASSES,
    SCENE,
    expected_boxes,
    problems_by_file,
    read_back,
    record_boxes,
    run_import_cli,
    voc_xml,
    write_coco,
    write_image,
    write_voc,
)


def test_voc_round_trip(tmp_path: Path) -> None:
    src = write_voc(tmp_path / "voc")
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.34, seed=1)
    assert summary.source_format == "voc"
    assert summary.class_names == CLASSES  # sorted names found
    assert summary.problems == ()
    assert summary.images["train"] + summary.images["val"] == len(SCENE)
    assert summary.images_without_labels == 1
    assert summary.boxes_per_class == {"dent": 3, "scratch": 2, "stain": 3}
    assert read_back(tmp_path / "out") == expected_boxes()
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES))
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["data_sha256"] == dataset_sha256(tmp_path / "out") == summary.data_sha256


def test_coco_round_trip(tmp_path: Path) -> None:
    src = write_coco(tmp_path / "coco")
    assert detect_format(src) == "coco"
    summary = import_dataset(src, tmp_path / "out")
    assert summary.class_names == CLASSES
    assert summary.problems == ()
    assert read_back(tmp_path / "out") == expected_boxes()


def test_yolo_round_trip_is_identity(tmp_path: Path) -> None:
    import_dataset(write_voc(tmp_path / "voc"), tmp_path / "yolo1", seed=3)
    summary = import_dataset(tmp_path / "yolo1", tmp_path / "yolo2", seed=3)
    assert summary.source_format == "yolo"
    assert summary.problems == ()
    assert read_back(tmp_path / "yolo2") == expected_boxes()
    # same data, same seed: the same split and byte-identical labels and images
    assert dataset_sha256(tmp_path / "yolo1") == dataset_sha256(tmp_path / "yolo2")


def test_voc_size_mismatch_rescales_and_says_so(tmp_path: Path) -> None:
    """NEU-DET's fault: XML says 200x200 with boxes in that frame, the image is 416x416."""
    write_image(tmp_path / "voc" / "images" / "x.jpg", 416, 416)
    (tmp_path / "voc" / "annotations").mkdir(parents=True)
    xml = voc_xml("x.jpg", 200, 200, [("dent", 10, 20, 100, 150)])
    (tmp_path / "voc" / "annotations" / "x.xml").write_text(xml)
    summary = import_dataset(tmp_path / "voc", tmp_path / "out", val_fraction=0.0)
    assert summary.problem_counts == {"size_mismatch": 1}
    assert "200x200" in summary.problems[0] and "416x416" in summary.problems[0]
    assert read_back(tmp_path / "out") == {"x.jpg": [("dent", (20.8, 41.6, 208.0, 312.0))]}


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

    back = read_back(tmp_path / "out")
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
    src = write_voc(tmp_path / "voc")
    ann = src / "annotations"
    (ann / "broken.xml").write_text("<annotation><filename>a.jpg</filename")  # unreadable XML
    (ann / "ghost.xml").write_text(voc_xml("ghost.jpg", 10, 10, [("dent", 1, 1, 5, 5)]))
    write_image(src / "images" / "out.jpg", 40, 40)
    (ann / "out.xml").write_text(
        voc_xml("out.jpg", 40, 40, [("dent", 30, 30, 60, 50), ("stain", 50, 50, 70, 70)])
    )
    write_image(src / "images" / "alien.jpg", 40, 40)
    (ann / "alien.xml").write_text(
        voc_xml("alien.jpg", 40, 40, [("rust", 1, 1, 10, 10), ("dent", 2, 2, 20, 20)])
    )
    (src / "images" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (ann / "corrupt.xml").write_text(voc_xml("corrupt.jpg", 40, 40, [("dent", 1, 1, 5, 5)]))

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
    back = read_back(tmp_path / "out")
    assert back["out.jpg"] == [("dent", (30.0, 30.0, 40.0, 40.0))]  # clipped; the other dropped
    assert back["alien.jpg"] == [("dent", (2.0, 2.0, 20.0, 20.0))]
    assert "corrupt.jpg" not in back and "ghost.jpg" not in back
    expected = expected_boxes()
    assert {k: v for k, v in back.items() if k in expected} == expected


def test_coco_broken_inputs(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "coco")
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
    assert read_back(tmp_path / "out") == expected_boxes()

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{not json")
    bad = import_dataset(tmp_path / "bad" / "x.json", tmp_path / "out2", fmt="coco")
    assert bad.problem_counts == {"unreadable": 1}
    assert bad.images == {"train": 0, "val": 0}


def test_yolo_broken_labels(tmp_path: Path) -> None:
    import_dataset(write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    lbl = tmp_path / "y" / "labels" / "train"
    (lbl / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\nfoo bar\n0 1.5 1.5 0.1 0.1\n")
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    kinds = sorted(line.split(": ")[1] for line in summary.problems)
    assert kinds == ["bad_box", "box_outside", "unknown_class"]
    assert read_back(tmp_path / "out")["a.jpg"] == [("dent", (25.6, 19.2, 38.4, 28.8))]


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
    src = write_voc(tmp_path / "voc")
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
    src = write_voc(tmp_path / "voc")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        import_dataset(src, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_dataset_import(tmp_path: Path) -> None:
    src = write_voc(tmp_path / "voc")
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
    # the copy's progress: in a log (stderr not a terminal) a line each tenth of the way
    n = len(SCENE)
    assert f"writing {tmp_path / 'out'}: {n:,} of {n:,} images (100 %)" in run.stderr, run.stderr
    bad = subprocess.run(
        [str(exe), "dataset", "import", str(tmp_path / "nowhere"), str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "nowhere" in bad.stderr


def test_yolo_label_without_image_is_missing_image(tmp_path: Path) -> None:
    import_dataset(write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    (tmp_path / "y" / "images" / "train" / "c.jpg").unlink()  # its label stays
    ghost = tmp_path / "y" / "labels" / "val" / "ghost.txt"  # a split with no images/ at all
    ghost.parent.mkdir(parents=True)
    ghost.write_text("0 0.5 0.5 0.2 0.2\n")
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    data["val"] = "images/val"
    (tmp_path / "y" / "data.yaml").write_text(yaml.safe_dump(data))
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    assert summary.problem_counts == {"missing_image": 2}
    assert problems_by_file(summary.problems) == {
        "c.txt": {"missing_image"},
        "ghost.txt": {"missing_image"},
    }
    assert any("labels/train/c.txt" in p and "images/train" in p for p in summary.problems)
    back = read_back(tmp_path / "out")
    assert "c.jpg" not in back
    assert back == {k: v for k, v in expected_boxes().items() if k != "c.jpg"}


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
    import_dataset(write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    data_yaml = tmp_path / "y" / "data.yaml"
    data_yaml.write_bytes(content)
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    assert summary.images == {"train": 0, "val": 0}
    assert len(summary.problems) == 1
    assert summary.problems[0].startswith(f"{data_yaml}: unreadable: bad data.yaml: {why}")
    assert "\n" not in summary.problems[0]


def test_corrupt_images_are_reported_in_yolo_and_coco(tmp_path: Path) -> None:
    import_dataset(write_voc(tmp_path / "voc"), tmp_path / "y", val_fraction=0.0)
    (tmp_path / "y" / "images" / "train" / "a.jpg").write_bytes(b"not an image")
    png = tmp_path / "y" / "images" / "train" / "b.png"
    png.write_bytes(png.read_bytes()[:20])  # signature and a cut-off header
    summary = import_dataset(tmp_path / "y", tmp_path / "out")
    assert problems_by_file(summary.problems) == {
        "a.jpg": {"unreadable_image"},
        "b.png": {"unreadable_image"},
    }
    assert set(read_back(tmp_path / "out")) == {"c.jpg", "d.jpg", "e.jpg", "f.jpg"}

    path = write_coco(tmp_path / "coco")
    (tmp_path / "coco" / "images" / "e.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = import_dataset(path, tmp_path / "out2")
    assert problems_by_file(summary.problems) == {"e.jpg": {"unreadable_image"}}
    assert read_back(tmp_path / "out2") == {
        k: v for k, v in expected_boxes().items() if k != "e.jpg"
    }


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
        write_image(root / "images" / name, w, h)
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
    got = {(r.width, r.height): record_boxes(r) for r in back.records}
    assert got == want


def test_coco_malformed_rows_fail_one_by_one(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "coco")
    raw = json.loads(path.read_text())
    write_image(tmp_path / "coco" / "images" / "w.jpg", 20, 20)
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
    assert read_back(tmp_path / "out") == expected_boxes()  # the good rows, untouched


def test_cli_survives_malformed_coco(tmp_path: Path) -> None:
    """The old reader raised TypeError on a null category_id: a traceback, not a summary."""
    path = write_coco(tmp_path / "coco")
    raw = json.loads(path.read_text())
    raw["annotations"][0]["category_id"] = None
    raw["images"][1]["width"] = "eighty"
    path.write_text(json.dumps(raw))
    run = run_import_cli(str(path), str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads(run.stdout)["problem_counts"] == {"bad_box": 1, "bad_entry": 1}


def test_cli_exit_code_is_2_when_nothing_was_imported(tmp_path: Path) -> None:
    src = tmp_path / "voc"
    (src / "annotations").mkdir(parents=True)
    (src / "annotations" / "x.xml").write_text("<annotation")
    (src / "annotations" / "y.xml").write_text(voc_xml("y.jpg", 10, 10, []))  # no y.jpg
    run = run_import_cli(str(src), str(tmp_path / "out"))
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no images imported from ")
    assert "(2 problems; first: " in lines[0]
    assert "problems: 2" in run.stdout  # the summary is still printed

    # a broken data.yaml: one line naming the file, not a traceback
    import_dataset(write_voc(tmp_path / "v2"), tmp_path / "y", val_fraction=0.0)
    (tmp_path / "y" / "data.yaml").write_text("names: [a\n")
    run = run_import_cli(str(tmp_path / "y"), str(tmp_path / "out2"), "--json")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path / 'y' / 'data.yaml'}: unreadable" in lines[0]
    assert json.loads(run.stdout)["problem_counts"] == {"unreadable": 1}


def test_voc_difficult_objects_are_kept_unless_dropped(tmp_path: Path) -> None:
    src = write_voc(tmp_path / "voc", SCENE[:3])
    xml = src / "annotations" / "a.xml"
    text = xml.read_text().replace(
        "<name>scratch</name>", "<name>scratch</name><difficult>1</difficult>"
    )
    xml.write_text(text.replace("<name>dent</name>", "<name>dent</name><difficult>0</difficult>"))
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.0, drop_difficult=True)
    assert summary.problems == ()
    assert summary.notes == ("voc: 1 difficult objects skipped (--drop-difficult)",)
    assert read_back(tmp_path / "out")["a.jpg"] == [("dent", (4.0, 6.0, 30.0, 40.0))]

    kept = import_dataset(src, tmp_path / "kept", val_fraction=0.0)
    assert kept.notes == ()
    assert read_back(tmp_path / "kept")["a.jpg"] == expected_boxes()["a.jpg"]

    run = run_import_cli(str(src), str(tmp_path / "cli"), "--drop-difficult", "--json")
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
    (src / "annotations" / "p.xml").write_text(voc_xml("p.jpg", 48, 64, [("dent", 6, 8, 30, 56)]))
    summary = import_dataset(src, tmp_path / "out", val_fraction=0.0)
    assert summary.problems == ()  # the old reader saw 64x48 and "rescaled" the box
    label = (tmp_path / "out" / "labels" / "train" / "p.txt").read_text().split()
    assert [float(v) for v in label[1:]] == pytest.approx([18 / 48, 32 / 64, 24 / 48, 48 / 64])


def test_moved_dataset_still_loads_in_ultralytics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.yaml has no absolute path: a dataset copied to another machine still loads."""
    import shutil

    import_dataset(write_voc(tmp_path / "voc"), tmp_path / "here" / "ds", val_fraction=0.34)
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
