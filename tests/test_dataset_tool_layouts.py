"""``kanjian dataset import`` of the layouts labelling tools export, found without flags:
CVAT "YOLO 1.1" (with and without images) and CVAT / standard COCO (``annotations/*.json``).

Each test writes the tool's layout for the shared scene (tests/support/dataset.py) and
compares what was imported with the boxes it started from.
"""

from __future__ import annotations

import json
from pathlib import Path

from kanjian.training.importer import detect_format, import_dataset
from kanjian.training.records import ProblemKind
from kanjian.training.yolo_source import read_yolo
from tests.support.dataset import (
    CLASSES,
    SCENE,
    coco_dict,
    expected_boxes,
    problems_by_file,
    read_back,
    record_boxes,
    write_image,
    yolo_line,
)


def test_cvat_yolo_1_1_export(tmp_path: Path) -> None:
    """CVAT "YOLO 1.1": obj.names, obj.data, train.txt, obj_train_data/ (image + .txt)."""
    root = tmp_path / "cvat"
    data = root / "obj_train_data"
    for name, w, h, boxes in SCENE:
        write_image(data / name, w, h)
        (data / f"{Path(name).stem}.txt").write_text(
            "".join(yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
        )
    (root / "obj.names").write_text("".join(f"{c}\n" for c in CLASSES))
    (root / "obj.data").write_text(
        "classes = 3\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n"
    )
    (root / "train.txt").write_text("".join(f"data/obj_train_data/{n}\n" for n, *_ in SCENE))
    (data / "lost.txt").write_text(yolo_line("dent", 1, 1, 5, 5, 10, 10))  # no lost.jpg
    assert detect_format(root) == "yolo"
    summary = import_dataset(root, tmp_path / "out")
    assert summary.source_format == "yolo"
    assert summary.class_names == CLASSES
    assert problems_by_file(summary.problems) == {"lost.txt": {"missing_image"}}
    assert read_back(tmp_path / "out") == expected_boxes()


def test_cvat_yolo_export_without_images_takes_images_option(tmp_path: Path) -> None:
    """CVAT exports labels only unless "save images" is ticked: --images supplies them."""
    root = tmp_path / "cvat"
    (root / "obj_train_data").mkdir(parents=True)
    (root / "obj.names").write_text("".join(f"{c}\n" for c in CLASSES))
    for name, w, h, boxes in SCENE:
        write_image(tmp_path / "pics" / name, w, h)
        (root / "obj_train_data" / f"{Path(name).stem}.txt").write_text(
            "".join(yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
        )
    summary = import_dataset(root, tmp_path / "out", images=tmp_path / "pics")
    assert summary.problems == ()
    assert read_back(tmp_path / "out") == expected_boxes()


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
                write_image(pics / subset / name, w, h)
            label = root / f"obj_{subset}_data" / f"{Path(name).stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(
                "".join(yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
            )

    extra = root / "obj_train_data" / "more" / "b.txt"  # b's stem again in the same subset
    extra.parent.mkdir()
    extra.write_text(yolo_line("dent", 1, 1, 5, 5, 10, 10))

    result = read_yolo(root, images=pics)
    got = {
        r.image.relative_to(pics).as_posix(): (r.annotation, record_boxes(r))
        for r in result.records
    }
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
    write_image(pics / "a.jpg", 64, 48)
    for subset, cls in (("train", "dent"), ("valid", "stain")):
        (root / f"obj_{subset}_data").mkdir(parents=True)
        (root / f"obj_{subset}_data" / "a.txt").write_text(yolo_line(cls, 4, 6, 30, 40, 64, 48))
    result = read_yolo(root, images=pics)
    assert [record_boxes(r) for r in result.records] == [[("dent", (4.0, 6.0, 30.0, 40.0))]]
    assert [(p.kind, p.file) for p in result.problems] == [
        (ProblemKind.DUPLICATE, str(pics / "a.jpg"))
    ]
    assert str(root / "obj_valid_data" / "a.txt") in result.problems[0].message


def _imports_the_scene_as_coco(root: Path, out: Path) -> None:
    summary = import_dataset(root, out)
    assert summary.source_format == "coco"
    assert summary.class_names == CLASSES
    assert summary.problems == ()
    assert read_back(out) == expected_boxes()


def test_cvat_coco_export(tmp_path: Path) -> None:
    """CVAT "COCO 1.0": annotations/instances_default.json beside images/."""
    root = tmp_path / "cvat-coco"
    for name, w, h, _ in SCENE:
        write_image(root / "images" / name, w, h)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(coco_dict(SCENE, 1)))
    assert detect_format(root) == "coco"
    _imports_the_scene_as_coco(root, tmp_path / "out")


def test_standard_coco_layout_with_splits(tmp_path: Path) -> None:
    """annotations/instances_<split>.json with images/<split>/; captions_* is not read."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, part, first in (("train", SCENE[:4], 1), ("val", SCENE[4:], 50)):
        for name, w, h, _ in part:
            write_image(root / "images" / split / name, w, h)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(coco_dict(part, first))
        )
    (root / "annotations" / "captions_train.json").write_text(json.dumps({"annotations": []}))
    _imports_the_scene_as_coco(root, tmp_path / "out")


def test_label_studio_yolo_export_without_images_takes_its_own_labels(tmp_path: Path) -> None:
    """Label Studio's "YOLO" export without images (labels/, classes.txt, notes.json) with
    ``--images`` on the folder it was labelled from: the export's labels are read, never
    the ones beside those images (a station export's: the model's, before correction)."""
    review, root = tmp_path / "review", tmp_path / "ls-export"
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (root / "notes.json").write_text('{"categories": []}')
    (review / "labels").mkdir(parents=True)
    for name, w, h, boxes in SCENE:
        write_image(review / "images" / name, w, h)
        (review / "labels" / f"{Path(name).stem}.txt").write_text(
            yolo_line("dent", 0, 0, 9, 9, w, h)
        )
        (root / "labels" / f"{Path(name).stem}.txt").write_text(
            "".join(yolo_line(c, x1, y1, x2, y2, w, h) for c, x1, y1, x2, y2 in boxes)
        )  # fmt: skip
    (root / "labels" / "lost.txt").write_text(yolo_line("dent", 1, 1, 5, 5, 10, 10))
    result = read_yolo(root, images=review / "images")
    assert {r.image.name: record_boxes(r) for r in result.records} == expected_boxes()
    assert [(p.kind, p.file) for p in result.problems] == [
        (ProblemKind.MISSING_IMAGE, str(root / "labels" / "lost.txt"))
    ]
    assert f"no image lost.* in {review / 'images'} " in result.problems[0].message
